"""Find the runs under a path.

A run is a directory that holds event files (``events.out.tfevents.*``), with two exceptions
(ARCHITECTURE): a folder named ``tf`` belongs to its parent (old Lightning + TestTube layout,
``version_N/tf/events...``), and the timestamp-named sub-directory that ``SummaryWriter.add_hparams``
creates (``runs/exp/1702448066.1234``) belongs to its parent. Run ids are POSIX paths relative to the
root the user gave; when the root itself is a run, its id is the root's own name.

A directory without event files that holds a metrics log (:mod:`vaediag.logs.sources`: Lightning's
``metrics.csv``, HF's ``trainer_state.json``, a CSV/JSONL export whose header names a step column) is a run
too, read from that one file (``RunDir.sources``): ``metrics.csv`` first, then ``trainer_state.json`` (its
own, else the latest of its ``checkpoint-N`` folders', which belong to it), then exports. A directory that
holds several exports and nothing else is one run per export (``<dir>/<file name>``). Where event files
and a metrics log share a directory, the event files are read and the log is named in ``RunDir.also``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from vaediag.errors import CorruptLogError, InputError, NoRunsError
from vaediag.logs import sources as _sources
from vaediag.logs.sources import SourceFile
from vaediag.safeio import kind_of

__all__ = ["EVENT_FILE_MARK", "RunDir", "is_event_file", "discover", "METADATA_FILES", "run_logs"]

EVENT_FILE_MARK = "tfevents"
METADATA_FILES = ("hparams.yaml", "config.json")
_ADD_HPARAMS_DIR = re.compile(r"^\d{9,}(\.\d+)?$")


def is_event_file(name: str) -> bool:
    """True for TensorBoard event file names (``events.out.tfevents.<time>.<host>...``)."""
    return name.startswith("events.out.tfevents") or (EVENT_FILE_MARK in name and name.startswith("events"))


@dataclass
class RunDir:
    """A run's directory and the event files that belong to it (its own, tf/, add_hparams children), or,
    for a run without event files, the metrics log it is read from (``sources``: one file); ``also``: logs
    in the directory that are not read (the event files or another log are)."""

    run: str
    path: Path
    event_files: list[Path] = field(default_factory=list)
    sources: list[SourceFile] = field(default_factory=list)
    also: list[SourceFile] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every file the run is read from."""
        return list(self.event_files) + [s.path for s in self.sources]


def _owner(rel: Path) -> Path:
    """The run directory that a directory holding event files belongs to."""
    parts = list(rel.parts)
    while parts and (parts[-1] == "tf" or _ADD_HPARAMS_DIR.match(parts[-1])):
        parts.pop()
    return Path(*parts) if parts else Path(".")


def _walk(root: Path, skipped: list[tuple[Path, str]] | None) -> Iterator[tuple[Path, list[str]]]:
    """``(relative dir, file names)`` for every directory under ``root``, parents before children, siblings
    in name order; without recursion (a tree deeper than Python's recursion limit is walked like any
    other). Like ``os.walk(followlinks=False)``: a symlink to a directory is not entered. A directory
    that cannot be listed (no permission, a path longer than the OS allows) is skipped and, when
    ``skipped`` is a list, appended to it with the reason."""
    stack: list[tuple[str, Path]] = [(os.fspath(root), Path("."))]
    while stack:
        top, rel = stack.pop()
        try:
            with os.scandir(top) as it:
                entries = list(it)
        except OSError as exc:
            if skipped is not None:
                skipped.append((Path(top), exc.strerror or type(exc).__name__))
            continue
        files: list[str] = []
        subdirs: list[str] = []
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if not is_dir:
                files.append(e.name)
                continue
            try:
                if not e.is_symlink():
                    subdirs.append(e.name)
            except OSError:
                pass
        yield rel, files
        for name in sorted(subdirs, reverse=True):  # popped in name order
            stack.append((os.path.join(top, name), rel / name))


