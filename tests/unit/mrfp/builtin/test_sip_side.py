"""The built-in media processor's SIP side without sockets: a fake transport records what the
endpoint sends, a fake engine what the SIP side asks of the media."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from app.mrfp.builtin.conference import ConferenceRegistry, EventContext, MaintenanceEvent
from app.mrfp.builtin.engine import MediaTimeout, TalkingChanged
from app.mrfp.builtin.sip_side import SipSide, conference_for
from app.net.endpoint import SipEndpoint
from app.sip.address import Address
from app.sip.message import Request, Response, parse_datagram
from app.sip.sdp import SessionDescription
from app.sip.transaction import Timers

WAIT = 10.0
UAC = Address("UDP", "127.0.0.1", 5070)

OFFER = (
    "v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[Request | Response, Address]] = []
        self.changed = asyncio.Event()

    def send(self, message: Request | Response, dest: Address) -> None:
        # Through bytes and back, as a real transport would put it on the wire.
        self.sent.append((parse_datagram(bytes(message)), dest))
        self.changed.set()

    def responses(self, method: str | None = None) -> list[Response]:
        return [
            m
            for m, _ in self.sent
            if isinstance(m, Response) and (method is None or m.cseq.method == method)
        ]

    def requests(self, method: str) -> list[tuple[Request, Address]]:
        return [(m, d) for m, d in self.sent if isinstance(m, Request) and m.method == method]

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), WAIT)


class FakeEngine:
    def __init__(self) -> None:
        self.members: dict[str, str] = {}
        self.remote: dict[str, tuple[str, int, str, int, int | None]] = {}
        self.muted: dict[str, bool] = {}
        self.deaf: dict[str, bool] = {}
        self.hold: dict[str, str] = {}
        self.removed: list[str] = []
        self._port = 20000

    async def add_member(self, conference: str, member_id: str) -> int:
        self.members[member_id] = conference
        self._port += 2
        return self._port

    async def remove_member(self, member_id: str) -> None:
        self.members.pop(member_id)
        self.removed.append(member_id)

    def set_remote(
        self,
        member_id: str,
        host: str,
        port: int,
        codec: str,
        payload_type: int,
        telephone_event_pt: int | None,
        rtcp_port: int | None = None,
    ) -> None:
        self.remote[member_id] = (host, port, codec, payload_type, telephone_event_pt)

    def set_muted(self, member_id: str, muted: bool) -> None:
        self.muted[member_id] = muted

    def set_deaf(self, member_id: str, deaf: bool) -> None:
        self.deaf[member_id] = deaf

    def set_hold(self, member_id: str, direction: str) -> None:
        self.hold[member_id] = direction


@dataclass
class Rig:
    transport: FakeTransport
    engine: FakeEngine
    registry: ConferenceRegistry
    side: SipSide
    endpoint: SipEndpoint
    events: list[MaintenanceEvent]

    def receive(self, text: str, source: Address = UAC) -> None:
        self.endpoint.receive(parse_datagram(text.encode()), source)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]


@contextlib.asynccontextmanager
async def make_rig(*, pre_answer: bool) -> AsyncIterator[Rig]:
    transport = FakeTransport()
    timers = Timers(t1=0.05, t2=0.2, t4=0.2)
    endpoint = SipEndpoint(transport, "127.0.0.1", 5080, timers=timers)
    engine = FakeEngine()
    registry = ConferenceRegistry(EventContext(hostname="test"), engine)
    events: list[MaintenanceEvent] = []
    registry.listeners.append(events.append)
    side = SipSide(
        endpoint, registry, engine, rtp_host="127.0.0.1", timers=timers, pre_answer=pre_answer
    )
    try:
        yield Rig(transport, engine, registry, side, endpoint, events)
    finally:
        await side.close(timeout=0.5)
        endpoint.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    """As the fixtures' FreeSWITCH was recorded: its dialplan ran pre_answer, then answer."""
    async with make_rig(pre_answer=True) as made:
        yield made


