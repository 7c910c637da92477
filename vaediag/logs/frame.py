"""Build the tidy frame (ARCHITECTURE) from decoded scalar rows.

Columns: run, tag, term, split (categoricals), step (int64), epoch (float64), value (float64),
wall_time (float64). Steps: resolve each tag to (term, split); drop duplicate (run, tag, step) keeping the
latest wall_time; flip the sign of a KL series logged as -KL; align steps to epochs; sort.

Epoch alignment and the per-run split rules are :mod:`vaediag.logs.conventions` (one rule set for
every engine): the run's ``epoch`` tag at the nearest step at or before the row's (the one logged with
the row where a step holds several); fractional (HF) epoch series as completed epochs; for val series of
a run without an epoch tag, the n-th val point is epoch n; else ``step // steps_per_epoch`` when given;
else NaN; negative steps (an evaluation before training) epoch -1. ``split`` is per row: ``resolve``'s,
refined by the cadence and post-fit rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vaediag.logs.conventions import Note, RunHistory, _last_at_or_before, apply_conventions
from vaediag.terms import NONNEGATIVE_TERMS, TagMap, resolve, split_marker

__all__ = [
    "COLUMNS",
    "RunRows",
    "RunResult",
    "build_frame",
    "empty_frame",
    "align_epochs",
    "FrameBuilder",
    "sort_dedup_order",
    "flip_negative_kl",
]

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
    facts: list[Note] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    # The frame's wall_time when it differs from ``wall_times`` (metrics logs without a time: NaN; their
    # ``wall_times`` are then the order of logging, which the conventions and deduplication use).
    shown_walls: np.ndarray | None = None

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
    return RunRows(rr.run, rr.tag_names, rr.tag_codes[keep], rr.steps[keep], rr.values[keep], rr.wall_times[keep],
                   rr.notes, rr.facts, rr.unmapped, None if rr.shown_walls is None else rr.shown_walls[keep])


@dataclass
class RunResult:
    """What adding one run's rows found: facts about the data and the tags no term names."""

    facts: list[Note] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # sorted

    @property
    def notes(self) -> list[str]:
        return [f.message for f in self.facts]


def _conventions(names, resolved, tag_map, bounds, steps, walls, values, epochs_out, spe, history, points):
    return apply_conventions(
        names,
        [r[0] for r in resolved],
        [r[1] for r in resolved],
        [split_marker(n, tag_map) is not None for n in names],
        bounds, steps, walls, values, epochs_out,
        steps_per_epoch=spe, history=history, epoch_points=points,
    )


def _raw_epoch_points(codes, epoch_codes, steps, walls, values):
    """The epoch tag's rows before deduplication (a boundary step may hold two epoch values)."""
    if not epoch_codes:
        return None
    sel = codes == epoch_codes[0] if len(epoch_codes) == 1 else np.isin(codes, epoch_codes)
    return steps[sel], walls[sel], values[sel]


def align_epochs(
    steps: np.ndarray,
    splits: np.ndarray,
    codes: np.ndarray,
    epoch_steps: np.ndarray,
    epoch_values: np.ndarray,
    *,
    steps_per_epoch: int | None = None,
) -> np.ndarray:
    """Epoch of each row from epoch points alone (no wall times, no split rules): the old surface.

    ``epoch_steps`` sorted, one value per step; rows sorted by (code, step).
    """
    out = np.full(len(steps), np.nan)
    if len(epoch_steps):
        return epoch_values[_last_at_or_before(np.asarray(epoch_steps), np.asarray(steps, dtype=np.int64))].astype(np.float64)
    is_val = splits == "val"
    if is_val.any():
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

    for raw in runs:
        points = _raw_epoch_points(
            raw.tag_codes, [c for c, t in enumerate(raw.tag_names) if resolved[t][0] == "epoch"],
            raw.steps, raw.wall_times, raw.values,
        )
        rr = _dedup(raw)
        if len(rr.steps) == 0:
            continue
        names = np.asarray(rr.tag_names, dtype=object)
        terms_of_code = np.asarray([resolved[t][0] for t in rr.tag_names], dtype=object)
        splits_of_code = np.asarray([resolved[t][1] for t in rr.tag_names], dtype=object)
        values = rr.values.copy()
        codes = rr.tag_codes

        # Sign rule: a KL series that is <= 0 throughout was logged as -KL. Rows are sorted by code.
        bounds = np.searchsorted(codes, np.arange(len(rr.tag_names) + 1))
        rr.facts.extend(_flip_negative_kl(values, [
            (int(bounds[c]), int(bounds[c + 1]), name)
            for c, name in enumerate(rr.tag_names) if terms_of_code[c] in NONNEGATIVE_TERMS
        ]))
        # Only tags present after dedup (tag_names may list a tag whose rows are all gone: never here).
        present = np.flatnonzero(np.diff(bounds))
        names_p = [rr.tag_names[c] for c in present]
        epochs = np.empty(len(codes), dtype=np.float64)
        split_codes, facts = _conventions(
            names_p, [resolved[t] for t in names_p], tag_map, np.r_[bounds[present], bounds[-1]],
            rr.steps, rr.wall_times, values, epochs, steps_per_epoch, None, points,
        )
        rr.facts.extend(facts)
        rr.unmapped[:] = sorted(t for t in names_p if resolved[t][0] is None)
        rr.notes.extend(f.message for f in rr.facts)
        splits = np.asarray(["train", "val", "other"], dtype=object)[split_codes]
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
                    "wall_time": rr.wall_times if rr.shown_walls is None else rr.shown_walls,
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


