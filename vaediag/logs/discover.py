"""Find the runs under a path.

A run is a directory that holds event files (``events.out.tfevents.*``), with two exceptions
(ARCHITECTURE): a folder named ``tf`` belongs to its parent (old Lightning + TestTube layout,
``version_N/tf/events...``), and the timestamp-named sub-directory that ``SummaryWriter.add_hparams``
creates (``runs/exp/1702448066.1234``) belongs to its parent. Run ids are POSIX paths relative to the
root the user gave; when the root itself is a run, its id is the root's own name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from vaediag.errors import CorruptLogError, InputError, NoRunsError
from vaediag.safeio import kind_of

__all__ = ["EVENT_FILE_MARK", "RunDir", "is_event_file", "discover", "METADATA_FILES"]

EVENT_FILE_MARK = "tfevents"
METADATA_FILES = ("hparams.yaml", "config.json")
_ADD_HPARAMS_DIR = re.compile(r"^\d{9,}(\.\d+)?$")


def is_event_file(name: str) -> bool:
    """True for TensorBoard event file names (``events.out.tfevents.<time>.<host>...``)."""
    return name.startswith("events.out.tfevents") or (EVENT_FILE_MARK in name and name.startswith("events"))


@dataclass
class RunDir:
    """A run's directory and the event files that belong to it (its own, tf/, add_hparams children)."""

    run: str
    path: Path
    event_files: list[Path] = field(default_factory=list)


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


def discover(
    path: str | os.PathLike[str], *, skipped: list[tuple[Path, str]] | None = None
) -> tuple[Path, list[RunDir], list[Path]]:
    """Find runs under ``path``.

    The walk is iterative (any depth the OS allows). Directories that cannot be listed are skipped;
    pass a list as ``skipped`` to receive them as ``(path, reason)``.

    Returns:
        ``(root, runs, orphans)``: the resolved root directory; runs sorted by id, each with its event
        files sorted by name; directories that hold run metadata (hparams.yaml or config.json) but no
        event file (a run that died before logging), which callers report.

    Raises:
        InputError: ``path`` does not exist or is not readable.
        NoRunsError: no event file anywhere under ``path``.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"path {str(p)!r} does not exist; give a run directory or a tree of runs")
    if not p.is_dir() and not p.is_file():  # a FIFO, a device, a socket: never opened (it would block or never end)
        kind = kind_of(p.stat().st_mode)
        if is_event_file(p.name):
            raise CorruptLogError(f"cannot read event file {str(p)!r}: {kind}, not a regular file")
        raise InputError(f"{str(p)!r} is {kind}; give a run directory, a tree of runs or an event file")
    if p.is_file():
        if not is_event_file(p.name):
            raise InputError(
                f"{str(p)!r} is not a TensorBoard event file; give its directory or a tree of runs"
            )
        root = p.parent
        return root, [RunDir(run=root.name or ".", path=root, event_files=[p])], []
    if not os.access(p, os.R_OK | os.X_OK):
        raise InputError(f"directory {str(p)!r} is not readable; check its permissions or give another path")

    root = p
    groups: dict[Path, list[Path]] = {}
    meta_dirs: list[Path] = []
    for rel, filenames in _walk(root, skipped):
        events = sorted(f for f in filenames if is_event_file(f))
        if events:
            d = root / rel
            groups.setdefault(_owner(rel), []).extend(d / f for f in events)
        elif any(m in filenames for m in METADATA_FILES):
            meta_dirs.append(rel)

    if not groups:
        raise NoRunsError(
            f"no TensorBoard event files under {str(p)!r}; point vaediag at a log directory "
            "(e.g. logs/ear_teacher) or a run directory (…/version_0)"
        )

    runs = []
    for rel, files in groups.items():
        run_id = root.resolve().name if rel == Path(".") else rel.as_posix()
        runs.append(RunDir(run=run_id, path=root / rel, event_files=sorted(files, key=lambda f: (f.name, str(f)))))
    runs.sort(key=lambda r: r.run)
    orphans = [root / m for m in meta_dirs if m not in groups]
    return root, runs, orphans
