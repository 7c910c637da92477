"""Read event files, metrics logs (:mod:`vaediag.logs.sources`) and run metadata into a :class:`RunSet` (the
tidy frame plus per-run metadata)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import pandas as pd

from vaediag.errors import CorruptLogError, InputError, VaediagError
from vaediag.logs.discover import RunDir, discover
from vaediag.logs.aligner import EpochAligner
from vaediag.logs.events import EventMeta, ScalarRows, decode_records
from vaediag.logs.notes import Note
from vaediag.logs import decode as _decode
from vaediag.logs.decode import TagRegistry
from vaediag.logs.frame import FrameBuilder, RunRows, build_frame
from vaediag.logs.records import scan
from vaediag.logs.sources import MAX_SOURCE_BYTES, SourceCursor, SourceRows
from vaediag.logs.stream import FileCursor, Rows, RowsAccumulator
from vaediag.safeio import open_regular, read_text
from vaediag.structured import loads_json, loads_yaml
from vaediag.terms import TagMap, load_tag_map

if TYPE_CHECKING:
    from vaediag.logs.images import LoggedImage

__all__ = ["ENGINES", "RunInfo", "RunSet", "FileStats", "load", "read_event_file", "read_run_metadata", "restart_warnings"]


@dataclass
class FileStats:
    """What reading one event file found."""

    path: Path
    size: int = 0
    records: int = 0
    scalars: int = 0
    bad_crc: int = 0
    undecodable: int = 0
    resyncs: int = 0
    skipped_bytes: int = 0
    truncated_bytes: int = 0
    overruns: int = 0  # records whose length ran past the end of the file, with valid records after them
    overrun_at: int | None = None  # byte offset of the first
    overrun_claimed: int = 0  # the length it claimed
    overrun_skipped: int = 0  # bytes skipped to the next valid record, in all


@dataclass
class RunInfo:
    """Run-level metadata, kept beside the frame (ARCHITECTURE)."""

    run: str
    path: Path
    event_files: list[Path] = field(default_factory=list)
    n_scalars: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)  # from the hparams plugin in the event files
    hparams_yaml: dict[str, Any] = field(default_factory=dict)  # hparams.yaml in the run dir (Lightning)
    config: dict[str, Any] = field(default_factory=dict)  # config.json in the run dir (our trainer)
    project_config: dict[str, Any] = field(default_factory=dict)  # latent-diffusion's configs/*-project.yaml
    texts: dict[str, str] = field(default_factory=dict)  # text summaries, tag -> latest text
    image_tags: dict[str, tuple[int, int]] = field(default_factory=dict)  # image tag -> (count, latest step)
    facts: list[Note] = field(default_factory=list)  # facts about the data (e.g. a KL sign flip): kind, tag, count
    warnings: list[str] = field(default_factory=list)  # damage found while reading, files that overlap
    unmapped_tags: list[str] = field(default_factory=list)  # scalar tags no canonical term names, sorted
    files: list[FileStats] = field(default_factory=list)
    # Past the reader's limits on distinct tags (decode.MAX_UNMAPPED_TAGS, MAX_TAGS): counted, not read.
    unmapped_not_read: int = 0  # distinct tags no term names
    tags_not_read: int = 0  # distinct tags a term names (a warning says so)
    scalars_not_read: int = 0  # their records
    # What the run was read from: "tensorboard" (its event files) or a metrics log's kind (sources.py:
    # "csv", "jsonl", "hf_trainer_state"), a label for people, and the files.
    source: str = "tensorboard"
    source_label: str = "TensorBoard event files"
    source_files: list[Path] = field(default_factory=list)
    source_mtime: float | None = None  # a metrics log's modification time (it records no wall times)
    log_params: dict[str, Any] = field(default_factory=dict)  # parameters the log itself records (trainer_state.json)
    not_read: list[Path] = field(default_factory=list)  # metrics logs in the run directory that were not read

    @property
    def notes(self) -> list[str]:
        """The facts' text, for people (a renderer's view of :attr:`facts`)."""
        return [f.message for f in self.facts]

    @property
    def source_line(self) -> str:
        """One line saying which files the run was read from, where that is not its event files alone ("" then)."""
        skipped = ", ".join(_rel(f, self.path) for f in self.not_read)
        if self.source == "tensorboard":
            return f"not read: {skipped} (the run's event files are read)" if skipped else ""
        files = ", ".join(_rel(f, self.path) for f in self.source_files)
        return f"read from {files} ({self.source_label})" + (f"; not read: {skipped}" if skipped else "")

    @property
    def params(self) -> dict[str, Any]:
        """All known parameters, flattened to dotted keys; config.json wins over hparams.yaml over plugin over
        a project config found above the run directory over what the metrics log itself records."""
        out: dict[str, Any] = {}
        for source in (self.log_params, self.project_config, self.hparams, self.hparams_yaml, self.config):
            out.update(_flatten(source))
        return out

    def images(self, tags: Iterable[str] | None = None) -> "list[LoggedImage]":
        """The run's logged images (:mod:`vaediag.logs.images`), read now: the scalar read never decodes them."""
        from vaediag.logs.images import read_images

        return read_images(self.event_files, tags=tags)

    def param(self, *names: str) -> Any:
        """The first parameter found under any of ``names`` (full dotted key, or last component)."""
        flat = self.params
        for name in names:
            if name in flat:
                return flat[name]
        for name in names:
            for key, value in flat.items():
                if key.rsplit(".", 1)[-1] == name:
                    return value
        return None


