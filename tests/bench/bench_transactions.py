"""SIP transactions per second end to end against SIPp on loopback, one core for the SIP core.

The test UAS of `tests.support.core_peer` (SipTransport + SipEndpoint + dialogs + the 2xx
retransmitter: everything the product's SIP path runs on) serves in its own process; SIPp as
UAC calls it with INVITE -> 180 -> 200 -> ACK -> BYE -> 200 as fast as it answers, for about
`--seconds` seconds. A call is two transactions (INVITE and BYE) plus the ACK. The figures are
SIPp's successful calls over the elapsed time, and the UAS process's CPU time (user+system,
`getrusage`) per transaction, start-up excluded.

    .venv/bin/python tests/bench/bench_transactions.py [--seconds 5] [--transport udp|tcp]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.ports import free_port  # noqa: E402
from tests.support.sipp import SIPP_BIN, sipp_available  # noqa: E402

SCENARIO = ROOT / "tests" / "interop" / "scenarios" / "core" / "uac_invite_bye.xml"


def start_uas(port: int) -> tuple[subprocess.Popen[str], float]:
    """The core UAS in its own process; its CPU seconds once ready (imports excluded)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.core_peer", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        proc.kill()
        raise RuntimeError(f"core peer did not start: {line}")
    return proc, float(line[2].removeprefix("cpu="))


def udp_drops(port: int) -> int | None:
    """Datagrams the kernel dropped for the UDP socket bound to `port` (its receive buffer
    was full), from /proc/net/udp; None where that file is not available."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}"):
            return int(fields[-1])
    return None


def stop_uas(proc: subprocess.Popen[str]) -> dict[str, object]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    report: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return report


def run(seconds: float, transport: str, rate: int, limit: int) -> int:
    port = free_port()
    uas, cpu_ready = start_uas(port)
    calls = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        stats_file = Path(tmp) / "stats.csv"
        args = [
            SIPP_BIN, f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-i", "127.0.0.1",
            "-p", str(free_port()), "-t", "u1" if transport == "udp" else "t1",
            "-m", str(calls), "-r", str(rate), "-l", str(limit), "-key", "svc", "core",
            "-nostdin", "-timeout", f"{int(seconds * 4 + 30)}s", "-timeout_error",
            "-trace_stat", "-stf", str(stats_file), "-fd", "1",
            # SIPp's socket buffers default to 64 KiB: too small for bursts at this rate on a
            # busy machine (losses there would measure SIPp's retransmission timers).
            "-buff_size", str(4 * 1024 * 1024),
        ]  # fmt: skip
        started = time.monotonic()
        try:
            result = subprocess.run(args, cwd=tmp, capture_output=True, text=True, check=False)
        finally:
            wall = time.monotonic() - started
            drops = udp_drops(port) if transport == "udp" else 0
            report = stop_uas(uas)
        with stats_file.open(newline="") as f:
            last = list(csv.DictReader(f, delimiter=";"))[-1]
    ok = int(last["SuccessfulCall(C)"])
    failed = int(last["FailedCall(C)"])
    retrans = int(last["Retransmissions(C)"])
    cps = ok / wall
    stats = report["stats"]
    assert isinstance(stats, dict)
    cpu = float(report["cpu_user"]) + float(report["cpu_system"]) - cpu_ready  # type: ignore[arg-type]
    transactions = 2 * ok
    per_txn = max(cpu, 1e-9) / max(transactions, 1)
    print(
        f"transactions end to end vs SIPp: {cps:.0f} INVITE+BYE calls/s "
        f"({2 * cps:.0f} transactions/s), {transport.upper()}, one core "
        f"[{ok} calls in {wall:.1f} s, {failed} failed, {retrans} SIPp retransmissions, "
        f"{drops if drops is not None else '?'} datagrams dropped by the core's full "
        "receive buffer; "
        f"core UAS CPU {1e6 * per_txn:.0f} us/transaction, {100 * cpu / wall:.0f}% of a core, "
        f"so about {1 / per_txn:.0f} transactions/s where the core is the limit]",
        flush=True,
    )
    if failed or result.returncode not in (0, 1):
        print(result.stderr[-2000:], file=sys.stderr)
    return 0 if ok and not failed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--transport", choices=["udp", "tcp", "both"], default="both")
    # SIPp's offered call rate and the most calls it keeps open: high enough that the core
    # UAS, not SIPp's pacing, is what limits the rate.
    parser.add_argument("--rate", type=int, default=1500)
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    if not sipp_available() or shutil.which(SIPP_BIN) is None:
        print("transactions end to end vs SIPp: skipped (sipp is not installed)")
        return 0
    status = 0
    for transport in ("udp", "tcp") if args.transport == "both" else (args.transport,):
        status |= run(args.seconds, transport, args.rate, args.limit)
    return status


if __name__ == "__main__":
    sys.exit(main())
