"""The loop's side of ``control.json``: the watchdog's decisions, read at each epoch start (rank 0) and
adopted by every rank.

A newer ``seq`` is applied once (kl_weight and mode into the loop's state), an older one is ignored with one
line, a bad file is reported once and never stops training. Under ``vaediag watch`` the loop first waits
for the watchdog's decision about the epoch that just ended, so a change applies from the next epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch.distributed as dist

from vaediag import terms
from vaediag.errors import ControlFileError, InputError
from vaediag.watch.control import CONTROL_FILENAME, Control, read_control, reason_line, wait_for_watchdog

from train import board
from train.checkpoint import LoopState
from train.distributed import Dist

__all__ = ["ControlReader", "sync_control", "log_control"]


class ControlReader:
    """Reads control.json at each epoch start; applies a newer seq once; reports a bad file once."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / CONTROL_FILENAME
        self._last_error: str | None = None
        self._last_ignored: int | None = None
        self._journal: dict[str, int] = {}
        self._timed_out = False
        # The control the last poll applied, with the kl_weight and mode it replaced (for the decision text).
        self.applied: tuple[Control, float, bool] | None = None

    def await_watchdog(self, finished_epoch: int, should_stop: Callable[[], bool]) -> str | None:
        """Under `vaediag watch`, wait for its decision about the epoch that just ended, so a change it
        makes applies from the next epoch, not the one after; a note the first time the wait times out."""
        why = wait_for_watchdog(self.run_dir, finished_epoch, should_stop=should_stop, _state=self._journal)
        if why == "timeout" and not self._timed_out:
            self._timed_out = True
            return (f"warning: no watchdog decision about epoch {finished_epoch + 1} yet; going on "
                    "(a later decision applies one epoch later)")
        return None

    def poll(self, state: LoopState) -> str | None:
        """Apply a new control to ``state``; return a one-line message to print, or None."""
        self.applied = None
        try:
            control = read_control(self.path)
        except (ControlFileError, InputError) as exc:  # a bad control file never stops training
            if exc.message == self._last_error:
                return None
            self._last_error = exc.message
            return f"warning: control file: {exc.message}"
        self._last_error = None
        if control is None:
            return None
        if control.seq <= state.control_seq:
            if control.seq < state.control_seq and self._last_ignored != control.seq:
                self._last_ignored = control.seq
                return f"control: seq {control.seq} is older than the applied seq {state.control_seq}; ignored"
            return None
        before = (state.kl_weight, state.ae_mode)
        state.kl_weight, state.ae_mode, state.control_seq = float(control.kl_weight), control.mode == "ae", control.seq
        self.applied = (control, *before)
        reason = f" ({reason_line(control.reason)})" if control.reason else ""
        return (f"control: applied seq {control.seq}: kl_weight {before[0]:.3g} -> {state.kl_weight:.3g}, "
                f"mode {'ae' if before[1] else 'vae'} -> {control.mode}{reason}")


def sync_control(state: LoopState, d: Dist) -> None:
    """Rank 0 read the file; every rank adopts its decision."""
    if not d.enabled:
        return
    box = [(state.kl_weight, state.ae_mode, state.control_seq)]
    dist.broadcast_object_list(box, src=0)
    state.kl_weight, state.ae_mode, state.control_seq = box[0]


def log_control(events: Any, state: LoopState, control: ControlReader | None, epoch: int) -> None:
    """At the epoch's first step (rank 0, ``events`` its event log; None elsewhere): the control seq and AE mode
    in effect, and the decision the last poll applied, as text. A refused write raises OutputError."""
    if events is None:
        return
    events.add_scalar(terms.tag("train", "control_seq"), state.control_seq, state.global_step)
    events.add_scalar(terms.tag("train", "ae_mode"), float(state.ae_mode), state.global_step)
    if control is not None and control.applied is not None:
        applied, kl_before, ae_before = control.applied
        text = board.decision_text(applied, kl_before=kl_before, ae_before=ae_before, step=state.global_step,
                                   epoch=epoch)
        events.add_text(terms.DECISION_TEXT_TAG, text, state.global_step)
