"""Turn a stream of tidy rows (from :class:`vaediag.logs.Tail`) into completed epochs and their metrics.

The watchdog's session (:mod:`vaediag.watch.session`, for the supervisor and the follower) and the Lightning
callback feed each poll's rows to an :class:`EpochTracker` and ask it which epochs are complete.
Epoch ``e`` is complete when

1. any row of a later epoch has arrived (the run has moved on), or
2. its validation point has arrived whole: every val term the previous validated epoch had is there, or
   (for the first one) the next poll brought nothing more for ``e`` (the val scalars of one epoch are
   written together at its end, so one quiet poll means they are all in), or
3. the run has ended (:meth:`EpochTracker.ready` with ``final=True``); an epoch cut short by the end
   (no val point in a run that logs val) is dropped then, not judged on half an epoch of train rows.

An epoch with train rows only (a foreign run without validation) completes by rule 1 or 3 only, since a
quiet poll in the middle of a slow epoch says nothing.

Metrics of an epoch, by canonical term: the val value (the last one logged in that epoch) where the run
logs val; else the mean of that epoch's train values for loss and metric terms; bookkeeping terms
(``kl_weight``, ``lr``, ``control_seq``, ``ae_mode``) are the last value logged in the epoch, from any
split, since they describe what the loop trained that epoch with.

Rows come placed by the tail, which aligns each poll's rows as a whole-run read does and keeps what that needs
across polls (in a run without an ``epoch`` tag, the n-th val point of a tag is epoch n, counted over every
poll: ``RunHistory.val_seen``). A row it could not place (a train row of such a run) is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vaediag.terms import BOOKKEEPING_TERMS

__all__ = ["EpochTracker", "EpochMetrics"]

_LAST_VALUE_TERMS = frozenset(BOOKKEEPING_TERMS) - {"epoch", "hp_metric"}


@dataclass
class _Epoch:
    val: dict[str, tuple[int, float]] = field(default_factory=dict)  # term -> (step, value), latest step
    train_sum: dict[str, float] = field(default_factory=dict)
    train_n: dict[str, int] = field(default_factory=dict)
    last: dict[str, tuple[int, float]] = field(default_factory=dict)  # bookkeeping terms, latest step
    quiet_polls: int = 0


@dataclass(frozen=True)
class EpochMetrics:
    """One completed epoch: its 0-based index and its metrics by canonical term."""

    epoch: int
    metrics: dict[str, float]


class EpochTracker:
    """Accumulate rows per epoch; report each epoch once, when it is complete."""

    def __init__(self) -> None:
        self._epochs: dict[int, _Epoch] = {}
        self._done_upto = -1  # every epoch <= this has been reported
        self._max_epoch = -1
        self.has_val = False
        self._val_terms: frozenset[str] = frozenset()  # val terms of the last validated epoch

    @property
    def last_reported(self) -> int:
        return self._done_upto

    def feed(self, frame: pd.DataFrame) -> None:
        """Add one poll's rows (the tidy frame's columns)."""
        for ep in self._epochs.values():
            ep.quiet_polls += 1
        if frame is None or not len(frame):
            return
        f = frame[frame["term"].notna()]
        if not len(f):
            return
        f = f[f["term"] != "epoch"]
        terms = f["term"].astype(str).to_numpy()
        splits = f["split"].astype(str).to_numpy()
        steps = f["step"].to_numpy(dtype=np.int64)
        values = f["value"].to_numpy(dtype=np.float64)
        epochs = f["epoch"].to_numpy(dtype=np.float64)
        order = np.argsort(steps, kind="stable")
        for i in order:
            if not math.isfinite(epochs[i]):
                continue  # a row the tail could not place (module docstring)
            e = int(epochs[i])
            if e <= self._done_upto:
                continue  # a late or repeated row of an epoch already decided (e.g. a resumed run)
            ep = self._epochs.setdefault(e, _Epoch())
            ep.quiet_polls = 0
            self._max_epoch = max(self._max_epoch, e)
            term, split, step, v = terms[i], splits[i], int(steps[i]), float(values[i])
            if term in _LAST_VALUE_TERMS:
                if term not in ep.last or step >= ep.last[term][0]:
                    ep.last[term] = (step, v)
            elif split == "val":
                self.has_val = True
                if term not in ep.val or step >= ep.val[term][0]:
                    ep.val[term] = (step, v)
            elif split == "train":
                ep.train_sum[term] = ep.train_sum.get(term, 0.0) + v
                ep.train_n[term] = ep.train_n.get(term, 0) + 1

    def ready(self, *, final: bool = False) -> list[EpochMetrics]:
        """Epochs that became complete since the last call, in order (see the module docstring)."""
        out = []
        for e in sorted(self._epochs):
            ep = self._epochs[e]
            whole = bool(ep.val) and (ep.quiet_polls >= 1 or (bool(self._val_terms) and self._val_terms <= ep.val.keys()))
            complete = final or e < self._max_epoch or whole
            if not complete:
                break  # epochs complete in order
            if final and e == self._max_epoch and self.has_val and not ep.val:
                del self._epochs[e]  # cut short: its val point never came
                continue
            if ep.val:
                self._val_terms = frozenset(ep.val)
            out.append(EpochMetrics(e, self._metrics(ep)))
            self._done_upto = e
            del self._epochs[e]
        return out

    @staticmethod
    def _metrics(ep: _Epoch) -> dict[str, float]:
        m = {t: ep.train_sum[t] / ep.train_n[t] for t in ep.train_sum}
        m.update({t: _decimal(v) for t, (_, v) in ep.val.items()})
        m.update({t: _decimal(v) for t, (_, v) in ep.last.items()})
        return m


def _decimal(v: float) -> float:
    """A value stored as float32 (``simple_value``) back to the decimal it was logged as.

    1e-2 logged as float32 reads back as 0.009999999776; a decision made from it should say 1e-3, not
    0.0009999999776, on its command line and in control.json. Values that are not float32-exact are kept.
    """
    f = np.float32(v)
    if not math.isfinite(v) or float(f) != v:
        return v
    return float(np.format_float_scientific(f, unique=True))  # shortest digits that give this float32