@dataclass
class RunSet:
    """The result of :func:`load`: the tidy frame, per-run metadata and load warnings."""

    root: Path
    frame: pd.DataFrame
    runs: dict[str, RunInfo]
    warnings: list[str] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)  # dirs with run metadata but no event file

    def __iter__(self) -> Iterator[RunInfo]:
        return iter(self.runs.values())

    def __len__(self) -> int:
        return len(self.runs)

    def run_frame(self, run: str) -> pd.DataFrame:
        """Rows of one run."""
        return self.frame[self.frame["run"] == run]


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (``../trainer_state.json`` for a file above it)."""
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:
        return str(path)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out.update(_flatten(v, key))
            else:
                out[key] = v
    return out


def _shown(path: Path, root: Path) -> str:
    """``path`` for a message: relative to ``root``, and shortened in the middle past 120 characters."""
    try:
        text = path.relative_to(root).as_posix()
    except ValueError:
        text = str(path)
    return text if len(text) <= 120 else f"{text[:50]}…{text[-60:]}"


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


def read_run_metadata(path: Path, info: RunInfo) -> None:
    """Read hparams.yaml and config.json from a run directory into ``info`` (damage -> warnings), and a
    latent-diffusion project config above it (:mod:`vaediag.logs.projectconfig`).

    Both are read through :mod:`vaediag.safeio` (regular files only, never blocking, at most 1 MiB) and
    parsed by :mod:`vaediag.structured` (nesting, YAML aliases that expand without bound, cycles): a file
    that fails any of it is skipped with a note in ``info.warnings``; the run is still read.
    """
    _read_project_config(path, info)
    for name, loads in (("hparams.yaml", loads_yaml), ("config.json", loads_json)):
        f = path / name
        if not os.path.lexists(f):
            continue
        try:
            text = read_text(f, what=name, missing_ok=True)
            data = None if text is None else loads(text, where=name, error=InputError)
        except VaediagError as exc:
            info.warnings.append(f"{name} unreadable: {_detail(exc.message, name)}; ignored")
            continue
        if name == "hparams.yaml":
            info.hparams_yaml = data if isinstance(data, dict) else {}
        else:
            info.config = data if isinstance(data, dict) else {}


def _detail(message: str, name: str) -> str:
    """What is wrong, from a safeio/structured message about ``name``: ``"hparams.yaml '/abs/hparams.yaml' is
    a FIFO ...; pass a file"`` -> ``"a FIFO ..."`` (the warning names the run and the file already; the advice
    to pass another file does not apply to a file found in a log tree)."""
    import re

    n = re.escape(name)
    message = re.sub(rf"^(cannot read )?{n}( '.*?')?(: | is | )", "", message, count=1)
    return re.sub(r"(; pass a (text )?file| \(this is not the file you meant\))$", "", message)


def _read_project_config(path: Path, info: RunInfo) -> None:
    from vaediag.logs.projectconfig import project_config_note

    info.project_config, note = project_config_note(path)
    if note is not None:
        info.facts.append(note)


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


ENGINES = ("numpy", "python")


def load(
    path: str | os.PathLike[str],
    *,
    tags: TagMap | str | os.PathLike[str] | None = None,
    steps_per_epoch: int | None = None,
    run_glob: str | None = None,
    engine: str = "numpy",
) -> RunSet:
    """Read every run under ``path`` into a :class:`RunSet`.

    Args:
        path: a run directory, a tree of runs, or one event file.
        tags: extra tag mappings: a :class:`TagMap` or the path of a TOML file (see terms.TagMap).
        steps_per_epoch: last-resort epoch alignment for runs that log no epoch.
        run_glob: keep only runs whose id matches this glob (fnmatch).
        engine: ``"numpy"`` (default: vectorised framing, CRCs and decoding of the common scalar layout,
            protobuf for every other record) or ``"python"`` (the reference: one record at a time,
            protobuf for all). Both give the same frame, metadata and warnings, up to the numpy engine's
            limits on distinct tags (:data:`decode.MAX_UNMAPPED_TAGS` tags no term names,
            :data:`decode.MAX_TAGS` in all, per load): past them it counts tags and scalars in
            ``RunInfo.unmapped_not_read`` / ``tags_not_read`` / ``scalars_not_read`` instead of reading
            them; the reference reads everything.

    Raises:
        InputError: the path is missing or unreadable, ``run_glob`` matches no run, or a bad option.
        NoRunsError: no event file under the path.
        TagsError: a malformed tags file.
    """
    import fnmatch

    if engine not in ENGINES:
        raise InputError(f"unknown reader engine {engine!r} (choose {', '.join(ENGINES)})")
    tag_map = load_tag_map(tags) if isinstance(tags, (str, os.PathLike)) else tags
    if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or steps_per_epoch <= 0):
        raise InputError(f"steps per epoch must be a positive integer, got {steps_per_epoch}")
    unlisted: list[tuple[Path, str]] = []  # directories the walk could not list
    root, run_dirs, orphans = discover(path, skipped=unlisted)
    if run_glob is not None:
        selected = [r for r in run_dirs if fnmatch.fnmatchcase(r.run, run_glob)]
        if not selected:
            ids = ", ".join(r.run for r in run_dirs[:10])
            raise InputError(f"--run {run_glob!r} matches no run (runs: {ids}{' …' if len(run_dirs) > 10 else ''})")
        run_dirs = selected

    infos: dict[str, RunInfo] = {}
    skipped: dict[str, RunInfo] = {}  # runs none of whose event files could be read (warnings only)
    warnings: list[str] = []
    if engine == "python":
        run_rows: list[RunRows] = []
        for rd in run_dirs:
            info, rr = _read_run(rd)
            if not info.files:
                skipped[rd.run] = info
                continue
            infos[rd.run] = info
            run_rows.append(rr)
        frame = build_frame(run_rows, tag_map=tag_map, steps_per_epoch=steps_per_epoch)
        for rr in run_rows:
            infos[rr.run].facts.extend(rr.facts)
            infos[rr.run].unmapped_tags = list(rr.unmapped)
    else:
        from vaediag.terms import resolve

        reg = TagRegistry.limited(lambda name: resolve(name, tag_map)[0])
        bounds = {rd.run: _row_bound(rd) for rd in run_dirs}  # one stat per file
        builder = FrameBuilder(reg.names, tag_map=tag_map, capacity=sum(bounds.values()))
        for rd in sorted(run_dirs, key=lambda r: r.run):
            shown = None
            if rd.sources:
                info, rows, shown = _read_run_source_fast(rd, reg)
            else:
                info, rows = _read_run_fast(rd, reg, capacity=bounds[rd.run])
            if not info.files:
                skipped[rd.run] = info
                continue
            infos[rd.run] = info
            result = builder.add(rd.run, rows.codes, rows.steps, rows.values, rows.wall_times, shown_walls=shown,
                                 aligner=EpochAligner(steps_per_epoch=steps_per_epoch))  # fresh: a whole run
            info.facts.extend(result.facts)
            info.unmapped_tags = result.unmapped
            del rows
        frame = builder.finish(all_runs=[rd.run for rd in run_dirs if rd.run not in skipped])
    if not infos:
        _raise_unreadable(path, skipped)
    for run in sorted({**infos, **skipped}):
        if run in infos:
            warnings.extend(f"{run}: {w}" for w in infos[run].warnings)
        else:  # only the unreadable files speak for a skipped run (its metadata is moot)
            msgs = [w for w in skipped[run].warnings if w.startswith(_CANNOT)]
            msgs[-1] += ("; no readable event file, run skipped" if skipped[run].source == "tensorboard"
                         else "; run skipped")
            warnings.extend(f"{run}: {w}" for w in msgs)
    for o in orphans:
        rel = o.relative_to(root).as_posix() if o != root else root.name
        warnings.append(f"{rel}: run metadata but no event file (the run died before logging?); skipped")
    if unlisted:
        first, why = unlisted[0]
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        warnings.append(f"{len(unlisted)} director{'y' if len(unlisted) == 1 else 'ies'} could not be read and "
                        f"{'was' if len(unlisted) == 1 else 'were'} skipped: {_shown(first, root)} ({why}){more}")
    return RunSet(root=root, frame=frame, runs=infos, warnings=warnings, orphans=orphans)


_CANNOT = ("cannot read event file ", "cannot read metrics log ")


def _raise_unreadable(path: str | os.PathLike[str], skipped: dict[str, RunInfo]) -> None:
    """Not one log under ``path`` could be read: one line, exit 2 (README: unreadable input)."""
    msgs = [w for info in skipped.values() for w in info.warnings if w.startswith(_CANNOT)]
    if len(msgs) == 1:
        raise CorruptLogError(msgs[0])
    what = "event files" if all(m.startswith(_CANNOT[0]) for m in msgs) else "logs"
    first = msgs[0]
    for prefix in _CANNOT:
        first = first.removeprefix(prefix)
    raise CorruptLogError(f"none of the {len(msgs)} {what} under {os.fspath(path)!r} can be read (first: {first})")


def _read_run_fast(rd: RunDir, reg: TagRegistry, *, capacity: int) -> tuple[RunInfo, Rows]:
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


def _row_bound(rd: RunDir) -> int:
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


def _read_run_source_fast(rd: RunDir, reg: TagRegistry) -> tuple[RunInfo, Rows, np.ndarray | None]:
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


def _read_run(rd: RunDir) -> tuple[RunInfo, RunRows]:
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
