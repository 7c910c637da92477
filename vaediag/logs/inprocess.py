"""A tidy frame from per-epoch metrics handed over in memory, read exactly as a log with the trainer's tags.

A training loop that writes no log vaediag reads (or whose log is not on disk yet) can still be diagnosed:
it hands over each epoch's metrics by canonical term, as :meth:`vaediag.watch.KLWatchdog.step` takes them,
and :func:`frame_from_epochs` writes them as the rows the training core would have logged: the tag
``val/<term>`` for a loss or metric (``train/<term>`` for a bookkeeping term such as ``kl_weight`` or
``lr``; a key may name its split itself, ``train/recon``), plus the ``epoch`` tag. Each epoch ``e`` takes
two steps, as in a trainer's log: its train values at step ``2e`` and its val values at ``2e + 1`` (the end
of the epoch), so that every epoch handed over reads as a training epoch. The rows then go through the reader's own frame builder (:func:`vaediag.logs.frame.build_frame`:
term and split from :func:`vaediag.terms.resolve`, and a fresh :class:`~vaediag.logs.aligner.EpochAligner`: the sign
rule, epoch alignment), so
:func:`vaediag.diagnose.engine.diagnose_run` reads the result as it reads a log.

    >>> f = frame_from_epochs([{"kl": 40.0, "recon": 0.2, "psnr": 14.0}, {"kl": 35.0, "recon": 0.1, "psnr": 17.5}])
    >>> f[f["term"] == "psnr"][["tag", "split", "step", "epoch", "value"]].to_dict("records")
    [{'tag': 'val/psnr', 'split': 'val', 'step': 1, 'epoch': 0.0, 'value': 14.0}, {'tag': 'val/psnr', 'split': 'val', 'step': 3, 'epoch': 1.0, 'value': 17.5}]
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from vaediag.errors import UsageError
from vaediag.logs.frame import RunRows, build_frame
from vaediag.terms import BOOKKEEPING_TERMS, CANONICAL_TERMS, EPOCH_TAG, tag

__all__ = ["frame_from_epochs", "EPOCH_METRIC_TERMS", "epoch_metric_tag"]

# The terms a loop may hand over: every canonical term but ``epoch``, which the frame writes itself.
EPOCH_METRIC_TERMS: tuple[str, ...] = tuple(t for t in CANONICAL_TERMS if t != "epoch")
_SPLITS = ("train", "val")


def epoch_metric_tag(key: str) -> str:
    """The tag the trainer writes for a metric key: ``"psnr"`` -> ``val/psnr``, ``"kl_weight"`` ->
    ``train/kl_weight``, ``"train/recon"`` -> ``train/recon``.

    Raises:
        UsageError: not a canonical term (with an optional ``train/`` or ``val/`` in front).
    """
    if not isinstance(key, str):
        raise UsageError(f"metric key {key!r} is not a string: use a canonical term ({_valid()})")
    split, _, term = key.rpartition("/")
    if split and split not in _SPLITS:
        raise UsageError(f"metric key {key!r}: unknown split {split!r} (choose {', '.join(_SPLITS)}, or no split "
                         "for val)")
    if term not in EPOCH_METRIC_TERMS:
        raise UsageError(f"unknown metric {key!r}: use a canonical term ({_valid()}), optionally as train/<term> "
                         "or val/<term>")
    if not split:
        split = "train" if term in BOOKKEEPING_TERMS else "val"
    return tag(split, term)


def _valid() -> str:
    return ", ".join(EPOCH_METRIC_TERMS)


def _number(value: Any, *, key: str, epoch: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes, bool)):
        raise UsageError(f"epoch {epoch}: metric {key!r} is {value!r}, not a number")
    try:
        return float(value)  # ints, floats, numpy scalars, one-element tensors
    except (TypeError, ValueError, RuntimeError):  # a list, a tensor of several elements ...
        raise UsageError(f"epoch {epoch}: metric {key!r} is {value!r}, not a number") from None


def _epoch_rows(epoch: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """One epoch's metrics by the tag the trainer writes (a value of None: no row)."""
    rows: dict[str, float] = {}
    keys: dict[str, str] = {}
    for key, value in metrics.items():
        t = epoch_metric_tag(key)
        if t in keys:
            raise UsageError(f"epoch {epoch}: {keys[t]!r} and {key!r} are both {t}; give it once")
        keys[t] = key
        v = _number(value, key=key, epoch=epoch)
        if v is not None:
            rows[t] = v
    return rows


