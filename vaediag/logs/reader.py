"""Read every run under a path into a :class:`~vaediag.logs.runset.RunSet` (the tidy frame plus per-run metadata):
:func:`load` and its two engines. One run directory's files are read by :mod:`vaediag.logs.runfiles` (event
files or a metrics log, :mod:`vaediag.logs.sources`; metadata, :mod:`vaediag.logs.metadata`); its rows become
the frame through :class:`~vaediag.logs.frame.FrameBuilder` and a fresh
:class:`~vaediag.logs.aligner.EpochAligner` per run."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from vaediag.errors import CorruptLogError, InputError
from vaediag.logs.aligner import EpochAligner
from vaediag.logs.decode import TagRegistry
from vaediag.logs.discover import RunDir, discover
from vaediag.logs.frame import FrameBuilder, RunRows, build_frame
from vaediag.logs.metadata import read_run_metadata
from vaediag.logs.runfiles import (CANNOT_READ, read_event_file, read_run, read_run_fast, read_run_source_fast,
                                   restart_warnings, row_bound)
from vaediag.logs.runset import FileStats, RunInfo, RunSet
from vaediag.terms import TagMap, load_tag_map, resolve

# FileStats, RunInfo, RunSet (runset.py), read_run_metadata (metadata.py), read_event_file and restart_warnings
# (runfiles.py) are named here too, where they lived.
__all__ = ["ENGINES", "RunInfo", "RunSet", "FileStats", "load", "read_event_file", "read_run_metadata", "restart_warnings"]


def _shown(path: Path, root: Path) -> str:
    """``path`` for a message: relative to ``root``, and shortened in the middle past 120 characters."""
    try:
        text = path.relative_to(root).as_posix()
    except ValueError:
        text = str(path)
    return text if len(text) <= 120 else f"{text[:50]}…{text[-60:]}"


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
    if engine not in ENGINES:
        raise InputError(f"unknown reader engine {engine!r} (choose {', '.join(ENGINES)})")
    tag_map = load_tag_map(tags) if isinstance(tags, (str, os.PathLike)) else tags
    if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or steps_per_epoch <= 0):
        raise InputError(f"steps per epoch must be a positive integer, got {steps_per_epoch}")
    unlisted: list[tuple[Path, str]] = []  # directories the walk could not list
    root, run_dirs, orphans = discover(path, skipped=unlisted)
    if run_glob is not None:
        run_dirs = _selected(run_dirs, run_glob)
    read = _load_python if engine == "python" else _load_numpy
    frame, infos, skipped = read(run_dirs, tag_map, steps_per_epoch)
    if not infos:
        _raise_unreadable(path, skipped)
    return RunSet(root=root, frame=frame, runs=infos, warnings=_load_warnings(root, infos, skipped, orphans, unlisted),
                  orphans=orphans)


def _selected(run_dirs: list[RunDir], run_glob: str) -> list[RunDir]:
    """The runs whose id matches ``run_glob`` (fnmatch); none is a usage error."""
    import fnmatch

    selected = [r for r in run_dirs if fnmatch.fnmatchcase(r.run, run_glob)]
    if not selected:
        ids = ", ".join(r.run for r in run_dirs[:10])
        raise InputError(f"--run {run_glob!r} matches no run (runs: {ids}{' …' if len(run_dirs) > 10 else ''})")
    return selected


_Loaded = tuple[pd.DataFrame, dict[str, RunInfo], dict[str, RunInfo]]  # frame, read runs, skipped runs


def _load_python(run_dirs: list[RunDir], tag_map: TagMap | None, steps_per_epoch: int | None) -> _Loaded:
    """The reference engine: each run read one record at a time, then :func:`build_frame`."""
    infos: dict[str, RunInfo] = {}
    skipped: dict[str, RunInfo] = {}  # runs none of whose event files could be read (warnings only)
    run_rows: list[RunRows] = []
    for rd in run_dirs:
        info, rr = read_run(rd)
        if not info.files:
            skipped[rd.run] = info
            continue
        infos[rd.run] = info
        run_rows.append(rr)
    frame = build_frame(run_rows, tag_map=tag_map, steps_per_epoch=steps_per_epoch)
    for rr in run_rows:
        infos[rr.run].facts.extend(rr.facts)
        infos[rr.run].unmapped_tags = list(rr.unmapped)
    return frame, infos, skipped


def _load_numpy(run_dirs: list[RunDir], tag_map: TagMap | None, steps_per_epoch: int | None) -> _Loaded:
    """The numpy engine: runs read in order of id into one :class:`FrameBuilder` (one registry of tags and
    its limits for the load), each through a fresh :class:`EpochAligner` (the whole run is one batch)."""
    infos: dict[str, RunInfo] = {}
    skipped: dict[str, RunInfo] = {}
    reg = TagRegistry.limited(lambda name: resolve(name, tag_map)[0])
    bounds = {rd.run: row_bound(rd) for rd in run_dirs}  # one stat per file
    builder = FrameBuilder(reg.names, tag_map=tag_map, capacity=sum(bounds.values()))
    for rd in sorted(run_dirs, key=lambda r: r.run):
        shown = None
        if rd.sources:
            info, rows, shown = read_run_source_fast(rd, reg)
        else:
            info, rows = read_run_fast(rd, reg, capacity=bounds[rd.run])
        if not info.files:
            skipped[rd.run] = info
            continue
        infos[rd.run] = info
        result = builder.add(rd.run, rows.codes, rows.steps, rows.values, rows.wall_times, shown_walls=shown,
                             aligner=EpochAligner(steps_per_epoch=steps_per_epoch))
        info.facts.extend(result.facts)
        info.unmapped_tags = result.unmapped
        del rows
    return builder.finish(all_runs=[rd.run for rd in run_dirs if rd.run not in skipped]), infos, skipped


def _load_warnings(root: Path, infos: dict[str, RunInfo], skipped: dict[str, RunInfo], orphans: list[Path],
                   unlisted: list[tuple[Path, str]]) -> list[str]:
    """The load's warnings: each run's (by run id), then orphan directories, then directories not listed."""
    warnings: list[str] = []
    for run in sorted({**infos, **skipped}):
        if run in infos:
            warnings.extend(f"{run}: {w}" for w in infos[run].warnings)
        else:  # only the unreadable files speak for a skipped run (its metadata is moot)
            msgs = [w for w in skipped[run].warnings if w.startswith(CANNOT_READ)]
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
    return warnings




def _raise_unreadable(path: str | os.PathLike[str], skipped: dict[str, RunInfo]) -> None:
    """Not one log under ``path`` could be read: one line, exit 2 (README: unreadable input)."""
    msgs = [w for info in skipped.values() for w in info.warnings if w.startswith(CANNOT_READ)]
    if len(msgs) == 1:
        raise CorruptLogError(msgs[0])
    what = "event files" if all(m.startswith(CANNOT_READ[0]) for m in msgs) else "logs"
    first = msgs[0]
    for prefix in CANNOT_READ:
        first = first.removeprefix(prefix)
    raise CorruptLogError(f"none of the {len(msgs)} {what} under {os.fspath(path)!r} can be read (first: {first})")