def _files_of(d: Path) -> tuple[list[str], list[str]]:
    """(file names, sub-directory names) of ``d``; empty when it cannot be listed."""
    files: list[str] = []
    subdirs: list[str] = []
    try:
        with os.scandir(d) as it:
            for e in it:
                try:
                    (subdirs if e.is_dir() and not e.is_symlink() else files).append(e.name)
                except OSError:
                    files.append(e.name)
    except OSError:
        pass
    return files, subdirs


def run_logs(run_dir: Path) -> tuple[list[Path], SourceFile | None]:
    """The logs of one run directory right now, by :func:`discover`'s rules: its event files (its own,
    ``tf/`` and add_hparams children, sorted) and, when it has none, the metrics log it is read from."""
    events: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(run_dir):
        if _owner(Path(dirpath).relative_to(run_dir)) != Path("."):
            dirnames[:] = []
            continue
        events.extend(Path(dirpath) / f for f in filenames if is_event_file(f))
    if events:
        return sorted(events, key=lambda f: (f.name, str(f))), None
    files, subdirs = _files_of(Path(run_dir))
    own = _sources.candidates(Path(run_dir), files)
    ckpts = []
    if not own:
        for name in subdirs:
            n = _sources.checkpoint_number(name)
            if n is not None and _sources.HF_STATE in _files_of(Path(run_dir) / name)[0]:
                ckpts.append((n, SourceFile("hf_trainer_state", Path(run_dir) / name / _sources.HF_STATE)))
    chosen, _ = _sources.pick(own, ckpts)
    return [], chosen


def discover(
    path: str | os.PathLike[str], *, skipped: list[tuple[Path, str]] | None = None
) -> tuple[Path, list[RunDir], list[Path]]:
    """Find runs under ``path``.

    The walk is iterative (any depth the OS allows). Directories that cannot be listed are skipped;
    pass a list as ``skipped`` to receive them as ``(path, reason)``.

    Returns:
        ``(root, runs, orphans)``: the resolved root directory; runs sorted by id, each with its event
        files sorted by name (or its metrics log); directories that hold run metadata (hparams.yaml or
        config.json) but no log (a run that died before logging), which callers report.

    Raises:
        InputError: ``path`` does not exist or is not readable.
        NoRunsError: no event file and no metrics log anywhere under ``path``.
    """
    p = Path(path)
    single = _single_file(p)
    if single is not None:
        return single
    if not os.access(p, os.R_OK | os.X_OK):
        raise InputError(f"directory {str(p)!r} is not readable; check its permissions or give another path")

    root = p
    groups, meta_dirs, logs, ckpts = _scan_tree(root, skipped)

    def run_id(rel: Path, suffix: str = "") -> str:
        base = root.resolve().name if rel == Path(".") else rel.as_posix()
        return f"{base}/{suffix}" if suffix else base

    runs = []
    for rel, files in groups.items():
        runs.append(RunDir(run=run_id(rel), path=root / rel, event_files=sorted(files, key=lambda f: (f.name, str(f))),
                           also=logs.get(rel, [])))
    _add_metrics_log_runs(root, runs, groups, logs, ckpts, run_id)
    if not runs:
        raise NoRunsError(
            f"no TensorBoard event files under {str(p)!r}, and no metrics log (metrics.csv, trainer_state.json, "
            "a CSV/JSONL export with a step column); point vaediag at a log directory (e.g. logs/ear_teacher) or "
            "a run directory (…/version_0)"
        )
    runs.sort(key=lambda r: r.run)
    owned = {r.path for r in runs}
    orphans = [root / m for m in meta_dirs if root / m not in owned]
    return root, runs, orphans