def _min_int_dtype(n: int) -> type:
    """The codes dtype pandas uses for ``n`` categories (so Categorical.from_codes keeps our array)."""
    for dt in (np.int8, np.int16, np.int32):
        if n < np.iinfo(dt).max:
            return dt
    return np.int64


def sort_dedup_order(codes: np.ndarray, steps: np.ndarray, wall_times: np.ndarray) -> np.ndarray:
    """Indices that sort rows by (code, step) keeping, per (code, step), the row of latest wall_time.

    Equal to :func:`_dedup`'s choice (ties in wall_time keep the later row in file order). The common
    case, steps strictly increasing per tag in file order, needs only a stable sort by code.
    """
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.argsort(codes, kind="stable")
    c, s = codes[order], steps[order]
    if n == 1 or bool(((s[1:] > s[:-1]) | (c[1:] != c[:-1])).all()):
        return order
    order = np.lexsort((wall_times, steps, codes))
    c, s = codes[order], steps[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    return order[last]


def flip_negative_kl(values: np.ndarray, bounds: list[tuple[int, int, str]]) -> list[str]:
    """Negate, in place, each ``values[a:b]`` that is <= 0 throughout (and < 0 somewhere); notes."""
    return [n.message for n in _flip_negative_kl(values, bounds)]


def _flip_negative_kl(values: np.ndarray, bounds: list[tuple[int, int, str]]) -> list[Note]:
    notes = []
    for a, b, name in bounds:
        v = values[a:b]
        fin = v[np.isfinite(v)]
        if len(fin) and (fin <= 0).all() and (fin < 0).any():
            np.negative(v, out=v)
            n = f"{len(fin)} value{'s' if len(fin) != 1 else ''}"
            notes.append(Note("kl_sign_flipped", name, f"{name!r} is <= 0 throughout ({n}): logged as -KL, sign flipped",
                              len(fin)))
    return notes


class FrameBuilder:
    """Assemble the tidy frame run by run, without holding the raw rows and the frame twice.

    Runs must be added in sorted order of run id. Each run's rows are sorted, deduplicated, sign-fixed
    and epoch-aligned into columns that grow in place; :meth:`finish` wraps them in a DataFrame without
    copying. Output equals :func:`build_frame` on the same rows.
    """

    def __init__(
        self,
        tag_names: list[str],
        *,
        tag_map: TagMap | None = None,
        steps_per_epoch: int | None = None,
        capacity: int = 0,
    ):
        self._names = tag_names  # a registry's list (it may grow while runs are added)
        self._tag_map = tag_map
        self._spe = steps_per_epoch
        self._runs: list[str] = []
        self._counts: list[int] = []
        self._used = np.zeros(0, dtype=bool)
        self._n = 0
        # Columns sized by an upper bound with np.empty: untouched pages cost no memory; finish() trims.
        self._tag = np.empty(capacity, dtype=np.int16)  # codes of the names list; int32 if it outgrows int16
        self._step = np.empty(capacity, dtype=np.int64)
        self._epoch = np.empty(capacity, dtype=np.float64)
        self._value = np.empty(capacity, dtype=np.float64)
        self._wall = np.empty(capacity, dtype=np.float64)
        self._split = np.empty(capacity, dtype=np.int8)  # per row: the split rules are per run
        self._resolved: list[tuple[str | None, str] | None] = []  # resolve() of each code, once

    def _resolve(self, code: int) -> tuple[str | None, str]:
        # Once per code: resolve's LRU cache thrashes past 65,536 distinct tags (a run of per-sample tags).
        cache = self._resolved
        if code >= len(cache):
            cache.extend([None] * (len(self._names) - len(cache)))
        r = cache[code]
        if r is None:
            r = cache[code] = resolve(self._names[code], self._tag_map)
        return r

    def add(
        self,
        run: str,
        codes: np.ndarray,
        steps: np.ndarray,
        values: np.ndarray,
        wall_times: np.ndarray,
        *,
        sign=None,
        history: RunHistory | None = None,
        shown_walls: np.ndarray | None = None,
    ) -> RunResult:
        """Add one run's raw rows (codes index the tag names); returns what was found about the run.

        ``sign(values, bounds) -> notes`` replaces the sign rule and ``history`` carries the epoch and
        split evidence of earlier rows (the tail keeps both across polls); the defaults are
        :func:`flip_negative_kl` and a fresh :class:`~vaediag.logs.conventions.RunHistory`.
        ``shown_walls``: the frame's wall_time per row when ``wall_times`` only orders the rows (metrics
        logs that record no time: NaN).
        """
        self._runs.append(run)
        n_names = len(self._names)
        if len(self._used) < n_names:
            self._used = np.r_[self._used, np.zeros(n_names - len(self._used), dtype=bool)]
        if len(codes) == 0:
            self._counts.append(0)
            return RunResult()
        if n_names >= np.iinfo(self._tag.dtype).max and self._tag.dtype != np.int32:
            self._tag = self._tag.astype(np.int32)  # copies only the capacity's touched pages' worth
        present = np.flatnonzero(np.bincount(codes, minlength=n_names))
        self._used[present] = True
        local = sorted(present.tolist(), key=lambda c: self._names[c])
        # Small code dtypes: numpy's stable sort is a radix sort for 8- and 16-bit integers.
        lut = np.zeros(n_names, dtype=_min_int_dtype(len(local)))
        lut[local] = np.arange(len(local))
        lc = lut[codes]
        points = _raw_epoch_points(
            codes, [c for c in local if self._resolve(c)[0] == "epoch"], steps, wall_times, values
        )
        order = sort_dedup_order(lc, steps, wall_times)
        m = len(order)
        o = self._n
        self._grow(o + m)
        tag_out = self._tag[o : o + m]
        np.take(np.asarray(local, dtype=self._tag.dtype), np.take(lc, order), out=tag_out)
        step_out = self._step[o : o + m]
        np.take(steps, order, out=step_out)
        val_out = self._value[o : o + m]
        np.take(values, order, out=val_out)
        wall_out = self._wall[o : o + m]
        np.take(wall_times, order, out=wall_out)
        shown = np.take(shown_walls, order) if shown_walls is not None else None
        del order

        # Rows are now grouped by tag, in the order of ``local``: segment bounds per tag.
        counts = np.bincount(lc, minlength=len(local))  # dedup may shrink a tag's count; recount
        counts = np.bincount(np.take(lut, tag_out), minlength=len(local)) if m != len(lc) else counts
        bounds = np.r_[0, np.cumsum(counts)]
        names = [self._names[c] for c in local]
        resolved = [self._resolve(c) for c in local]
        sign_bounds = [
            (int(bounds[i]), int(bounds[i + 1]), names[i])
            for i in range(len(local))
            if resolved[i][0] in NONNEGATIVE_TERMS
        ]
        facts = list((sign or _flip_negative_kl)(val_out, sign_bounds))
        epoch_out = self._epoch[o : o + m]
        split_codes, more = _conventions(
            names, resolved, self._tag_map, bounds, step_out, wall_out, val_out, epoch_out, self._spe, history, points
        )
        self._split[o : o + m] = split_codes
        if shown is not None:
            wall_out[:] = shown
        self._n = o + m
        self._counts.append(m)
        return RunResult(facts + more, sorted(n for n, r in zip(names, resolved) if r[0] is None))

    def _grow(self, size: int, *, exact: bool = False) -> None:
        # ndarray.resize reallocates in place (mremap for large blocks): no second copy of the columns.
        if size <= len(self._step) and not exact:
            return
        if not exact:
            size = max(size, int(len(self._step) * 1.5))
        for a in (self._tag, self._step, self._epoch, self._value, self._wall, self._split):
            a.resize(size, refcheck=False)

    def finish(self, *, all_runs: list[str] | None = None) -> pd.DataFrame:
        """The frame (sorted by run, tag, step). ``all_runs``: every run id, with or without rows."""
        self._grow(self._n, exact=True)
        if self._n == 0:
            return empty_frame()
        n_names = len(self._names)
        used = np.flatnonzero(np.r_[self._used, np.zeros(max(0, n_names - len(self._used)), dtype=bool)])
        order = sorted(used.tolist(), key=self._names.__getitem__)  # codes by name: the categories' order
        tag_cats = [self._names[c] for c in order]
        lut = np.zeros(n_names, dtype=_min_int_dtype(len(tag_cats)))
        lut[np.asarray(order, dtype=np.intp)] = np.arange(len(order))
        tag_codes = lut[self._tag]
        self._tag = np.zeros(0, dtype=np.int16)
        resolved = [self._resolve(c) for c in order]
        term_cats = sorted({term for term, _ in resolved if term is not None})
        term_rank = {t: i for i, t in enumerate(term_cats)}
        term_lut = np.asarray([term_rank[t] if t is not None else -1 for t, _ in resolved], dtype=_min_int_dtype(len(term_cats)))
        split_cats = ["train", "val", "other"]
        run_cats = sorted(all_runs if all_runs is not None else self._runs)
        run_rank = {r: i for i, r in enumerate(run_cats)}
        run_codes = np.repeat(
            np.asarray([run_rank[r] for r in self._runs], dtype=_min_int_dtype(len(run_cats))),
            self._counts,
        )
        frame = pd.DataFrame(
            {
                "run": pd.Categorical.from_codes(run_codes, categories=run_cats),
                "tag": pd.Categorical.from_codes(tag_codes, categories=tag_cats),
                "term": pd.Categorical.from_codes(term_lut[tag_codes], categories=term_cats),
                "split": pd.Categorical.from_codes(self._split, categories=split_cats),
                "step": self._step,
                "epoch": self._epoch,
                "value": self._value,
                "wall_time": self._wall,
            },
            copy=False,
        )
        return frame
