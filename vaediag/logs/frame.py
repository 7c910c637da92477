"""Build the tidy frame (ARCHITECTURE) from decoded scalar rows.

Columns: run, tag, term, split (categoricals), step (int64), epoch (float64), value (float64),
wall_time (float64). Steps: resolve each tag to (term, split); drop duplicate (run, tag, step) keeping the
latest wall_time; flip the sign of a KL series logged as -KL; align steps to epochs; sort.

Epoch alignment, in order: the ``epoch`` scalar logged at the same step; else the run's ``epoch`` tag at
the nearest earlier step (the nearest later one before its first point); for val series of a run without
an epoch tag, the n-th val point is epoch n; else ``step // steps_per_epoch`` when given; else NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vaediag.terms import NONNEGATIVE_TERMS, TagMap, resolve

__all__ = ["COLUMNS", "RunRows", "build_frame", "empty_frame", "align_epochs"]

COLUMNS = ("run", "tag", "term", "split", "step", "epoch", "value", "wall_time")


@dataclass
class RunRows:
    """One run's raw scalars as numpy columns (tags as codes into ``tag_names``)."""

    run: str
    tag_names: list[str]
    tag_codes: np.ndarray  # int32
    steps: np.ndarray  # int64
    values: np.ndarray  # float64
    wall_times: np.ndarray  # float64
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_lists(cls, run: str, tags: list[str], steps, values, wall_times) -> "RunRows":
        names, codes = np.unique(np.asarray(tags, dtype=object), return_inverse=True) if tags else ([], [])
        return cls(
            run=run,
            tag_names=[str(n) for n in names],
            tag_codes=np.asarray(codes, dtype=np.int32),
            steps=np.asarray(steps, dtype=np.int64),
            values=np.asarray(values, dtype=np.float64),
            wall_times=np.asarray(wall_times, dtype=np.float64),
        )


def empty_frame() -> pd.DataFrame:
    """A frame with the tidy columns and dtypes and no rows."""
    return pd.DataFrame(
        {
            "run": pd.Categorical([]),
            "tag": pd.Categorical([]),
            "term": pd.Categorical([]),
            "split": pd.Categorical([], categories=["train", "val", "other"]),
            "step": np.array([], dtype=np.int64),
            "epoch": np.array([], dtype=np.float64),
            "value": np.array([], dtype=np.float64),
            "wall_time": np.array([], dtype=np.float64),
        }
    )


def _dedup(rr: RunRows) -> RunRows:
    """Keep the latest wall_time per (tag, step); result sorted by (tag, step)."""
    if len(rr.steps) == 0:
        return rr
    order = np.lexsort((rr.wall_times, rr.steps, rr.tag_codes))
    codes, steps = rr.tag_codes[order], rr.steps[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (codes[1:] != codes[:-1]) | (steps[1:] != steps[:-1])
    keep = order[last]
    return RunRows(rr.run, rr.tag_names, rr.tag_codes[keep], rr.steps[keep], rr.values[keep], rr.wall_times[keep], rr.notes)


def align_epochs(
    steps: np.ndarray,
    splits: np.ndarray,
    codes: np.ndarray,
    epoch_steps: np.ndarray,
    epoch_values: np.ndarray,
    *,
    steps_per_epoch: int | None = None,
) -> np.ndarray:
    """Epoch of each row (see module docstring). ``epoch_steps`` sorted, one value per step."""
    out = np.full(len(steps), np.nan)
    if len(epoch_steps):
        idx = np.searchsorted(epoch_steps, steps, side="right") - 1
        idx[idx < 0] = 0  # before the first epoch point: that point's epoch
        out = epoch_values[idx].astype(np.float64)
        return out
    is_val = splits == "val"
    if is_val.any():
        # n-th val point of each tag (rows are sorted by tag, step) is epoch n.
        vcodes = codes[is_val]
        starts = np.r_[0, np.flatnonzero(vcodes[1:] != vcodes[:-1]) + 1]
        rank = np.arange(len(vcodes)) - np.repeat(starts, np.diff(np.r_[starts, len(vcodes)]))
        out[is_val] = rank
    if steps_per_epoch:
        rest = ~is_val
        out[rest] = steps[rest] // steps_per_epoch
    return out


def build_frame(
    runs: list[RunRows],
    *,
    tag_map: TagMap | None = None,
    steps_per_epoch: int | None = None,
) -> pd.DataFrame:
    """The tidy frame of all runs, sorted by (run, tag, step). Appends sign notes to each RunRows."""
    parts = []
    all_tags: dict[str, None] = {}
    for rr in runs:
        for t in rr.tag_names:
            all_tags.setdefault(t, None)
    tag_cats = sorted(all_tags)
    resolved = {t: resolve(t, tag_map) for t in tag_cats}
    term_cats = sorted({term for term, _ in resolved.values() if term is not None})

    for rr in runs:
        rr = _dedup(rr) if len(rr.steps) else rr
        if len(rr.steps) == 0:
            continue
        names = np.asarray(rr.tag_names, dtype=object)
        terms_of_code = np.asarray([resolved[t][0] for t in rr.tag_names], dtype=object)
        splits_of_code = np.asarray([resolved[t][1] for t in rr.tag_names], dtype=object)
        values = rr.values.copy()
        codes = rr.tag_codes

        # Sign rule: a KL series that is <= 0 throughout was logged as -KL.
        for c, name in enumerate(rr.tag_names):
            if terms_of_code[c] not in NONNEGATIVE_TERMS:
                continue
            sel = codes == c
            v = values[sel]
            fin = v[np.isfinite(v)]
            if len(fin) and (fin <= 0).all() and (fin < 0).any():
                values[sel] = -v
                rr.notes.append(
                    f"{name!r} is <= 0 throughout ({len(fin)} values): logged as -KL, sign flipped"
                )

        # The run's own epoch tag(s): one value per step (val and train points may both carry it).
        epoch_codes = [c for c in range(len(rr.tag_names)) if terms_of_code[c] == "epoch"]
        if epoch_codes:
            esel = np.isin(codes, epoch_codes)
            es, ev, ew = rr.steps[esel], values[esel], rr.wall_times[esel]
            o = np.lexsort((ew, es))
            es, ev = es[o], ev[o]
            last = np.ones(len(es), dtype=bool)
            last[:-1] = es[1:] != es[:-1]
            es, ev = es[last], ev[last]
        else:
            es, ev = np.array([], dtype=np.int64), np.array([], dtype=np.float64)
        splits = splits_of_code[codes]
        epochs = align_epochs(rr.steps, splits, codes, es, ev, steps_per_epoch=steps_per_epoch)

        n = len(codes)
        parts.append(
            pd.DataFrame(
                {
                    "run": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[rr.run]),
                    "tag": pd.Categorical(names[codes], categories=tag_cats),
                    "term": pd.Categorical(terms_of_code[codes], categories=term_cats),
                    "split": pd.Categorical(splits, categories=["train", "val", "other"]),
                    "step": rr.steps,
                    "epoch": epochs,
                    "value": values,
                    "wall_time": rr.wall_times,
                }
            )
        )
    if not parts:
        return empty_frame()
    run_cats = sorted(rr.run for rr in runs)
    for part in parts:
        part["run"] = part["run"].cat.set_categories(run_cats)
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.sort_values(["run", "tag", "step"], kind="stable", ignore_index=True)
    return frame