def frame_from_epochs(
    epochs: Sequence[Mapping[str, Any]] | Mapping[int, Mapping[str, Any]],
    *,
    run: str = "run",
    wall_times: Sequence[float] | Mapping[int, float] | None = None,
) -> pd.DataFrame:
    """The tidy frame (ARCHITECTURE: run, tag, term, split, step, epoch, value, wall_time) of per-epoch metrics.

    Args:
        epochs: each epoch's metrics by canonical term (``{"kl": 31.2, "recon": 0.08, "psnr": 21.4}``), as a
            list (index = 0-based epoch) or a mapping from epoch index to metrics. A key may carry its split,
            ``train/recon``; without one, a loss or metric is a val value and a bookkeeping term
            (``kl_weight``, ``lr``) is logged as the trainer logs it, on train. A value of None is "not
            measured this epoch" (no row); NaN and inf are kept (the ``nonfinite`` rule judges them).
        run: the run id of every row.
        wall_times: seconds since the Unix epoch at which each epoch was logged (same indexing as
            ``epochs``); without them the column is NaN, as for a metrics log that records no time.

    Raises:
        UsageError: an unknown metric key (the message lists the canonical terms), a value that is not a
            number, a negative or non-integer epoch, one metric given twice in an epoch (``recon`` and
            ``val/recon``), or wall times that do not match the epochs.
    """
    items = list(epochs.items()) if isinstance(epochs, Mapping) else list(enumerate(epochs))
    for epoch, _ in items:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise UsageError(f"epoch {epoch!r} is not an epoch index (an integer >= 0)")
    items = sorted(((int(e), m) for e, m in items), key=lambda kv: kv[0])
    if wall_times is not None:
        walls = dict(wall_times.items()) if isinstance(wall_times, Mapping) else dict(enumerate(wall_times))
        missing = [e for e, _ in items if e not in walls]
        if missing:
            raise UsageError(f"wall_times has no time for epoch {missing[0]} (it covers epochs {sorted(walls)[:10]})")
    tags: list[str] = []
    steps: list[int] = []
    values: list[float] = []
    order: list[float] = []  # the order of logging (the reader's deduplication and conventions use it)
    shown: list[float] = []
    for epoch, metrics in items:
        if not isinstance(metrics, Mapping):
            raise UsageError(f"epoch {epoch}: metrics must be a mapping of canonical term to value, got "
                             f"{type(metrics).__name__}")
        wall = float(walls[epoch]) if wall_times is not None else math.nan
        rows = _epoch_rows(epoch, metrics)
        # Two steps per epoch, as a trainer logs them: the epoch's training at step 2e, its validation at its
        # end, step 2e + 1; the epoch tag at both.
        train_rows = [(t, v) for t, v in rows.items() if t.startswith("train/")]
        val_rows = [(t, v) for t, v in rows.items() if not t.startswith("train/")]
        for step, part in ((2 * epoch, train_rows), (2 * epoch + 1, val_rows)):
            for t, v in [(EPOCH_TAG, float(epoch)), *part]:
                tags.append(t)
                steps.append(step)
                values.append(v)
                order.append(float(len(order)))
                shown.append(wall)
    rr = RunRows.from_lists(run, tags, steps, values, order)
    rr.shown_walls = np.asarray(shown, dtype=np.float64)  # the frame's wall_time; ``order`` orders the rows
    return build_frame([rr])
