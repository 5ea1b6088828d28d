"""G.711 tables against the ITU-T G.191 reference algorithm, known values and round trips."""

from __future__ import annotations

import numpy as np

from app.mrfp.builtin import g711


def ref_ulaw_compress(x: int) -> int:
    """Scalar G.191 `ulaw_compress`, written out from the algorithm, for comparison."""
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i:
        segno += 1
        i >>= 1
    code = ((8 - segno) << 4) | (0xF - ((absno >> segno) & 0xF))
    return code | 0x80 if x >= 0 else code


def ref_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix = ix - 16 + (iexp << 4)
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def test_encode_tables_match_the_reference_for_every_sample() -> None:
    samples = np.arange(-32768, 32768)
    ulaw = [ref_ulaw_compress(int(x)) for x in samples]
    alaw = [ref_alaw_compress(int(x)) for x in samples]
    assert np.array_equal(g711.ulaw_encode(samples.astype(np.int16)), ulaw)
    assert np.array_equal(g711.alaw_encode(samples.astype(np.int16)), alaw)


def test_known_values() -> None:
    # µ-law: full scale is +-32124, 0xFF/0x7F are +0/-0; A-law: +-32256, smallest step +-8.
    assert g711.ULAW_DECODE[0x00] == -32124 and g711.ULAW_DECODE[0x80] == 32124
    assert g711.ULAW_DECODE[0xFF] == 0 and g711.ULAW_DECODE[0x7F] == 0
    assert g711.ULAW_DECODE[0xFE] == 8 and g711.ULAW_DECODE[0xEF] == 132
    assert g711.ALAW_DECODE[0xD5] == 8 and g711.ALAW_DECODE[0x55] == -8
    assert g711.ALAW_DECODE[0xAA] == 32256 and g711.ALAW_DECODE[0x2A] == -32256
    enc_u = g711.ulaw_encode(np.array([0, -1, 32767, -32768, 1000, -1000], dtype=np.int16))
    assert enc_u.tolist() == [0xFF, 0x7F, 0x80, 0x00, 0xCE, 0x4E]
    enc_a = g711.alaw_encode(np.array([0, -1, 32767, -32768, 1000, -1000], dtype=np.int16))
    assert enc_a.tolist() == [0xD5, 0x55, 0xAA, 0x2A, 0xFA, 0x7A]
    assert g711.SILENCE_BYTE == {g711.PCMU: 0xFF, g711.PCMA: 0xD5}


def test_round_trips() -> None:
    codes = np.arange(256, dtype=np.uint8)
    back_u = g711.ulaw_encode(g711.ulaw_decode(codes))
    # Every µ-law code survives except -0 (0x7F), which decodes to 0 and encodes as +0.
    assert np.array_equal(np.flatnonzero(back_u != codes), [0x7F]) and back_u[0x7F] == 0xFF
    assert np.array_equal(g711.alaw_encode(g711.alaw_decode(codes)), codes)
    # Linear -> law -> linear stays within half a quantisation step (error < 1/16 of the value).
    x = np.arange(-32000, 32000, 7, dtype=np.int16)
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        err = np.abs(dec(enc(x)).astype(np.int32) - x)
        assert np.all(err <= np.maximum(np.abs(x.astype(np.int32)) // 16, 16))


def test_row_wise_mixed_codecs() -> None:
    pcm = np.array([[0, 1000, -1000], [0, 1000, -1000]], dtype=np.int16)
    codec = np.array([g711.PCMU, g711.PCMA], dtype=np.intp)
    codes = g711.encode_rows(pcm, codec)
    assert codes.tolist() == [[0xFF, 0xCE, 0x4E], [0xD5, 0xFA, 0x7A]]
    decoded = g711.decode_rows(codes, codec)
    assert decoded.tolist()[0] == g711.ulaw_decode(codes[0]).tolist()
    assert decoded.tolist()[1] == g711.alaw_decode(codes[1]).tolist()
    assert g711.ulaw_decode(b"\xff\x80").tolist() == [0, 32124]
