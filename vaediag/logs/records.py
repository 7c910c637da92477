"""TFRecord framing of TensorBoard event files, with CRC checks and recovery from damage.

An event file is a sequence of records::

    uint64 length (little endian) | uint32 masked_crc32c(length) | bytes data[length] | uint32 masked_crc32c(data)

:func:`scan` walks a buffer and returns the offsets of the complete records whose CRCs verify. Damage is
counted, never raised: a record whose data CRC fails is skipped (its length was verified, so the next
record is found); a length whose CRC fails means the framing is lost, and the scanner resynchronises on
the next offset where a length and its CRC agree; a last record cut short (a file still being written, or
a crash) is reported as ``tail_bytes`` so a tailing reader can keep it for its next read. A corrupt length
field never causes an allocation: lengths are only compared with the bytes at hand.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

__all__ = ["crc32c", "masked_crc", "frame_record", "RecordScan", "scan", "HEADER_BYTES", "FOOTER_BYTES", "CRC_ENGINE"]

HEADER_BYTES = 12  # uint64 length + uint32 length crc
FOOTER_BYTES = 4  # uint32 data crc
_MASK_DELTA = 0xA282EAD8

try:  # a C implementation (SSE4.2/ARMv8 CRC instructions where present)
    from crc32c import crc32c as _crc32c_c

    def crc32c(data: bytes | memoryview) -> int:
        """CRC-32C (Castagnoli) of ``data``."""
        return _crc32c_c(data)

    def _crc32c_update(crc: int, data: bytes | memoryview) -> int:
        return _crc32c_c(data, crc)

    CRC_ENGINE = "crc32c (C)"
except ImportError:  # pragma: no cover - exercised by test_records_pure_fallback
    CRC_ENGINE = "pure Python"

    def crc32c(data: bytes | memoryview) -> int:
        """CRC-32C (Castagnoli) of ``data`` (pure Python fallback; slow)."""
        return _crc32c_pure(data)

    def _crc32c_update(crc: int, data: bytes | memoryview) -> int:
        return _crc32c_pure(data, crc)


def _make_table() -> list[int]:
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _make_table()


def _crc32c_pure(data: bytes | memoryview, value: int = 0) -> int:
    crc = value ^ 0xFFFFFFFF
    t = CRC_TABLE
    for b in bytes(data):
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant, mod 2**32."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord, exactly as TensorBoard's writer frames it."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))


@dataclass
class RecordScan:
    """Result of scanning a buffer for records.

    ``records`` holds ``(data_start, data_end)`` offsets of every verified record, in file order.
    ``consumed`` is the offset after the last byte that was either a record or declared garbage; bytes
    from ``consumed`` on (``tail_bytes`` of them) may be the start of a record still being written.
    """

    records: list[tuple[int, int]] = field(default_factory=list)
    consumed: int = 0
    tail_bytes: int = 0
    bad_crc: int = 0  # records skipped because their data CRC failed
    resyncs: int = 0  # times the framing was lost (length CRC failed) and found again
    skipped_bytes: int = 0  # bytes skipped while resynchronising
    lost_from: int | None = None  # where the framing was lost for good (no valid header after it), if it was
    overruns: int = 0  # records whose verified length ran past the end of the buffer, with valid records after
    overrun_at: int | None = None  # offset of the first such record
    overrun_claimed: int = 0  # the data length it claimed
    overrun_skipped: int = 0  # bytes skipped from such records to the next valid record


_LEN = struct.Struct("<QI")
_U32 = struct.Struct("<I")


def _header_ok(buf: memoryview, pos: int) -> bool:
    length_crc = _U32.unpack_from(buf, pos + 8)[0]
    return masked_crc(buf[pos : pos + 8]) == length_crc


def scan(buf: bytes | bytearray | memoryview, start: int = 0, *, final: bool = False) -> RecordScan:
    """Find every verified record in ``buf[start:]``.

    Args:
        buf: the bytes of (part of) an event file.
        start: offset of the first record.
        final: ``buf`` runs to the end of the file as it will be read (a whole-file read, not a tail). A
            record whose verified length runs past that end is then looked at twice: when a complete,
            valid record (length CRC and data CRC) starts anywhere after its header, the length was
            damaged (a valid CRC over a wrong length: 2 GB claimed mid-file) and reading resumes there,
            counted in ``overruns``; otherwise it is the file's incomplete last record, as without
            ``final``.

    Returns:
        A :class:`RecordScan`.
    """
    mv = memoryview(buf)
    n = len(mv)
    out = RecordScan()
    pos = start
    while pos + HEADER_BYTES <= n:
        if not _header_ok(mv, pos):
            nxt = _resync(mv, pos + 1, n)
            if nxt is None:
                # No valid header ahead: the rest may be a record being written (tail) or garbage.
                out.lost_from = pos
                break
            out.resyncs += 1
            out.skipped_bytes += nxt - pos
            pos = nxt
            continue
        length = _LEN.unpack_from(mv, pos)[0]
        end = pos + HEADER_BYTES + length + FOOTER_BYTES
        if end > n:
            if final:
                nxt = _next_record(mv, pos + 1, n)
                if nxt is not None:
                    if out.overrun_at is None:
                        out.overrun_at, out.overrun_claimed = pos, length
                    out.overruns += 1
                    out.overrun_skipped += nxt - pos
                    pos = nxt
                    continue
            break  # incomplete record: keep it for the next read
        data_start = pos + HEADER_BYTES
        data_end = data_start + length
        if masked_crc(mv[data_start:data_end]) == _U32.unpack_from(mv, data_end)[0]:
            out.records.append((data_start, data_end))
        else:
            out.bad_crc += 1
        pos = end
    out.consumed = pos
    out.tail_bytes = n - pos
    return out


def _next_record(mv: memoryview, pos: int, n: int) -> int | None:
    """The next offset >= pos where a whole record verifies (length CRC, data in the buffer, data CRC)."""
    while True:
        q = _resync(mv, pos, n)
        if q is None:
            return None
        length = _LEN.unpack_from(mv, q)[0]
        data_end = q + HEADER_BYTES + length
        if data_end + FOOTER_BYTES <= n and masked_crc(mv[q + HEADER_BYTES : data_end]) == _U32.unpack_from(mv, data_end)[0]:
            return q
        pos = q + 1


def masked_crc_range(fd: int, offset: int, length: int, *, chunk: int = 4 << 20) -> int:
    """:func:`masked_crc` of ``length`` bytes of the open file ``fd`` from ``offset``, read in chunks
    (a record may be large; memory stays at one chunk). Short reads (a file that shrank) end early."""
    c = 0
    done = 0
    while done < length:
        data = os.pread(fd, min(chunk, length - done), offset + done)
        if not data:
            break
        c = _crc32c_update(c, data)
        done += len(data)
    return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _resync(mv: memoryview, pos: int, n: int) -> int | None:
    """The next offset >= pos where an 8-byte length and its CRC agree, or None."""
    while pos + HEADER_BYTES <= n:
        if _header_ok(mv, pos):
            return pos
        pos += 1
    return None
