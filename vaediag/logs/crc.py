"""CRC-32C for TFRecord framing, one record at a time (C) or many at once (numpy).

TFRecord stores ``masked_crc32c`` of each record's 8-byte length and of its data. Calling a C CRC
function once per record costs more in Python call overhead than in arithmetic (6M records: ~8 s), so
the fast reader computes CRCs for whole arrays of records with numpy, using the linearity of CRCs over
GF(2):

* the CRC register after a message of ``L`` bytes is ``A^L(init) xor sum_j A^(L-1-j)(T[b_j])``, where
  ``T`` is the byte table and ``A(r) = T[r & 0xFF] ^ (r >> 8)`` advances the register over a zero byte;
* so every byte contributes independently, through a table that depends only on its distance from the
  end of the message. :func:`pair_table` gives that table for two adjacent bytes at once (65,536
  entries), which halves the lookups;
* and two messages of the same length differ in CRC by the CRC-contribution of their XOR: the fast
  decoder computes one representative record's CRC with the C function and every other record of the
  same layout from the bytes where they differ (time, step, value), see ``decode.py``.

:func:`crc32c_u64` (CRCs of many 8-byte length fields) and :func:`crc32c_rows` (CRCs of equal-length
byte rows) are checked against the C package on random data in the tests.
"""

from __future__ import annotations

import numpy as np

from vaediag.logs.records import CRC_TABLE, crc32c

__all__ = [
    "BYTE_TABLE",
    "advance",
    "pair_table",
    "pair_tables",
    "init_term",
    "mask",
    "crc32c_u64",
    "masked_crc32c_u64",
    "crc32c_rows",
    "crc32c",
]

_MASK_DELTA = np.uint32(0xA282EAD8)
BYTE_TABLE = np.asarray(CRC_TABLE, dtype=np.uint32)


def advance(r: np.ndarray, n: int = 1) -> np.ndarray:
    """Advance CRC registers ``r`` (uint32 array) over ``n`` zero bytes: ``A^n(r)``."""
    r = np.asarray(r, dtype=np.uint32)
    for _ in range(n):
        r = BYTE_TABLE[r & 0xFF] ^ (r >> np.uint32(8))
    return r


_PAIR_TABLES: list[np.ndarray] = [np.zeros((0, 65536), dtype=np.uint32)]  # one array, grown on demand


def pair_tables(max_distance: int) -> np.ndarray:
    """Tables ``Q_d`` for ``d = 0 .. max_distance`` as one ``(max_distance + 1, 65536)`` uint32 array.

    ``Q_d[v]`` is the contribution of the two bytes ``v & 0xFF`` (first) and ``v >> 8`` (second) to the
    CRC register of a message in which the second byte lies ``d`` bytes before the end. 256 KiB per
    distance; built once, as far as the longest record seen needs.
    """
    have = _PAIR_TABLES[0]
    if len(have) <= max_distance:
        grown = np.empty((max_distance + 1, 65536), dtype=np.uint32)
        grown[: len(have)] = have
        if len(have) == 0:
            v = np.arange(65536, dtype=np.uint32)
            grown[0] = BYTE_TABLE[v >> np.uint32(8)] ^ advance(BYTE_TABLE[v & 0xFF])
        for d in range(max(len(have), 1), max_distance + 1):
            grown[d] = advance(grown[d - 1])
        _PAIR_TABLES[0] = grown
    return _PAIR_TABLES[0][: max_distance + 1]


def pair_table(d: int) -> np.ndarray:
    """``Q_d`` (see :func:`pair_tables`)."""
    return pair_tables(d)[d]


_INIT_TERMS: dict[int, int] = {}


def init_term(length: int) -> int:
    """``A^length(0xFFFFFFFF)``: the initial register's share of the CRC of a ``length``-byte message."""
    hit = _INIT_TERMS.get(length)
    if hit is None:
        r = 0xFFFFFFFF
        for _ in range(length):
            r = CRC_TABLE[r & 0xFF] ^ (r >> 8)
        hit = _INIT_TERMS[length] = r
    return hit


def mask(crc: np.ndarray) -> np.ndarray:
    """TFRecord's masking of CRCs: rotate right by 15 bits and add a constant (uint32 arrays)."""
    crc = np.asarray(crc, dtype=np.uint32)
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + _MASK_DELTA


_LEN_TABLE: np.ndarray | None = None


def crc32c_u64(words: np.ndarray) -> np.ndarray:
    """CRC-32C of each 8-byte little-endian word in ``words`` (uint64 array) -> uint32 array."""
    w = np.asarray(words, dtype=np.uint64)
    acc = np.full(w.shape, init_term(8) ^ 0xFFFFFFFF, dtype=np.uint32)
    for i, d in enumerate((6, 4, 2, 0)):
        acc ^= pair_table(d)[((w >> np.uint64(16 * i)) & np.uint64(0xFFFF)).astype(np.intp)]
    return acc


def masked_crc32c_u64(words: np.ndarray) -> np.ndarray:
    """Masked CRC of each 8-byte length field; small lengths come from a cached table."""
    global _LEN_TABLE
    w = np.asarray(words, dtype=np.uint64)
    if _LEN_TABLE is None:
        _LEN_TABLE = mask(crc32c_u64(np.arange(65536, dtype=np.uint64)))
    small = w < np.uint64(65536)
    if small.all():
        return _LEN_TABLE[w.astype(np.intp)]
    out = np.empty(w.shape, dtype=np.uint32)
    out[small] = _LEN_TABLE[w[small].astype(np.intp)]
    big = ~small
    out[big] = mask(crc32c_u64(w[big]))
    return out


def crc32c_rows(rows: np.ndarray) -> np.ndarray:
    """CRC-32C of each row of a 2-D uint8 array (all rows the same length) -> uint32 array."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    m, length = rows.shape
    acc = np.full(m, init_term(length) ^ 0xFFFFFFFF, dtype=np.uint32)
    if length == 0:
        return acc
    j = length
    # Pairs from the end; an odd first byte alone uses the single-byte table advanced to its distance.
    while j >= 2:
        d = length - j
        pair = rows[:, j - 2].astype(np.intp) | (rows[:, j - 1].astype(np.intp) << 8)
        acc ^= pair_table(d)[pair]
        j -= 2
    if j == 1:
        acc ^= advance(BYTE_TABLE[rows[:, 0]], length - 1)
    return acc
