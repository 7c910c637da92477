"""What rank 0 writes and keeps for a run: its directories, config, event log and the log's header, ``last.pt``
and the last checkpoint with finite weights; and what a refused write or a divergence says was kept.

On the other ranks the same calls write nothing (no event log; :meth:`RunWriter.checkpoint` returns), so the
loop calls them on every rank alike.
"""

from __future__ import annotations

import time
from pathlib import Path

from vaediag import terms

from train import board
from train.checkpoint import CHECKPOINT_NAME, checkpoint_payload, finite_weights, save_checkpoint
from train.config import save_run_config
from train.distributed import Dist
from train.errors import OutputError, TrainingDiverged
from train.events import EventLog
from train.output import Out, say_how_it_runs
from train.prepare import Prepared
from train.rundir import announce_run_dir, new_version_dirs
from train.stopping import diverged_error, os_failure, what_is_kept

__all__ = ["RunWriter"]


class RunWriter:
    """Rank 0's files of one run (see the module's docstring)."""

    def __init__(self, prep: Prepared, d: Dist, out: Out) -> None:
        self.prep, self.d, self.out = prep, d, out
        self.resumed = bool(prep.cfg.resume)
        self.run_dir, self.ckpt_dir = prep.run_dir, prep.ckpt_dir
        self.ckpt_path: Path | None = None
        self.events: EventLog | None = None
        # The last checkpoint that holds finite weights, (path, step): where a diverged or failed run resumes.
        self.last_good: tuple[Path, int] | None = None

    def open(self) -> None:
        """Rank 0 claims the run directory (or goes on in the resumed one) and opens its event log; every rank
        says how it runs; rank 0 writes the run's text and dashboards at its first step."""
        if self.d.is_main:
            self._claim_run_dir()
        self.ckpt_path = self.ckpt_dir / CHECKPOINT_NAME if self.ckpt_dir is not None else None
        if self.resumed and self.d.is_main:
            self.last_good = (Path(self.prep.cfg.resume), self.prep.state.global_step)
        cadence, resumed = say_how_it_runs(self.out, self.prep, resumed=self.resumed)
        if self.events is not None:
            self._write_header(cadence, resumed)

    def _claim_run_dir(self) -> None:
        """A new run's ``version_N`` and checkpoint directory, the handshake file, config.json, the event log."""
        cfg, out = self.prep.cfg, self.out
        note = None
        if not self.resumed:
            under = cfg.logdir + (f" and {cfg.checkpoint_dir}" if cfg.checkpoint_dir else "")
            try:
                self.run_dir, self.ckpt_dir, note = new_version_dirs(cfg)
            except OSError as exc:
                raise os_failure(exc, f"the run's directories under {under}", "nothing was trained") from None
            if note is None and cfg.checkpoint_dir:  # not beside the run: say where
                note = f"checkpoints: {self.ckpt_dir}"
        announce_run_dir(self.run_dir)
        if note:
            (out.warn if note.startswith("warning") else out.info)(note)
        try:
            save_run_config(cfg, self.run_dir)
        except OSError as exc:
            raise os_failure(exc, f"the config in {self.run_dir}", "nothing was trained") from None
        self.events = EventLog(self.run_dir, self._event_failure)

    def _write_header(self, cadence: str, resumed: str | None) -> None:
        """The run's text (the resume line, the backbone) and TensorBoard's dashboards, at the first step."""
        events, prep, step = self.events, self.prep, self.prep.state.global_step
        if resumed is not None:
            events.add_text(terms.RESUME_TEXT_TAG, resumed, step)
        events.add_text(terms.BACKBONE_TEXT_TAG, prep.backbone.description + cadence, step)
        loss_terms, metric_terms = board.layout_terms(prep.loss_terms(), prep.changed, prep.val_set.grey)
        layout = terms.board_layout(loss_terms, metric_terms, gradients=prep.cfg.grad_share_every > 0)
        events.add_summary(board.layout_summary(layout), step)
        events.add_summary(board.experiment_summary(), step)
        events.add_summary(board.session_start_summary(prep.cfg, start_time=time.time()), step)

    def checkpoint(self, *, kl_w: float, lr: float) -> None:
        """Save ``last.pt`` (rank 0): never non-finite weights, and a failed write leaves the old one intact.
        ``kl_w`` and ``lr``: in effect at the last step (for the message when the weights are not finite)."""
        if not self.d.is_main:
            return
        prep, state = self.prep, self.prep.state
        if not finite_weights(prep.model):
            raise self.diverged(state.global_step - 1, "the model's weights are not finite (NaN or inf) "
                                f"although the logged loss was (kl_weight {kl_w:.3g}, lr {lr:.3g})")
        payload = checkpoint_payload(prep.cfg, prep.model, prep.optimizer, state, self.run_dir, prep.device)
        try:
            save_checkpoint(self.ckpt_path, payload)
        except OSError as exc:
            said, kept = what_is_kept(exc, self.last_good)
            raise OutputError(f"cannot save checkpoint {self.ckpt_path}: {said}; training stopped at step "
                              f"{state.global_step}; {kept}") from None
        self.last_good = (self.ckpt_path, state.global_step)

    def _event_failure(self, exc: OSError) -> OutputError:
        said, kept = what_is_kept(exc, self.last_good)
        return OutputError(f"cannot write the event log in {self.run_dir}: {said}; training stopped at step "
                           f"{self.prep.state.global_step}; {kept}")

    def diverged(self, step: int | None, detail: str) -> TrainingDiverged:
        """The error of a run that diverged at ``step``, after ending the HParams session and closing the event
        log: the non-finite values must reach the disk, they are the evidence."""
        if self.events is not None:
            try:
                self.end_session("failure")
            except OutputError:
                pass
            try:
                self.events.close()
            except OutputError:
                pass
        return diverged_error(step, detail, self.last_good, self.run_dir)

    def end_session(self, status: str) -> None:
        """Tell TensorBoard's HParams tab how the run ended (rank 0, while its event log is open). Only a
        run that trained every epoch (success) or diverged (failure) ends its session: after a signal or a
        refused write the run goes on with --resume, and TensorBoard keeps a run's first end status."""
        if self.events is not None and self.events.is_open:
            self.events.add_summary(board.session_end_summary(status, end_time=time.time()),
                                    self.prep.state.global_step)

    def close_events(self) -> None:
        if self.events is not None:
            self.events.close()

    def release(self) -> None:
        if self.events is not None:
            self.events.abandon()  # a no-op after a clean close; after a failure, stops its thread quietly
