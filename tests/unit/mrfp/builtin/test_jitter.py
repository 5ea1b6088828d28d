"""The jitter buffer: reordering, loss, late and duplicate packets, wrap, SSRC change."""

from __future__ import annotations

import pytest

from app.mrfp.builtin.jitter import JitterBuffer, seq_delta


def frame(seq: int) -> bytes:
    return seq.to_bytes(2, "big")


def play(buf: JitterBuffer, ticks: int) -> list[int | None]:
    out = []
    for _ in range(ticks):
        f = buf.pop()
        out.append(None if f is None else int.from_bytes(f, "big"))
    return out


def test_seq_delta_wraps() -> None:
    assert seq_delta(1, 65535) == 2 and seq_delta(65535, 1) == -2 and seq_delta(5, 5) == 0


def test_waits_for_prefetch_then_plays_in_order() -> None:
    buf = JitterBuffer(prefetch=2)
    buf.push(1, 10, frame(10))
    assert buf.pop() is None  # one frame is not enough cushion
    buf.push(1, 11, frame(11))
    assert play(buf, 2) == [10, 11]


def test_reorders() -> None:
    buf = JitterBuffer(prefetch=3)
    for seq in (11, 10, 13, 12):
        buf.push(1, seq, frame(seq))
    assert play(buf, 4) == [10, 11, 12, 13]


def test_loss_is_concealed_and_late_or_duplicate_packets_dropped() -> None:
    buf = JitterBuffer(prefetch=2)
    for seq in (1, 2, 4):
        buf.push(1, seq, frame(seq))
    assert play(buf, 3) == [1, 2, None]  # 3 is missing while 4 waits: a loss
    assert buf.concealed == 1
    assert buf.push(1, 3, frame(3)) is False and buf.late == 1  # too late now
    buf.push(1, 5, frame(5))
    assert buf.push(1, 5, frame(5)) is False and buf.duplicates == 1
    assert play(buf, 2) == [4, 5]


def test_sequence_wrap() -> None:
    buf = JitterBuffer(prefetch=2)
    for seq in (65534, 65535, 0, 1):
        buf.push(1, seq, frame(seq))
    assert play(buf, 4) == [65534, 65535, 0, 1]


def test_underrun_refills_and_follows_a_sender_pause() -> None:
    buf = JitterBuffer(prefetch=2)
    buf.push(1, 100, frame(100))
    buf.push(1, 101, frame(101))
    assert play(buf, 4) == [100, 101, None, None]
    assert buf.underruns == 1
    # After silence suppression the next packets carry the next sequence numbers.
    buf.push(1, 102, frame(102))
    assert buf.pop() is None  # refilling
    buf.push(1, 103, frame(103))
    assert play(buf, 2) == [102, 103]


def test_new_ssrc_and_big_jump_start_over() -> None:
    buf = JitterBuffer(prefetch=2)
    for seq in (1, 2, 3):
        buf.push(1, seq, frame(seq))
    assert play(buf, 1) == [1]
    buf.push(2, 5000, frame(5000))  # another source: the old frames are gone
    buf.push(2, 5001, frame(5001))
    assert play(buf, 2) == [5000, 5001]
    buf.push(2, 30000, frame(30000))
    buf.push(2, 30001, frame(30001))
    assert play(buf, 2) == [30000, 30001]


def test_delay_is_capped() -> None:
    buf = JitterBuffer(prefetch=2, high_water=4)
    for seq in range(10):
        buf.push(1, seq, frame(seq))
    assert play(buf, 2) == [6, 7]  # the oldest frames made way
    assert buf.overflow == 6


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(prefetch=4, high_water=4)