@pytest.fixture
async def answer_rig() -> AsyncIterator[Rig]:
    """As freeswitch/'s dialplan (answer only), the built-in processor's default."""
    async with make_rig(pre_answer=False) as made:
        yield made


def invite(
    *,
    call_id: str = "call-1@127.0.0.1",
    uri_user: str = "mrfp",
    conference: str | None = "room1",
    supported: str | None = None,
    body: str | None = OFFER,
    branch: str = "z9hG4bK-inv1",
    extra: str = "",
) -> str:
    lines = [
        f"INVITE sip:{uri_user}@127.0.0.1:5080 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport",
        "Max-Forwards: 70",
        'From: "uac-a" <sip:uac-a@127.0.0.1:5070>;tag=ftag1',
        f"To: <sip:{uri_user}@127.0.0.1:5080>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Contact: <sip:uac-a@127.0.0.1:5070;transport=udp>",
        "X-Participant: p-1",
    ]
    if conference is not None:
        lines.append(f"X-Conference: {conference}")
    if supported is not None:
        lines.append(f"Supported: {supported}")
    if extra:
        lines.append(extra)
    payload = body or ""
    if body is not None:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(payload.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + payload


def in_dialog(
    method: str,
    to_tag: str,
    cseq: int,
    *,
    call_id: str = "call-1@127.0.0.1",
    branch: str,
    body: str = "",
    extra: str = "",
    cseq_method: str | None = None,
) -> str:
    lines = [
        f"{method} sip:mrfp@127.0.0.1:5080;transport=udp SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport",
        "Max-Forwards: 70",
        'From: "uac-a" <sip:uac-a@127.0.0.1:5070>;tag=ftag1',
        f"To: <sip:mrfp@127.0.0.1:5080>;tag={to_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:uac-a@127.0.0.1:5070;transport=udp>",
    ]
    if extra:
        lines.append(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def statuses(rig: Rig, method: str = "INVITE") -> list[int]:
    return [r.status for r in rig.transport.responses(method)]


async def test_100rel_call_reliable_183_then_prack_then_200_without_sdp(rig: Rig) -> None:
    rig.receive(invite(supported="100rel, timer, replaces"))
    await rig.transport.wait_for(lambda: 183 in statuses(rig))
    trying, progress = rig.transport.responses("INVITE")[:2]
    assert trying.status == 100
    assert progress.get("Require") == "100rel" and progress.rseq is not None
    assert "rport=5070" in (progress.get("Via") or "")
    answer = SessionDescription.parse(progress.body)
    port = answer.media[0].port
    assert answer.media[0].formats == ["0", "101"]
    assert answer.media[0].ptime == 20
    tag = progress.to.tag
    assert tag is not None
    # Before the PRACK, no 200 and no member (the leg is not answered).
    assert 200 not in statuses(rig) and rig.actions() == []
    key = next(iter(rig.engine.members))
    assert rig.engine.remote[key] == ("127.0.0.1", 30000, "PCMU", 0, 101)
    assert rig.engine.muted[key] is True  # not in the mix before it joins
    rig.receive(
        in_dialog("PRACK", tag, 2, branch="z9hG4bK-pr1", extra=f"RAck: {progress.rseq} 1 INVITE")
    )
    await rig.transport.wait_for(lambda: 200 in statuses(rig))
    assert statuses(rig, "PRACK") == [200]
    ok = next(r for r in rig.transport.responses("INVITE") if r.status == 200)
    assert ok.body == b""  # the answer went in the reliable 183
    assert rig.actions() == ["conference-create", "add-member", "floor-change"]
    add = rig.events[1].headers
    assert ("variable_sip_call_id", "call-1@127.0.0.1") in add
    assert ("variable_sip_h_X-Participant", "p-1") in add
    assert ("variable_local_media_port", str(port)) in add
    assert rig.engine.muted[key] is False
    rig.receive(in_dialog("ACK", tag, 1, branch="z9hG4bK-ack1"))
    rig.receive(in_dialog("BYE", tag, 3, branch="z9hG4bK-bye1"))
    await rig.transport.wait_for(lambda: statuses(rig, "BYE") == [200])
    await rig.transport.wait_for(lambda: rig.engine.removed == [key])
    assert rig.actions()[-3:] == ["floor-change", "del-member", "conference-destroy"]
    delete = dict(rig.events[-2].headers)
    assert delete["Answer-State"] == "hangup" and delete["Hangup-Cause"] == "NORMAL_CLEARING"


@pytest.mark.parametrize("supported", [None, "100rel"])
async def test_without_pre_answer_the_200_carries_the_answer(
    answer_rig: Rig, supported: str | None
) -> None:
    rig = answer_rig
    rig.receive(invite(supported=supported))
    await rig.transport.wait_for(lambda: 200 in statuses(rig))
    assert statuses(rig) == [100, 200]  # no 183, reliable or not
    ok = rig.transport.responses("INVITE")[-1]
    assert ok.rseq is None and ok.get("Require") is None
    answer = ok.body.decode()
    assert "m=audio " in answer and "a=rtpmap:0 PCMU/8000" in answer
    tag = ok.to.tag
    assert tag is not None
    rig.receive(in_dialog("ACK", tag, 1, branch="z9hG4bK-ack2"))
    assert rig.actions() == ["conference-create", "add-member", "floor-change"]
    assert list(rig.engine.muted.values()) == [False]  # in the mix once answered
    await asyncio.sleep(0.15)  # past 2*T1: an ACKed 200 is not sent again
    assert statuses(rig) == [100, 200]


async def test_no_100rel_183_and_200_with_sdp_then_kick_sends_bye(rig: Rig) -> None:
    rig.receive(invite(uri_user="conf-room1", conference=None))
    await rig.transport.wait_for(lambda: 200 in statuses(rig))
    assert statuses(rig) == [100, 183, 200]
    progress, ok = rig.transport.responses("INVITE")[1:]
    assert progress.get("Require") is None and progress.rseq is None
    assert ok.body == progress.body and ok.body
    assert "conf-room1@127.0.0.1:5080" in (ok.get("Contact") or "")
    tag = ok.to.tag
    assert tag is not None
    rig.receive(in_dialog("ACK", tag, 1, branch="z9hG4bK-ack2"))
    member = rig.registry.conference("room1").members[0]
    rig.registry.kick("room1", str(member.member_id))
    await rig.transport.wait_for(lambda: bool(rig.transport.requests("BYE")))
    bye, dest = rig.transport.requests("BYE")[0]
    assert bye.get("Reason") == 'Q.850;cause=16;text="NORMAL_CLEARING"'
    assert bye.from_.tag == tag and bye.to.tag == "ftag1"
    assert bye.uri_text.startswith("sip:uac-a@127.0.0.1:5070")
    assert (dest.host, dest.port) == ("127.0.0.1", 5070)
    assert rig.actions()[-4:] == ["kick-member", "floor-change", "del-member", "conference-destroy"]
    assert dict(rig.events[-2].headers)["Answer-State"] == "answered"


async def test_kick_before_the_ack_sends_bye_only_after_it(rig: Rig) -> None:
    # RFC 3261 §15: the callee must not send BYE before the ACK of its 2xx.
    rig.receive(invite(uri_user="conf-room1", conference=None, call_id="call-k@127.0.0.1"))
    await rig.transport.wait_for(lambda: 200 in statuses(rig))
    ok = next(r for r in rig.transport.responses("INVITE") if r.status == 200)
    tag = ok.to.tag
    assert tag is not None
    member = rig.registry.conference("room1").members[0]
    rig.registry.kick("room1", str(member.member_id))
    await rig.transport.wait_for(lambda: "del-member" in rig.actions())
    await asyncio.sleep(0.05)
    assert not rig.transport.requests("BYE")
    rig.receive(in_dialog("ACK", tag, 1, branch="z9hG4bK-ackk", call_id="call-k@127.0.0.1"))
    await rig.transport.wait_for(lambda: bool(rig.transport.requests("BYE")))
    assert len(rig.transport.requests("BYE")) == 1


async def test_late_offer_200_carries_offer_and_ack_the_answer(rig: Rig) -> None:
    rig.receive(invite(body=None))
    await rig.transport.wait_for(lambda: 200 in statuses(rig))
    assert statuses(rig) == [100, 200]
    ok = rig.transport.responses("INVITE")[-1]
    offer = SessionDescription.parse(ok.body)
    assert offer.media[0].formats == ["0", "8", "101"]
    key = next(iter(rig.engine.members))
    assert key not in rig.engine.remote
    answer = (
        OFFER.replace("30000", "30010")
        .replace("m=audio 30010 RTP/AVP 0 101", "m=audio 30010 RTP/AVP 8 101")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000")
    )
    tag = ok.to.tag
    assert tag is not None
    rig.receive(in_dialog("ACK", tag, 1, branch="z9hG4bK-ack3", body=answer))
    assert rig.engine.remote[key] == ("127.0.0.1", 30010, "PCMA", 8, 101)
    assert rig.registry.conference("room1").members[0].leg.codec == "PCMA"


async def test_no_route_404_and_no_codec_488(rig: Rig) -> None:
    rig.receive(invite(uri_user="nobody", conference=None))
    await rig.transport.wait_for(lambda: 404 in statuses(rig))
    not_found = rig.transport.responses("INVITE")[-1]
    assert not_found.get("Reason") == 'Q.850;cause=1;text="UNALLOCATED_NUMBER"'
    assert not_found.to.tag is not None
    g729 = OFFER.replace("RTP/AVP 0 101", "RTP/AVP 18 101").replace("0 PCMU/8000", "18 G729/8000")
    rig.receive(invite(call_id="call-2@127.0.0.1", branch="z9hG4bK-inv2", body=g729))
    await rig.transport.wait_for(lambda: 488 in statuses(rig))
    assert rig.engine.members == {} and rig.actions() == []


async def test_cancel_while_waiting_for_prack_gives_487(rig: Rig) -> None:
    rig.receive(invite(supported="100rel"))
    await rig.transport.wait_for(lambda: 183 in statuses(rig))
    cancel = invite(supported="100rel").replace("INVITE sip:", "CANCEL sip:", 1)
    cancel = cancel.replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL").split("Content-Type")[0]
    cancel = cancel.rstrip("\r\n") + "\r\nContent-Length: 0\r\n\r\n"
    rig.receive(cancel)
    await rig.transport.wait_for(lambda: 487 in statuses(rig))
    assert statuses(rig, "CANCEL") == [200]
    await rig.transport.wait_for(lambda: len(rig.engine.removed) == 1)
    assert rig.actions() == [] and rig.side.calls == {}


async def test_reinvite_and_update_renegotiate(rig: Rig) -> None:
    rig.receive(invite())
    await rig.transport.wait_for(lambda: 200 in statuses(rig))
    ok = rig.transport.responses("INVITE")[-1]
    tag = ok.to.tag
    assert tag is not None
    first = SessionDescription.parse(ok.body)
    rig.receive(in_dialog("ACK", tag, 1, branch="z9hG4bK-ack4"))
    key = next(iter(rig.engine.members))
    hold = OFFER.replace("a=sendrecv", "a=sendonly").replace("o=uac 1 1", "o=uac 1 2")
    rig.receive(in_dialog("INVITE", tag, 2, branch="z9hG4bK-re1", body=hold))
    await rig.transport.wait_for(lambda: statuses(rig).count(200) == 2)
    re_ok = rig.transport.responses("INVITE")[-1]
    second = SessionDescription.parse(re_ok.body)
    assert second.media[0].direction is not None
    assert second.media[0].direction.value == "recvonly"
    assert second.origin.session_version == first.origin.session_version + 1
    assert second.media[0].port == first.media[0].port
    assert rig.engine.hold[key] == "sendonly"
    assert rig.registry.conference("room1").members[0].hold is True
    rig.receive(in_dialog("ACK", tag, 2, branch="z9hG4bK-ack5"))
    moved = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.2").replace("1 1 IN", "1 3 IN")
    rig.receive(in_dialog("UPDATE", tag, 3, branch="z9hG4bK-up1", body=moved))
    await rig.transport.wait_for(lambda: statuses(rig, "UPDATE") == [200])
    assert rig.engine.remote[key][0] == "127.0.0.2"
    assert rig.engine.hold[key] == "sendrecv"


async def test_options_and_unknown_dialog(rig: Rig) -> None:
    options = invite(body=None).replace("INVITE sip:", "OPTIONS sip:", 1)
    rig.receive(options.replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS"))
    await rig.transport.wait_for(lambda: statuses(rig, "OPTIONS") == [200])
    assert "INVITE" in (rig.transport.responses("OPTIONS")[0].get("Allow") or "")
    rig.receive(in_dialog("BYE", "nosuchtag", 2, call_id="gone@x", branch="z9hG4bK-b9"))
    await rig.transport.wait_for(lambda: statuses(rig, "BYE") == [481])


async def test_2xx_retransmitted_until_ack(rig: Rig) -> None:
    rig.receive(invite())
    await rig.transport.wait_for(lambda: statuses(rig).count(200) >= 3)
    tag = rig.transport.responses("INVITE")[-1].to.tag
    assert tag is not None
    rig.receive(in_dialog("ACK", tag, 1, branch="z9hG4bK-ack6"))
    count = statuses(rig).count(200)
    await asyncio.sleep(0.4)  # several T1 periods of the test timers: nothing more comes
    assert statuses(rig).count(200) == count


async def test_media_events_talking_and_timeout(rig: Rig) -> None:
    rig.receive(invite())
    await rig.transport.wait_for(lambda: 200 in statuses(rig))
    tag = rig.transport.responses("INVITE")[-1].to.tag
    assert tag is not None
    rig.receive(in_dialog("ACK", tag, 1, branch="z9hG4bK-ack7"))
    key = next(iter(rig.engine.members))
    rig.side.on_media_event(TalkingChanged("room1", key, True))
    assert rig.actions()[-1] == "start-talking"
    rig.side.on_media_event(MediaTimeout("room1", key))
    await rig.transport.wait_for(lambda: bool(rig.transport.requests("BYE")))
    bye = rig.transport.requests("BYE")[0][0]
    assert bye.get("Reason") == 'Q.850;cause=604;text="MEDIA_TIMEOUT"'
    assert rig.actions()[-1] == "conference-destroy"


def test_conference_from_header_or_uri() -> None:
    req = parse_datagram(invite(conference="abc").encode())
    assert isinstance(req, Request)
    assert conference_for(req) == "abc"
    req = parse_datagram(invite(uri_user="conf-xyz", conference=None).encode())
    assert isinstance(req, Request)
    assert conference_for(req) == "xyz"
    req = parse_datagram(invite(uri_user="conf-", conference=None).encode())
    assert isinstance(req, Request)
    assert conference_for(req) is None


async def test_close_sends_bye_on_open_legs(rig: Rig) -> None:
    rig.receive(invite())
    await rig.transport.wait_for(lambda: 200 in statuses(rig))
    tag = rig.transport.responses("INVITE")[-1].to.tag
    assert tag is not None
    rig.receive(in_dialog("ACK", tag, 1, branch="z9hG4bK-ack8"))
    closing = asyncio.get_running_loop().create_task(rig.side.close(timeout=6 * WAIT))
    await rig.transport.wait_for(lambda: bool(rig.transport.requests("BYE")))
    bye = rig.transport.requests("BYE")[0][0]
    # The peer answers the BYE: close() returns without waiting out its timeout.
    answer = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {bye.get('Via')}\r\nFrom: {bye.get('From')}\r\nTo: {bye.get('To')}\r\n"
        f"Call-ID: {bye.call_id}\r\nCSeq: {bye.get('CSeq')}\r\nContent-Length: 0\r\n\r\n"
    )
    rig.receive(answer)
    await asyncio.wait_for(closing, WAIT)
    assert rig.side.calls == {} and rig.actions()[-1] == "conference-destroy"
    assert rig.engine.members == {}
