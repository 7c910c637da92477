"""The frame's rules for one run's rows, in one place: which rows are kept, the KL sign rule, epochs and splits.

* **Deduplication** (:func:`dedup_order`): one row per (tag, step), the one of latest wall_time (a resumed
  run, several event files in one directory); ties keep the later row in file order.
* **The KL sign rule** (:func:`kl_logged_negated`): a KL divergence is >= 0, so a series of a term in
  :data:`vaediag.terms.NONNEGATIVE_TERMS` whose finite values are <= 0 (one of them < 0) was logged as -KL
  (AntixK's ``KLD``) and is negated.
* **Epoch alignment and splits**: :func:`vaediag.logs.conventions.apply_conventions` (the rules of foreign
  trainers, documented there).

:class:`EpochAligner` holds what those rules need from a run's earlier rows: the sign decision per tag and
the conventions' :class:`~vaediag.logs.conventions.RunHistory`. :func:`vaediag.load` uses a fresh one per
run (the whole run is one batch); :class:`vaediag.logs.Tail` keeps one across polls (``live=True``), so a
poll is judged with what earlier polls saw and consecutive polls agree: a sign decided on one poll holds on
every later one (a later value that contradicts it is noted, not obeyed), and a tag read as val from its
cadence stays val. :class:`vaediag.logs.frame.FrameBuilder` lays the rows out in columns and asks the
aligner what they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from vaediag.logs.conventions import RunHistory, TagSegments, apply_conventions
from vaediag.logs.notes import Note
from vaediag.terms import NONNEGATIVE_TERMS

__all__ = ["EpochAligner", "EpochPoints", "Placement", "dedup_order", "kl_logged_negated"]


def dedup_order(codes: np.ndarray, steps: np.ndarray, wall_times: np.ndarray) -> np.ndarray:
    """Indices that sort rows by (code, step) keeping, per (code, step), the row of latest wall_time.

    Ties in wall_time keep the later row in file order. The common case, steps strictly increasing per
    tag in file order, needs only a stable sort by code.
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


def kl_logged_negated(values: np.ndarray) -> bool | None:
    """The KL sign rule: whether a KL series was logged as -KL.

    True when its finite values are all <= 0 (and so, one non-zero, < 0), False when one is > 0, None when
    no finite non-zero value says yet (no values, zeros, NaN).
    """
    fin = values[np.isfinite(values)]
    if not (fin != 0).any():
        return None
    return bool((fin <= 0).all())


class EpochPoints(NamedTuple):
    """A run's ``epoch`` tag rows before deduplication, which keeps one row per step and so would lose the
    second epoch value of a boundary step (:mod:`vaediag.logs.conventions`, rule 1)."""

    steps: np.ndarray
    wall_times: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, codes: np.ndarray, epoch_codes: list[int], steps: np.ndarray, wall_times: np.ndarray,
           values: np.ndarray) -> "EpochPoints | None":
        """The rows of ``epoch_codes`` among raw rows; None when the run logs no epoch tag."""
        if not epoch_codes:
            return None
        sel = codes == epoch_codes[0] if len(epoch_codes) == 1 else np.isin(codes, epoch_codes)
        return cls(steps[sel], wall_times[sel], values[sel])


@dataclass
class Placement:
    """What the aligner decided about one batch of rows: their splits and the notes on its decisions."""

    split_codes: np.ndarray  # int8 per row (conventions.SPLIT_CODES: train 0, val 1, other 2)
    notes: list[Note] = field(default_factory=list)


class EpochAligner:
    """The frame's rules for one run, with the state they keep between batches of its rows.

    Args:
        steps_per_epoch: the last-resort epoch alignment (``--steps-per-epoch``).
        live: the rows come in batches (:class:`~vaediag.logs.Tail`'s polls) rather than as a whole run:
            the split rules decide on the evidence so far, and the notes say "so far".
    """

    def __init__(self, *, steps_per_epoch: int | None = None, live: bool = False) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.live = live
        self.history = RunHistory()
        self.kl_negated: dict[str, bool] = {}  # the sign decision per tag, once made
        self._contradicted: set[str] = set()  # tags whose contradiction was noted

    def place(
        self,
        segments: TagSegments,
        steps: np.ndarray,
        wall_times: np.ndarray,
        values: np.ndarray,
        epochs_out: np.ndarray,
        *,
        epoch_points: EpochPoints | None = None,
    ) -> Placement:
        """Apply the sign rule to ``values`` and fill ``epochs_out`` (both in place) for one batch of rows.

        Rows are deduplicated (:func:`dedup_order`) and grouped by ``segments``; ``epoch_points``: the
        batch's epoch tag rows before deduplication.
        """
        notes = self._fix_kl_sign(values, segments.of_terms(NONNEGATIVE_TERMS))
        codes, more = apply_conventions(segments, steps, wall_times, epochs_out, history=self.history,
                                        whole_run=not self.live, steps_per_epoch=self.steps_per_epoch,
                                        epoch_points=epoch_points)
        return Placement(codes, notes + more)

    def _fix_kl_sign(self, values: np.ndarray, segments: list[tuple[int, int, str]]) -> list[Note]:
        """Negate, in place, each KL segment of a tag decided to be logged as -KL; notes on the decisions."""
        notes = []
        for a, b, name in segments:
            v = values[a:b]
            decided = self.kl_negated.get(name)
            if decided is None:
                decided = kl_logged_negated(v)
                if decided is None:
                    continue  # nothing to decide on yet
                self.kl_negated[name] = decided
                if decided:
                    notes.append(Note.kl_sign_flipped(name, int(np.isfinite(v).sum()), so_far=self.live))
            elif decided and name not in self._contradicted and (v[np.isfinite(v)] > 0).any():
                self._contradicted.add(name)
                notes.append(Note.kl_sign_contradicted(name, int((v[np.isfinite(v)] > 0).sum())))
            if decided:
                np.negative(v, out=v)
        return notes
