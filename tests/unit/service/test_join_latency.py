"""The join-latency metric keeps one start time per INVITE in progress, and none after."""

from __future__ import annotations

from app.service.metrics import Metrics
from tests.support.focus_service import focus_config, service_on_captured_udp


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
    transport, udp, endpoint, service = service_on_captured_udp(focus_config(), metrics=Metrics())
    for n in range(20):  # to conferences that do not exist: 404 each
        transport._datagram(_invite(n, f"conf-nosuch{n}"), ("127.0.0.1", 7000))
    finals = [d for d, _ in udp.sent if d.startswith(b"SIP/2.0 404")]
    assert len(finals) == 20
    assert service._invite_started == {}
    endpoint.close()
