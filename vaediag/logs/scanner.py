"""Vectorised, streaming TFRecord framing with exactly the semantics of :func:`records.scan`.

:func:`records.scan` walks records one by one in Python (a header CRC call per record). Here the
framing of a whole buffer is found with numpy, and Python only runs where the file is irregular:

1. Candidates: every offset ``p`` whose byte ``p + 12`` is ``0x09`` (an Event's first field,
   ``wall_time``, written first by every writer), whose length is plausible and whose length CRC
   verifies (vectorised, :mod:`crc`).
2. Chains: candidate ``i`` links to ``i + 1`` when ``p_i + 16 + length_i == p_(i+1)``. A run of links is
   a run of consecutive records whose headers all verify, taken in one step.
3. Anywhere else (a record that does not start with ``0x09``, damage, the end of the buffer) the
   reference rules apply, one record at a time: a header whose CRC fails loses the framing, and the
   next offset where a length and its CRC agree is found with a vectorised search (:func:`find_header`).

The scanner is a small state machine fed successive buffers of one file (``base`` is the absolute
offset of ``buf[0]``): an incomplete record is left for the next buffer, and while the framing is lost
only the last 11 bytes (which cannot yet be checked) are carried, so damage never makes the carried
bytes grow. Only data CRCs are left to the caller (the decoder checks them, vectorised).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaediag.logs.crc import masked_crc32c_u64
from vaediag.logs.records import FOOTER_BYTES, HEADER_BYTES, masked_crc

__all__ = ["Framing", "Scanner", "views", "find_header", "PAD"]

PAD = 16  # zero bytes after a buffer's data, so 8-byte reads near its end stay inside it
_EVENT_FIRST_BYTE = 0x09  # Event.wall_time: field 1, fixed64
_MAX_CHAIN_LENGTH = 1 << 31  # lengths taken by the vectorised path; larger ones go the slow way
_EMPTY = np.zeros(0, dtype=np.int64)
_SMALL_BUFFER = 512  # bytes: below this, the walk alone frames the records (same result)


def views(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unaligned uint64 and uint32 views of ``buf``: ``u64[p]`` is the 8 bytes starting at byte ``p``."""
    n = len(buf)
    u64 = np.ndarray(shape=(max(n - 7, 0),), dtype="<u8", buffer=buf, strides=(1,))
    u32 = np.ndarray(shape=(max(n - 3, 0),), dtype="<u4", buffer=buf, strides=(1,))
    return u64, u32


def _header_ok_at(u64: np.ndarray, u32: np.ndarray, p: int) -> bool:
    return masked_crc(u64[p : p + 1].tobytes()) == int(u32[p + 8])


def find_header(u64: np.ndarray, u32: np.ndarray, lo: int, n: int) -> int | None:
    """The first offset ``p`` in ``[lo, n - 12]`` where a length and its masked CRC agree, or None."""
    last = n - HEADER_BYTES  # inclusive
    window = 4096
    while lo <= last:
        hi = min(last + 1, lo + window)
        ok = masked_crc32c_u64(u64[lo:hi]) == u32[lo + 8 : hi + 8]
        hit = np.flatnonzero(ok)
        if len(hit):
            return lo + int(hit[0])
        lo = hi
        window = min(window * 4, 1 << 22)
    return None


@dataclass
class Framing:
    """Records framed in one buffer (offsets relative to it) and where the unconsumed bytes start."""

    starts: np.ndarray  # int64 data starts
    lengths: np.ndarray  # int64 data lengths
    consumed: int  # bytes before this offset are done with; keep the rest for the next buffer
    need_end: int | None = None  # absolute end of an incomplete record, when its header verified


def _chains(buf: np.ndarray, u64: np.ndarray, u32: np.ndarray, pos: int, n: int):
    """Steps 1-2 of :meth:`Scanner.scan`: verified candidate headers in ``buf[pos:n]`` (their offsets, lengths
    and record ends) and ``breaks``, where ``breaks[k]`` is the last index of the k-th run of linked
    candidates. A small buffer gets none: it is walked record by record, cheaper than numpy's set-up."""
    if n - pos > _SMALL_BUFFER:
        cand = np.flatnonzero(buf[pos + HEADER_BYTES : n] == _EVENT_FIRST_BYTE)
        cand += pos
        lens = u64[cand]
        plausible = lens < np.uint64(_MAX_CHAIN_LENGTH)
        cand, lens = cand[plausible], lens[plausible]
        ok = masked_crc32c_u64(lens) == u32[cand + 8]
        cand, lens = cand[ok], lens[ok].astype(np.int64)
    else:
        cand = lens = _EMPTY
    ends = cand + (HEADER_BYTES + FOOTER_BYTES) + lens
    breaks = np.flatnonzero(np.r_[ends[:-1] != cand[1:], True]) if len(cand) else _EMPTY
    return cand, lens, ends, breaks


@dataclass
class Scanner:
    """Frames the records of one file, buffer after buffer (see the module docstring)."""

    lost_from: int | None = None  # absolute offset where the framing was lost, while searching
    resyncs: int = 0
    skipped_bytes: int = 0

    def scan(self, buf: np.ndarray, base: int, n: int) -> Framing:
        """Frame ``buf[:n]`` (``buf`` must have :data:`PAD` readable bytes after ``n``)."""
        u64, u32 = views(buf)
        pos = 0
        if self.lost_from is not None:
            nxt = find_header(u64, u32, 0, n)
            if nxt is None:
                return Framing(_EMPTY, _EMPTY, max(0, n - (HEADER_BYTES - 1)))
            self.resyncs += 1
            self.skipped_bytes += base + nxt - self.lost_from
            self.lost_from = None
            pos = nxt

        cand, lens, ends, breaks = _chains(buf, u64, u32, pos, n)
        m = len(cand)
        starts: list = []
        lengths: list = []
        need_end = None
        # 3. Walk; Python iterates once per chain or irregular record, not once per record.
        while pos + HEADER_BYTES <= n:
            i = int(np.searchsorted(cand, pos)) if m else 0
            if i < m and cand[i] == pos:
                j = int(breaks[np.searchsorted(breaks, i)])
                if ends[j] <= n:
                    starts.append(cand[i : j + 1])
                    lengths.append(lens[i : j + 1])
                    pos = int(ends[j])
                    continue
                if j > i:
                    starts.append(cand[i:j])
                    lengths.append(lens[i:j])
                pos = int(cand[j])
                need_end = base + int(ends[j])
                break
            if _header_ok_at(u64, u32, pos):
                length = int(u64[pos])
                end = pos + HEADER_BYTES + length + FOOTER_BYTES
                if end > n:
                    need_end = base + end
                    break
                starts.append(np.array([pos], dtype=np.int64))
                lengths.append(np.array([length], dtype=np.int64))
                pos = end
                continue
            nxt = find_header(u64, u32, pos + 1, n)
            if nxt is None:
                # Every offset up to n - 12 is checked; the last 11 need more bytes to be judged.
                self.lost_from = base + pos
                pos = max(pos + 1, n - (HEADER_BYTES - 1))
                break
            self.resyncs += 1
            self.skipped_bytes += nxt - pos
            pos = nxt
        if starts:
            s = np.concatenate(starts) + HEADER_BYTES
            ln = np.concatenate(lengths)
        else:
            s = ln = _EMPTY
        return Framing(s, ln, pos, need_end)

    def tail_bytes(self, consumed_abs: int, end_abs: int) -> int:
        """Bytes left unread at the end of a file: an incomplete record, or damage with no header after it."""
        start = self.lost_from if self.lost_from is not None else consumed_abs
        return max(0, end_abs - start)

