"""What rank 0 writes to the run's event files: the per-step train scalars (:class:`StepLogger`, one host
transfer per flush, the first non-finite step kept as :class:`BadStep`) and the SummaryWriter behind them
(:class:`EventLog`, whose failed writes become one :class:`OutputError`).

The tags are ``vaediag.terms``'s: train scalars every step (``terms.TRAIN_STEP_TAGS`` plus the 0-based
``epoch``; the perceptual term's only on the steps that compute it), the gradient shares on the
``--grad-share-every`` steps (``terms.GRADIENT_TAGS``), val scalars once per epoch at the epoch's last global
step (``terms.VAL_EPOCH_TAGS``), what control.json made the loop apply (``terms.CONTROL_TAGS``) at each epoch's
first step, a reconstruction grid, a KL-per-dimension histogram, the backbone as text, and TensorBoard's
dashboards (train/board.py).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from vaediag import terms

from train.errors import OutputError

__all__ = ["BadStep", "StepLogger", "EventLog", "write_val", "quiet_writer_threads"]


@dataclass(frozen=True)
class BadStep:
    """The first train step whose logged values were not all finite (the step the run diverged)."""

    step: int
    epoch: int
    values: dict[str, float]
    kl_weight: float
    lr: float


class StepLogger:
    """Per-step train scalars, written with one host transfer per flush (not one per scalar).

    Each step's loss values are stacked into one tensor on the device; ``flush`` stacks the buffered
    steps and calls ``.tolist()`` once, so logging adds no GPU synchronisation per scalar (nor per step:
    ``flush_every`` steps are buffered; 0 = only when the caller flushes, as the loop does at its checks). Every step is
    checked for NaN/inf at its flush (steps not due for writing under ``--log-every`` too): the first
    non-finite step is written whatever ``--log-every`` says (so ``vaediag check`` sees it), kept in
    :attr:`bad`, and nothing after it is logged.
    """

    def __init__(self, writer: Any, term_names: list[str], *, flush_every: int = 1) -> None:
        self.writer = writer
        self.term_names = list(term_names)
        self.names = ["loss", *term_names, *[terms.weighted(t) for t in term_names]]
        self.tags = [terms.tag("train", n) for n in self.names]
        self.flush_every = flush_every
        self._rows: list[tuple[int, int, float, float, bool, torch.Tensor, list[bool], Mapping[str, float]]] = []
        self.last: dict[str, float] = {}
        self.bad: BadStep | None = None

    def log(self, step: int, epoch: int, total: torch.Tensor, raw: dict[str, torch.Tensor],
            weighted: dict[str, torch.Tensor], *, kl_weight: float, lr: float, write: bool = True,
            extra: Mapping[str, float] | None = None) -> None:
        """Buffer one step; ``write=False`` checks it for divergence without writing it (``--log-every``).
        A term absent from ``raw`` (the perceptual term between its steps, see :func:`perceptual_factor`)
        is not written at this step, raw or weighted. ``extra`` (tag -> value, already on the host: the
        gradient shares of a ``--grad-share-every`` step) is written with the step whatever ``write`` says,
        and is not checked for divergence: a non-finite gradient statistic is logged, it stops nothing."""
        if self.bad is not None:
            return
        gap = total.detach().new_zeros(())
        present = [True, *[t in raw for t in self.term_names], *[t in weighted for t in self.term_names]]
        values = torch.stack([total, *[raw.get(t, gap) for t in self.term_names],
                              *[weighted.get(t, gap) for t in self.term_names]]).detach()
        self._rows.append((step, epoch, kl_weight, lr, write, values, present, extra or {}))
        if self.flush_every and len(self._rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        table = torch.stack([r[5] for r in rows]).tolist()
        kl_tag, lr_tag = terms.tag("train", "kl_weight"), terms.tag("train", "lr")
        for (step, epoch, kl_weight, lr, write, _, present, extra), values in zip(rows, table):
            finite = all(math.isfinite(v) for v in values)
            if self.writer is not None:
                for tag, v in extra.items():
                    self.writer.add_scalar(tag, v, step)
            if self.writer is not None and (write or not finite):
                add = self.writer.add_scalar
                for tag, v, here in zip(self.tags, values, present):
                    if here:
                        add(tag, v, step)
                add(kl_tag, kl_weight, step)
                add(lr_tag, lr, step)
                add(terms.EPOCH_TAG, epoch, step)
            self.last = {n: v for n, v, here in zip(self.names, values, present) if here}
            if not finite:
                self.bad = BadStep(step, epoch, dict(self.last), kl_weight, lr)
                break


class EventLog:
    """The run's SummaryWriter, for rank 0. An OSError while writing events (disk full, I/O error, the
    file-size limit) becomes one :class:`OutputError` naming the run directory; the writer is then
    abandoned, never retried (tensorboard's writer thread keeps failing once its file did)."""

    def __init__(self, run_dir: Path, on_error: Callable[[OSError], OutputError]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self._on_error = on_error
        self._w: Any = None
        self._w = self._call(SummaryWriter, log_dir=str(run_dir))

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            self.abandon()
            raise self._on_error(exc) from None

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._call(self._w.add_scalar, tag, value, step)

    def add_histogram(self, tag: str, values: Any, step: int) -> None:
        self._call(self._w.add_histogram, tag, values, step)

    def add_image(self, tag: str, image: Any, step: int, **kwargs: Any) -> None:
        self._call(self._w.add_image, tag, image, step, **kwargs)

    def add_text(self, tag: str, text: str, step: int) -> None:
        """A text summary under exactly ``tag`` (SummaryWriter.add_text would append '/text_summary')."""
        from torch.utils.tensorboard.summary import text as text_summary

        summary = text_summary(tag, text)
        summary.value[0].tag = tag
        self.add_summary(summary, step)

    def add_summary(self, summary: Any, step: int) -> None:
        """A prepared Summary proto (a plugin's: text, the Custom Scalars layout, the HParams session)."""
        self._call(lambda: self._w._get_file_writer().add_summary(summary, step, time.time()))

    @property
    def is_open(self) -> bool:
        return self._w is not None

    def flush(self) -> None:
        self._call(self._w.flush)

    def close(self) -> None:
        w, self._w = self._w, None
        if w is not None:
            try:
                w.close()
            except OSError as exc:
                self._w = w
                self.abandon()
                raise self._on_error(exc) from None

    def abandon(self) -> None:
        """Stop the writer's thread and close its file without raising (after a failed write)."""
        w, self._w = self._w, None
        for fw in ((getattr(w, "all_writers", None) or {}).values() if w is not None else ()):
            try:
                fw.close()
            except Exception:
                pass


def quiet_writer_threads() -> Callable[[], None]:
    """Keep tensorboard's writer thread from printing a traceback when its write fails: the same error
    reaches the loop at the writer's next call, as one OutputError line. Returns the undo function."""
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
            return
        previous(args)

    threading.excepthook = hook

    def undo() -> None:
        if threading.excepthook is hook:
            threading.excepthook = previous

    return undo


def write_val(events: EventLog, val: Mapping[str, float], kl_dims: torch.Tensor, grid: torch.Tensor | None,
              step: int) -> None:
    """An epoch's validation at ``step``: every val scalar (non-finite ones too: the ``nonfinite`` rule must see
    them), the KL-per-dimension histogram and the reconstruction grid only when finite; then a flush, since the
    watchdog reads the epoch as soon as it ends."""
    for term, value in val.items():
        events.add_scalar(terms.tag("val", term), value, step)
    if bool(torch.isfinite(kl_dims).all()):
        events.add_histogram(terms.KL_PER_DIM_HIST_TAG, kl_dims.numpy(), step)
    if grid is not None and bool(torch.isfinite(grid).all()):
        events.add_image(terms.RECON_GRID_TAG, grid, step, dataformats="CHW")
    events.flush()
