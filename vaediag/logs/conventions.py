"""The logging conventions of foreign trainers, applied to one run's rows: epoch alignment and splits.

One rule set for every engine, applied by :class:`vaediag.logs.aligner.EpochAligner` (with the KL sign rule),
which holds the :class:`RunHistory`: fresh per run for a whole-run read, kept across polls by the tail so a
poll is judged with what earlier polls saw.
Rows come grouped by tag (segment ``i`` is ``bounds[i]:bounds[i+1]``), each segment sorted by step.
Work is vectorised per row and done in Python per tag or per epoch only.

Epoch alignment, in order:

1. The run's ``epoch`` tag(s) (Lightning's ``epoch``, HF's ``train/epoch``): a row takes the epoch
   point at the nearest step at or before its own (the first point's before it). Where one step holds
   several epoch values, the row takes the one logged with it: the first point at that step whose
   wall_time is >= the row's. Lightning logs a training epoch's ``*_epoch`` metrics with ``epoch = e``
   at step ``N*(e+1)`` (after ``_batches_that_stepped`` was incremented, ``loops/training_epoch_loop.py``
   ``on_advance_end``), the very step where the next epoch's first ``*_step`` metrics log
   ``epoch = e+1``; ``LoggerConnector.log_metrics`` appends ``epoch`` after the metrics of each call, so
   the wall times tell the two apart.
   *A validation closes its epoch*: a row at a step holding no epoch point, after the step where a val
   row closed epoch ``e`` (that step's point says ``e``; no later point known says ``e`` again) and
   written after that point, is the next epoch's: ``e + 1``. Lightning validates epoch ``e`` in its last
   batch's ``on_advance_end``, before ``_batches_that_stepped`` is incremented
   (``loops/training_epoch_loop.py``), so the val rows sit at the epoch's last step; the next step is
   epoch ``e + 1``'s first batch, where a callback that writes with
   ``logger.log_metrics(..., step=_batches_that_stepped)`` and no ``epoch`` key (``LearningRateMonitor``
   at ``on_train_epoch_start``: the lr epoch ``e + 1`` trains with, after the epoch's scheduler step)
   lands before any row of that epoch carries ``epoch = e + 1``. Only state terms (lr, kl_weight, ...: a
   value in effect for the epoch that starts) move so; a loss or metric row keeps the last point's epoch (a
   callback's val metric written at ``global_step``, one step past its validation, is that validation's).
   Without a val row at the closing step nothing proves the epoch ended there, and such a row keeps the
   last point's epoch. A tail decides on the points it has seen: a state row polled between a mid-epoch
   validation and the next point of the same epoch takes the next epoch there, where a whole-run read
   keeps it in the epoch (rare: ``val_check_interval`` < 1 with a per-step LearningRateMonitor).
2. Fractional epoch series (HF Trainer: ``Trainer.log`` adds ``logs["epoch"] = self.state.epoch``, a
   float that reaches ``k + 1.0`` at the last step of epoch ``k``, to train and eval logs alike; the
   TensorBoard callback writes it as ``train/epoch``): a value ``e`` counts completed epochs, so the row
   belongs to epoch index ``ceil(e) - 1`` (0 for ``e = 0``); an eval at ``e = 1.0`` closes epoch 0. A
   series is fractional when any of its values is not an integer (decided per run; the tail keeps the
   decision once made). Integer series (Lightning) are epoch indices already.
3. Without an epoch tag: the n-th val point of a tag is epoch n; other rows ``step // steps_per_epoch``
   when given; else NaN.
4. Rows at a negative step are an evaluation before training (loops that log the untrained model at
   ``global_step=-1``): they are kept as real values, get **epoch -1** ("before training"), take no val
   rank, and a ``step_minus_one`` note counts them. Epoch -1 never raises a completed-epoch count.

Splits (``resolve`` gives each tag one; two rules refine it per run):

* ``split_from_cadence``: a tag with no split marker that is logged only at the steps where the run's
  marked val tags are logged, at least :data:`CADENCE_MIN_POINTS` times, at most once per epoch (when
  epochs are known), with at most 1/:data:`CADENCE_SPARSITY` as many rows as the run's densest train
  tag, is read as ``val`` (Lightning's ``validation_step`` logging an unprefixed name). Anything less
  certain keeps ``resolve``'s split.
* ``split_from_sibling`` (a guess, said so in the note): in a run with no marked val tag at all, a tag
  with no split marker whose term the run also logs under a ``train`` marker (``kl`` beside
  ``train/kl_step``), logged at most once per epoch, at least :data:`CADENCE_MIN_POINTS` times, with at
  most 1/:data:`CADENCE_SPARSITY` as many rows as the densest train tag, is read as ``val``: a loop
  that prefixes its training tags and not its validation ones. Needs epochs (an epoch tag).
* ``post_fit_eval``: val rows at an epoch index above the last epoch with train rows, whose first step
  is at most one past the last step of the training epochs, are a ``trainer.validate()`` after fit:
  ``LoggerConnector.log_metrics`` logs them at ``step = fit_loop.epoch_loop._batches_that_stepped``
  (which no longer advances) with ``epoch = trainer.current_epoch`` (= max_epochs once fit is done).
  They become ``other``; they are not a training epoch. (``test_*`` tags are ``other`` already.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vaediag.logs.notes import Note
from vaediag.terms import STATE_TERMS

__all__ = [
    "RunHistory",
    "TagSegments",
    "CADENCE_MIN_POINTS",
    "CADENCE_SPARSITY",
    "SPLIT_CODES",
    "apply_conventions",
    "epoch_indices",
]

SPLIT_CODES = {"train": 0, "val": 1, "other": 2}
CADENCE_MIN_POINTS = 2  # val points a cadence decision needs
CADENCE_SPARSITY = 4  # the densest train tag has at least this many times the candidate's rows


@dataclass
class RunHistory:
    """What the rules need from a run's earlier rows; fresh for a whole-run read, kept by the tail."""

    epoch_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    epoch_walls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    epoch_values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    fractional: bool = False
    val_seen: dict[str, int] = field(default_factory=dict)  # val points per tag (rank alignment)
    closing_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # steps of resolved val rows
    val_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # marked val tags
    train_counts: dict[str, int] = field(default_factory=dict)
    candidates: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # steps, epochs
    dense: set[str] = field(default_factory=set)  # unmarked tags too dense to be val
    cadence_val: set[str] = field(default_factory=set)
    marked_train_terms: set[str] = field(default_factory=set)  # terms logged under a train marker
    last_train_epoch: float = -np.inf
    last_fit_step: int = -1  # last step of rows at epochs <= last_train_epoch


