"""Several PATHs as one RunSet: :func:`load_paths` loads each, :func:`merge_runsets` joins RunSets with run ids
made unique, :func:`select_runs` keeps some runs. Each returns a new RunSet and leaves its inputs as they were
(the merged runs' :class:`~vaediag.logs.runset.RunInfo` are copies carrying their new ids).

    >>> rs = load_paths(["logs/a/ear_teacher", "logs/b/ear_teacher"])   # doctest: +SKIP
    >>> sorted(rs.runs)                                                  # doctest: +SKIP
    ['a/ear_teacher/ear_vae/version_0', 'b/ear_teacher/ear_vae/version_0']
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from vaediag.errors import InputError, UsageError
from vaediag.logs.reader import RunSet, load

__all__ = ["load_paths", "merge_runsets", "select_runs"]

# How many trailing folders of its PATH a colliding run id may take as a prefix before the PATHs are
# declared indistinguishable.
_MAX_PREFIX_DEPTH = 8


def load_paths(
    paths: Sequence[str],
    *,
    tags: str | None = None,
    steps_per_epoch: int | None = None,
    run_glob: str | None = None,
) -> RunSet:
    """Load one or more PATHs into one RunSet.

    One PATH: :func:`vaediag.load` as is. Several: each is loaded, and run ids that collide between
    PATHs (``version_0`` in two trees) are prefixed with their PATH's folder name (then more of its
    path) until they are unique; ``--run`` then matches the merged ids.

    Raises:
        UsageError: a PATH is given twice, or run ids cannot be told apart.
        InputError: ``run_glob`` matches no merged run (and whatever :func:`vaediag.load` raises).
    """
    if len(paths) == 1:
        return load(paths[0], tags=tags, steps_per_epoch=steps_per_epoch, run_glob=run_glob)
    seen: dict[Path, str] = {}
    for p in paths:
        key = Path(os.path.abspath(p))
        if key in seen:
            raise UsageError(f"PATH {p!r} is given twice (also as {seen[key]!r})")
        seen[key] = p
    sets = [load(p, tags=tags, steps_per_epoch=steps_per_epoch) for p in paths]
    merged = merge_runsets(sets)
    if run_glob is not None:
        keep = [r for r in merged.runs if fnmatch.fnmatchcase(r, run_glob)]
        if not keep:
            ids = ", ".join(list(merged.runs)[:10])
            raise InputError(f"--run {run_glob!r} matches no run (runs: {ids}{' …' if len(merged.runs) > 10 else ''})")
        merged = select_runs(merged, keep)
    return merged


def _unique_ids(sets: Sequence[RunSet]) -> list[dict[str, str]]:
    """For each RunSet, old run id -> new run id, unique across all of them (see :func:`load_paths`)."""
    names: list[dict[str, str]] = [{r: r for r in rs.runs} for rs in sets]
    depth = 0
    while True:
        count: dict[str, int] = {}
        for m in names:
            for new in m.values():
                count[new] = count.get(new, 0) + 1
        clashes = {n for n, c in count.items() if c > 1}
        if not clashes:
            return names
        depth += 1
        if depth > _MAX_PREFIX_DEPTH:
            raise UsageError("run ids collide between the PATHs and cannot be told apart; give fewer PATHs")
        for rs, m in zip(sets, names):
            root_parts = Path(os.path.abspath(rs.root)).parts
            prefix = "/".join(root_parts[-depth:]) if root_parts[-depth:] else str(rs.root)
            for old, new in m.items():
                if new in clashes:
                    m[old] = f"{prefix}/{old}" if not old.startswith(f"{prefix}/") else f"{prefix}/{new}"


def merge_runsets(sets: Sequence[RunSet]) -> RunSet:
    """One new RunSet from several, with run ids made unique (see :func:`load_paths`); the inputs, their
    frames and their RunInfo objects are not changed.

    Raises:
        UsageError: run ids collide and cannot be told apart by their PATHs' folders.
    """
    names = _unique_ids(sets)
    frames, runs, warnings, orphans = [], {}, [], []
    for rs, m in zip(sets, names):
        f = rs.frame
        if len(f):
            f = f.assign(run=f["run"].astype(str).map(m))
            frames.append(f)
        for old, info in rs.runs.items():
            runs[m[old]] = dataclasses.replace(info, run=m[old])
        warnings.extend(rs.warnings)
        orphans.extend(rs.orphans)
    if frames:
        frame = pd.concat(frames, ignore_index=True)
        for col in ("run", "tag", "term"):
            frame[col] = pd.Categorical(frame[col].astype(object), categories=sorted(
                {str(x) for x in frame[col].dropna().unique()}))
        frame = frame.sort_values(["run", "tag", "step"], kind="stable").reset_index(drop=True)
    else:
        frame = sets[0].frame
    common = Path(os.path.commonpath([os.path.abspath(rs.root) for rs in sets]))
    runs = {k: runs[k] for k in sorted(runs)}
    return RunSet(root=common, frame=frame, runs=runs, warnings=warnings, orphans=orphans)


def select_runs(rs: RunSet, keep: Sequence[str]) -> RunSet:
    """A new RunSet with only the runs ``keep`` (run ids of ``rs``, in that order) and their rows."""
    f = rs.frame
    f = f[f["run"].astype(str).isin(keep)].reset_index(drop=True)
    f["run"] = f["run"].cat.remove_unused_categories()
    return RunSet(root=rs.root, frame=f, runs={k: rs.runs[k] for k in keep}, warnings=list(rs.warnings),
                  orphans=list(rs.orphans))
