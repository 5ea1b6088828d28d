"""How long one conference change takes to turn into every subscriber's NOTIFY body.

A 100-participant conference with 100 subscribers; one participant leaves. The partial document
is built once and rendered with each subscriber's own version (RFC 4575 §4.1). Prints the time
per change and the bytes produced, beside what full state to everyone would cost.

    .venv/bin/python tests/bench/bench_notify.py [participants]
"""

from __future__ import annotations

import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.focus.conference_info import (
    ConferenceInfo,
    DisconnectionMethod,
    Endpoint,
    EndpointStatus,
    Execution,
    JoiningMethod,
    Media,
    MediaStatus,
    User,
    full_template,
    partial_template,
    user_removed,
)

WHEN = datetime(2025, 1, 1, tzinfo=UTC)


def conference(n: int) -> ConferenceInfo:
    info = ConferenceInfo("sip:conf-bench0123456789@mrfc1.home1.net", active=True, locked=False)
    for i in range(n):
        aor = f"sip:user{i}_public1@home1.net"
        ep = Endpoint(
            f"sip:user{i}_public1@192.0.2.{i % 250};transport=udp",
            status=EndpointStatus.CONNECTED,
            joining_method=JoiningMethod.DIALED_IN,
            joining_info=Execution(WHEN),
            media={"1": Media("1", "audio", src_id=str(10_000 + i), status=MediaStatus.SENDRECV)},
        )
        info.users[aor] = User(aor, f"User {i}", ["participant"], {ep.entity: ep})
    return info


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    info = conference(n)
    leaving = info.users.pop(next(iter(info.users)))
    versions = list(range(2, n + 2))  # each subscriber is at its own version

    def one_change() -> list[bytes]:
        template = partial_template(user_removed(info, leaving, DisconnectionMethod.DEPARTED, WHEN))
        return [template.render(v) for v in versions]

    rounds = 200
    seconds = min(timeit.repeat(one_change, number=rounds, repeat=5)) / rounds
    partial_bytes = sum(map(len, one_change()))
    full = full_template(info)
    full_seconds = min(timeit.repeat(lambda: full.render(1), number=rounds, repeat=3)) / rounds
    build_full = min(timeit.repeat(lambda: full_template(info), number=20, repeat=3)) / 20
    full_bytes = sum(len(full.render(v)) for v in versions)
    print(
        f"partial NOTIFY bodies for {n} subscribers: {seconds * 1e3:.3f} ms per change, "
        f"{partial_bytes / 1000:.0f} KB total"
    )
    print(
        f"full-state bodies for {n} subscribers (for comparison): "
        f"{(build_full + full_seconds * n) * 1e3:.3f} ms per change, "
        f"{full_bytes / 1e6:.2f} MB total ({full_bytes // n} bytes each)"
    )


if __name__ == "__main__":
    main()