def epoch_indices(values: np.ndarray, fractional: bool) -> np.ndarray:
    """Epoch index of epoch-tag values: as logged, or ``ceil(e) - 1`` (0 for 0) for a fractional series."""
    v = np.asarray(values, dtype=np.float64)
    if not fractional:
        return v
    return np.where(v > 0, np.ceil(v) - 1, v)


def _is_fractional(values: np.ndarray) -> bool:
    fin = values[np.isfinite(values)]
    return bool(len(fin)) and bool((fin != np.round(fin)).any())


def _last_at_or_before(es: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Index of the last ``es`` point at or before each step (0 before the first): sorted unique ``es``.

    A lookup table over the span of ``es`` when that span is small (steps are dense in training logs),
    a binary search otherwise.
    """
    lo, hi = int(es[0]), int(es[-1])
    span = hi - lo + 1
    if span <= 8 * len(es) + (1 << 20):
        at = np.zeros(span, dtype=np.int32 if len(es) < 2**31 else np.int64)
        at[es - lo] = np.arange(len(es), dtype=at.dtype)
        np.maximum.accumulate(at, out=at)
        j = steps - lo
        np.clip(j, 0, span - 1, out=j)
        return at[j]
    idx = np.searchsorted(es, steps, side="right")
    idx -= 1
    np.maximum(idx, 0, out=idx)
    return idx


def _merge_epoch_points(h: RunHistory, steps, walls, values) -> None:
    keep = steps >= 0  # a pre-training point says nothing about training epochs
    s = np.r_[h.epoch_steps, steps[keep]]
    w = np.r_[h.epoch_walls, walls[keep]]
    v = np.r_[h.epoch_values, values[keep]]
    o = np.lexsort((w, s))
    s, w, v = s[o], w[o], v[o]
    if len(s) > 1:  # the same record read twice (tail: a resumed file re-logging) counts once
        new = np.r_[True, (s[1:] != s[:-1]) | (w[1:] != w[:-1])]
        s, w, v = s[new], w[new], v[new]
    h.epoch_steps, h.epoch_walls, h.epoch_values = s, w, v
    h.fractional = h.fractional or _is_fractional(v)


def _note_closing_steps(h: RunHistory, segments: "TagSegments", seg: list[tuple[int, int]],
                        steps: np.ndarray) -> None:
    """Record the steps of the batch's val rows (``resolve``'s split): where a validation may close an epoch."""
    val = [steps[a:c] for i, (a, c) in enumerate(seg) if segments.splits[i] == "val" and c > a]
    if not val:
        return
    new = np.unique(np.concatenate(val))
    new = new[new >= 0]
    h.closing_steps = new if len(h.closing_steps) == 0 else np.union1d(h.closing_steps, new)


def _align_to_points(h: RunHistory, steps: np.ndarray, walls: np.ndarray, out: np.ndarray,
                     segments: "TagSegments") -> None:
    """Rule 1, with its *validation closes its epoch* case for the rows of state terms (lr ...)."""
    ps, pw = h.epoch_steps, h.epoch_walls
    pv = epoch_indices(h.epoch_values, h.fractional)
    last = np.r_[ps[1:] != ps[:-1], True]  # latest wall_time per step
    us, uv, uw = ps[last], pv[last], pw[last]
    j = _last_at_or_before(us, steps)
    np.take(uv, j, out=out)
    if len(h.closing_steps):  # (the state-row mask costs a pass over every tag: only where it can matter)
        state = np.repeat(np.asarray([t in STATE_TERMS for t in segments.terms], dtype=bool),
                          np.diff(np.asarray(segments.bounds, dtype=np.int64)))
        _after_closing_validation(h, us, uv, uw, j, steps, walls, out, state)
    # Steps holding several epoch values: each row takes the one logged with it (module docstring).
    differs = (ps[1:] == ps[:-1]) & (pv[1:] != pv[:-1])
    if not differs.any():
        return
    amb = np.unique(ps[1:][differs])  # few: epoch boundaries
    rows = np.flatnonzero(np.isin(steps, amb))
    if len(rows) == 0:
        return
    rs = steps[rows]
    lo = np.searchsorted(ps, amb, side="left")
    hi = np.searchsorted(ps, amb, side="right")
    for a, b, step in zip(lo.tolist(), hi.tolist(), amb.tolist()):
        r = rows[rs == step]
        k = np.searchsorted(pw[a:b], walls[r], side="left")
        np.minimum(k, b - a - 1, out=k)
        out[r] = pv[a:b][k]


def _after_closing_validation(h: RunHistory, us: np.ndarray, uv: np.ndarray, uw: np.ndarray, j: np.ndarray,
                              steps: np.ndarray, walls: np.ndarray, out: np.ndarray, state: np.ndarray) -> None:
    """Rule 1, *a validation closes its epoch*: state rows (``state``: lr, kl_weight ...) at a step without an
    epoch point, after a closing val step (in step and wall time), take the epoch after it: the value in effect
    for that epoch. Loss and metric rows never move: a callback's val metric logged at ``global_step`` (one past
    the validation's step) is still that validation's. ``us``/``uv``/``uw``: the points per step (latest);
    ``j``: each row's point at or before it."""
    closing = np.isin(us, h.closing_steps)
    # A later point that still says the closing point's epoch: the validation was mid-epoch (val_check_interval).
    if len(us) > 1:
        closing[:-1] &= uv[1:] != uv[:-1]
    c = us[j]
    rows = state & closing[j] & (steps > c) & (walls > uw[j])
    if rows.any():
        out[rows] = uv[j[rows]] + 1


