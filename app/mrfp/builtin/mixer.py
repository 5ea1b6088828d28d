"""The conference mixer: N-1 mixing and talk detection on 20 ms frames, vectorised, sans-IO.

All members of all conferences form one (members x samples) matrix whose rows are grouped by
conference (`ConferenceLayout`). One tick of mixing is then a handful of numpy operations
whatever the number of members: per-conference sums with `np.add.reduceat`, each member's
mix = its conference's sum minus its own contribution (it must not hear itself), saturated to
int16. Talk detection is one vectorised state update over all rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Int16Matrix = npt.NDArray[np.int16]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ConferenceLayout:
    """Rows 0..N-1 grouped by conference: conference k owns rows starts[k]..starts[k+1]-1."""

    starts: IntArray  # first row of each (non-empty) conference
    group: IntArray  # conference index of each row

    @classmethod
    def from_sizes(cls, sizes: Sequence[int]) -> ConferenceLayout:
        if any(size <= 0 for size in sizes):
            raise ValueError("conference sizes must be positive")
        counts = np.asarray(sizes, dtype=np.intp)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.intp)
        group = np.repeat(np.arange(len(counts), dtype=np.intp), counts)
        return cls(starts, group)

    @property
    def rows(self) -> int:
        return len(self.group)


def mix_minus(
    frames: Int16Matrix, layout: ConferenceLayout, speaking: BoolArray, hearing: BoolArray
) -> Int16Matrix:
    """Each row's mix of the other speaking rows of its conference (N-1), saturated to int16.

    `speaking[r]` False leaves row r out of every sum (muted, on hold, or sending nothing);
    `hearing[r]` False gives row r silence (deaf).
    """
    if frames.shape[0] != layout.rows:
        raise ValueError("frames and layout disagree on the number of members")
    if frames.shape[0] == 0:
        return np.zeros(frames.shape, dtype=np.int16)
    # int32 holds the sum of 65536 full-scale int16 frames: no overflow before saturating.
    contrib = frames.astype(np.int32)
    contrib *= speaking[:, None]
    sums = np.add.reduceat(contrib, layout.starts, axis=0)
    mixed = sums[layout.group]
    mixed -= contrib
    mixed *= hearing[:, None]
    np.clip(mixed, -32768, 32767, out=mixed)
    return mixed.astype(np.int16)


def frame_rms(frames: Int16Matrix) -> FloatArray:
    """Root-mean-square level of each row (int16 scale)."""
    as_float = frames.astype(np.float32)
    power = np.einsum("ij,ij->i", as_float, as_float) / max(frames.shape[1], 1)
    rms: FloatArray = np.sqrt(power).astype(np.float32)
    return rms


class TalkDetector:
    """Per-row talking state from frame energy, with hysteresis in level and in time.

    A row starts talking after `start_frames` consecutive frames at or above `start_level`
    (a click does not count) and stops after `stop_frames` consecutive frames below
    `stop_level` (short pauses between words do not end a talkspurt). Levels are RMS on the
    int16 scale; the defaults (about -36 / -42 dBFS) sit above G.711 idle-channel noise.
    """

    def __init__(
        self,
        rows: int = 0,
        *,
        start_level: float = 500.0,
        stop_level: float = 250.0,
        start_frames: int = 2,
        stop_frames: int = 20,
    ) -> None:
        if stop_level > start_level:
            raise ValueError("stop_level must not exceed start_level")
        self.start_level = start_level
        self.stop_level = stop_level
        self.start_frames = start_frames
        self.stop_frames = stop_frames
        self.talking: BoolArray = np.zeros(rows, dtype=np.bool_)
        self._loud = np.zeros(rows, dtype=np.int32)  # consecutive frames >= start_level
        self._quiet = np.zeros(rows, dtype=np.int32)  # consecutive frames < stop_level

    def reordered(self, old_rows: Sequence[int]) -> TalkDetector:
        """The same detector for a new row order: new row i continues old row `old_rows[i]`,
        or starts fresh where that is -1 (a member that just joined)."""
        new = TalkDetector(
            len(old_rows),
            start_level=self.start_level,
            stop_level=self.stop_level,
            start_frames=self.start_frames,
            stop_frames=self.stop_frames,
        )
        src = np.asarray(old_rows, dtype=np.intp)
        keep = src >= 0
        new.talking[keep] = self.talking[src[keep]]
        new._loud[keep] = self._loud[src[keep]]
        new._quiet[keep] = self._quiet[src[keep]]
        return new

    def update(self, rms: FloatArray, eligible: BoolArray) -> tuple[IntArray, IntArray]:
        """Feed one frame per row; returns (rows that started, rows that stopped) talking.

        A row that is not `eligible` (muted, on hold) counts as silent, so it stops talking
        at once rather than after the hangover.
        """
        loud = (rms >= self.start_level) & eligible
        quiet = (rms < self.stop_level) | ~eligible
        self._loud = np.where(loud, self._loud + 1, 0).astype(np.int32)
        self._quiet = np.where(quiet, self._quiet + 1, 0).astype(np.int32)
        was = self.talking
        now = (was | (self._loud >= self.start_frames)) & ~(
            (self._quiet >= self.stop_frames) | ~eligible
        )
        self.talking = now
        return np.flatnonzero(now & ~was), np.flatnonzero(was & ~now)
