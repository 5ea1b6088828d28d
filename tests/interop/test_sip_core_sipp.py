"""The SIP core against SIPp, a peer nobody here wrote.

- SIPp as UAC against the test UAS of `tests.support.core_peer` (transactions, dialogs, 100rel
  with PRACK, UPDATE, the 2xx retransmitted until ACK): INVITE with 100rel -> 183 reliable ->
  PRACK -> 200 PRACK -> UPDATE with SDP -> 200 -> 200 INVITE -> ACK -> BYE -> 200;
- SIPp as UAC cancelling its INVITE (CANCEL matching, 487, the ACK for it absorbed);
- SIPp as UAS against the core's UAC: INVITE -> 180/200 -> ACK -> BYE;
- both over UDP and over TCP (one SIPp connection for all calls, `-t t1`);
- both again with SIPp losing 10% of the messages it sends and receives (`-lost 10`) over
  several calls, so that only retransmissions (the core's and SIPp's) carry the calls.

Success is SIPp's exit code (0 only when every call succeeded), its statistics file
(successful and failed calls), and the core's own counters.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.sip.address import Address
from tests.support.core_peer import CorePeer
from tests.support.sipp import (
    SippProcess,
    SippResult,
    header_values,
    sipp_available,
    start_sipp,
)

SCENARIOS = Path(__file__).parent / "scenarios" / "core"
HOST = "127.0.0.1"
SIPP_TRANSPORT = {"UDP": "u1", "TCP": "t1"}

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
]


@pytest.fixture
async def peer() -> AsyncIterator[CorePeer]:
    core = CorePeer(HOST, 0)
    await core.start()
    try:
        yield core
    finally:
        await core.stop()


def stat_args(log_dir: Path) -> list[str]:
    # -trace_stat writes SIPp's counters as CSV (a line every -fd seconds and one at the end).
    return ["-trace_stat", "-stf", str(log_dir / "stats.csv"), "-fd", "1"]


def sipp_stats(log_dir: Path) -> dict[str, str]:
    """The last line of SIPp's statistics file, by column name."""
    with (log_dir / "stats.csv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    assert rows, "SIPp wrote no statistics"
    return {k: v for k, v in rows[-1].items() if k}


async def wait_sipp(process: SippProcess) -> SippResult:
    """Wait for SIPp without blocking the event loop the core runs on."""
    try:
        return await asyncio.to_thread(process.wait)
    finally:
        process.stop()


async def until(condition: object, timeout: float = 15.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.05)


def listening(port: int, transport: str) -> bool:
    """Whether a socket is bound to `port` (a TCP one listening), from /proc/net; looking
    there instead of probing leaves SIPp's sockets alone."""
    table, state = ("tcp", "0A") if transport == "TCP" else ("udp", "07")
    try:
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
    except OSError:
        return True  # no /proc: rely on the core's retransmissions and generous timeouts
    suffix = f":{port:04X}"
    return any(f.split()[1].endswith(suffix) and f.split()[3] == state for f in lines)


async def until_listening(port: int, transport: str) -> None:
    """SIPp as UAS must be listening before the core calls it: over TCP a refused connection
    fails the INVITE at once (no retransmissions on a reliable transport)."""
    await until(lambda: listening(port, transport), timeout=20.0)
    assert listening(port, transport), f"SIPp is not listening on {transport} {port}"


# With SIPp's -lost 10, an exchange (a message and what answers it) fails ~19% of the time.
# SIPp gives an INVITE transaction up after 5 retransmissions (6 tries: one call in ~20,000
# fails at random, one run of 20 calls in ~1,000); 8 make that ~1 in 3,000,000.
LOSSY_RETRANS = ["-max_invite_retrans", "8"]


# -- SIPp as UAC, the core as UAS -----------------------------------------------------------


async def sipp_uac_against(
    peer: CorePeer,
    tmp_path: Path,
    transport: str,
    *,
    calls: int,
    lost: int = 0,
    rate: int = 10,
    timeout: float = 40.0,
) -> SippResult:
    log_dir = tmp_path / f"uac-{transport.lower()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    extra = [*stat_args(log_dir), "-r", str(rate), "-l", str(calls), "-d", "200"]
    if lost:
        extra += ["-lost", str(lost), *LOSSY_RETRANS]
    process = start_sipp(
        SCENARIOS / "uac_100rel_update.xml",
        log_dir,
        remote=f"{HOST}:{peer.port}",
        transport=SIPP_TRANSPORT[transport],
        calls=calls,
        keys={"svc": "core"},
        timeout=timeout,
        extra=extra,
    )
    return await wait_sipp(process)


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_sipp_uac_100rel_prack_update(peer: CorePeer, tmp_path: Path, transport: str) -> None:
    result = await sipp_uac_against(peer, tmp_path, transport, calls=1)
    assert result.ok, result.report()
    stats = sipp_stats(result.log_dir)
    assert stats["SuccessfulCall(C)"] == "1" and stats["FailedCall(C)"] == "0"
    received = result.received()
    r183 = next(m for m in received if m.startswith("SIP/2.0 183"))
    assert header_values(r183, "Require") == ["100rel"]
    (rseq,) = header_values(r183, "RSeq")
    assert 1 <= int(rseq) < 2**31
    assert "m=audio" in r183
    # SIPp's PRACK named that RSeq, and the core accepted it (not 481).
    prack = next(m for m in result.sent() if m.startswith("PRACK "))
    assert header_values(prack, "RAck") == [f"{rseq} 1 INVITE"]
    finals = [m for m in received if m.startswith("SIP/2.0 200")]
    cseqs = [header_values(m, "CSeq")[0] for m in finals]
    assert cseqs[:4] == ["2 PRACK", "3 UPDATE", "1 INVITE", "4 BYE"]
    ok_update = finals[1]
    assert header_values(ok_update, "Content-Type") == ["application/sdp"]
    # Every response of the dialog carries the same To tag (RFC 3261 §12.1.1).
    tags = {header_values(m, "To")[0].split("tag=")[1] for m in [r183, *finals]}
    assert len(tags) == 1
    # The core saw the whole call: confirmed by the ACK, ended by the BYE, nothing left over.
    await until(lambda: peer.stats["calls_completed"] == 1)
    assert peer.stats["calls_confirmed"] == 1 and peer.stats["calls_completed"] == 1
    assert peer.stats["rx_PRACK"] == 1 and peer.stats["rx_UPDATE"] == 1
    assert len(peer.dialogs) == 0 and len(peer.retrans) == 0


@pytest.mark.slow
async def test_sipp_uac_100rel_with_10_percent_loss(peer: CorePeer, tmp_path: Path) -> None:
    calls = 20
    result = await sipp_uac_against(
        peer, tmp_path, "UDP", calls=calls, lost=10, rate=10, timeout=45
    )
    stats = sipp_stats(result.log_dir)
    assert result.ok, f"{stats}\n{result.report()}"
    assert stats["SuccessfulCall(C)"] == str(calls) and stats["FailedCall(C)"] == "0"
    # SIPp really lost messages, and retransmissions carried the calls: SIPp's own
    # retransmissions and the core's (reliable 183, 2xx, server transactions' responses).
    assert int(stats["Retransmissions(C)"]) > 0
    trace = result.trace
    assert "lost" in trace.lower()
    await until(lambda: peer.stats["calls_completed"] == calls)
    assert peer.stats["calls_completed"] == calls
    assert len(peer.dialogs) == 0


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_sipp_uac_cancels(peer: CorePeer, tmp_path: Path, transport: str) -> None:
    log_dir = tmp_path / f"cancel-{transport.lower()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    process = start_sipp(
        SCENARIOS / "uac_cancel.xml", log_dir, remote=f"{HOST}:{peer.port}",
        transport=SIPP_TRANSPORT[transport], keys={"svc": "core"}, timeout=30,
        extra=stat_args(log_dir),
    )  # fmt: skip
    result = await wait_sipp(process)
    assert result.ok, result.report()
    # §9.2: the CANCEL found its INVITE: 200 to the CANCEL, then 487 to the INVITE exactly
    # once (the ACK with the INVITE's branch matched the server transaction, so no Timer G).
    # On a loaded machine SIPp may resend its INVITE, get the 183 again (§17.2.1) and resend
    # its CANCEL after it: each CANCEL it sent gets its 200 (§17.2.2).
    finals = [
        m.split("\n", 1)[0].strip() for m in result.received() if not m.startswith("SIP/2.0 1")
    ]
    cancels = [m for m in result.sent() if m.startswith("CANCEL ")]
    assert finals[:1] == ["SIP/2.0 200 OK"]
    assert finals.count("SIP/2.0 487 Request Terminated") == 1
    assert finals.count("SIP/2.0 200 OK") == len(cancels) and len(finals) == len(cancels) + 1
    assert peer.stats["calls_cancelled"] == 1
    # The ACK for the 487 stayed inside the transaction layer (§17.2.1): the TU never saw it.
    assert peer.stats["rx_ACK"] == 0
    assert len(peer.dialogs) == 0 and len(peer.retrans) == 0