@dataclass(frozen=True)
class TagSegments:
    """One run's deduplicated rows grouped by tag: segment ``i`` is rows ``bounds[i]:bounds[i+1]``, sorted by
    step; per segment the tag, its term and split (:func:`vaediag.terms.resolve`) and whether the tag's name
    marks its split (:func:`vaediag.terms.split_marker`)."""

    names: list[str]
    terms: list[str | None]
    splits: list[str]
    marked: list[bool]
    bounds: np.ndarray  # len(names) + 1

    def spans(self) -> list[tuple[int, int]]:
        """(start, end) of each segment."""
        b = [int(x) for x in self.bounds]
        return [(b[i], b[i + 1]) for i in range(len(self.names))]

    def of_terms(self, terms: frozenset[str]) -> list[tuple[int, int, str]]:
        """(start, end, tag) of the segments whose term is in ``terms``."""
        return [(a, c, self.names[i]) for i, (a, c) in enumerate(self.spans()) if self.terms[i] in terms]


def apply_conventions(
    segments: TagSegments,
    steps: np.ndarray,
    walls: np.ndarray,
    epochs_out: np.ndarray,
    *,
    history: RunHistory,
    whole_run: bool,
    steps_per_epoch: int | None = None,
    epoch_points: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[Note]]:
    """Fill ``epochs_out`` for one run's rows and return (split code per row, notes): the module's rules in order.

    Args:
        segments: the rows' tags (rows grouped by tag, each segment sorted by step).
        steps, walls: the rows' columns.
        epochs_out: float64 array of the rows' length, written in place.
        history: what earlier rows of the same run showed (updated here; fresh for a whole run).
        whole_run: the rows are the whole run: no later rows will need this run's evidence (the tail's
            polls are not).
        steps_per_epoch: the last-resort alignment of rows that are not val (rule 3).
        epoch_points: (steps, walls, values) of the epoch tag(s) before deduplication, which keeps one
            row per step and so loses the second epoch value of a boundary step; None when the rows hold
            no epoch tag.
    """
    h = history
    seg = segments.spans()
    # 1-2. Epoch points, fractional series.
    if epoch_points is not None:
        _merge_epoch_points(h, *epoch_points)
    _note_closing_steps(h, segments, seg, steps)
    has_points = len(h.epoch_steps) > 0
    if has_points:
        _align_to_points(h, steps, walls, epochs_out, segments)
    else:
        epochs_out[:] = np.nan
    split_of = list(segments.splits)
    notes = _split_by_cadence(h, segments, seg, steps, epochs_out, split_of, has_points=has_points,
                              whole_run=whole_run)
    if not has_points:
        _rank_val_points(h, segments.names, seg, steps, split_of, epochs_out, steps_per_epoch)
    neg = steps < 0
    notes += _before_training(segments.names, seg, neg, epochs_out)
    codes = np.repeat(np.asarray([SPLIT_CODES[s] for s in split_of], dtype=np.int8),
                      np.diff(np.asarray(segments.bounds, dtype=np.int64)))
    notes += _post_fit_eval(h, segments.names, seg, steps, neg, codes, epochs_out)
    return codes, notes


