"""A small per-member play-out (jitter) buffer, sans-IO.

Packets go in as they arrive (`push`); one frame comes out per 20 ms clock tick (`pop`), `None`
when there is nothing to play (the caller conceals it with silence). The buffer
- reorders by RTP sequence number, modulo 2^16 (RFC 3550 §5.1: it wraps);
- drops packets older than the play-out point (late) and duplicates;
- starts over on a new SSRC (§8.2: the source restarted) or a large sequence jump;
- waits for `prefetch` frames before it starts playing, and again after it ran dry (a sender
  pausing, e.g. on silence suppression, RFC 3551 §4.1): that rebuilds the cushion;
- skips a missing frame when later ones are present (a loss: one frame of silence);
- caps its delay: beyond `high_water` frames it drops the oldest (sender clock faster than ours).
"""

from __future__ import annotations

from typing import Final

_SEQ_MOD: Final = 1 << 16
_MAX_JUMP: Final = 500  # frames (10 s): a larger forward jump is a restart, not a loss


def seq_delta(seq: int, ref: int) -> int:
    """`seq - ref` as a signed distance in the 16-bit sequence space."""
    return ((seq - ref + 0x8000) & 0xFFFF) - 0x8000


class JitterBuffer:
    __slots__ = (
        "_frames",
        "_next",
        "_playing",
        "_ssrc",
        "concealed",
        "duplicates",
        "high_water",
        "late",
        "overflow",
        "prefetch",
        "underruns",
    )

    def __init__(self, prefetch: int = 2, high_water: int = 8) -> None:
        if not 1 <= prefetch < high_water:
            raise ValueError("need 1 <= prefetch < high_water")
        self.prefetch = prefetch
        self.high_water = high_water
        self._frames: dict[int, bytes] = {}
        self._next: int | None = None  # sequence number of the next frame to play
        self._playing = False
        self._ssrc: int | None = None
        self.late = 0
        self.duplicates = 0
        self.concealed = 0  # frames played as silence while playing (losses)
        self.underruns = 0  # times the buffer ran dry and had to refill
        self.overflow = 0  # frames dropped to cap the delay

    def __len__(self) -> int:
        return len(self._frames)

    def reset(self) -> None:
        self._frames.clear()
        self._next = None
        self._playing = False

    def push(self, ssrc: int, seq: int, payload: bytes) -> bool:
        """Queue one packet's payload; False if it was dropped (late or duplicate)."""
        if ssrc != self._ssrc:
            self.reset()
            self._ssrc = ssrc
        nxt = self._next
        if nxt is None:
            self._next = seq
        else:
            delta = seq_delta(seq, nxt)
            if delta < 0:
                if self._playing or -delta >= self.high_water:
                    if -delta >= _MAX_JUMP:
                        self.reset()  # the sender restarted its sequence: follow it
                        self._next = seq
                    else:
                        self.late += 1
                        return False
                else:
                    self._next = seq  # reordered before play-out began: start earlier
            elif delta >= _MAX_JUMP:
                self.reset()
                self._next = seq
        if seq in self._frames:
            self.duplicates += 1
            return False
        self._frames[seq] = payload
        return True

    def pop(self) -> bytes | None:
        """The next frame to play, or None (nothing yet, a loss, or refilling)."""
        frames = self._frames
        if not self._playing:
            if len(frames) < self.prefetch or self._next is None:
                return None
            self._playing = True
            ref = self._next
            self._next = min(frames, key=lambda s: (s - ref) & 0xFFFF)
        if not frames:
            self._playing = False
            self.underruns += 1
            return None
        nxt = self._next
        assert nxt is not None
        while len(frames) > self.high_water:
            # Too much delay: move the play-out point past the oldest frame.
            if frames.pop(nxt, None) is not None:
                self.overflow += 1
            nxt = (nxt + 1) & 0xFFFF
        frame = frames.pop(nxt, None)
        self._next = (nxt + 1) & 0xFFFF
        if frame is None:
            self.concealed += 1
        return frame
