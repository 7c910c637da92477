"""Read an event file incrementally: chunks for a whole file, only the new bytes for a growing one.

A :class:`FileCursor` remembers where it stopped (the absolute offset of the first byte it still needs,
the few bytes it carries, the framing state). :meth:`FileCursor.read` reads up to the file's current
end in chunks, frames the records (:mod:`scanner`), decodes them (:mod:`decode`) and returns the rows.
Memory stays bounded: a chunk, plus an incomplete record (never read before the file holds all of it
when tailing; never read at all past the end of the file when loading), plus 11 bytes while the framing
is lost in damage.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaediag.logs.decode import Decoded, TagRegistry, decode_buffer
from vaediag.logs.events import EventMeta
from vaediag.logs.records import masked_crc_range
from vaediag.logs.scanner import PAD, Scanner, find_header, views
from vaediag.safeio import open_regular

__all__ = ["CHUNK_BYTES", "FileCursor", "Rows", "RowsAccumulator"]

CHUNK_BYTES = 4 << 20


@dataclass
class Rows:
    """Scalar rows as numpy columns; ``codes`` index a :class:`TagRegistry`."""

    codes: np.ndarray
    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray

    @classmethod
    def concat(cls, parts: list[Decoded] | list["Rows"]) -> "Rows":
        if not parts:
            return cls(
                np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
            )
        if len(parts) == 1:
            p = parts[0]
            return cls(p.codes, p.steps, p.values, p.wall_times)
        return cls(
            np.concatenate([p.codes for p in parts]),
            np.concatenate([p.steps for p in parts]),
            np.concatenate([p.values for p in parts]),
            np.concatenate([p.wall_times for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.steps)


class RowsAccumulator:
    """Rows appended chunk by chunk into columns that grow in place (no list of parts, no final copy)."""

    def __init__(self, capacity: int = 0) -> None:
        # np.empty: pages of an over-estimated capacity are never touched, so they cost no memory.
        self.n = 0
        self._cols = [np.empty(capacity, t) for t in (np.int32, np.int64, np.float64, np.float64)]

    def __len__(self) -> int:
        return self.n

    def append(self, part: Decoded | Rows) -> None:
        m = len(part.steps)
        if not m:
            return
        new = self.n + m
        if new > len(self._cols[0]):
            cap = max(new, int(len(self._cols[0]) * 1.5))
            for a in self._cols:
                a.resize(cap, refcheck=False)  # realloc: large blocks are remapped, not copied
        for a, src in zip(self._cols, (part.codes, part.steps, part.values, part.wall_times)):
            a[self.n : new] = src
        self.n = new

    def rows(self) -> Rows:
        """The rows so far (the accumulator's own arrays, trimmed; do not append afterwards)."""
        for a in self._cols:
            a.resize(self.n, refcheck=False)
        return Rows(*self._cols)


@dataclass
class FileCursor:
    """Where reading one event file stopped, and what reading it found so far."""

    path: Path
    offset: int = 0  # absolute offset of the next byte to read from the file
    records: int = 0
    bad_crc: int = 0
    fast: int = 0
    bytes_read: int = 0
    size: int = 0
    _carry: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8), repr=False)
    _carry_base: int = 0  # absolute offset of _carry[0]
    _need_end: int | None = None  # absolute end of the incomplete record being carried
    _scanner: Scanner = field(default_factory=Scanner, repr=False)
    _buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8), repr=False)  # reused per chunk
    overruns: int = 0  # records whose length ran past the end of the file with valid records after (final reads)
    overrun_at: int | None = None  # offset of the first one
    overrun_claimed: int = 0  # the data length it claimed
    overrun_skipped: int = 0  # bytes skipped from such records to the next valid record

    @property
    def resyncs(self) -> int:
        return self._scanner.resyncs

    @property
    def skipped_bytes(self) -> int:
        return self._scanner.skipped_bytes

    @property
    def pending_bytes(self) -> int:
        """Bytes held back for the next read (an incomplete record, or up to 11 bytes of damage)."""
        return len(self._carry)

    @property
    def no_record_found(self) -> bool:
        """True when the bytes read so far hold no record at all: the framing was lost at byte 0 and no
        offset after it has a length whose CRC verifies (so not a TensorBoard event file). An empty file,
        or one shorter than a record header, is not judged."""
        return self._scanner.lost_from == 0

    def truncated_bytes(self) -> int:
        """Bytes at the end of the file that are not (yet) a complete record."""
        return self._scanner.tail_bytes(self._carry_base, self.size)

    def read(
        self, reg: TagRegistry, meta: EventMeta, *, chunk: int = CHUNK_BYTES, into: RowsAccumulator | None = None,
        final: bool = False,
    ) -> Rows | None:
        """Rows from the bytes appended since the last call (all of them on the first call).

        With ``into``, rows are appended there and None is returned. ``final``: this read is the last
        (loading a file, not tailing it): a record whose verified length runs past the end of the file is
        a damaged length when a complete valid record follows it, and reading resumes there
        (:func:`records.scan` with ``final``; counted in ``overruns``).

        Raises:
            OSError: the file cannot be opened or read.
        """
        acc = into if into is not None else RowsAccumulator()
        with open_regular(self.path) as fh:  # a FIFO or device would block or never end: OSError
            size = os.fstat(fh.fileno()).st_size
            self.size = max(self.size, size)
            if size < self.offset:  # the file was replaced or truncated: nothing sensible to add
                return None if into is not None else acc.rows()
            fh.seek(self.offset)
            while True:
                self._read_to(fh, size, reg, meta, acc, chunk)
                if not (final and self._need_end is not None and self._need_end > size):
                    break
                nxt = _next_record(fh.fileno(), self._carry_base + 1, size)
                if nxt is None:
                    break  # the file's incomplete last record
                if self.overrun_at is None:
                    self.overrun_at, self.overrun_claimed = self._carry_base, self._need_end - self._carry_base - 16
                self.overruns += 1
                self.overrun_skipped += nxt - self._carry_base
                self._carry = np.zeros(0, np.uint8)
                self._carry_base = self.offset = nxt
                self._need_end = None
                fh.seek(nxt)
        if self._need_end is None or len(self._buf) > 2 * chunk:
            self._buf = np.zeros(0, np.uint8)  # done with this file for now: free the chunk buffer
        return None if into is not None else acc.rows()

    def _read_to(self, fh, size: int, reg: TagRegistry, meta: EventMeta, acc: RowsAccumulator, chunk: int) -> None:
        """Frame and decode from ``self.offset`` up to ``size`` (or to a carried record that ends beyond it)."""
        while self.offset < size:
            if self._need_end is not None and self._need_end > size:
                break  # the carried record is not complete in the file yet (or never will be)
            have = len(self._carry)
            want = min(size - self.offset, max(chunk, (self._need_end or 0) - self.offset))
            if len(self._buf) < have + want + PAD:
                self._buf = np.empty(have + want + PAD, dtype=np.uint8)
            buf = self._buf
            buf[:have] = self._carry
            got = fh.readinto(memoryview(buf)[have : have + want])
            if not got:
                break
            n = have + got
            buf[n : n + PAD] = 0
            self.offset += got
            self.bytes_read += got
            framing = self._scanner.scan(buf, self._carry_base, n)
            dec = decode_buffer(buf, framing.starts, framing.lengths, reg, meta)
            self.records += dec.records
            self.bad_crc += dec.bad_crc
            self.fast += dec.fast
            acc.append(dec)
            del dec
            self._carry = buf[framing.consumed : n].copy()
            self._carry_base += framing.consumed
            self._need_end = framing.need_end
            del buf, framing


def _next_record(fd: int, lo: int, size: int, *, window: int = 1 << 20) -> int | None:
    """The first offset >= ``lo`` of the open file ``fd`` where a whole record verifies (length CRC, data
    within ``size``, data CRC), searched a window at a time (vectorised header CRCs; a candidate's data is
    CRC-checked from the file in chunks, so memory stays at a window whatever lengths the damage claims)."""
    while lo + 12 <= size:
        hi = min(size, lo + window + 11)
        data = os.pread(fd, hi - lo, lo)
        n = len(data)
        if n < 12:
            return None
        buf = np.zeros(n + PAD, dtype=np.uint8)
        buf[:n] = np.frombuffer(data, dtype=np.uint8)
        u64, u32 = views(buf)
        p: int | None = 0
        while True:
            p = find_header(u64, u32, p, n)
            if p is None:
                break
            length = int(u64[p])
            start = lo + p + 12
            if start + length + 4 <= size:
                (want,) = struct.unpack("<I", os.pread(fd, 4, start + length))
                if masked_crc_range(fd, start, length) == want:
                    return lo + p
            p += 1
        if hi >= size:
            return None
        lo = hi - 11  # the last 11 offsets of this window need bytes of the next one
    return None
