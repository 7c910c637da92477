"""One run directory's files read whole into its :class:`~vaediag.logs.runset.RunInfo` and raw rows: its event
files (each file's :class:`~vaediag.logs.runset.FileStats`, the damage found, step counters that restart over
an earlier file's) or its metrics log (:mod:`vaediag.logs.sources`), and its metadata
(:mod:`vaediag.logs.metadata`). :func:`vaediag.load` (:mod:`vaediag.logs.reader`) turns the rows of every run
into the frame: ``*_fast`` for the numpy engine, :func:`read_run` for the reference one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaediag.errors import CorruptLogError
from vaediag.logs import decode as _decode
from vaediag.logs.decode import TagRegistry
from vaediag.logs.discover import RunDir
from vaediag.logs.events import EventMeta, ScalarRows, decode_records
from vaediag.logs.frame import RunRows
from vaediag.logs.metadata import read_run_metadata
from vaediag.logs.notes import Note
from vaediag.logs.records import scan
from vaediag.logs.runset import FileStats, RunInfo
from vaediag.logs.sources import MAX_SOURCE_BYTES, SourceCursor, SourceRows
from vaediag.logs.stream import FileCursor, Rows, RowsAccumulator
from vaediag.safeio import open_regular

__all__ = ["CANNOT_READ", "read_event_file", "read_run", "read_run_fast", "read_run_source_fast", "restart_warnings",
           "row_bound"]

# How an unreadable file's warning begins (a run none of whose files can be read is skipped on it).
CANNOT_READ = ("cannot read event file ", "cannot read metrics log ")


def _unreadable(path: Path, exc: OSError) -> str:
    return f"cannot read event file {path}: {exc.strerror or exc}"


def _not_event_file(path: Path, size: int) -> str:
    return (f"cannot read event file {path}: not a TensorBoard event file (no valid record in its "
            f"{size:,} bytes)")


def read_event_file(path: Path, rows: ScalarRows, meta: EventMeta) -> FileStats:
    """Read one whole event file into ``rows`` and ``meta``; damage is counted in the returned stats.

    Raises:
        CorruptLogError: the file cannot be read at all: it cannot be opened (permissions, gone), it is
            not a regular file (a FIFO would block, a device never end), or not one record in it
            verifies (it is not an event file).
    """
    stats = FileStats(path=path)
    try:
        with open_regular(path) as fh:
            buf = fh.readall()
    except OSError as exc:
        raise CorruptLogError(_unreadable(path, exc)) from None
    stats.size = len(buf)
    result = scan(buf, final=True)
    if result.lost_from == 0:
        raise CorruptLogError(_not_event_file(path, stats.size))
    before_bad = meta.undecodable
    n_before = len(rows)
    decode_records(buf, result.records, rows, meta)
    stats.records = len(result.records)
    stats.scalars = len(rows) - n_before
    stats.bad_crc = result.bad_crc
    stats.undecodable = meta.undecodable - before_bad
    stats.resyncs = result.resyncs
    stats.skipped_bytes = result.skipped_bytes
    stats.truncated_bytes = result.tail_bytes
    stats.overruns, stats.overrun_at = result.overruns, result.overrun_at
    stats.overrun_claimed, stats.overrun_skipped = result.overrun_claimed, result.overrun_skipped
    return stats


def restart_warnings(files: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]]) -> list[str]:
    """Warnings for event files of one run whose step counters restarted over an earlier file's.

    ``files``: (path, tag codes, steps, wall times) per file. A later file (by first wall_time) whose
    steps, for the tags both files log, start below the earlier file's last step and overlap more than
    half of the earlier file's step range is a second run written into the same directory (its counter
    restarted at or near 0). A resumed run (Lightning restores ``_batches_that_stepped`` from the
    checkpoint, ``training_epoch_loop.on_load_checkpoint``) continues near the last step, re-logging a
    few steps at most, and is not warned about. Per-file and per-tag work only.
    """
    spans = []
    for path, codes, steps, walls in files:
        if len(steps) == 0:
            continue
        tags = np.unique(codes)
        lo = np.full(int(tags.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full(int(tags.max()) + 1, np.iinfo(np.int64).min, dtype=np.int64)
        np.minimum.at(lo, codes, steps)
        np.maximum.at(hi, codes, steps)
        spans.append((float(walls.min()), path, tags, lo, hi))
    spans.sort(key=lambda t: t[0])
    out = []
    for j in range(1, len(spans)):
        _, pb, tb, lob, hib = spans[j]
        for i in range(j):
            _, pa, ta, loa, hia = spans[i]
            common = np.intersect1d(ta, tb)
            if len(common) == 0:
                continue
            a_first, a_last = int(loa[common].min()), int(hia[common].max())
            b_first, b_last = int(lob[common].min()), int(hib[common].max())
            if b_first < a_last and (a_last - b_first) * 2 > (a_last - a_first):
                out.append(
                    f"{pb.name} (steps {b_first}..{b_last}) restarts the step counter over the earlier "
                    f"{pa.name} (steps {a_first}..{a_last}): two runs written into one directory; where "
                    "their steps collide vaediag kept the later file's values. Give each run its own "
                    "directory (or move one file out)"
                )
                break
    return out


def _file_warnings(st: FileStats) -> list[str]:
    name = st.path.name
    out = []
    if st.overruns:
        skipped = (f"{st.overrun_skipped:,} bytes skipped" if st.overruns == 1 else
                   f"{st.overruns} such records, {st.overrun_skipped:,} bytes skipped in all")
        out.append(
            f"{name}: the record at byte {st.overrun_at:,} claims {st.overrun_claimed:,} bytes, past the end of "
            f"the file ({st.size:,} bytes): a damaged length; reading resumed at the next valid record ({skipped})"
        )
    if st.truncated_bytes:
        out.append(
            f"{name}: last record incomplete, {st.truncated_bytes:,} bytes ignored from byte "
            f"{st.size - st.truncated_bytes:,} (a file still being written, or a crash)"
        )
    if st.bad_crc:
        out.append(f"{name}: {st.bad_crc} record(s) with a bad CRC skipped")
    if st.resyncs:
        out.append(f"{name}: framing lost {st.resyncs} time(s), {st.skipped_bytes} damaged bytes skipped")
    if st.undecodable:
        out.append(f"{name}: {st.undecodable} record(s) not decodable as events, skipped")
    return out


def read_run_fast(rd: RunDir, reg: TagRegistry, *, capacity: int) -> tuple[RunInfo, Rows]:
    info = RunInfo(run=rd.run, path=rd.path, event_files=list(rd.event_files), source_files=list(rd.event_files),
                   not_read=[s.path for s in rd.also])
    meta = EventMeta()
    acc = RowsAccumulator(capacity)
    file_rows: list[tuple[Path, int, int]] = []
    for f in rd.event_files:
        cur = FileCursor(f)
        before, n_before = meta.undecodable, len(acc)
        try:
            cur.read(reg, meta, into=acc, final=True)
        except OSError as exc:
            info.warnings.append(_unreadable(f, exc))
            continue
        if cur.no_record_found:
            info.warnings.append(_not_event_file(f, cur.size))
            continue
        st = FileStats(
            path=f,
            size=cur.size,
            records=cur.records,
            scalars=len(acc) - n_before,
            bad_crc=cur.bad_crc,
            undecodable=meta.undecodable - before,
            resyncs=cur.resyncs,
            skipped_bytes=cur.skipped_bytes,
            truncated_bytes=cur.truncated_bytes(),
            overruns=cur.overruns,
            overrun_at=cur.overrun_at,
            overrun_claimed=cur.overrun_claimed,
            overrun_skipped=cur.overrun_skipped,
        )
        info.files.append(st)
        info.warnings.extend(_file_warnings(st))
        file_rows.append((f, n_before, len(acc)))
    info.hparams = meta.hparams
    info.texts = meta.texts
    info.image_tags = meta.images
    rows = acc.rows()
    if len(file_rows) > 1:
        info.warnings.extend(restart_warnings([
            (f, rows.codes[a:b], rows.steps[a:b], rows.wall_times[a:b]) for f, a, b in file_rows
        ]))
    info.n_scalars = len(rows)
    _not_read(info, meta)
    read_run_metadata(rd.path, info)
    if sum(st.size for st in info.files) > _TRIM_AFTER_BYTES:
        _release_free_memory()
    return info, rows


def _not_read(info: RunInfo, meta: EventMeta) -> None:
    """Record the tags past the registry's limits: a fact for tags no term names, a warning for the others."""
    un, mapped = meta.not_read_unmapped, meta.not_read_mapped
    info.unmapped_not_read, info.tags_not_read = un.tags, mapped.tags
    info.scalars_not_read = un.scalars + mapped.scalars
    if un:
        info.facts.append(Note.tags_not_read(un.tags, un.scalars, limit=_decode.MAX_UNMAPPED_TAGS))
    if mapped:
        info.warnings.append(
            f"{mapped.tags:,} tag{'s' if mapped.tags != 1 else ''} that vaediag reads {'were' if mapped.tags != 1 else 'was'} "
            f"not read ({mapped.scalars:,} scalars): past its limit of {_decode.MAX_TAGS:,} distinct tags per load (the "
            "tags seen first are read); in a tree, check fewer runs at a time (--run GLOB)")


