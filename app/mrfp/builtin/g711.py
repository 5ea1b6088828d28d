"""G.711 µ-law and A-law as numpy lookup tables (ITU-T G.711, reference: ITU-T G.191 STL).

Decoding is a 256-entry table per law; encoding is a 65536-entry table indexed by the 16-bit
sample reinterpreted as uint16, so a whole (members x samples) matrix converts with one `take`.
The tables are computed once, vectorised, from the bit-level definitions below; they agree with
the ITU software tools (G.191 `ulaw_compress`/`alaw_compress` and their expanders) for every input.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]

# Codec indices used by the stacked tables below (and by the engine's per-member codec array).
PCMU: Final = 0
PCMA: Final = 1
CODEC_NAMES: Final = {"PCMU": PCMU, "PCMA": PCMA}

# The code of a zero sample: what a lost frame is concealed with (µ-law 0xFF, A-law 0xD5).
SILENCE_BYTE: Final = {PCMU: 0xFF, PCMA: 0xD5}


def _all_int16() -> npt.NDArray[np.int32]:
    # Index i of the encode table is the uint16 view of a sample, so sample = int16(i).
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> UInt8Array:
    x = _all_int16()
    # G.711 µ-law works on 14-bit magnitudes; negatives use the one's complement so that
    # -1..-4 fall in the first interval of the negative side (G.191 `ulaw_compress`).
    mag = np.where(x < 0, (~x) >> 2, x >> 2) + 33  # + bias 33 (G.711 table 2a, in 14-bit units)
    mag = np.minimum(mag, 0x1FFF)
    seg = np.ones_like(mag)
    for shift in range(6, 13):
        seg += (mag >> shift) != 0
    high = 8 - seg
    low = 0xF - ((mag >> seg) & 0xF)
    code = (high << 4) | low
    code = np.where(x >= 0, code | 0x80, code)
    table: UInt8Array = code.astype(np.uint8)
    return table


def _ulaw_decode_table() -> Int16Array:
    code = np.arange(256, dtype=np.int32)
    sign = np.where(code < 0x80, -1, 1)
    inv = ~code
    exponent = (inv >> 4) & 7
    mantissa = inv & 0xF
    step = 4 << (exponent + 1)
    # Mid-point of the quantisation interval, minus the bias (G.711 table 2a decoder outputs).
    value = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    table: Int16Array = (sign * value).astype(np.int16)
    return table


def _alaw_encode_table() -> UInt8Array:
    x = _all_int16()
    # A-law works on 13-bit samples: 12-bit magnitudes, one's complement for negatives.
    mag = np.where(x < 0, (~x) >> 4, x >> 4)
    # Segment (exponent) e >= 1 holds magnitudes with bit length e + 4; segment 0 is linear.
    bits = np.zeros_like(mag)
    for shift in range(12):
        bits += (mag >> shift) != 0
    exponent = np.maximum(bits - 4, 1)
    shifted = mag >> (exponent - 1)
    code = np.where(mag > 15, (shifted - 16) + (exponent << 4), mag)
    code = np.where(x >= 0, code | 0x80, code)
    # Even bits are inverted on the line (G.711 §3.2.2, "alternate digit inversion").
    table: UInt8Array = (code ^ 0x55).astype(np.uint8)
    return table


def _alaw_decode_table() -> Int16Array:
    code = np.arange(256, dtype=np.int32)
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = ix & 0xF
    mantissa = np.where(exponent > 0, mantissa + 16, mantissa)
    value = (mantissa << 4) + 8  # mid-point of the interval
    value = np.where(exponent > 1, value << np.maximum(exponent - 1, 0), value)
    table: Int16Array = np.where(code > 127, value, -value).astype(np.int16)
    return table


ULAW_ENCODE: Final[UInt8Array] = _ulaw_encode_table()
ULAW_DECODE: Final[Int16Array] = _ulaw_decode_table()
ALAW_ENCODE: Final[UInt8Array] = _alaw_encode_table()
ALAW_DECODE: Final[Int16Array] = _alaw_decode_table()

# Stacked tables: row c of `DECODE_FLAT` (256 wide) and `ENCODE_FLAT` (65536 wide) is codec c,
# so a matrix of mixed codecs converts with one `take` on `value + codec * width`.
DECODE_FLAT: Final[Int16Array] = np.concatenate([ULAW_DECODE, ALAW_DECODE])
ENCODE_FLAT: Final[UInt8Array] = np.concatenate([ULAW_ENCODE, ALAW_ENCODE])


def ulaw_encode(samples: Int16Array) -> UInt8Array:
    return ULAW_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)]


def ulaw_decode(codes: UInt8Array | bytes) -> Int16Array:
    return ULAW_DECODE[np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, bytes) else codes]


def alaw_encode(samples: Int16Array) -> UInt8Array:
    return ALAW_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)]


def alaw_decode(codes: UInt8Array | bytes) -> Int16Array:
    return ALAW_DECODE[np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, bytes) else codes]


def decode_rows(codes: UInt8Array, codec: npt.NDArray[np.intp]) -> Int16Array:
    """Decode a (rows x samples) matrix where row r uses codec `codec[r]` (PCMU/PCMA)."""
    if not codec.any():  # all PCMU, the common case: index the table with the bytes directly
        return ULAW_DECODE[codes]
    index = codes.astype(np.intp) + (codec * 256)[:, None]
    return DECODE_FLAT.take(index)


def encode_rows(samples: Int16Array, codec: npt.NDArray[np.intp]) -> UInt8Array:
    """Encode a (rows x samples) int16 matrix where row r uses codec `codec[r]`."""
    if not codec.any():
        return ULAW_ENCODE[samples.view(np.uint16)]
    index = samples.view(np.uint16).astype(np.intp) + (codec * 65536)[:, None]
    return ENCODE_FLAT.take(index)
