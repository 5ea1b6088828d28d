"""CPU of the MRFC-AS's event-loop work per conference join and leave, in one process.

The product's own receive-to-send path, exactly as `app.main` wires it: SipTransport (parse,
validate) -> SipEndpoint (transactions) -> FocusService (metrics, change events) -> Focus ->
back out through the transaction layer and serialization. The sockets are replaced: inbound
datagrams are handed to the transport as its UDP protocol would, outbound ones are captured.
A scripted UE (the VoLTE flow of tests/interop/scenarios/focus/uac_bench_join.xml: INVITE
with preconditions, reliable 183, PRACK, UPDATE, 200, ACK; later BYE) and a scripted media
processor (100, then 200 with SDP to the focus's INVITE, the ESL add-member and
del-member events, 200 to BYE) answer what the focus sends. Only the time spent inside the
product's calls is counted (`time.thread_time`), not the scripting around them; what the
real process also spends (system calls, the event loop's own bookkeeping, timers, the
database writer and ESL reader threads) is measured end to end by bench_joins.py.

A second, shorter run sleeps before each message (`--idle-gap`, not counted): on a virtual
machine whose CPU halts when idle, the same code then costs 2-3x more (cold caches and branch
predictors), which is what the MRFC-AS pays per join at modest rates (bench_joins.py).

    .venv/bin/python tests/bench/bench_focus_path.py [--joins 2000] [--profile out.prof]
        [--idle-gap 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.focus.media import MemberAdded, MemberRemoved
from app.mrfp.pool import MrfpPool
from app.net.transport import SipTransport
from app.service.events import EventBus
from app.service.focus_service import FocusService, _tune_gc
from app.service.metrics import Metrics
from tests.support.focus_service import (
    FOCUS_HOST,
    FOCUS_PORT,
    CapturedUdp,
    focus_config,
    service_on_captured_udp,
)

FOCUS = (FOCUS_HOST, FOCUS_PORT)
MRFP = ("127.0.0.1", 5080)
UE_SDP = (
    "v=0\r\no=joiner 53655765 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
OFFER = UE_SDP + (
    "a=curr:qos local none\r\na=curr:qos remote none\r\n"
    "a=des:qos mandatory local sendrecv\r\na=des:qos optional remote sendrecv\r\n"
)
UPDATE = UE_SDP + (
    "a=curr:qos local sendrecv\r\na=curr:qos remote none\r\n"
    "a=des:qos mandatory local sendrecv\r\na=des:qos optional remote sendrecv\r\n"
)
MRFP_SDP = (
    "v=0\r\no=FreeSWITCH 1732000000 1732000001 IN IP4 127.0.0.1\r\ns=FreeSWITCH\r\n"
    "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    "a=rtcp:30001 IN IP4 127.0.0.1\r\n"
)


class ScriptedNode:
    """A media node that is connected and never called (no media commands in a join)."""

    name = "mrfp1"
    connected = True

    async def start(self, sink: Any) -> None:
        pass

    async def stop(self) -> None:
        pass


_PATTERNS: dict[str, re.Pattern[str]] = {}


def header(data: bytes, name: str) -> str:
    pattern = _PATTERNS.get(name)
    if pattern is None:
        pattern = _PATTERNS[name] = re.compile(rf"^{name}:\s*(.*?)\r$", re.M | re.I)
    match = pattern.search(data.decode())
    assert match, (name, data[:300])
    return match.group(1)


def start_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


def with_length(head: str, body: str = "") -> bytes:
    return (head + f"Content-Length: {len(body)}\r\n\r\n" + body).encode()


class Flow:
    def __init__(
        self, transport: SipTransport, udp: CapturedUdp, service: FocusService, idle_gap: float
    ) -> None:
        self.transport = transport
        self.udp = udp
        self.service = service
        self.idle_gap = idle_gap
        self.cpu = 0.0
        self.messages = 0

    def deliver(self, data: bytes, source: tuple[str, int]) -> list[bytes]:
        """One datagram into the product; returns what it sent (CPU counted)."""
        self.udp.sent.clear()
        if self.idle_gap:
            time.sleep(self.idle_gap)  # as between datagrams at a modest rate: the CPU idles
        start = time.thread_time()
        self.transport._datagram(data, source)
        self.cpu += time.thread_time() - start
        self.messages += 1
        return [d for d, _ in self.udp.sent]

    def media_event(self, event: Any) -> list[bytes]:
        self.udp.sent.clear()
        if self.idle_gap:
            time.sleep(self.idle_gap)
        start = time.thread_time()
        self.service._on_media_event(event)
        self.cpu += time.thread_time() - start
        return [d for d, _ in self.udp.sent]

    def mrfp_answer(self, invite: bytes, status: str, body: str = "") -> bytes:
        to = header(invite, "To")
        if ";tag=" not in to:  # the INVITE's answer; a BYE's To already carries the tag
            to += f";tag=fs{header(invite, 'Call-ID')[:8]}"
        head = (
            f"SIP/2.0 {status}\r\nVia: {header(invite, 'Via')}\r\n"
            f"From: {header(invite, 'From')}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {header(invite, 'Call-ID')}\r\nCSeq: {header(invite, 'CSeq')}\r\n"
            f"Contact: <sip:mod_sofia@{MRFP[0]}:{MRFP[1]}>\r\n"
        )
        if body:
            head += "Content-Type: application/sdp\r\n"
        return with_length(head, body)

    def join(self, n: int, request_uri: str, ue_port: int) -> dict[str, str]:
        """One joiner's flow up to the ESL add-member; returns what its leave needs."""
        ue = ("127.0.0.1", ue_port)
        call_id = f"bench-{n}@127.0.0.1"
        from_ = f"<sip:joiner{n}@home1.net>;tag=ue{n}"
        common = (
            f"Call-ID: {call_id}\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:joiner{n}@127.0.0.1:{ue_port}>\r\n"
        )
        via = f"Via: SIP/2.0/UDP 127.0.0.1:{ue_port};branch=z9hG4bK-{n}-"
        invite = (
            f"INVITE {request_uri} SIP/2.0\r\n{via}1\r\nFrom: {from_}\r\nTo: <{request_uri}>\r\n"
            f"{common}CSeq: 1 INVITE\r\nSupported: 100rel, timer\r\nRequire: precondition\r\n"
            "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, REFER, NOTIFY\r\n"
            "Content-Type: application/sdp\r\n"
        )
        out = self.deliver(with_length(invite, OFFER), ue)
        (mrfp_invite,) = [d for d in out if d.startswith(b"INVITE ")]
        self.deliver(self.mrfp_answer(mrfp_invite, "100 Trying"), MRFP)
        # freeswitch/'s dialplan (answer, no pre_answer) and the built-in processor: no 183.
        out = self.deliver(self.mrfp_answer(mrfp_invite, "200 OK", MRFP_SDP), MRFP)
        (early,) = [d for d in out if start_line(d).startswith("SIP/2.0 183")]
        to = header(early, "To")
        target = header(early, "Contact").split("<", 1)[-1].split(">", 1)[0]
        in_dialog = f"{via}%d\r\nFrom: {from_}\r\nTo: {to}\r\n{common}"
        prack = (
            f"PRACK {target} SIP/2.0\r\n{in_dialog % 2}CSeq: 2 PRACK\r\n"
            f"RAck: {header(early, 'RSeq')} 1 INVITE\r\n"
        )
        out = self.deliver(with_length(prack), ue)
        assert any(start_line(d).startswith("SIP/2.0 200") for d in out), out
        update = (
            f"UPDATE {target} SIP/2.0\r\n{in_dialog % 3}CSeq: 3 UPDATE\r\n"
            "Content-Type: application/sdp\r\n"
        )
        out = self.deliver(with_length(update, UPDATE), ue)
        assert any(d.startswith(b"SIP/2.0 200") and b"1 INVITE" in d for d in out), out
        self.deliver(with_length(f"ACK {target} SIP/2.0\r\n{in_dialog % 4}CSeq: 1 ACK\r\n"), ue)
        conference = header(mrfp_invite, "X-Conference")
        member = str(n + 2)
        mrfp_call_id = header(mrfp_invite, "Call-ID")
        self.media_event(MemberAdded("mrfp1", conference, member, mrfp_call_id))
        return {
            "target": target, "in_dialog": in_dialog, "conference": conference,
            "member": member, "mrfp_call_id": mrfp_call_id, "port": str(ue_port),
        }  # fmt: skip

    def leave(self, state: dict[str, str]) -> None:
        bye = f"BYE {state['target']} SIP/2.0\r\n{state['in_dialog'] % 5}CSeq: 4 BYE\r\n"
        out = self.deliver(with_length(bye), ("127.0.0.1", int(state["port"])))
        (mrfp_bye,) = [d for d in out if d.startswith(b"BYE ")]
        self.deliver(self.mrfp_answer(mrfp_bye, "200 OK"), MRFP)
        self.media_event(
            MemberRemoved("mrfp1", state["conference"], state["member"], state["mrfp_call_id"])
        )

    def join_and_leave(self, n: int, request_uri: str, ue_port: int) -> tuple[float, float]:
        """One joiner's whole flow; returns CPU seconds of the join and of the leave."""
        before = self.cpu
        state = self.join(n, request_uri, ue_port)
        joined = self.cpu
        self.leave(state)
        return joined - before, self.cpu - joined


