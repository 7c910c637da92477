"""Build the tidy frame (ARCHITECTURE) from decoded scalar rows.

Columns: run, tag, term, split (categoricals), step (int64), epoch (float64), value (float64),
wall_time (float64). :class:`FrameBuilder` resolves each tag to (term, split) and lays each run's rows out
in columns; what the rows are (which are kept, their sign, epoch and split) is decided by the run's
:class:`~vaediag.logs.aligner.EpochAligner` (:mod:`vaediag.logs.aligner`: deduplication, the KL sign rule;
:mod:`vaediag.logs.conventions`: epoch alignment and the split rules), fresh per run for a whole-run read,
kept across polls by the tail. :func:`build_frame` is the builder over rows held as lists (the reference
engine, :func:`~vaediag.logs.inprocess.frame_from_epochs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vaediag.logs.aligner import EpochAligner, EpochPoints, dedup_order
from vaediag.logs.conventions import TagSegments
from vaediag.logs.notes import Note
from vaediag.terms import TagMap, resolve, split_marker

__all__ = [
    "COLUMNS",
    "RunRows",
    "RunResult",
    "build_frame",
    "empty_frame",
    "FrameBuilder",
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
    facts: list[Note] = field(default_factory=list)  # what build_frame found about the run
    unmapped: list[str] = field(default_factory=list)  # build_frame's: tags no term names, sorted
    # The frame's wall_time when it differs from ``wall_times`` (metrics logs without a time: NaN; their
    # ``wall_times`` are then the order of logging, which the conventions and deduplication use).
    shown_walls: np.ndarray | None = None

    @property
    def notes(self) -> list[str]:
        """The facts' text."""
        return [f.message for f in self.facts]

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


@dataclass
class RunResult:
    """What adding one run's rows found: facts about the data and the tags no term names."""

    facts: list[Note] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # sorted

    @property
    def notes(self) -> list[str]:
        """The facts' text."""
        return [f.message for f in self.facts]


def build_frame(
    runs: list[RunRows],
    *,
    tag_map: TagMap | None = None,
    steps_per_epoch: int | None = None,
) -> pd.DataFrame:
    """The tidy frame of all runs, sorted by (run, tag, step), through :class:`FrameBuilder` with a fresh
    :class:`~vaediag.logs.aligner.EpochAligner` per run. Records each run's facts and unmapped tags in its
    RunRows."""
    names = sorted({t for rr in runs for t in rr.tag_names})
    index = {t: i for i, t in enumerate(names)}
    builder = FrameBuilder(names, tag_map=tag_map, capacity=sum(len(rr.steps) for rr in runs))
    for rr in sorted(runs, key=lambda r: r.run):
        lut = np.asarray([index[t] for t in rr.tag_names], dtype=np.int32)
        codes = lut[rr.tag_codes] if len(rr.tag_codes) else np.zeros(0, dtype=np.int32)
        result = builder.add(rr.run, codes, rr.steps, rr.values, rr.wall_times, shown_walls=rr.shown_walls,
                             aligner=EpochAligner(steps_per_epoch=steps_per_epoch))
        rr.facts.extend(result.facts)
        rr.unmapped[:] = result.unmapped
    return builder.finish()


def _min_int_dtype(n: int) -> type:
    """The codes dtype pandas uses for ``n`` categories (so Categorical.from_codes keeps our array)."""
    for dt in (np.int8, np.int16, np.int32):
        if n < np.iinfo(dt).max:
            return dt
    return np.int64


class FrameBuilder:
    """Assemble the tidy frame run by run, without holding the raw rows and the frame twice.

    Runs must be added in sorted order of run id. Each run's rows are sorted, deduplicated, sign-fixed
    and epoch-aligned (by the aligner given with them) into columns that grow in place; :meth:`finish`
    wraps them in a DataFrame without copying.
    """

    def __init__(
        self,
        tag_names: list[str],
        *,
        tag_map: TagMap | None = None,
        capacity: int = 0,
    ):
        self._names = tag_names  # a registry's list (it may grow while runs are added)
        self._tag_map = tag_map
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
        aligner: EpochAligner,
        shown_walls: np.ndarray | None = None,
    ) -> RunResult:
        """Add one run's raw rows (codes index the tag names); returns what was found about the run.

        ``aligner``: the run's rules and their state (fresh for a whole run; the tail's, kept across
        polls). ``shown_walls``: the frame's wall_time per row when ``wall_times`` only orders the rows
        (metrics logs that record no time: NaN).
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
        points = EpochPoints.of(codes, [c for c in local if self._resolve(c)[0] == "epoch"], steps, wall_times, values)
        order = dedup_order(lc, steps, wall_times)
        o, m = self._n, len(order)
        shown = self._take_rows(order, local, lc, steps, values, wall_times, shown_walls)
        del order
        # Rows are now grouped by tag, in the order of ``local``: segment bounds per tag.
        counts = np.bincount(lc, minlength=len(local))  # dedup may shrink a tag's count; recount
        counts = np.bincount(np.take(lut, self._tag[o : o + m]), minlength=len(local)) if m != len(lc) else counts
        segments = self._segments(local, counts)
        placed = aligner.place(segments, self._step[o : o + m], self._wall[o : o + m], self._value[o : o + m],
                               self._epoch[o : o + m], epoch_points=points)
        self._split[o : o + m] = placed.split_codes
        if shown is not None:
            self._wall[o : o + m] = shown
        self._n = o + m
        self._counts.append(m)
        return RunResult(placed.notes, sorted(n for n, t in zip(segments.names, segments.terms) if t is None))

    def _take_rows(self, order: np.ndarray, local: list[int], lc: np.ndarray, steps: np.ndarray, values: np.ndarray,
                   wall_times: np.ndarray, shown_walls: np.ndarray | None) -> np.ndarray | None:
        """Append the rows ``order`` picks to the columns (tag, step, value, wall_time); the shown wall times
        in that order, when given (they replace wall_time once the aligner has used the order of logging)."""
        o, m = self._n, len(order)
        self._grow(o + m)
        np.take(np.asarray(local, dtype=self._tag.dtype), np.take(lc, order), out=self._tag[o : o + m])
        np.take(steps, order, out=self._step[o : o + m])
        np.take(values, order, out=self._value[o : o + m])
        np.take(wall_times, order, out=self._wall[o : o + m])
        return np.take(shown_walls, order) if shown_walls is not None else None

    def _segments(self, local: list[int], counts: np.ndarray) -> TagSegments:
        """The tags of rows grouped by ``local`` code, ``counts`` rows each."""
        names = [self._names[c] for c in local]
        resolved = [self._resolve(c) for c in local]
        return TagSegments(
            names, [r[0] for r in resolved], [r[1] for r in resolved],
            [split_marker(n, self._tag_map) is not None for n in names], np.r_[0, np.cumsum(counts)],
        )

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