def _split_by_cadence(h: RunHistory, segs: TagSegments, seg: list[tuple[int, int]], steps: np.ndarray,
                      epochs: np.ndarray, split_of: list[str], *, has_points: bool, whole_run: bool) -> list[Note]:
    """The split rules ``split_from_cadence`` and ``split_from_sibling``: tags without a split marker read as
    val, in ``split_of``; decided on the cumulative evidence (needs epochs when known)."""
    notes = []
    for i in _cadence_candidates(h, segs, seg, steps, split_of, whole_run=whole_run):
        a, c = seg[i]
        name = segs.names[i]
        if name in h.cadence_val:
            split_of[i] = "val"
            continue
        note = _cadence_verdict(h, name, segs.terms[i], steps[a:c], epochs[a:c], has_points=has_points)
        if note is not None:
            split_of[i] = "val"
            notes.append(note)
    return notes


def _cadence_candidates(h: RunHistory, segs: TagSegments, seg: list[tuple[int, int]], steps: np.ndarray,
                        split_of: list[str], *, whole_run: bool) -> list[int]:
    """The segments the cadence rules may read as val; records the batch's train counts, train-marked terms
    and marked val steps in ``h``."""
    names, terms, marked = segs.names, segs.terms, segs.marked
    for i, (a, c) in enumerate(seg):
        if split_of[i] == "train":
            h.train_counts[names[i]] = h.train_counts.get(names[i], 0) + (c - a)
            if marked[i] and terms[i] not in (None, "epoch"):
                h.marked_train_terms.add(terms[i])
    candidates = [i for i in range(len(names)) if split_of[i] == "train" and not marked[i] and terms[i] is not None
                  and names[i] not in h.dense]
    if whole_run:  # the counts are final: drop tags too dense or too rare before gathering val steps
        top = sorted(h.train_counts.values(), reverse=True)[:2] + [0, 0]
        candidates = [
            i for i in candidates
            if seg[i][1] - seg[i][0] >= CADENCE_MIN_POINTS
            and (seg[i][1] - seg[i][0]) * CADENCE_SPARSITY <= (top[1] if h.train_counts[names[i]] == top[0] else top[0])
        ]
    val_new = [steps[a:c] for i, (a, c) in enumerate(seg) if split_of[i] == "val" and marked[i]]
    if val_new and (candidates or h.candidates or not whole_run):
        # Val steps are one per val pass: few, except in synthetic or per-step val logs, where the
        # union is the cost of this rule (paid only when a tag without a split marker is around).
        new = np.unique(np.concatenate(val_new)) if len(val_new) > 1 else val_new[0]
        h.val_steps = new if len(h.val_steps) == 0 else np.union1d(h.val_steps, new)
    return candidates