# -- SIPp as UAS, the core as UAC -----------------------------------------------------------


async def core_calls_sipp(
    peer: CorePeer,
    tmp_path: Path,
    transport: str,
    *,
    calls: int,
    lost: int = 0,
    interval: float = 0.0,
    timeout: float = 40.0,
) -> tuple[SippResult, list[bool], list[str]]:
    log_dir = tmp_path / f"uas-{transport.lower()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    # -d: how long SIPp lingers after its 200 BYE, to answer a retransmitted BYE again. With
    # loss, a BYE exchange fails ~19% of the time (the BYE or its 200 lost); the core's Timer E
    # tries at 0, 0.5, 1.5, 3.5, 7.5, 11.5 and 15.5 s. Lingering 4 s left four tries, and one
    # call in ~800 had all four fail ('BYE timed out'); 16 s leaves seven (~1 in 100,000).
    extra = [*stat_args(log_dir), "-d", "16000" if lost else "100"]
    if lost:
        extra += ["-lost", str(lost), *LOSSY_RETRANS]
    process = start_sipp(
        SCENARIOS / "uas_answer.xml",
        log_dir,
        transport=SIPP_TRANSPORT[transport],
        calls=calls,
        timeout=timeout,
        extra=extra,
    )
    try:
        await until_listening(process.port, transport)
        dest = Address(transport, HOST, process.port)

        async def one(i: int) -> tuple[bool, str]:
            await asyncio.sleep(i * interval)
            outcome = await peer.call(
                f"sip:sipp@{HOST}:{process.port}", dest, hold=0.1, timeout=timeout
            )
            return outcome.ok, outcome.reason

        outcomes = await asyncio.gather(*(one(i) for i in range(calls)))
        result = await wait_sipp(process)
    finally:
        process.stop()
    return result, [ok for ok, _ in outcomes], [why for ok, why in outcomes if not ok]


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_core_uac_against_sipp_uas(peer: CorePeer, tmp_path: Path, transport: str) -> None:
    result, oks, reasons = await core_calls_sipp(peer, tmp_path, transport, calls=1)
    assert oks == [True], reasons
    assert result.ok, result.report()
    stats = sipp_stats(result.log_dir)
    assert stats["SuccessfulCall(C)"] == "1" and stats["FailedCall(C)"] == "0"
    # What SIPp received from the core: INVITE with SDP, ACK and BYE in the dialog SIPp made.
    invite = result.received_requests("INVITE")[0]
    assert header_values(invite, "Via")[0].startswith(f"SIP/2.0/{transport} ")
    assert "m=audio" in invite
    (ack,) = result.received_requests("ACK")
    (bye,) = result.received_requests("BYE")
    assert header_values(ack, "CSeq") == ["1 ACK"] and header_values(bye, "CSeq") == ["2 BYE"]
    to_tag = header_values(bye, "To")[0].split("tag=")[1]
    assert "SIPpTag01" in to_tag  # the dialog SIPp created (RFC 3261 §12.1.2)
    # The ACK for a 2xx is a new transaction: its own branch (RFC 3261 §17.1.1.3).
    branch = header_values(invite, "Via")[0].split("branch=")[1]
    assert branch not in header_values(ack, "Via")[0]
    assert peer.stats["calls_ok"] == 1


@pytest.mark.slow
async def test_core_uac_against_sipp_uas_with_10_percent_loss(
    peer: CorePeer, tmp_path: Path
) -> None:
    calls = 20
    result, oks, reasons = await core_calls_sipp(
        peer, tmp_path, "UDP", calls=calls, lost=10, interval=0.1, timeout=45
    )
    stats = sipp_stats(result.log_dir)
    assert all(oks), reasons
    assert result.ok, f"{stats}\n{result.report()}"
    assert stats["SuccessfulCall(C)"] == str(calls) and stats["FailedCall(C)"] == "0"
    assert "lost" in result.trace.lower()
    # The core's client transactions retransmitted what SIPp lost (Timer A/E), or re-ACKed a
    # retransmitted 2xx (§13.2.2.4): at least one of them must have happened at 10% loss.
    assert peer.transport.stats["sent"] > calls * 3
