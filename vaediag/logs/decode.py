# Over 450 lines on purpose: one job (scalar records decoded vectorised); TagRegistry's hash slots are the lookup table decode_buffer probes, so the two stay together.
"""Vectorised decoding of scalar Event records, with TensorBoard's protobuf classes as the fallback.

Nearly every record in a training log is one scalar, and torch's ``SummaryWriter`` (so Lightning too)
writes it with one byte layout::

    09 <wall_time: 8 bytes>                      Event.wall_time   (fixed64 double)
    10 <step: varint, 1-7 bytes>                 Event.step        (omitted when the step is 0)
    2a <n+2>  0a <n>  0a <t> <tag: t bytes>      Event.summary.value[0].tag
              15 <simple_value: 4 bytes>         ...simple_value   (fixed32 float), n = t + 7

:func:`decode_buffer` recognises that layout for all records of a buffer at once by byte patterns
(numpy gathers through unaligned views), maps each tag's bytes to a code through a small hash table with
an exact check of every tag byte, and verifies each record's data CRC by linearity (:mod:`crc`): one
record per (tag, step width) is checked with the C CRC function, and every other record through the
bytes in which it differs from that one. Every record that does not match the layout exactly (TF2
tensor scalars, hparams, images, histograms, several values in one summary, a tag that is not UTF-8, a
step of more than 7 varint bytes) goes through :func:`events.decode_records`, so results are identical to
the protobuf path; rows are kept in file order.

Limits (a run that logs a million distinct tags must read in bounded time and memory): a
:meth:`TagRegistry.limited` registry, the one :func:`vaediag.load` and the tail use, registers at most
:data:`MAX_UNMAPPED_TAGS` distinct tags that no term names and at most :data:`MAX_TAGS` distinct tags in
all, in the order they first appear. The records of a tag past a limit are counted per run
(:class:`events.NotRead`: scalars and distinct tags, by 64-bit hash of the tag bytes), never decoded
into rows. Tags that map to a term are only refused past :data:`MAX_TAGS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from vaediag.logs import crc as _crc
from vaediag.logs.events import EventMeta, ScalarRows, decode_records
from vaediag.logs.records import masked_crc

__all__ = ["TagRegistry", "Decoded", "decode_buffer", "MAX_UNMAPPED_TAGS", "MAX_TAGS"]

#: Distinct tags no term names that one load (or one tail) registers; the rest are counted, not read.
MAX_UNMAPPED_TAGS = 50_000
#: Distinct tags of any kind that one load (or one tail) registers.
MAX_TAGS = 100_000
_DROPPED = -2  # a tag code: past a limit (not read); -1 is "not UTF-8: protobuf decides"

_MIN_LEN = 20  # 09+8, 2a len 0a len 0a len, 15+4: the smallest record of the layout (empty tag, step 0)
_MAX_LEN = 160  # 9 + 8 + 6 + 127 + 5, rounded: one-byte length fields cap the layout
_SLOT_BITS = 16
_K0 = np.uint64(0x9E3779B97F4A7C15)
_K1 = np.uint64(0xC2B2AE3D27D4EB4F)
_U8 = np.uint64(0xFF)
_WORD_KEYS = tuple(np.uint64((0x9E3779B97F4A7C15 * (2 * j + 3)) % 2**64 | 1) for j in range(16))
_BYTE_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def _tag_keys(raw: bytes) -> tuple[int, int, list[int]]:
    """The words the vectorised path reads for a tag of >= 2 bytes: head, tail and middle words.

    head: the first 8 bytes of the tag (zero-padded below 8 bytes); tail: the 8 bytes that end where the
    tag ends (for short tags these reach back into the fixed header ``2a t+9 0a t+7 0a t``); middle: the
    8-byte words at offsets 8, 16, ... that start before ``len - 8`` (tags over 16 bytes).
    """
    t = len(raw)
    head = int.from_bytes(raw[:8], "little")
    tail = int.from_bytes((bytes([0x2A, (t + 9) & 0xFF, 0x0A, (t + 7) & 0xFF, 0x0A, t & 0xFF]) + raw)[-8:], "little")
    mids = [int.from_bytes(raw[o : o + 8], "little") for o in range(8, t - 8, 8)]
    return head, tail, mids


class TagRegistry:
    """Tag names seen so far, each with a code; bytes-level tables for the vectorised path.

    ``TagRegistry()`` registers every tag. :meth:`limited` makes one that refuses tags past
    :data:`MAX_UNMAPPED_TAGS` / :data:`MAX_TAGS` (the module docstring): a refused tag is remembered by
    hash (64-bit, of its bytes) so its later records are dropped without decoding their tag again.
    """

    def __init__(
        self,
        *,
        term_of: Callable[[str], str | None] | None = None,
        max_unmapped: int | None = None,
        max_tags: int | None = None,
    ) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self._slot_bits = _SLOT_BITS
        self._slots = np.full(1 << _SLOT_BITS, -1, dtype=np.int32)
        self._by_hash: dict[int, int] = {}  # every registered hash -> code (-1: not UTF-8, protobuf path)
        self._keys: list[tuple[int, int, int, list[int]]] = []  # (length, head, tail, middles) per code
        self._arrays: tuple | None = None  # numpy copies of _keys[:_n_arrays], extended after registrations
        self._n_arrays = 0
        self._term_of = term_of
        self._max_unmapped = max_unmapped
        self._max_tags = max_tags
        self.unmapped = 0  # registered tags that no term names (counted when term_of is given)
        self._dropped: dict[int, bool] = {}  # hash of a refused tag -> whether a term names it
        self._dropped_names: dict[str, bool] = {}  # the same, for tags refused on the protobuf path

    @classmethod
    def limited(cls, term_of: Callable[[str], str | None] | None = None) -> "TagRegistry":
        """A registry with the per-load limits; ``term_of(name)``: the tag's term or None (default:
        :func:`vaediag.terms.resolve` without user mappings)."""
        if term_of is None:
            from vaediag.terms import resolve

            def term_of(name: str) -> str | None:
                return resolve(name)[0]
        return cls(term_of=term_of, max_unmapped=MAX_UNMAPPED_TAGS, max_tags=MAX_TAGS)

    def __len__(self) -> int:
        return len(self.names)

    def _refuse(self, name: str) -> bool | None:
        """None when ``name`` may be registered (counting it); else whether a term names it."""
        if self._term_of is None:
            return None
        mapped = self._term_of(name) is not None
        if self._max_tags is not None and len(self.names) >= self._max_tags:
            return mapped
        if not mapped:
            if self._max_unmapped is not None and self.unmapped >= self._max_unmapped:
                return mapped
            self.unmapped += 1
        return None

    def _add(self, name: str) -> int:
        c = self.index[name] = len(self.names)
        self.names.append(name)
        raw = name.encode("utf-8")
        self._keys.append((len(raw), *_tag_keys(raw)))
        return c

    def code(self, name: str) -> int:
        """The code of ``name``, registering it on first sight (past the limits too)."""
        c = self.index.get(name)
        if c is None:
            if self._term_of is not None and self._term_of(name) is None:
                self.unmapped += 1
            c = self._add(name)
        return c

    def admit(self, name: str) -> int:
        """The code of ``name``, registering it on first sight; -2 when it is past a limit."""
        c = self.index.get(name)
        if c is not None:
            return c
        if name in self._dropped_names:
            return _DROPPED
        mapped = self._refuse(name)
        if mapped is not None:
            self._dropped_names[name] = mapped
            return _DROPPED
        return self._add(name)

    def refused_is_mapped(self, h: int) -> bool:
        """Whether the refused tag of hash ``h`` maps to a term."""
        return self._dropped[h]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(length, head, tail, middle words) of every code, as arrays (extended, not rebuilt)."""
        n = len(self._keys)
        if self._arrays is None or self._n_arrays != n:
            new = self._keys[self._n_arrays :]
            width = max((len(k[3]) for k in new), default=0)
            if self._arrays is None:
                old = (np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint64),
                       np.zeros((0, width), np.uint64))
            else:
                old = self._arrays
            width = max(width, old[3].shape[1])
            mids = np.zeros((len(new), width), dtype=np.uint64)
            for i, k in enumerate(new):
                mids[i, : len(k[3])] = k[3]
            old_mids = old[3]
            if old_mids.shape[1] < width:
                old_mids = np.pad(old_mids, ((0, 0), (0, width - old_mids.shape[1])))
            self._arrays = (
                np.concatenate([old[0], np.fromiter((k[0] for k in new), dtype=np.int64, count=len(new))]),
                np.concatenate([old[1], np.fromiter((k[1] for k in new), dtype=np.uint64, count=len(new))]),
                np.concatenate([old[2], np.fromiter((k[2] for k in new), dtype=np.uint64, count=len(new))]),
                np.concatenate([old_mids, mids]),
            )
            self._n_arrays = n
        return self._arrays

    def _register_bytes(self, h: int, raw: bytes) -> int:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._by_hash[h] = -1
            return -1
        c = self.index.get(name)
        if c is None:
            mapped = self._refuse(name)
            if mapped is not None:
                self._dropped[h] = mapped
                return _DROPPED
            c = self._add(name)
        self._by_hash[h] = c
        if len(self.names) * 2 > len(self._slots):
            self._grow_slots()
        slot = h >> (64 - self._slot_bits)
        if self._slots[slot] < 0:
            self._slots[slot] = c
        return c

    def _grow_slots(self) -> None:
        """Double the slot table (kept at most half full, so most tags resolve without Python)."""
        self._slot_bits += 1
        self._slots = np.full(1 << self._slot_bits, -1, dtype=np.int32)
        shift = 64 - self._slot_bits
        for h, c in self._by_hash.items():
            if c >= 0 and self._slots[h >> shift] < 0:
                self._slots[h >> shift] = c