def _cadence_verdict(h: RunHistory, name: str, term: str | None, steps: np.ndarray, epochs: np.ndarray, *,
                     has_points: bool) -> Note | None:
    """The note when the candidate ``name``'s points so far (earlier batches' and these) make it val."""
    old_s, old_e = h.candidates.get(name, (np.zeros(0, np.int64), np.zeros(0, np.float64)))
    cs, ce = np.r_[old_s, steps], np.r_[old_e, epochs]
    sibling = len(h.val_steps) == 0 and has_points and term in h.marked_train_terms
    passes = len(h.val_steps) if not sibling else len(np.unique(h.epoch_values))
    if len(cs) > 2 * passes + 8:  # far too many points for a once-per-val tag
        h.dense.add(name)
        h.candidates.pop(name, None)
        return None
    h.candidates[name] = (cs, ce)
    densest = max((n for t, n in h.train_counts.items() if t != name and t not in h.cadence_val), default=0)
    cs_ok = cs[cs >= 0]
    fe = ce[np.isfinite(ce) & (cs >= 0)]
    sparse = len(cs_ok) >= CADENCE_MIN_POINTS and len(cs_ok) * CADENCE_SPARSITY <= densest
    if sibling and sparse and len(np.unique(fe)) == len(fe) == len(cs_ok):
        note = Note.split_from_sibling(name, len(cs_ok))
    elif sparse and bool(np.isin(cs_ok, h.val_steps).all()) and (not has_points or len(np.unique(fe)) == len(fe)):
        note = Note.split_from_cadence(name, len(cs_ok))
    else:
        return None
    h.cadence_val.add(name)
    h.candidates.pop(name, None)
    return note


def _rank_val_points(h: RunHistory, names: list[str], seg: list[tuple[int, int]], steps: np.ndarray,
                     split_of: list[str], epochs_out: np.ndarray, steps_per_epoch: int | None) -> None:
    """Alignment rule 3, without epoch points: the n-th val point of a tag (cadence-val tags included) is epoch n,
    counted across batches; ``steps_per_epoch`` for the rest."""
    for i, (a, c) in enumerate(seg):
        s = steps[a:c]
        nonneg = s >= 0
        if split_of[i] == "val":
            k = int(nonneg.sum())
            off = h.val_seen.get(names[i], 0)
            epochs_out[a:c][nonneg] = np.arange(off, off + k)
            h.val_seen[names[i]] = off + k
        elif steps_per_epoch:
            epochs_out[a:c] = s // steps_per_epoch


def _before_training(names: list[str], seg: list[tuple[int, int]], neg: np.ndarray,
                     epochs_out: np.ndarray) -> list[Note]:
    """Alignment rule 4: rows at a negative step are epoch -1 (an evaluation before training)."""
    if not neg.any():
        return []
    epochs_out[neg] = -1.0
    notes = []
    for i, (a, c) in enumerate(seg):
        k = int(neg[a:c].sum())
        if k:
            notes.append(Note.step_minus_one(names[i], k))
    return notes


def _post_fit_eval(h: RunHistory, names: list[str], seg: list[tuple[int, int]], steps: np.ndarray,
                   neg: np.ndarray, codes: np.ndarray, epochs_out: np.ndarray) -> list[Note]:
    """``post_fit_eval``: val rows at an epoch past training, at a step that did not advance, become other
    (in ``codes``)."""
    is_train = (codes == 0) & np.isfinite(epochs_out) & ~neg
    if is_train.any():
        h.last_train_epoch = max(h.last_train_epoch, float(epochs_out[is_train].max()))
    if not np.isfinite(h.last_train_epoch):
        return []
    fit = (codes != 2) & ~neg & (epochs_out <= h.last_train_epoch)
    if fit.any():
        h.last_fit_step = max(h.last_fit_step, int(steps[fit].max()))
    late = (codes == 1) & ~neg & (epochs_out > h.last_train_epoch)
    if not late.any():
        return []
    moved = np.zeros(len(codes), dtype=bool)
    le, ls = epochs_out[late], steps[late]
    for e in np.unique(le).tolist():
        if int(ls[le == e].min()) <= h.last_fit_step + 1:
            moved |= late & (epochs_out == e)
    if not moved.any():
        return []
    codes[moved] = SPLIT_CODES["other"]
    tags = [names[i] for i, (a, c) in enumerate(seg) if moved[a:c].any()]
    return [Note.post_fit_eval(tags, int(moved.sum()), sorted({int(x) for x in epochs_out[moved].tolist()}))]
