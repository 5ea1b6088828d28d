"""Conference joins per second through the MRFC-AS, and the NOTIFY fan-out of one change.

1. SIPp against the MRFC-AS with the built-in media processor behind it: one conference is
   created and held open, then joiners arrive at fixed rates (`-r`), each with the whole VoLTE
   flow (INVITE with preconditions, reliable 183, PRACK, UPDATE with QoS met, 200, ACK), then
   BYE. Prints joins/s achieved, p50/p99 INVITE-to-200 latency (SIPp's `-trace_rtt`), and the
   MRFC-AS process's own CPU time per join (utime+stime from /proc/<pid>/stat before/after):
   every thread of the process (the event loop, which also reads the media processor's ESL
   events; the database writer, which writes changes behind in batches; the ESL client's hub,
   which sends commands), the join and the leave, divided by the joins completed. The media
   processor and SIPp are not counted.
2. Capacity of one core: the same, with the MRFC-AS (all its threads) on a CPU of its own and
   the media processor and SIPp on the others, at rates that fill that CPU. Prints the MRFC-AS's
   CPU per join + leave there, how busy its CPU was, and what that makes per core; then, at the
   lowest of those rates, joins apart from leaves: the CPU per join alone. On this kind
   of machine the figure depends on load: a process that sleeps between messages wakes with
   cold caches and runs the same code 2-3x slower (bench_focus_path.py --idle-gap shows it), so
   the figures at 50-200 joins/s in part 1 are higher than at saturation.
3. In-process, on the sans-IO focus: a conference of 100 participants with 100 subscriptions;
   the time from one join (or leave) until every subscriber's NOTIFY exists, each serialized.

    .venv/bin/python tests/bench/bench_joins.py [--rates 50,100,200] [--seconds 5]
        [--capacity-rates 400,500,600]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.focus.actions import Action, Respond, SendRequest
from app.focus.core import Focus, FocusConfig
from app.sip.message import Request, Response, parse_datagram
from tests.support.focus_ids import CountingIds
from tests.support.ports import free_port
from tests.support.sipp import SIPP_BIN, sipp_available, start_sipp
from tests.support.stack import Stack, start_stack, wait_for

SCENARIOS = Path(__file__).resolve().parents[1] / "interop" / "scenarios" / "focus"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ============================================================ 1. SIPp joins =================


def _ticks(stat: Path) -> float:
    """utime + stime (proc(5): fields 14 and 15, in clock ticks) in seconds."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> tuple[float, float]:
    """A process's CPU time: its main (event-loop) thread, and all its threads together
    (threads that ended still count in the process's own figure)."""
    return _ticks(Path(f"/proc/{pid}/task/{pid}/stat")), _ticks(Path(f"/proc/{pid}/stat"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def gc_pauses(stack: Stack) -> dict[str, float]:
    """The MRFC-AS's mrfc_gc_pause_seconds samples, summed over generations: `sum`, and the
    cumulative bucket counts by their `le` bound."""
    import httpx

    text = httpx.get(f"{stack.api}/metrics", timeout=10).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mrfc_gc_pause_seconds_sum"):
            key = "sum"
        elif line.startswith("mrfc_gc_pause_seconds_bucket"):
            key = line.split('le="', 1)[1].split('"', 1)[0]
        else:
            continue
        samples[key] = samples.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return samples


def gc_seconds(stack: Stack) -> float:
    """Seconds the MRFC-AS has spent in garbage collections."""
    return gc_pauses(stack).get("sum", 0.0)


def longest_pause(before: dict[str, float], after: dict[str, float]) -> str:
    """The bucket bound of the longest collection between two samplings."""
    total = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    if total <= 0:
        return "none"
    bounds = sorted((float(k), k) for k in after if k not in ("sum", "+Inf"))
    for value, key in bounds:
        if after[key] - before.get(key, 0.0) >= total:
            return f"<= {value * 1000:g} ms"
    return f"> {bounds[-1][0] * 1000:g} ms" if bounds else "?"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rtt_samples(work: Path) -> list[tuple[float, float]]:
    """SIPp's rtt CSV: date_ms;response_time_ms;rtd_no (one line per INVITE->200)."""
    samples: list[tuple[float, float]] = []
    for csv in work.glob("*_rtt.csv"):
        for line in csv.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2 and parts[0].replace(".", "", 1).isdigit():
                samples.append((float(parts[0]), float(parts[1])))
    return sorted(samples)


def run_rate(
    stack: Stack,
    conf_user: str,
    rate: int,
    seconds: float,
    work: Path,
    *,
    split: bool = False,
    core: bool = False,
) -> str:
    """Offer `rate` joins/s for `seconds`. Each joiner leaves 200 ms after joining; with
    `split`, only once every joiner has joined (the conference grows to rate*seconds), so
    that the CPU of the joins and of the leaves are measured apart. With `core` (the MRFC-AS
    alone on one CPU), also how busy that CPU was while the joiners ran, and the joins + leaves
    per second one core would carry at this CPU cost."""
    calls = max(1, int(rate * seconds))
    hold_ms = int((seconds + 4) * 1000) if split else 200
    work.mkdir(parents=True)
    args = [
        SIPP_BIN, f"127.0.0.1:{stack.sip_port}",
        "-sf", str(SCENARIOS / "uac_bench_join.xml"),
        "-i", "127.0.0.1", "-p", str(free_port()), "-t", "u1",
        "-m", str(calls), "-r", str(rate), "-l", str(calls if split else max(50, rate * 4)),
        "-d", str(hold_ms),
        "-nostdin", "-timeout", f"{int(seconds * 4 + 60)}s", "-timeout_error",
        "-trace_rtt", "-rtt_freq", "1",
        "-trace_err", "-error_file", str(work / "errors.log"),
        "-key", "to_user", conf_user, "-key", "to_domain", "mrfc1.home1.net",
        "-key", "ue_user", "joiner",
    ]  # fmt: skip
    pid = stack.mrfc.proc.pid
    cpu0, pauses0 = cpu_seconds(pid), gc_pauses(stack)
    gc0 = pauses0.get("sum", 0.0)
    mid: tuple[tuple[float, float], float] | None = None
    with (work / "stdout.log").open("wb") as out:
        started = time.monotonic()
        sipp = subprocess.Popen(args, cwd=work, stdout=out, stderr=subprocess.STDOUT)
        if split:
            # Every joiner in (or the joining phase long over): the leaves have not begun.
            deadline = time.monotonic() + seconds + 3
            while time.monotonic() < deadline and len(rtt_samples(work)) < calls:
                time.sleep(0.1)
            time.sleep(0.3)  # the last joiners' ESL add-member and database writes
            mid = cpu_seconds(pid), gc_seconds(stack)
        returncode = sipp.wait()
        busy = (cpu_seconds(pid)[1] - cpu0[1]) / (time.monotonic() - started)
    # The database writer writes behind (a batch every 50 ms): let it write the last changes
    # of this run, so their cost is counted here and not in the next rate's figure.
    time.sleep(0.5)
    cpu1, pauses1 = cpu_seconds(pid), gc_pauses(stack)
    gc1 = pauses1.get("sum", 0.0)
    tail = (
        f"; longest collection {longest_pause(pauses0, pauses1)}, "
        f"MRFC-AS memory {rss_mb(pid):.0f} MB"
    )
    samples = rtt_samples(work)
    if len(samples) < 2:
        return f"rate {rate}/s: no completed joins (sipp exit {returncode}), see {work}"
    span = (samples[-1][0] - samples[0][0]) / 1000.0
    achieved = (len(samples) - 1) / span if span > 0 else float("nan")
    latencies = [s[1] for s in samples]
    failed = calls - len(samples)
    joins = len(samples)

    def per_join(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return (b[1] - a[1]) * 1000.0 / joins, (b[0] - a[0]) * 1000.0 / joins

    head = (
        f"conference joins{' (split)' if split else ''}: {achieved:.0f}/s offered {rate}/s, "
        f"{joins} joins{f', {failed} failed' if failed else ''} "
        f"(p50 {statistics.median(latencies):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms), "
    )
    total, loop = per_join(cpu0, cpu1)
    gc_ms = (gc1 - gc0) * 1000.0 / joins
    if core and mid is None:
        tail = (
            f"; its CPU {busy * 100:.0f}% busy, so one core carries ~{1000 / total:.0f} joins + "
            f"leaves/s{tail}"
        )
    if mid is None:
        return head + (
            f"MRFC-AS CPU {total:.2f} ms per join (join + leave, all threads; event loop "
            f"{loop:.2f} ms, other threads (database writer) {total - loop:.2f} ms; garbage "
            f"collector {gc_ms:.2f} ms){tail}"
        )
    join_total, join_loop = per_join(cpu0, mid[0])
    leave_total, leave_loop = per_join(mid[0], cpu1)
    if core:
        tail = f"; so one core carries ~{1000 / join_total:.0f} joins/s, leaves apart{tail}"
    return head + (
        f"MRFC-AS CPU per join {join_total:.2f} ms (event loop {join_loop:.2f} ms, garbage "
        f"collector {(mid[1] - gc0) * 1000.0 / joins:.2f} ms), per leave {leave_total:.2f} ms "
        f"(event loop {leave_loop:.2f} ms, garbage collector "
        f"{(gc1 - mid[1]) * 1000.0 / joins:.2f} ms); conference grew to {joins + 1}{tail}"
    )


def pin_to(pid: int, cpus: set[int]) -> None:
    """Every thread of a process onto `cpus` (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


def bench_sipp(
    rates: list[int], seconds: float, split_rate: int = 0, *, own_core: bool = False
) -> None:
    """Part 1; with `own_core`, part 2: the MRFC-AS on the first CPU this process may use,
    everything else (this process, the media processor, SIPp) on the others."""
    if not sipp_available():
        print("sipp not installed: skipping the SIPp join benchmark")
        return
    allowed = os.sched_getaffinity(0)
    focus_cpu = min(allowed)
    if own_core:
        if len(allowed) < 2:
            print("one CPU only: skipping the capacity run (the MRFC-AS needs a CPU of its own)")
            return
        # Children inherit this: the media processor and SIPp stay off the MRFC-AS's CPU.
        os.sched_setaffinity(0, allowed - {focus_cpu})
    try:
        _bench_sipp(rates, seconds, split_rate, focus_cpu if own_core else None)
    finally:
        os.sched_setaffinity(0, allowed)


def _bench_sipp(rates: list[int], seconds: float, split_rate: int, focus_cpu: int | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-joins-"))
    most = max([*rates, split_rate])
    stack = start_stack(
        tmp / "stack",
        max_participants=min(10_000, most * (int(seconds) + 10) + 10),
        log_level="WARNING",
        # The SIPp UEs send no RTP: the media processor must not time the holder out.
        media_timeout=0,
        rtp_ports=max(min(1400, most * 2 + 100), 1100 if split_rate else 0),
    )
    holder = None
    try:
        wait_for(lambda: "ready" in stack.mrfc.output(), what="MRFC-AS ready")
        if focus_cpu is not None:
            pin_to(stack.mrfc.proc.pid, {focus_cpu})
        holder = start_sipp(
            SCENARIOS / "uac_join_wait_bye.xml",
            tmp / "holder",
            remote=f"127.0.0.1:{stack.sip_port}",
            keys={
                "to_user": "conf-factory1",
                "to_domain": "mrfc1.home1.net",
                "ue_user": "user1_public1",
            },
            timeout=3600,
        )
        wait_for(lambda: stack.query("select uri from conferences"), what="the conference")
        ((uri,),) = stack.query("select uri from conferences")
        conf_user = uri.removeprefix("sip:").split("@")[0]
        core = focus_cpu is not None
        for n, rate in enumerate(rates):
            work = tmp / f"run-{n}-rate-{rate}"
            print(run_rate(stack, conf_user, rate, seconds, work, core=core), flush=True)
        if split_rate:
            # The conference grows to split_rate * seconds / 2 participants, at most 500: more
            # would measure the built-in media processor's mixer, not the focus.
            work = tmp / f"split-{split_rate}"
            split_seconds = min(seconds / 2, 500 / split_rate)
            result = run_rate(
                stack, conf_user, split_rate, split_seconds, work, split=True, core=core
            )
            print(result, flush=True)
    finally:
        if holder is not None:
            holder.stop()
        stack.stop()
    shutil.rmtree(tmp, ignore_errors=True)


# ============================================================ 3. NOTIFY fan-out =============

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SDP = (
    "v=0\r\no=ue 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


def ue_request(
    method: str, uri: str, user: str, call_id: str, cseq: int, *, to_tag: str | None = None,
    headers: tuple[tuple[str, str], ...] = (), body: str = "",
) -> Request:  # fmt: skip
    lines = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-{call_id}-{cseq}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{user}@home1.net>;tag=ue-{call_id}"),
        ("To", f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:{user}@127.0.0.1:7000>"),
        *headers,
    ]
    if body:
        lines.append(("Content-Type", "application/sdp"))
    parsed = parse_datagram(bytes(Request(method, uri, lines, body.encode())))
    assert isinstance(parsed, Request)
    return parsed


def mrfp_answers(focus: Focus, actions: list[Action]) -> list[Action]:
    (send,) = [a for a in actions if isinstance(a, SendRequest) and a.request.method == "INVITE"]
    invite = send.request
    lines = [
        ("Via", invite.get("Via") or ""),
        ("From", invite.get("From") or ""),
        ("To", f"{invite.get('To')};tag=mrfp"),
        ("Call-ID", invite.call_id),
        ("CSeq", str(invite.cseq)),
        ("Contact", "<sip:mrfp@127.0.0.1:5080>"),
        ("Content-Type", "application/sdp"),
    ]
    return focus.on_response(Response(200, None, lines, SDP.encode()), send.context, 0.0, NOW)


def join(focus: Focus, uri: str, user: str, call_id: str) -> tuple[Request, str]:
    """INVITE without 100rel, the MRFP's answer; returns the ACK to send and the focus's tag."""
    first = focus.on_request(
        ue_request("INVITE", uri, user, call_id, 1, body=SDP), object(), 0, NOW
    )
    actions = first + mrfp_answers(focus, first)
    tag = next(a.response.to.tag for a in actions if isinstance(a, Respond))
    assert tag is not None
    return ue_request("ACK", uri, user, call_id, 1, to_tag=tag), tag


def notify_bytes(actions: list[Action]) -> list[bytes]:
    return [
        bytes(a.request)
        for a in actions
        if isinstance(a, SendRequest) and a.request.method == "NOTIFY"
    ]


def bench_fanout(n: int = 100, rounds: int = 50) -> None:
    config = FocusConfig(
        factory_uris=["sip:conf-factory1@mrfc1.home1.net"],
        conference_domain="mrfc1.home1.net",
        local_contact="sip:mrfc@127.0.0.1:5070",
        mrfp_uri={"mrfp1": "sip:127.0.0.1:5080"},
        participant_limit=n + rounds + 10,
    )
    focus = Focus(config, CountingIds())
    ack, _ = join(focus, "sip:conf-factory1@mrfc1.home1.net", "user0", "j0")
    focus.on_request(ack, None, 0.0, NOW)
    (conf,) = focus.conferences.values()
    for i in range(1, n):
        ack, _ = join(focus, conf.uri, f"user{i}", f"j{i}")
        focus.on_request(ack, None, 0.0, NOW)
    for i in range(n):
        sub = ue_request(
            "SUBSCRIBE", conf.uri, f"watcher{i}", f"s{i}", 1,
            headers=(("Event", "conference"), ("Expires", "3600")),
        )  # fmt: skip
        focus.on_request(sub, object(), 0.0, NOW)
    joins: list[float] = []
    leaves: list[float] = []
    sizes: list[int] = []
    for r in range(rounds):
        ack, tag = join(focus, conf.uri, f"extra{r}", f"x{r}")
        start = time.perf_counter()
        wire = notify_bytes(focus.on_request(ack, None, 1.0, NOW))
        joins.append(time.perf_counter() - start)
        assert len(wire) == n, len(wire)
        sizes.append(sum(len(b) for b in wire))
        bye = ue_request("BYE", conf.uri, f"extra{r}", f"x{r}", 2, to_tag=tag)
        start = time.perf_counter()
        wire = notify_bytes(focus.on_request(bye, object(), 2.0, NOW))
        leaves.append(time.perf_counter() - start)
        assert len(wire) == n, len(wire)
    print(
        f"partial NOTIFY to all {n} subscribers of a {n}-participant conference: "
        f"join {statistics.median(joins) * 1000:.2f} ms, "
        f"leave {statistics.median(leaves) * 1000:.2f} ms (median of {rounds}, NOTIFYs "
        f"serialized), {statistics.median(sizes) / 1000:.1f} kB on the wire per change"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="50,100,200", help="offered joins/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of load per rate")
    parser.add_argument(
        "--split-rate",
        type=int,
        default=200,
        help="offered joins/s of a last run whose joiners all join before any leaves "
        "(CPU of joins and of leaves apart); 0 to skip",
    )
    parser.add_argument(
        "--capacity-rates",
        default="500,700",
        help="offered joins/s of the runs with the MRFC-AS on a CPU of its own; '' to skip",
    )
    parser.add_argument("--no-sipp", action="store_true", help="only the in-process figure")
    args = parser.parse_args()
    bench_fanout()
    if not args.no_sipp:
        bench_sipp([int(r) for r in args.rates.split(",")], args.seconds, args.split_rate)
        if args.capacity_rates:
            print("-- the MRFC-AS on a CPU of its own", flush=True)
            capacity = [int(r) for r in args.capacity_rates.split(",")]
            # Then joins apart from leaves at the lowest of those rates: the CPU per join
            # there is the figure the goal (1 ms per join) is about.
            bench_sipp(capacity, args.seconds, min(capacity), own_core=True)


if __name__ == "__main__":
    main()
