"""Tone WAV files for UEs to send, and FFT measurements of what they recorded.

The checks are relative (one tone against another, against the noise floor) so they hold
whatever gain the mixer applies and whatever G.711 quantisation adds (ITU-T G.711: about
38 dB SNR for a loud tone, far above the 10x ratios the tests ask for).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float64]

PCM_RATE = 8000  # PCMU/PCMA clock rate (RFC 3551 §4.5.14)


def write_tone_wav(
    path: Path,
    frequency: float,
    seconds: float,
    *,
    rate: int = PCM_RATE,
    amplitude: float = 0.25,
) -> Path:
    """A mono S16LE sine tone; amplitude is a fraction of full scale.

    0.25 leaves headroom so that the sum of two tones in an N-1 mix cannot clip.
    """
    t = np.arange(int(seconds * rate)) / rate
    pcm = np.round(amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def read_wav(path: Path) -> tuple[int, Samples]:
    """(rate, mono samples in [-1, 1]); refuses a file whose header was never completed."""
    with wave.open(str(path), "rb") as src:
        if src.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit samples, got {src.getsampwidth() * 8}")
        rate, channels, frames = src.getframerate(), src.getnchannels(), src.getnframes()
        if frames == 0:
            # A writer killed before closing leaves data behind a zero-size header.
            raise ValueError(f"{path}: the WAV header says 0 frames (writer not closed?)")
        data = np.frombuffer(src.readframes(frames), dtype="<i2").astype(np.float64) / 32768.0
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return rate, data


def window(samples: Samples, rate: int, start: float, end: float) -> Samples:
    """The samples between `start` and `end` seconds (clipped to the recording)."""
    first = max(0, int(start * rate))
    last = min(len(samples), int(end * rate))
    return samples[first:last] if last > first else samples[:0]


@dataclass(frozen=True)
class ToneLevels:
    """Energy near each asked-for frequency, and the typical energy of a band with no tone."""

    energy: dict[float, float]
    noise_floor: float
    seconds: float

    def ratio(self, loud: float, quiet: float) -> float:
        return self.energy[loud] / max(self.energy[quiet], 1e-20)

    def above_floor(self, frequency: float) -> float:
        return self.energy[frequency] / max(self.noise_floor, 1e-20)

    def describe(self) -> str:
        parts = ", ".join(f"{f:g} Hz: {e:.3g}" for f, e in sorted(self.energy.items()))
        return f"{parts}; noise floor {self.noise_floor:.3g} over {self.seconds:.2f} s"


def tone_levels(
    samples: Samples,
    rate: int,
    frequencies: list[float],
    *,
    half_width: float = 20.0,
) -> ToneLevels:
    """Spectral energy within ±half_width Hz of each frequency (Hann-windowed FFT).

    The noise floor is the median energy of equally wide bands across 100 Hz..rate/2-100 Hz
    that keep clear of every asked-for frequency: robust against a few stray peaks.
    """
    if len(samples) < rate // 10:
        raise ValueError(f"need at least 0.1 s of audio, got {len(samples)} samples")
    centred = samples - samples.mean()
    spectrum = np.abs(np.fft.rfft(centred * np.hanning(len(centred)))) ** 2
    bins = np.fft.rfftfreq(len(centred), 1.0 / rate)

    def band(low: float, high: float) -> float:
        return float(spectrum[(bins >= low) & (bins <= high)].sum())

    energy = {f: band(f - half_width, f + half_width) for f in frequencies}
    width = 2 * half_width
    floors = [
        band(low, low + width)
        for low in np.arange(100.0, rate / 2 - 100.0 - width, width)
        if all(abs(low + half_width - f) > 3 * width for f in frequencies)
    ]
    return ToneLevels(energy, float(np.median(floors)), len(samples) / rate)