def _single_file(p: Path) -> tuple[Path, list[RunDir], list[Path]] | None:
    """``discover``'s answer for a path that is not a directory (one event file or metrics log: its run);
    None for a directory. Raises for a path that is missing, not a regular file or not a log."""
    if not p.exists():
        raise InputError(f"path {str(p)!r} does not exist; give a run directory or a tree of runs")
    if not p.is_dir() and not p.is_file():  # a FIFO, a device, a socket: never opened (it would block or never end)
        kind = kind_of(p.stat().st_mode)
        if is_event_file(p.name):
            raise CorruptLogError(f"cannot read event file {str(p)!r}: {kind}, not a regular file")
        if _sources.is_log_name(p.name):
            raise CorruptLogError(f"cannot read metrics log {str(p)!r}: {kind}, not a regular file")
        raise InputError(f"{str(p)!r} is {kind}; give a run directory, a tree of runs or an event file")
    if not p.is_file():
        return None
    root = p.parent
    if is_event_file(p.name):
        return root, [RunDir(run=root.name or ".", path=root, event_files=[p])], []
    if _sources.is_log_name(p.name):
        src = SourceFile(_sources.kind_of_name(p.name), p)
        return root, [RunDir(run=root.name or ".", path=root, sources=[src])], []
    raise InputError(
        f"{str(p)!r} is not a TensorBoard event file; give its directory or a tree of runs (metrics logs are "
        "read too: metrics.csv, trainer_state.json, *.csv, *.jsonl)"
    )


def _scan_tree(root: Path, skipped: list[tuple[Path, str]] | None):
    """Walk ``root`` once: event files by owning run directory, directories with run metadata and no log,
    metrics-log candidates by directory, and the trainer_state.json of ``checkpoint-N`` children by owner
    (all relative to ``root``)."""
    groups: dict[Path, list[Path]] = {}
    meta_dirs: list[Path] = []
    logs: dict[Path, list[SourceFile]] = {}  # directory -> its metrics-log candidates
    ckpts: dict[Path, list[tuple[int, SourceFile]]] = {}  # owner -> trainer_state.json of checkpoint-N children
    for rel, filenames in _walk(root, skipped):
        events = sorted(f for f in filenames if is_event_file(f))
        d = root / rel
        if events:
            groups.setdefault(_owner(rel), []).extend(d / f for f in events)
        found = _sources.candidates(d, filenames)
        n = _sources.checkpoint_number(rel.name) if rel.parts else None
        if n is not None and found and found[0].kind == "hf_trainer_state":
            ckpts.setdefault(rel.parent, []).append((n, found[0]))
        elif found:
            logs[rel] = found
        if not events and not found and any(m in filenames for m in METADATA_FILES):
            meta_dirs.append(rel)
    return groups, meta_dirs, logs, ckpts


def _add_metrics_log_runs(root: Path, runs: list[RunDir], groups: dict[Path, list[Path]],
                          logs: dict[Path, list[SourceFile]], ckpts: dict[Path, list[tuple[int, SourceFile]]],
                          run_id) -> None:
    """Append to ``runs`` the directories read through a metrics log (those without event files)."""
    for rel in sorted(set(logs) | set(ckpts)):
        if rel in groups:
            continue
        own = logs.get(rel, [])
        if not own or own[0].kind == "hf_trainer_state":
            # An HF output directory whose TensorBoard callback wrote its runs under runs/: the event files are
            # the same logs (and more); its trainer_state.json is named on those runs, not read a second time.
            tb = [r for r in runs if r.path.is_relative_to(root / rel / "runs")]
            if tb:
                state = own[0] if own else _sources.pick([], ckpts[rel])[0]
                for r in tb:
                    r.also.append(state)
                continue
        if own and all(s.kind in ("csv", "jsonl") and s.path.name != _sources.LIGHTNING_CSV for s in own) \
                and len(own) > 1 and rel not in ckpts:
            for s in own:  # several exports and nothing else: one run each
                runs.append(RunDir(run=run_id(rel, s.path.name), path=root / rel, sources=[s]))
            continue
        chosen, also = _sources.pick(own, ckpts.get(rel, []))
        if chosen is not None:
            runs.append(RunDir(run=run_id(rel), path=root / rel, sources=[chosen], also=also))