async def run(joins: int, profile: str | None, idle_gap: float = 0.0) -> None:
    config = focus_config(
        local_contact=f"sip:mrfc@{FOCUS[0]}:{FOCUS[1]}",
        mrfp_uri={"mrfp1": f"sip:{MRFP[0]}:{MRFP[1]}"},
        participant_limit=joins + 10,
    )
    changes: list[Any] = []
    transport, udp, endpoint, service = service_on_captured_udp(
        config,
        MrfpPool([ScriptedNode()]),  # type: ignore[list-item]
        bus=EventBus(),
        metrics=Metrics(),
        persist=changes.append,
    )
    flow = Flow(transport, udp, service, 0.0)
    _tune_gc()  # as FocusService.start does
    # The holder: creates the conference and stays, as in bench_joins.py.
    first = flow.join(-1, "sip:conf-factory1@mrfc1.home1.net", 6999)["target"]
    warm = min(200, joins // 5)
    for n in range(warm):
        flow.join_and_leave(n, first, 7000 + n % 1000)
    # As GcFreezer does in the MRFC-AS: what lives on (the holder, the warm-up's transactions
    # still absorbing retransmissions) is kept out of the collector's walks, so a full
    # collection of it does not land by chance inside the measured calls.
    gc.collect()
    gc.freeze()
    profiler = cProfile.Profile() if profile else None
    join_cpu: list[float] = []
    leave_cpu: list[float] = []
    flow.messages = 0
    flow.idle_gap = idle_gap
    if profiler:
        profiler.enable()
    for n in range(warm, warm + joins):
        j, leave = flow.join_and_leave(n, first, 7000 + n % 1000)
        join_cpu.append(j)
        leave_cpu.append(leave)
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)  # type: ignore[arg-type]
    total = sum(join_cpu) + sum(leave_cpu)
    idle = f", the CPU idle {idle_gap * 1e3:g} ms before each message" if idle_gap else ""
    print(
        f"focus path in-process{idle}: {total / joins * 1e3:.3f} ms CPU per join+leave "
        f"(join {sum(join_cpu) / joins * 1e3:.3f} ms, leave {sum(leave_cpu) / joins * 1e3:.3f} ms; "
        f"median join {statistics.median(join_cpu) * 1e3:.3f} ms), "
        f"{flow.messages / joins:.0f} messages in per join+leave, {joins} joins"
    )
    endpoint.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=2000)
    parser.add_argument("--profile", help="write a cProfile of the measured part here")
    parser.add_argument(
        "--idle-gap",
        type=float,
        default=1.0,
        help="ms to sleep before each message of a second, shorter run (0: skip it): the same "
        "code after the CPU idled, as a process that is not busy runs it",
    )
    args = parser.parse_args()
    asyncio.run(run(args.joins, args.profile))
    if args.idle_gap:
        # The first run's leftovers collected now, not by chance inside a measured call.
        gc.unfreeze()
        gc.collect()
        asyncio.run(run(max(100, args.joins // 4), None, args.idle_gap / 1000))


if __name__ == "__main__":
    main()