_MIN_SCALAR_RECORD = 36  # 16 bytes of framing + the smallest one-scalar Event of the common layout


def row_bound(rd: RunDir) -> int:
    """A capacity for a run's rows: its files' bytes over the smallest scalar record (rarely exceeded); a
    metrics log's bytes over 2 (a one-digit value and a comma)."""
    total = 0
    for f in rd.files:
        try:
            total += f.stat().st_size // (2 if rd.sources else _MIN_SCALAR_RECORD)
        except OSError:
            pass
    return min(total, (MAX_SOURCE_BYTES // 2) if rd.sources else total) + 16


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them after a chunk's temporaries are freed)."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None
_TRIM_AFTER_BYTES = 8 << 20  # small runs leave little behind; trimming after each would cost more


def _read_source(rd: RunDir) -> tuple[RunInfo, SourceRows | None]:
    """Read a run's metrics log whole (:class:`~vaediag.logs.sources.SourceCursor`), and its metadata.

    A log that cannot be read at all leaves ``info.files`` empty and says why in ``info.warnings`` (the caller
    skips the run, or raises when no run is readable)."""
    (src,) = rd.sources
    info = RunInfo(run=rd.run, path=rd.path, source=src.kind, source_files=[src.path],
                   not_read=[s.path for s in rd.also])
    cur = SourceCursor(src)
    info.source_label = cur.label
    try:
        rows = cur.read(final=True)
    except CorruptLogError as exc:
        info.warnings.append(exc.message)
        return info, None
    info.source = "lightning_csv" if cur.label == "Lightning CSVLogger" else src.kind
    info.source_label = cur.label
    info.source_mtime = cur.mtime
    info.log_params = dict(cur.log_params)
    info.files.append(FileStats(path=src.path, size=cur.size, records=cur.rows, scalars=len(rows)))
    info.warnings.extend(cur.warnings())
    info.facts.extend(cur.notes())
    info.n_scalars = len(rows)
    read_run_metadata(rd.path, info)
    return info, rows


def read_run_source_fast(rd: RunDir, reg: TagRegistry) -> tuple[RunInfo, Rows, np.ndarray | None]:
    """A metrics-log run for the numpy engine: tags through the load's registry (and its limits)."""
    info, sr = _read_source(rd)
    if sr is None:
        return info, Rows.concat([]), None
    lut = np.asarray([reg.admit(n) for n in sr.names], dtype=np.int64) if sr.names else np.zeros(0, np.int64)
    codes = lut[sr.codes] if len(sr) else np.zeros(0, np.int64)
    keep = codes >= 0
    meta = EventMeta()
    if not keep.all():  # tags past the registry's limits: counted, not read
        counts = np.bincount(sr.codes[~keep], minlength=len(sr.names))
        for c in np.flatnonzero(counts).tolist():
            name = sr.names[c]
            h = np.asarray([hash(name)], dtype=np.int64).view(np.uint64)
            meta.not_read_of(reg._dropped_names.get(name, False)).add(h, int(counts[c]))
    rows = Rows(codes[keep].astype(np.int32), sr.steps[keep], sr.values[keep], sr.order[keep])
    info.n_scalars = len(rows)
    _not_read(info, meta)
    return info, rows, sr.walls[keep]


def read_run(rd: RunDir) -> tuple[RunInfo, RunRows]:
    if rd.sources:
        info, sr = _read_source(rd)
        if sr is None:
            return info, RunRows.from_lists(rd.run, [], [], [], [])
        used, codes = np.unique(sr.codes, return_inverse=True)  # only tags with rows, as the numpy engine
        rr = RunRows(run=rd.run, tag_names=[sr.names[c] for c in used.tolist()], tag_codes=codes.astype(np.int32),
                     steps=sr.steps, values=sr.values, wall_times=sr.order, shown_walls=sr.walls)
        return info, rr
    info = RunInfo(run=rd.run, path=rd.path, event_files=list(rd.event_files), source_files=list(rd.event_files),
                   not_read=[s.path for s in rd.also])
    rows = ScalarRows()
    meta = EventMeta()
    file_rows: list[tuple[Path, int, int]] = []
    for f in rd.event_files:
        n_before = len(rows)
        try:
            st = read_event_file(f, rows, meta)
        except CorruptLogError as exc:
            info.warnings.append(exc.message)
            continue
        info.files.append(st)
        info.warnings.extend(_file_warnings(st))
        file_rows.append((f, n_before, len(rows)))
    if len(file_rows) > 1:
        names = sorted(set(rows.tags))
        index = {t: i for i, t in enumerate(names)}
        codes = np.asarray([index[t] for t in rows.tags], dtype=np.int64)
        steps, walls = np.asarray(rows.steps, dtype=np.int64), np.asarray(rows.wall_times, dtype=np.float64)
        info.warnings.extend(restart_warnings([(f, codes[a:b], steps[a:b], walls[a:b]) for f, a, b in file_rows]))
    info.hparams = meta.hparams
    info.texts = meta.texts
    info.image_tags = meta.images
    info.n_scalars = len(rows)
    read_run_metadata(rd.path, info)
    rr = RunRows.from_lists(rd.run, rows.tags, rows.steps, rows.values, rows.wall_times)
    return info, rr