@dataclass
class Decoded:
    """What :func:`decode_buffer` found in one buffer's records."""

    codes: np.ndarray
    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray
    records: int = 0  # records whose data CRC verified
    bad_crc: int = 0
    fast: int = 0  # records decoded by the vectorised path
    not_read: int = 0  # records of tags past the registry's limits (counted in ``EventMeta.not_read``)


def _tag_codes(
    reg: TagRegistry, buf: np.ndarray, u64: np.ndarray, t0: np.ndarray, tl: np.ndarray, e: np.ndarray
) -> np.ndarray:
    """Code of each record's tag (-1 where the vectorised path must not decide), checked byte for byte.

    A tag of ``tl >= 2`` bytes starting at ``t0`` is read as its head word (first 8 bytes, masked when
    shorter), its tail word (the 8 bytes ending at the tag's end, ``e - 13``) and, for tags over 16
    bytes, the middle words: together they cover every byte of the tag, and the bytes they take from
    around a short tag are the fixed header. The words hash to a slot of a small table; every word is
    then compared with the registered tag's, so a hash collision can only send records to protobuf.
    """
    head = u64[t0]
    short = tl < 8
    if short.any():
        head &= _BYTE_MASKS[np.minimum(tl, 8)]
    tail = u64[e - 13]
    h = tl.astype(np.uint64) * _K0
    h ^= head * _WORD_KEYS[0]
    h ^= tail * _WORD_KEYS[1]
    long_ = np.flatnonzero(tl > 16)
    mids: list[tuple[np.ndarray, np.ndarray]] = []
    if len(long_):
        tl_l = tl[long_]
        for j in range(int((tl_l.max() - 9) // 8)):
            sub = long_ if j == 0 else long_[tl_l > 8 * (j + 2)]
            w = u64[t0[sub] + 8 * (j + 1)]
            h[sub] ^= w * _WORD_KEYS[2 + j % (len(_WORD_KEYS) - 2)]
            mids.append((sub, w))
    h ^= h >> np.uint64(31)
    h *= _K1
    h ^= h >> np.uint64(29)
    codes = reg._slots[(h >> np.uint64(64 - reg._slot_bits)).astype(np.intp)]
    ok = _verify(reg, codes, tl, head, tail, mids)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        uh, first, inv = np.unique(h[bad], return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # new tags in the order they first appear
        at = bad[first[order]]
        mv = memoryview(buf)
        by_hash, dropped = reg._by_hash, reg._dropped
        found = []
        for hv, a, n in zip(uh[order].tolist(), t0[at].tolist(), tl[at].tolist()):
            c = by_hash.get(hv)
            if c is None:
                c = _DROPPED if hv in dropped else reg._register_bytes(hv, mv[a : a + n].tobytes())
            found.append(c)
        mapped = np.empty(len(uh), dtype=np.int32)
        mapped[order] = found
        codes[bad] = mapped[inv.reshape(-1)]
        ok = _verify(reg, codes, tl, head, tail, mids)  # a 64-bit hash collision is caught here
        codes[~ok & (codes != _DROPPED)] = -1  # (a refused tag is known by its hash alone)
    return codes, h


def _verify(reg: TagRegistry, codes: np.ndarray, tl, head, tail, mids) -> np.ndarray:
    if len(reg) == 0:
        return np.zeros(len(codes), dtype=bool)
    r_tl, r_head, r_tail, r_mids = reg.arrays()
    c = np.maximum(codes, 0)
    ok = codes >= 0
    ok &= r_tl[c] == tl
    ok &= r_head[c] == head
    ok &= r_tail[c] == tail
    ncols = r_mids.shape[1]
    for j, (sub, w) in enumerate(mids):
        if j >= ncols:
            ok[sub] = False
        else:
            ok[sub] &= r_mids[c[sub], j] == w
    return ok


def _step_varints(w9: np.ndarray, has_step: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """The step varint in bytes 1..7 of each record's word ``w9``: (its length k, whether it ends there, the
    longest k, the steps); k is 0 where the record has no step."""
    # k = index of the first byte with its high bit clear.
    v = w9 >> np.uint64(8)
    term = ~v & np.uint64(0x0080808080808080)
    lowest = term & (~term + np.uint64(1))
    k = ((np.bitwise_count(lowest - np.uint64(1)) + np.uint8(1)) >> np.uint8(3)).astype(np.int64)
    k_ok = term != 0
    k = np.where(has_step & k_ok, k, 0)
    kmax = int(k.max()) if len(k) else 0
    vm = v & _BYTE_MASKS[k]
    step = np.zeros(len(w9), dtype=np.uint64)
    for i in range(kmax):
        step |= ((vm >> np.uint64(8 * i)) & np.uint64(0x7F)) << np.uint64(7 * i)
    return k, k_ok, kmax, step


def _crcs_ok(buf, u32, s, e, Ls, k, kmax: int, codes, n_tags: int, wall_bits, w9, val_bits) -> np.ndarray:
    """Whether each layout record's data CRC holds, by linearity against one representative record per
    (tag, step width): the C CRC of the representative, then the CRC of the bytes in which each record
    differs from it (wall time, step, value), from two-byte lookup tables."""
    crc_ok = np.ones(len(s), dtype=bool)
    if not len(s):
        return crc_ok
    g = codes.astype(np.int64) * 8 + k
    rep = np.full(n_tags * 8, -1, dtype=np.int64)
    rep[g] = np.arange(len(s))
    present = np.flatnonzero(rep >= 0)
    crc0 = np.zeros(len(rep), dtype=np.uint32)
    for gid in present.tolist():
        r = int(rep[gid])
        crc0[gid] = _crc.crc32c(memoryview(buf)[int(s[r]) : int(e[r])])
    r = rep[g]
    dwall = wall_bits ^ wall_bits[r]
    dstep = (w9 ^ w9[r]) & (_BYTE_MASKS[k + 1] & ~_U8)
    dval = val_bits ^ val_bits[r]
    tables = _crc.pair_tables(int(Ls.max()) - 3).reshape(-1)
    acc = crc0[g]
    # Two-byte pieces of the differences, read through uint16 views (no shifting and masking).
    # A piece that is zero in every record (the high bytes of nearby times, of small steps)
    # contributes nothing: skip its lookups.
    wall16 = dwall.view(np.uint16).reshape(-1, 4)
    base = (Ls - 3) << 16
    for i in range(4):
        if wall16[:, i].any():
            acc ^= tables[(base - (2 * i << 16)) + wall16[:, i]]
    step16 = dstep.view(np.uint16).reshape(-1, 4)
    base = (Ls - 11) << 16
    for i in range((kmax + 2) // 2):
        if step16[:, i].any():
            acc ^= tables[np.maximum(base - (2 * i << 16), 0) + step16[:, i]]
    val16 = dval.astype(np.uint32).view(np.uint16).reshape(-1, 2)
    acc ^= tables[val16[:, 0].astype(np.intp) + (2 << 16)]
    acc ^= tables[val16[:, 1]]
    crc_ok = _crc.mask(acc) == u32[e]
    return crc_ok


def decode_buffer(
    buf: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    reg: TagRegistry,
    meta: EventMeta,
) -> Decoded:
    """Decode records ``buf[starts[i] : starts[i] + lengths[i]]`` (framed, data CRC not yet checked).

    ``buf`` must have 16 readable bytes after the last record (see ``scanner.PAD``).

    Long on purpose: one vectorised pass over every record at once (lengths, wire tags, tag lookup, values);
    its arrays flow from step to step, and naming each step a function would pass a dozen arrays around.
    """
    from vaediag.logs.scanner import views

    u64, u32 = views(buf)
    n_rec = len(starts)
    if n_rec <= _FEW_RECORDS:
        # A handful of records (a header-only file, a short poll): protobuf costs less than the numpy set-up.
        empty = np.zeros(0, dtype=np.int64)
        out = Decoded(np.zeros(0, np.int32), empty, np.zeros(0, np.float64), np.zeros(0, np.float64))
        _decode_others(buf, u32, starts, lengths, np.arange(n_rec), empty, reg, meta, out)
        return out
    L = lengths
    in_range = (L >= _MIN_LEN) & (L <= _MAX_LEN)
    if in_range.all():
        sel = np.arange(n_rec)
        s, Ls = starts, L
    else:
        sel = np.flatnonzero(in_range)
        s, Ls = starts[sel], L[sel]
    e = s + Ls

    w0 = buf[s]
    wall_bits = u64[s + 1]
    w9 = u64[s + 9]
    b9 = w9 & _U8
    has_step = b9 == 0x10
    k, k_ok, kmax, step = _step_varints(w9, has_step)
    q = s + 9 + np.where(has_step, k + 1, 0)
    hw = u64[q]
    # Summary header: 2a <t+9> 0a <t+7> 0a <t>, the three lengths one byte each (t <= 118).
    tlu = (hw >> np.uint64(40)) & _U8
    expect = tlu << np.uint64(40)
    expect |= (tlu + np.uint64(9)) << np.uint64(8)
    expect |= (tlu + np.uint64(7)) << np.uint64(24)
    expect |= np.uint64(0x000A000A002A)
    tl = tlu.astype(np.int64)
    tw = u64[e - 8]
    ok = (
        (w0 == 0x09)
        & (has_step & k_ok | (b9 == 0x2A))
        & ((hw & np.uint64(0xFFFFFFFFFFFF)) == expect)
        & (tl <= 118)
        & (tl >= 2)  # shorter tags: the tail word would reach into the step (protobuf path)
        & (q + 11 + tl == e)
        & (((tw >> np.uint64(24)) & _U8) == 0x15)
    )
    good = np.flatnonzero(ok)
    if len(good) < len(s):
        s, e, Ls, k, q, tl = s[good], e[good], Ls[good], k[good], q[good], tl[good]
        wall_bits, w9, step, tw = wall_bits[good], w9[good], step[good], tw[good]
        sel = sel[good]
    if len(s):
        codes, hashes = _tag_codes(reg, buf, u64, q + 6, tl, e)
    else:
        codes, hashes = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.uint64)
    refused = codes == _DROPPED
    not_read_sel = sel[refused] if refused.any() else None
    if not_read_sel is not None:
        _count_not_read(reg, meta, hashes[refused])
    known = codes >= 0
    if not known.all():
        keep = np.flatnonzero(known)
        s, e, Ls, k, codes = s[keep], e[keep], Ls[keep], k[keep], codes[keep]
        wall_bits, w9, step, tw = wall_bits[keep], w9[keep], step[keep], tw[keep]
        sel = sel[keep]

    val_bits = tw >> np.uint64(32)
    crc_ok = _crcs_ok(buf, u32, s, e, Ls, k, kmax, codes, len(reg), wall_bits, w9, val_bits)
    handled = np.zeros(n_rec, dtype=bool)
    handled[sel] = True  # of the layout: decoded here, or rejected for a bad CRC
    if not_read_sel is not None:
        handled[not_read_sel] = True  # a tag past the limits: counted, not read
    n_bad = int(len(crc_ok) - np.count_nonzero(crc_ok))
    if n_bad:
        okk = np.flatnonzero(crc_ok)
        codes, step, wall_bits, val_bits, sel = codes[okk], step[okk], wall_bits[okk], val_bits[okk], sel[okk]

    fast_codes = codes.astype(np.int32)
    fast_steps = step.view(np.int64)
    fast_values = val_bits.astype(np.uint32).view(np.float32).astype(np.float64)
    fast_walls = wall_bits.view(np.float64)

    out = Decoded(fast_codes, fast_steps, fast_values, fast_walls)
    out.fast = len(fast_codes)
    out.bad_crc = n_bad
    out.not_read = 0 if not_read_sel is None else len(not_read_sel)
    out.records = len(fast_codes)
    _decode_others(buf, u32, starts, lengths, np.flatnonzero(~handled), sel, reg, meta, out)
    return out


_FEW_RECORDS = 4


def _decode_others(buf, u32, starts, lengths, others, sel, reg: TagRegistry, meta: EventMeta, out: Decoded) -> None:
    """Records ``others`` (indices into starts/lengths): C CRC each, then protobuf; their rows are merged
    into ``out`` in record order (``sel``: the record index of each row already in ``out``)."""
    mv = memoryview(buf)
    good_records: list[tuple[int, int]] = []
    good_index: list[int] = []
    for r in others.tolist():
        a = int(starts[r])
        b = a + int(lengths[r])
        if masked_crc(mv[a:b]) == int(u32[b]):
            good_records.append((a, b))
            good_index.append(r)
        else:
            out.bad_crc += 1
    out.records += len(good_records)
    if good_records:
        rows = ScalarRows()
        row_rec: list[int] = []
        decode_records(buf, good_records, rows, meta, row_records=row_rec)
        if len(rows):
            rec_of_row = np.asarray(good_index, dtype=np.int64)[np.asarray(row_rec, dtype=np.int64)]
            at = np.searchsorted(sel, rec_of_row)
            fb_codes = np.fromiter((reg.admit(t) for t in rows.tags), dtype=np.int32, count=len(rows))
            refused = fb_codes == _DROPPED
            if refused.any():  # tags past the limits: counted, their rows left out
                kept = np.flatnonzero(~refused)
                names = [rows.tags[i] for i in np.flatnonzero(refused).tolist()]
                _count_not_read_names(reg, meta, names)
                out.not_read += len(names)
                fb_codes, rec_of_row = fb_codes[kept], rec_of_row[kept]
                rows = ScalarRows([rows.tags[i] for i in kept.tolist()], [rows.steps[i] for i in kept.tolist()],
                                  [rows.values[i] for i in kept.tolist()], [rows.wall_times[i] for i in kept.tolist()])
                at = np.searchsorted(sel, rec_of_row)
            out.codes = np.insert(out.codes, at, fb_codes)
            out.steps = np.insert(out.steps, at, np.asarray(rows.steps, dtype=np.int64))
            out.values = np.insert(out.values, at, np.asarray(rows.values, dtype=np.float64))
            out.wall_times = np.insert(out.wall_times, at, np.asarray(rows.wall_times, dtype=np.float64))


def _count_not_read(reg: TagRegistry, meta: EventMeta, hashes: np.ndarray) -> None:
    """Count records of refused tags (by the hash of their tag bytes) into ``meta.not_read``."""
    uh, counts = np.unique(hashes, return_counts=True)
    kind = np.fromiter((reg.refused_is_mapped(int(x)) for x in uh.tolist()), dtype=bool, count=len(uh))
    for mapped in (False, True):
        sel = kind == mapped
        if sel.any():
            meta.not_read_of(mapped).add(uh[sel], int(counts[sel].sum()))


def _count_not_read_names(reg: TagRegistry, meta: EventMeta, names: list[str]) -> None:
    for mapped in (False, True):
        sub = [n for n in names if reg._dropped_names[n] == mapped]
        if sub:
            hashes = np.fromiter((hash(n) for n in sub), dtype=np.int64, count=len(sub)).view(np.uint64)
            meta.not_read_of(mapped).add(np.unique(hashes), len(sub))
