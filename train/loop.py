"""The training loop: :func:`train` takes a :class:`TrainConfig` and runs it, epoch after epoch.

Read it top to bottom, as nanoGPT's train.py reads: :func:`train` joins the processes; :func:`_train`
prepares (checks the input, builds the model or restores it from a checkpoint: train/prepare.py) and opens
the run (rank 0's directories and event log: train/writer.py); then :class:`_Run` goes epoch by epoch,
:meth:`~_Run.start_epoch` (the watchdog's decision, control.json), :meth:`~_Run.train_epoch` (the steps, each
:meth:`~_Run.train_batch`, a check every ``--sync-every``) and :meth:`~_Run.end_epoch` (validate, checkpoint,
the epoch's line). Every way out goes through :meth:`~_Run.settle`, so all ranks stop at the same step.

The parts, one job each: schedule.py (lr, KL weight, cadences), distributed.py (torchrun's processes and how
they agree), device.py (device, precision, Adam's kernel), prepare.py (input checked, model built or
restored), rundir.py (version_N, the handshake file), checkpoint.py (last.pt written, checked, restored),
writer.py (what rank 0 writes and keeps), control.py (control.json), events.py (the event files), step.py (one
train step), evaluate.py (validation), stopping.py (signals, the messages of a stop), output.py (what rank 0
prints). Their public names are importable from here too, as before the split.

What a run leaves behind (ARCHITECTURE): ``<logdir>/<name>/version_N/`` with the event files (every loss
term raw and weighted, per step on train and per epoch on val, the gradient shares every
``--grad-share-every`` steps, what control.json made the loop apply, a reconstruction grid, a KL-per-dimension
histogram, the backbone as text, TensorBoard's Custom Scalars layout and HParams session: train/events.py,
train/board.py), ``config.json`` and ``hparams.yaml``; ``checkpoints/last.pt`` beside it, or under an
explicit ``--checkpoint-dir`` (train/rundir.py, train/checkpoint.py); the run directory in
``$VAEDIAG_RUN_DIR_FILE`` when the watchdog set it. The HParams session ends with success or failure; a
signal leaves it open, since the run goes on with ``--resume``.

Under ``torchrun`` every process trains on its shard (DistributedSampler) with ``batch_size`` images per
step; every process validates its share of the val batches and rank 0 merges them in batch order, so the val
numbers are the single process's (:func:`evaluate`); rank 0 alone logs and checkpoints.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DistributedSampler

from vaediag.errors import ConfigError, Interrupted, VaediagError
from vaediag.integrations.gradients import TermGradients, term_gradients
from vaediag.watch.control import RUN_DIR_FILE_ENV

from train.checkpoint import CHECKPOINT_NAME, load_checkpoint, resume_config
from train.config import TrainConfig
from train.control import ControlReader, log_control, sync_control
from train.device import autocast, is_compile_error, make_optimizer, sync_every
from train.distributed import (Dist, agree, any_rank, elsewhere, failure_code, init_distributed, leave, step_code,
                               step_of, together)
from train.errors import OutputError, TrainingDiverged, one_line
from train.evaluate import ValFeatureCache, evaluate, make_grid
from train.events import BadStep, StepLogger, quiet_writer_threads, write_val
from train.losses import center_weight_map
from train.output import Out, epoch_line, progress_bar
from train.prepare import Prepared, prepare
from train.rundir import CHECKPOINT_SUBDIR
from train.schedule import grad_share_due, kl_weight_at, lr_at, perceptual_factor
from train.step import train_step
from train.stopping import StopOnSignal, bad_step_detail, fmt, nonfinite_terms
from train.writer import RunWriter

__all__ = [
    "train", "TrainResult", "EpochEnd",
    # the parts, importable from here as before the split (tests, bench/, README)
    "lr_at", "kl_weight_at", "perceptual_factor", "grad_share_due", "load_checkpoint", "resume_config", "train_step",
    "evaluate", "StepLogger", "BadStep", "make_grid", "RUN_DIR_FILE_ENV", "CHECKPOINT_NAME", "CHECKPOINT_SUBDIR",
    "autocast", "make_optimizer", "sync_every",
]


@dataclass(frozen=True)
class EpochEnd:
    """What an ``on_epoch_end`` callback sees (rank 0, after validation and the checkpoint)."""

    epoch: int  # the 0-based epoch just finished
    global_step: int  # steps done so far
    run_dir: Path
    checkpoint: Path
    val: dict[str, float]


@dataclass
class TrainResult:
    """Where the run went and how far it got (run_dir is None on ranks other than 0)."""

    run_dir: Path | None
    checkpoint: Path | None
    global_step: int
    epochs_done: int
    val: dict[str, float] = field(default_factory=dict)
    config: TrainConfig | None = None


def train(cfg: TrainConfig, *, on_epoch_end: Callable[[EpochEnd], None] | None = None) -> TrainResult:
    """Train (or resume, when ``cfg.resume`` is set) and return where it went.

    Raises:
        DataError, ConfigError, InputError, CheckpointError: bad input, before anything is written.
        Interrupted: SIGINT/SIGTERM; the step in flight was finished and a checkpoint saved.
        TrainingDiverged: the loss or the weights became non-finite; that step is logged, nothing
            non-finite is checkpointed (exit code 3).
        OutputError: a write failed (disk full, I/O error, file-size limit); the previous checkpoint is
            intact (exit code 4).
    """
    d = init_distributed(cfg.device)
    undo = quiet_writer_threads()
    agreed = False  # every rank ends here at the same point (a result, or an error all of them raise)
    try:
        result = _train(cfg, d, on_epoch_end)
        agreed = True
        return result
    except VaediagError:
        agreed = True  # the loop's own errors are agreed between ranks before any of them raises
        raise
    finally:
        undo()
        leave(d, agreed=agreed)


def _train(cfg: TrainConfig, d: Dist, on_epoch_end: Callable[[EpochEnd], None] | None) -> TrainResult:
    prep: Prepared = together(d, lambda: prepare(cfg, d))  # bad input: every rank stops, nothing written
    run = _Run(prep, d, on_epoch_end)
    together(d, run.files.open)
    try:
        return run.loop()
    finally:
        run.files.release()


class _Run:
    """One run after its input was checked: its epochs, its steps, and how it stops (its files: :attr:`files`).

    Every way out of the loop goes through :meth:`settle`, one all_reduce at each check (every
    ``--sync-every`` steps and at each epoch's end and start) that tells every rank whether any rank saw a
    signal, a non-finite step or a failed write, so all of them stop at the same step and none is left
    waiting in a collective. The checks fall on the same global steps on every rank.
    """

    def __init__(self, prep: Prepared, d: Dist, on_epoch_end: Callable[[EpochEnd], None] | None) -> None:
        self.prep, self.d, self.on_epoch_end = prep, d, on_epoch_end
        self.cfg, self.state, self.model, self.optimizer = prep.cfg, prep.state, prep.model, prep.optimizer
        self.device = prep.device
        self.out = Out(d.is_main)
        self.files = RunWriter(prep, d, self.out)  # rank 0's directories, event log and checkpoints
        self.logger: StepLogger | None = None
        self.stop: StopOnSignal | None = None
        self.control: ControlReader | None = None  # rank 0's
        self.lr, self.kl_w = self.cfg.lr, self.state.kl_weight  # in effect at the last step
        self.gradients: TermGradients | None = None  # the last step's gradient measurement (--grad-share-every)
        # The val targets' perceptual features, computed once (up to --val-feature-cache-mb).
        self.val_features = ValFeatureCache(budget=self.cfg.val_feature_cache_mb * 2**20)

    # --- the loop -----------------------------------------------------------------------------------
    def loop(self) -> TrainResult:
        """Wrap the model for the steps (DDP across processes, torch.compile), then :meth:`_loop`."""
        self.train_model: torch.nn.Module | None = self.model
        if self.d.enabled:
            from torch.nn.parallel import DistributedDataParallel

            cuda = self.device.type == "cuda"
            self.train_model = DistributedDataParallel(self.model, device_ids=[self.d.local_rank] if cuda else None)
        self.eager_model: torch.nn.Module | None = self.train_model  # the gradient measurements' (see step)
        if self.cfg.compile:
            self.train_model = torch.compile(self.train_model)
        try:
            return self._loop()
        finally:
            # The DDP wrapper holds the process group: no traceback's frames may keep it past train()
            # (only these attributes refer to it; _loop and the steps read it from here).
            self.train_model = self.eager_model = None

    def _loop(self) -> TrainResult:
        """Every epoch from where the run stands: its start, its steps, its end; then the run's end."""
        cfg, state = self.cfg, self.state
        self._plan()
        val: dict[str, float] = {}
        with StopOnSignal() as stop:
            self.stop = stop
            for epoch in range(state.epoch, cfg.epochs):
                t0 = time.perf_counter()
                self.start_epoch(epoch)
                self.train_epoch(epoch)
                val = self.end_epoch(epoch, t0)
        self.files.end_session("success")
        self.files.close_events()
        return TrainResult(run_dir=self.files.run_dir, checkpoint=self.files.ckpt_path,
                           global_step=state.global_step, epochs_done=state.epoch, val=val, config=cfg)

    def _plan(self) -> None:
        """What every epoch shares: the centre weight map, the sampler and the schedule's length, the checks'
        cadence, the step logger, rank 0's control.json reader."""
        cfg, d = self.cfg, self.d
        self.model.train()
        self.weight_map = center_weight_map(cfg.image_size, center_weight=cfg.center_weight, device=self.device)
        self.sampler = DistributedSampler(range(len(self.prep.train_set)), num_replicas=d.world, rank=d.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=d.enabled)
        steps_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        self.total_steps = cfg.epochs * steps_per_epoch
        self.every = sync_every(cfg, self.device)
        # The gradient measurements fall on steps that compute every term (grad_share_due).
        self.p_every = cfg.perceptual_every if self.prep.perceptual is not None else 1
        # The loop flushes the logger itself, at each check, so that a failed write happens at a check.
        self.logger = StepLogger(self.files.events, self.prep.loss_terms(), flush_every=0)
        self.control = ControlReader(self.files.run_dir) if d.is_main else None
        self.show_bar = d.is_main and not cfg.quiet and sys.stdout.isatty()
        if self.state.epoch >= cfg.epochs:
            self.out.warn(f"nothing to train: the checkpoint has finished {self.state.epoch} epoch(s) and --epochs "
                          f"is {cfg.epochs}; pass a larger --epochs to continue")

    def start_epoch(self, epoch: int) -> None:
        """Wait for the watchdog's decision about the last epoch (under `vaediag watch`), stop here on a
        signal, apply control.json (rank 0 reads it, every rank adopts it) and log what is in effect."""
        stop, control, out = self.stop, self.control, self.out
        if control is not None and epoch > 0:
            note = control.await_watchdog(epoch - 1, lambda: stop.requested is not None)
            if note:
                out.warn(note)
        # A signal during that wait (the watchdog's stop, or its restart, follows its decision) stops the
        # run here, on the epoch boundary, not after one more step at the settings it is about to change.
        if any_rank(stop.requested is not None, self.d):
            raise self.stop_now(stop.requested or "stopped by another rank")
        # control.json is read at the start of each epoch; a new seq is applied once.
        if control is not None:
            message = control.poll(self.state)
            if message:
                (out.warn if message.startswith("warning") else out.info)(message)
        sync_control(self.state, self.d)
        failure = None
        try:
            log_control(self.files.events, self.state, control, epoch)
        except OutputError as exc:
            failure = exc
        self.settle(failure, stop_here=False)  # a signal now stops after the epoch's first step, as before

    def train_epoch(self, epoch: int) -> None:
        """The epoch's steps from where it stands (mid-epoch after a resume): a check every ``--sync-every``
        global steps, and one after its last step."""
        cfg, state = self.cfg, self.state
        batches = self._batches(epoch)
        progress = progress_bar(self.show_bar)
        task = None
        if progress is not None:
            progress.start()
            task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(batches),
                                     completed=state.batch_in_epoch, info="")
        try:
            for b in range(state.batch_in_epoch, len(batches)):
                self.train_batch(epoch, batches[b])
                state.global_step += 1
                state.batch_in_epoch = b + 1
                # A check: the buffered losses go to the host (one transfer) and every rank agrees whether to
                # stop. Every `every` global steps; the epoch's last step is checked right below.
                if state.global_step % self.every == 0 and b + 1 < len(batches):
                    self.check()
                if progress is not None:  # the loss of the last check
                    last = self.logger.last
                    progress.update(task, advance=1, info=f"loss {last['loss']:.4f}" if last else "")
        finally:
            if progress is not None:
                progress.stop()
        self.check()

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's shard of the training set in the epoch's order, cut into batches (index tensors)."""
        self.sampler.set_epoch(epoch)
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64).to(self.prep.train_set.images.device)
        return [order[i:i + self.cfg.batch_size] for i in range(0, len(order), self.cfg.batch_size)]

    def train_batch(self, epoch: int, idx: torch.Tensor) -> None:
        """One global step: the schedules at this step, the step itself, its losses to the step logger."""
        cfg, step = self.cfg, self.state.global_step
        lr = lr_at(step, lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=self.total_steps,
                   schedule=cfg.lr_schedule, min_lr=cfg.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        kl_w = kl_weight_at(step, kl_weight=self.state.kl_weight, warmup_steps=cfg.kl_warmup_steps,
                            ae_mode=self.state.ae_mode)
        self.lr, self.kl_w = lr, kl_w
        x = self.prep.train_set.batch(idx, self.device, channels_last=cfg.channels_last)
        weights = cfg.loss_weights(kl_w)
        p_factor = perceptual_factor(step, every=cfg.perceptual_every)
        weights["perceptual"] *= p_factor
        # rank 0 measures; every rank runs that step alike (uncompiled under --compile)
        due = grad_share_due(step, every=cfg.grad_share_every, perceptual_every=self.p_every)
        total, raw, weighted = self.step(x, weights, self.prep.perceptual if p_factor else None,
                                         measure=due and self.d.is_main, eager=due)
        # every step is checked for NaN/inf at the next check; --log-every decides which are written
        self.logger.log(step, epoch, total, raw, weighted, kl_weight=kl_w, lr=lr, write=step % cfg.log_every == 0,
                        extra=self.gradients.scalars() if self.gradients is not None else None)

    def end_epoch(self, epoch: int, t0: float) -> dict[str, float]:
        """Validate (every rank its share) and log at the epoch's last step; on rank 0 checkpoint, print the
        epoch's line and call ``on_epoch_end``; then :meth:`settle`. Returns rank 0's val metrics."""
        state = self.state
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        val: dict[str, float] = {}
        failure = None
        try:
            val = self.validate()
        except VaediagError as exc:
            failure = exc
        if self.d.is_main and failure is None:
            try:
                self.files.checkpoint(kl_w=self.kl_w, lr=self.lr)
                self.out.info(epoch_line(epoch, self.cfg.epochs, state.global_step, self.logger.last, val,
                                         time.perf_counter() - t0))
                if self.on_epoch_end is not None:
                    self.on_epoch_end(EpochEnd(epoch=epoch, global_step=state.global_step, run_dir=self.files.run_dir,
                                               checkpoint=self.files.ckpt_path, val=dict(val)))
            except VaediagError as exc:
                failure = exc
        self.settle(failure)
        return val

    def check(self) -> None:
        """A check: the buffered step losses go to the host (one transfer, written to the logs), then
        :meth:`settle` (a failed write counts as this rank's failure)."""
        assert self.logger is not None
        failure = None
        try:
            self.logger.flush()
        except OutputError as exc:
            failure = exc
        self.settle(failure)

    def settle(self, failure: VaediagError | None, *, stop_here: bool = True) -> None:
        """Agree with every rank on how to go on (one all_reduce): a failed write, a non-finite step or a
        signal on any rank stops all of them here. Raises what stops this rank."""
        bad = self.logger.bad if self.logger is not None else None
        requested = self.stop is not None and self.stop.requested is not None
        stop_f, bad_f, fail_f = agree(self.d, 1.0 if requested else 0.0, step_code(bad.step if bad else None),
                                      failure_code(failure))
        if failure is not None:
            raise failure
        if fail_f:
            raise elsewhere(fail_f)
        if bad_f:
            raise self.diverged(step_of(bad_f))
        if stop_f and stop_here:
            raise self.stop_now((self.stop.requested if self.stop else None) or "stopped by another rank")

    # --- one step ------------------------------------------------------------------------------------
    def step(self, x: torch.Tensor, weights: dict[str, float], perceptual: torch.nn.Module | None, *,
             measure: bool = False,
             eager: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:func:`train_step` on the (wrapped) model; under ``--compile`` a compiler failure becomes one line.

        ``measure``: also take each weighted term's gradient at the latent head (``--grad-share-every``)
        into :attr:`gradients`. ``eager``: run the uncompiled module (the same weights and maths), as a
        measured step must under ``--compile``: a compiled model returns recon, mu and logvar from one node,
        with no path from mu to the reconstruction terms to differentiate along. Every rank runs a measured
        step that way, so DDP's ranks take the same path.

        ``train_step`` is looked up in this module at each call (tests replace it here)."""
        cfg = self.cfg
        self.gradients = None
        hook = None
        model = self.eager_model if eager or measure else self.train_model
        if measure:

            def hook(weighted: dict[str, torch.Tensor], head: tuple[torch.Tensor, torch.Tensor]) -> None:
                self.gradients = term_gradients(weighted, head)
        try:
            return train_step(model, x, self.optimizer, weights=weights, weight_map=self.weight_map,
                              perceptual=perceptual, deterministic=self.state.ae_mode, grad_clip=cfg.grad_clip,
                              precision=cfg.precision, before_backward=hook)
        except Exception as exc:
            if cfg.compile and is_compile_error(exc):
                raise ConfigError(f"--compile failed at step {self.state.global_step} ({type(exc).__name__}: "
                                  f"{one_line(exc)}); train without it: --no-compile (a resume may drop it)") from None
            raise

    # --- validation -----------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Evaluate (every rank its share of the batches) and, on rank 0, log it at the epoch's last step
        (:func:`write_val`); TrainingDiverged when a val loss term is not finite. Other ranks return {}."""
        cfg, state = self.cfg, self.state
        val_step = state.global_step - 1
        kl_w = kl_weight_at(val_step, kl_weight=state.kl_weight, warmup_steps=cfg.kl_warmup_steps,
                            ae_mode=state.ae_mode)
        val, kl_dims, grid = evaluate(self.model, self.prep.val_set, weights=cfg.loss_weights(kl_w),
                                      weight_map=self.weight_map, perceptual=self.prep.perceptual, device=self.device,
                                      batch_size=cfg.batch_size, grid_images=cfg.grid_images,
                                      precision=cfg.precision, channels_last=cfg.channels_last, d=self.d,
                                      features=self.val_features)
        if val is None or kl_dims is None:  # not rank 0: it has sent its share
            return {}
        write_val(self.files.events, val, kl_dims, grid, val_step)
        bad = [k for k in self.logger.names if k in val and not math.isfinite(val[k])]
        if bad:
            losses = {k: val[k] for k in self.logger.names if k in val}
            raise self.files.diverged(val_step, f"val loss {fmt(val.get('loss'))} ({nonfinite_terms(losses)}"
                                                f"kl_weight {kl_w:.3g}, lr {self.lr:.3g})")
        return val

    # --- ways to stop -------------------------------------------------------------------------------
    def diverged(self, step: int | None) -> TrainingDiverged:
        """The error for a non-finite train step (``step``, agreed between ranks)."""
        bad = self.logger.bad if self.logger is not None else None
        detail = bad_step_detail(bad if bad is not None and bad.step == step else None,
                                 kl_weight=self.state.kl_weight, control_seq=self.state.control_seq)
        return self.files.diverged(step, detail)

    def stop_now(self, reason: str) -> VaediagError:
        """After a signal: save a checkpoint (finite weights only) and say how to continue."""
        try:
            self.logger.flush()
        except OutputError as exc:
            return exc
        if self.logger.bad is not None:
            return self.diverged(self.logger.bad.step)
        try:
            self.files.checkpoint(kl_w=self.kl_w, lr=self.lr)
            self.files.close_events()
        except (TrainingDiverged, OutputError) as exc:
            return exc
        ckpt = self.files.ckpt_path
        where = f"; checkpoint {ckpt}; continue with --resume {ckpt}" if ckpt else ""
        return Interrupted(f"{reason}: stopped after step {self.state.global_step}{where}")
