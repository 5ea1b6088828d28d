"""The join-latency metric keeps one start time per INVITE in progress, and none after."""

from __future__ import annotations

from app.focus.core import FocusConfig
from app.mrfp.pool import MrfpPool
from app.net.endpoint import SipEndpoint
from app.net.transport import SipTransport
from app.service.focus_service import FocusService
from app.service.metrics import Metrics


class _Captured:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


def _invite(n: int, user: str) -> bytes:
    sdp = "v=0\r\no=ue 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    sdp += "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    return (
        f"INVITE sip:{user}@mrfc1.home1.net SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-lat{n}\r\n"
        f"From: <sip:ue{n}@home1.net>;tag=t{n}\r\nTo: <sip:{user}@mrfc1.home1.net>\r\n"
        f"Call-ID: lat-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:ue{n}@127.0.0.1:7000>\r\n"
        f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


async def test_refused_invites_leave_no_start_time_behind() -> None:
    config = FocusConfig(
        factory_uris=["sip:conf-factory1@mrfc1.home1.net"],
        conference_domain="mrfc1.home1.net",
        local_contact="sip:mrfc@127.0.0.1:5070",
        mrfp_uri={"mrfp1": "sip:127.0.0.1:5080"},
    )
    transport = SipTransport("127.0.0.1", 5070, udp=True, tcp=False)
    udp = _Captured()
    transport._udp = udp  # type: ignore[assignment]
    endpoint = SipEndpoint(transport, "127.0.0.1", 5070)
    transport.on_message = endpoint.receive
    service = FocusService(config, endpoint, MrfpPool([]), metrics=Metrics())
    for n in range(20):  # to conferences that do not exist: 404 each
        transport._datagram(_invite(n, f"conf-nosuch{n}"), ("127.0.0.1", 7000))
    finals = [d for d in udp.sent if d.startswith(b"SIP/2.0 404")]
    assert len(finals) == 20
    assert service._invite_started == {}
    endpoint.close()
