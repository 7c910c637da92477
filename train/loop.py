"""The training loop: one function, :func:`train`, that takes a :class:`TrainConfig` and runs it.

Reading order (top to bottom, like nanoGPT's train.py): pure schedules; the distributed setup; the run
directory and checkpoints; control.json; logging; one train step; validation; then :func:`train`.

What a run leaves behind (ARCHITECTURE):

* ``<logdir>/<name>/version_N/`` (N = next free number, claimed with an atomic ``mkdir``): event files,
  ``config.json``, ``hparams.yaml``. Train scalars every step (``terms.TRAIN_STEP_TAGS`` plus the
  0-based ``epoch``; the perceptual term's only on the steps that compute it, :func:`perceptual_factor`),
  val scalars once per epoch at the epoch's last global step
  (``terms.VAL_EPOCH_TAGS``), what control.json made the loop apply (``terms.CONTROL_TAGS``) at each
  epoch's first step, a reconstruction grid, a KL-per-dimension histogram, the backbone as text.
* ``<checkpoint_dir>/<project>/<name>/version_N/last.pt`` after every epoch and on SIGINT/SIGTERM,
  written to a temporary name and renamed; tensors and plain types only, so ``weights_only=True``
  loads it. ``--resume`` continues the same run directory and step counter (a new event file; no step
  is purged), mid-epoch if the run was interrupted mid-epoch.
* When ``VAEDIAG_RUN_DIR_FILE`` is set, rank 0 writes the absolute run directory + newline to that file
  (temp + rename) right after creating it, before the first step: the watchdog's handshake.

Under ``torchrun`` every process trains on its shard (DistributedSampler) with ``batch_size`` images per
step; rank 0 alone validates, logs and checkpoints.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from vaediag import terms
from vaediag.atomic import atomic_write
from vaediag.errors import CheckpointError, ConfigError, ControlFileError, InputError, Interrupted
from vaediag.watch.control import CONTROL_FILENAME, RUN_DIR_FILE_ENV, read_control, wait_for_watchdog

from train.config import ARCHITECTURE_FIELDS, TrainConfig, config_from_dict, save_run_config
from train.data import ImageSet, load_pair
from train.losses import center_weight_map, loss_terms, weighted_total
from train.metrics import ValAccumulator
from train.model import ConvVAE, build_model
from train.perceptual import load_perceptual

__all__ = [
    "train",
    "TrainResult",
    "EpochEnd",
    "lr_at",
    "kl_weight_at",
    "perceptual_factor",
    "load_checkpoint",
    "resume_config",
    "train_step",
    "evaluate",
    "StepLogger",
    "make_grid",
    "RUN_DIR_FILE_ENV",
    "CHECKPOINT_NAME",
]

CHECKPOINT_NAME = "last.pt"
_CKPT_FORMAT = "vaediag-train/1"
# Config fields a checkpoint written before they existed lacks, with the value its run used: every such
# checkpoint holds the flat model trained with the perceptual term on every step.
_LEGACY_FIELDS = {"arch": "flat", "perceptual_every": 1}
# Fields a resume may change without the user saying so: they are about where, not what.
_RUNTIME_FIELDS = ("resume", "quiet", "device")


# --------------------------------------------------------------------------------------------------
# Schedules: pure functions of the step.


def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, schedule: str, min_lr: float) -> float:
    """Learning rate at ``step``: linear warm-up to ``lr``, then constant or cosine down to ``min_lr``.

    >>> lr_at(0, lr=1.0, warmup_steps=4, total_steps=100, schedule="cosine", min_lr=0.0)
    0.25
    >>> lr_at(100, lr=1.0, warmup_steps=4, total_steps=100, schedule="cosine", min_lr=0.1)
    0.1
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def kl_weight_at(step: int, *, kl_weight: float, warmup_steps: int, ae_mode: bool) -> float:
    """The KL weight in effect at ``step``: 0 in AE mode, else a linear ramp over ``warmup_steps``.

    >>> kl_weight_at(1, kl_weight=1e-3, warmup_steps=4, ae_mode=False)
    0.0005
    >>> kl_weight_at(1, kl_weight=1e-3, warmup_steps=4, ae_mode=True)
    0.0
    """
    if ae_mode:
        return 0.0
    if step < warmup_steps:
        return kl_weight * (step + 1) / warmup_steps
    return kl_weight


def perceptual_factor(step: int, *, every: int) -> int:
    """How many times its weight the perceptual term gets at ``step``: ``every`` on the steps it is computed
    (``step % every == 0``), 0 on the others, so its expected contribution over any ``every`` consecutive
    steps is the configured weight's (``every = 1``: every step, weight x 1).

    >>> [perceptual_factor(s, every=4) for s in range(6)]
    [4, 0, 0, 0, 4, 0]
    """
    return every if step % every == 0 else 0


# --------------------------------------------------------------------------------------------------
# Processes and devices.


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_spec: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def _resolve_device(spec: str, d: _Dist) -> torch.device:
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if spec == "cuda":
            raise ConfigError(f"--device cuda was requested but CUDA is not available to torch {torch.__version__} "
                              f"here; use --device cpu (or auto)")
        return torch.device("cpu")
    torch.cuda.set_device(d.local_rank)
    torch.backends.cuda.matmul.allow_tf32 = True  # conv VAEs gain speed and lose nothing visible
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", d.local_rank)


# --------------------------------------------------------------------------------------------------
# Run directory, handshake file and checkpoints.


def _version(p: Path) -> int:
    name = p.name
    return int(name[len("version_"):]) if name.startswith("version_") and name[len("version_"):].isdigit() else -1


def _new_version_dirs(cfg: TrainConfig) -> tuple[Path, Path]:
    """Claim ``version_N`` (next free N over logs and checkpoints) with an atomic mkdir; never reuse one."""
    base = Path(cfg.logdir) / cfg.name
    ckpt_base = Path(cfg.checkpoint_dir) / cfg.project / cfg.name
    base.mkdir(parents=True, exist_ok=True)
    taken = [_version(p) for p in base.iterdir()]
    if ckpt_base.is_dir():
        taken += [_version(p) for p in ckpt_base.iterdir()]
    n = max(taken, default=-1) + 1
    while True:
        run_dir = base / f"version_{n}"
        try:
            run_dir.mkdir()  # atomic: of two runs racing for N, exactly one succeeds
            break
        except FileExistsError:
            n += 1
    ckpt_dir = ckpt_base / f"version_{n}"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    return run_dir.resolve(), ckpt_dir.resolve()



def _announce_run_dir(run_dir: Path) -> None:
    """Print the run directory and, for the watchdog, write it to ``$VAEDIAG_RUN_DIR_FILE``."""
    target = os.environ.get(RUN_DIR_FILE_ENV)
    if target:
        p = Path(target)
        try:
            atomic_write(p, f"{run_dir}\n")
        except OSError as exc:
            raise InputError(f"cannot write the run directory to ${RUN_DIR_FILE_ENV}={target}: {exc}") from None
    print(f"run directory: {run_dir}", flush=True)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raises CheckpointError with one line."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; pass the last.pt of a run to --resume")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and unpickler errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {p} cannot be loaded with weights_only=True: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CKPT_FORMAT:
        raise CheckpointError(f"checkpoint {p} was not written by this training core (format {_CKPT_FORMAT})")
    if isinstance(ckpt.get("config"), dict):
        ckpt["config"] = {**_LEGACY_FIELDS, **ckpt["config"]}
    return ckpt


def resume_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """The config stored in checkpoint ``path`` with ``overrides`` applied and ``resume`` set to it."""
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"], source=f"checkpoint {path}")
    return cfg.replace(**{**overrides, "resume": str(path)})


# --------------------------------------------------------------------------------------------------
# control.json


@dataclass
class _LoopState:
    """Everything the loop must remember across a resume besides weights and optimizer."""

    global_step: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of `epoch` already done
    kl_weight: float = 0.0  # the base KL weight (the config's, or the last applied control's)
    ae_mode: bool = False
    control_seq: int = -1  # last applied control.json seq; -1 = none yet

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _ControlReader:
    """Reads control.json at each epoch start; applies a newer seq once; reports a bad file once."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / CONTROL_FILENAME
        self._last_error: str | None = None
        self._last_ignored: int | None = None
        self._journal: dict[str, int] = {}
        self._timed_out = False

    def await_watchdog(self, finished_epoch: int, should_stop: Callable[[], bool]) -> str | None:
        """Under `vaediag watch`, wait for its decision about the epoch that just ended, so a change it
        makes applies from the next epoch, not the one after; a note the first time the wait times out."""
        why = wait_for_watchdog(self.run_dir, finished_epoch, should_stop=should_stop, _state=self._journal)
        if why == "timeout" and not self._timed_out:
            self._timed_out = True
            return (f"warning: no watchdog decision about epoch {finished_epoch + 1} yet; going on "
                    "(a later decision applies one epoch later)")
        return None

    def poll(self, state: _LoopState) -> str | None:
        """Apply a new control to ``state``; return a one-line message to print, or None."""
        try:
            control = read_control(self.path)
        except ControlFileError as exc:
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
        reason = f" ({control.reason})" if control.reason else ""
        return (f"control: applied seq {control.seq}: kl_weight {before[0]:.3g} -> {state.kl_weight:.3g}, "
                f"mode {'ae' if before[1] else 'vae'} -> {control.mode}{reason}")


def _sync_control(state: _LoopState, d: _Dist) -> None:
    """Rank 0 read the file; every rank adopts its decision."""
    if not d.enabled:
        return
    box = [(state.kl_weight, state.ae_mode, state.control_seq)]
    dist.broadcast_object_list(box, src=0)
    state.kl_weight, state.ae_mode, state.control_seq = box[0]


# --------------------------------------------------------------------------------------------------
# Logging.


class StepLogger:
    """Per-step train scalars, written with one host transfer per flush (not one per scalar).

    Each step's loss values are stacked into one tensor on the device; ``flush`` stacks the buffered
    steps and calls ``.tolist()`` once, so logging adds no GPU synchronisation per scalar.
    """

    def __init__(self, writer: Any, term_names: list[str], *, flush_every: int = 1) -> None:
        self.writer = writer
        self.term_names = list(term_names)
        self.names = ["loss", *term_names, *[terms.weighted(t) for t in term_names]]
        self.tags = [terms.tag("train", n) for n in self.names]
        self.flush_every = flush_every
        self._rows: list[tuple[int, int, float, float, torch.Tensor, list[bool]]] = []
        self.last: dict[str, float] = {}

    def log(self, step: int, epoch: int, total: torch.Tensor, raw: dict[str, torch.Tensor],
            weighted: dict[str, torch.Tensor], *, kl_weight: float, lr: float) -> None:
        """Buffer one step; a term absent from ``raw`` (the perceptual term between its steps, see
        :func:`perceptual_factor`) is not written at this step, raw or weighted."""
        gap = total.detach().new_zeros(())
        present = [True, *[t in raw for t in self.term_names], *[t in weighted for t in self.term_names]]
        values = torch.stack([total, *[raw.get(t, gap) for t in self.term_names],
                              *[weighted.get(t, gap) for t in self.term_names]]).detach()
        self._rows.append((step, epoch, kl_weight, lr, values, present))
        if len(self._rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        table = torch.stack([r[4] for r in self._rows]).tolist()
        kl_tag, lr_tag = terms.tag("train", "kl_weight"), terms.tag("train", "lr")
        for (step, epoch, kl_weight, lr, _, present), values in zip(self._rows, table):
            if self.writer is not None:
                add = self.writer.add_scalar
                for tag, v, here in zip(self.tags, values, present):
                    if here:
                        add(tag, v, step)
                add(kl_tag, kl_weight, step)
                add(lr_tag, lr, step)
                add(terms.EPOCH_TAG, epoch, step)
        self.last = {n: v for n, v, here in zip(self.names, table[-1], self._rows[-1][5]) if here}
        self._rows.clear()


def _add_text(writer: Any, tag: str, text: str, step: int) -> None:
    """A text summary under exactly ``tag`` (SummaryWriter.add_text would append '/text_summary')."""
    from torch.utils.tensorboard.summary import text as text_summary

    summary = text_summary(tag, text)
    summary.value[0].tag = tag
    writer._get_file_writer().add_summary(summary, step, time.time())


def make_grid(x: torch.Tensor, recon: torch.Tensor, *, pad: int = 2) -> torch.Tensor:
    """Inputs (top row) over reconstructions (bottom row) as one ``(C, H, W)`` image in [0, 1]."""
    n, c, h, w = x.shape
    grid = torch.ones(c, 2 * h + 3 * pad, n * w + (n + 1) * pad)
    for i in range(n):
        left = pad + i * (w + pad)
        grid[:, pad:pad + h, left:left + w] = x[i].float().cpu()
        grid[:, 2 * pad + h:2 * pad + 2 * h, left:left + w] = recon[i].float().cpu()
    return grid.clamp_(0, 1)


# --------------------------------------------------------------------------------------------------
# One step, one evaluation.


def train_step(model: torch.nn.Module, x: torch.Tensor, optimizer: torch.optim.Optimizer, *,
               weights: dict[str, float], weight_map: torch.Tensor, perceptual: torch.nn.Module | None,
               deterministic: bool, grad_clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forward, every loss term, backward, (clip), optimizer step. Returns (total, raw, weighted)."""
    recon, mu, logvar = model(x, deterministic=deterministic)
    raw = loss_terms(recon, x, mu, logvar, weight_map=weight_map, perceptual=perceptual,
                     no_grad=[t for t, w in weights.items() if w == 0])  # logged, not back-propagated
    total, weighted = weighted_total(raw, weights)
    optimizer.zero_grad(set_to_none=True)
    if total.requires_grad:  # every weight 0: nothing to learn from this step
        total.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return total.detach(), raw, weighted


@torch.no_grad()
def evaluate(model: ConvVAE, data: ImageSet, *, weights: dict[str, float], weight_map: torch.Tensor,
             perceptual: torch.nn.Module | None, device: torch.device, batch_size: int,
             grid_images: int = 8) -> tuple[dict[str, float], torch.Tensor, torch.Tensor | None]:
    """Val scalars keyed by canonical term, the KL per dimension, and the reconstruction grid.

    Uses ``z = mu`` (the deterministic reconstruction); loss terms are image-weighted means over the set.
    """
    was_training = model.training
    model.eval()
    acc = ValAccumulator()
    sums: dict[str, float] = {}
    grid = None
    n_total = len(data)
    for start in range(0, n_total, batch_size):
        idx = torch.arange(start, min(start + batch_size, n_total))
        x = data.batch(idx, device)
        recon, mu, logvar = model(x, deterministic=True)
        raw = loss_terms(recon, x, mu, logvar, weight_map=weight_map, perceptual=perceptual)
        values = torch.stack(list(raw.values())).tolist()
        for k, v in zip(raw, values):
            sums[k] = sums.get(k, 0.0) + v * len(idx)
        acc.update(recon, x, mu, logvar, data.grey[idx])
        if grid is None and grid_images > 0:
            grid = make_grid(x[:grid_images], recon[:grid_images])
    model.train(was_training)
    raw_means = {k: v / n_total for k, v in sums.items()}
    out = {"loss": sum(weights[k] * v for k, v in raw_means.items())}
    out.update(raw_means)
    out.update({terms.weighted(k): weights[k] * v for k, v in raw_means.items()})
    out.update(acc.compute())
    return out, acc.kl_per_dim(), grid


# --------------------------------------------------------------------------------------------------
# Signals.


class _StopOnSignal:
    """SIGINT/SIGTERM set a flag (the loop finishes its step, saves and exits 130); a second one aborts."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt  # asked twice: stop now, without a checkpoint
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def _any_rank(flag: bool, d: _Dist, device: torch.device) -> bool:
    """True on every rank when any rank saw a signal (so all stop at the same step)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# --------------------------------------------------------------------------------------------------
# Output (rank 0 only).


class _Out:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def info(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)

    def warn(self, msg: str) -> None:
        if self.enabled:
            print(msg, file=sys.stderr, flush=True)


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=True)


def _epoch_line(epoch: int, epochs: int, step: int, train_last: dict[str, float], val: dict[str, float],
                seconds: float) -> str:
    parts = [f"epoch {epoch + 1}/{epochs}", f"step {step}"]
    if "loss" in train_last:
        parts.append(f"loss {train_last['loss']:.4f}")
    parts.append(f"val loss {val['loss']:.4f}")
    parts.append(f"kl {val['kl']:.4g}")
    if "perceptual" in val:
        parts.append(f"perceptual {val['perceptual']:.3f}")
    parts.append(f"psnr {val['psnr']:.2f} dB")
    parts.append(f"ssim {val['ssim']:.3f}")
    parts.append(f"{seconds:.1f} s")
    return " | ".join(parts)


# --------------------------------------------------------------------------------------------------
# The run.


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


def _changed_fields(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    return {f.name: (getattr(old, f.name), getattr(new, f.name)) for f in fields(TrainConfig)
            if f.name not in _RUNTIME_FIELDS and getattr(old, f.name) != getattr(new, f.name)}


def train(cfg: TrainConfig, *, on_epoch_end: Callable[[EpochEnd], None] | None = None) -> TrainResult:
    """Train (or resume, when ``cfg.resume`` is set) and return where it went.

    Raises:
        DataError, ConfigError, InputError, CheckpointError: bad input, before any run directory exists.
        Interrupted: SIGINT/SIGTERM; the step in flight was finished and a checkpoint saved.
    """
    d = _init_distributed(cfg.device)
    try:
        return _train(cfg, d, on_epoch_end)
    finally:
        if d.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, d: _Dist, on_epoch_end: Callable[[EpochEnd], None] | None) -> TrainResult:
    out = _Out(d.is_main)

    # --- everything that can fail on bad input, before anything is written -----------------------
    ckpt = load_checkpoint(cfg.resume) if cfg.resume else None
    device = _resolve_device(cfg.device, d)
    train_set, val_set = load_pair(cfg.train_npy, cfg.val_npy, image_size=cfg.image_size)
    cfg = cfg.replace(image_size=train_set.size, channels=train_set.channels)
    perceptual, backbone = load_perceptual(cfg.perceptual_weights, cfg.layers)
    cfg = cfg.replace(perceptual_backbone=backbone.description)
    changed: dict[str, tuple[Any, Any]] = {}
    if ckpt is not None:
        old = config_from_dict(ckpt["config"], source=f"checkpoint {cfg.resume}")
        changed = _changed_fields(old, cfg)
        fixed = [k for k in ARCHITECTURE_FIELDS if k in changed]
        if fixed:
            k = fixed[0]
            raise ConfigError(f"cannot resume with {k} = {changed[k][1]}: the checkpoint's model has {k} = "
                              f"{changed[k][0]} (start a new run to change the architecture)")
        run_dir = Path(ckpt["run_dir"])
        if d.is_main and not run_dir.is_dir():
            raise CheckpointError(f"the run directory of checkpoint {cfg.resume} ({run_dir}) no longer exists")
        ckpt_dir = Path(cfg.resume).resolve().parent
    if perceptual is not None:
        perceptual = perceptual.to(device)

    # --- run directory, handshake, config ----------------------------------------------------------
    writer = None
    if d.is_main:
        if ckpt is None:
            run_dir, ckpt_dir = _new_version_dirs(cfg)
        _announce_run_dir(run_dir)
        save_run_config(cfg, run_dir)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir))
    else:
        run_dir = ckpt_dir = None  # type: ignore[assignment]
    ckpt_path = ckpt_dir / CHECKPOINT_NAME if ckpt_dir is not None else None
    if perceptual is None:
        out.warn("WARNING: the perceptual loss is DISABLED (--perceptual-weights none): reconstructions will be "
                 "judged by pixels, SSIM and edges only; the logs record it under "
                 f"{terms.BACKBONE_TEXT_TAG}")
    else:
        out.info(f"perceptual backbone: {backbone.description}")
    cadence = ""
    if perceptual is not None and cfg.perceptual_every > 1:
        n = cfg.perceptual_every
        cadence = (f"; computed on one step in {n} (global step % {n} == 0) at {n} x its weight, so its "
                   f"expected contribution is unchanged; train/perceptual is logged on those steps only")
        out.info("perceptual term" + cadence)

    # --- model, optimizer, state --------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = build_model(arch=cfg.arch, channels=cfg.channels, image_size=cfg.image_size, latent_dim=cfg.latent_dim,
                        base_channels=cfg.base_channels, latent_channels=cfg.latent_channels).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = _LoopState(kl_weight=cfg.kl_weight, ae_mode=cfg.ae)
    torch.manual_seed(cfg.seed + 1 + d.rank)  # sampling noise differs per rank
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:  # torch lists every mismatched key over many lines
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint {cfg.resume}: its weights do not fit the {cfg.arch} model its config "
                                  f"describes ({first})") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        for k, v in ckpt["state"].items():
            setattr(state, k, v)
        # An explicit flag on the resume command wins over what the checkpoint (or a control) set.
        if "kl_weight" in changed:
            state.kl_weight = cfg.kl_weight
        if "ae" in changed:
            state.ae_mode = cfg.ae
        if d.is_main and "rng_cpu" in ckpt:
            torch.set_rng_state(ckpt["rng_cpu"])
        else:
            torch.manual_seed(cfg.seed + 1 + d.rank + state.global_step)
        if "rng_cuda" in ckpt and device.type == "cuda" and d.is_main:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
        msg = f"resumed {cfg.resume} at step {state.global_step} (epoch {state.epoch}, batch {state.batch_in_epoch})"
        if changed:
            msg += "; overrides: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        out.info(msg)
        if writer is not None:
            _add_text(writer, terms.RESUME_TEXT_TAG, msg, state.global_step)
    if writer is not None:
        _add_text(writer, terms.BACKBONE_TEXT_TAG, backbone.description + cadence, state.global_step)
    train_model: torch.nn.Module = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    model.train()

    weight_map = center_weight_map(cfg.image_size, center_weight=cfg.center_weight, device=device)
    sampler = DistributedSampler(range(len(train_set)), num_replicas=d.world, rank=d.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=d.enabled)
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    term_names = [t for t in terms.LOSS_TERMS if t != "perceptual" or perceptual is not None]
    logger = StepLogger(writer, term_names, flush_every=1 if device.type == "cpu" else 20)
    control = _ControlReader(run_dir) if d.is_main else None
    show_bar = d.is_main and not cfg.quiet and sys.stdout.isatty()
    val: dict[str, float] = {}

    def checkpoint() -> None:
        if not d.is_main:
            return
        payload = {"format": _CKPT_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
                   "optimizer": optimizer.state_dict(), "state": state.to_dict(), "run_dir": str(run_dir),
                   "rng_cpu": torch.get_rng_state(), "torch_version": str(torch.__version__)}
        if device.type == "cuda":
            payload["rng_cuda"] = torch.cuda.get_rng_state(device)
        _save_checkpoint(ckpt_path, payload)

    def stop_now(reason: str) -> Interrupted:
        logger.flush()
        checkpoint()
        if writer is not None:
            writer.flush()
            writer.close()
        where = f"; checkpoint {ckpt_path}; continue with --resume {ckpt_path}" if ckpt_path else ""
        return Interrupted(f"{reason}: stopped after step {state.global_step}{where}")

    if state.epoch >= cfg.epochs:
        out.warn(f"nothing to train: the checkpoint has finished {state.epoch} epoch(s) and --epochs is "
                 f"{cfg.epochs}; pass a larger --epochs to continue")

    # --- the loop -------------------------------------------------------------------------------
    with _StopOnSignal() as stop:
        for epoch in range(state.epoch, cfg.epochs):
            t0 = time.perf_counter()
            if control is not None and epoch > 0:
                note = control.await_watchdog(epoch - 1, lambda: stop.requested is not None)
                if note:
                    out.warn(note)
            # A signal during that wait (the watchdog's stop, or its restart, follows its decision) stops the
            # run here, on the epoch boundary, not after one more step at the settings it is about to change.
            if _any_rank(stop.requested is not None, d, device):
                raise stop_now(stop.requested or "stopped by another rank")
            # control.json is read at the start of each epoch; a new seq is applied once.
            if control is not None:
                message = control.poll(state)
                if message:
                    (out.warn if message.startswith("warning") else out.info)(message)
            _sync_control(state, d)
            if writer is not None:
                writer.add_scalar(terms.tag("train", "control_seq"), state.control_seq, state.global_step)
                writer.add_scalar(terms.tag("train", "ae_mode"), float(state.ae_mode), state.global_step)

            sampler.set_epoch(epoch)
            order = list(sampler)
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            progress = _progress(show_bar)
            task = None
            if progress is not None:
                progress.start()
                task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(batches),
                                         completed=state.batch_in_epoch, info="")
            try:
                for b in range(state.batch_in_epoch, len(batches)):
                    step = state.global_step
                    lr = lr_at(step, lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=total_steps,
                               schedule=cfg.lr_schedule, min_lr=cfg.min_lr)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    kl_w = kl_weight_at(step, kl_weight=state.kl_weight, warmup_steps=cfg.kl_warmup_steps,
                                        ae_mode=state.ae_mode)
                    x = train_set.batch(torch.as_tensor(batches[b]), device)
                    weights = cfg.loss_weights(kl_w)
                    p_factor = perceptual_factor(step, every=cfg.perceptual_every)
                    weights["perceptual"] *= p_factor
                    total, raw, weighted = train_step(train_model, x, optimizer, weights=weights,
                                                      weight_map=weight_map,
                                                      perceptual=perceptual if p_factor else None,
                                                      deterministic=state.ae_mode, grad_clip=cfg.grad_clip)
                    if step % cfg.log_every == 0:
                        logger.log(step, epoch, total, raw, weighted, kl_weight=kl_w, lr=lr)
                    state.global_step += 1
                    state.batch_in_epoch = b + 1
                    if progress is not None:
                        info = f"loss {logger.last['loss']:.4f}" if logger.last else ""
                        progress.update(task, advance=1, info=info)
                    if _any_rank(stop.requested is not None, d, device):
                        raise stop_now(stop.requested or "stopped by another rank")
            finally:
                if progress is not None:
                    progress.stop()
            logger.flush()

            # --- end of epoch: validate (rank 0), log at the epoch's last step, checkpoint ---------
            state.epoch, state.batch_in_epoch = epoch + 1, 0
            if d.is_main:
                val_step = state.global_step - 1
                val, kl_dims, grid = evaluate(model, val_set, weights=cfg.loss_weights(kl_weight_at(
                    val_step, kl_weight=state.kl_weight, warmup_steps=cfg.kl_warmup_steps, ae_mode=state.ae_mode)),
                    weight_map=weight_map, perceptual=perceptual, device=device, batch_size=cfg.batch_size,
                    grid_images=cfg.grid_images)
                for term, value in val.items():
                    writer.add_scalar(terms.tag("val", term), value, val_step)
                writer.add_histogram(terms.KL_PER_DIM_HIST_TAG, kl_dims.numpy(), val_step)
                if grid is not None:
                    writer.add_image(terms.RECON_GRID_TAG, grid, val_step, dataformats="CHW")
                writer.flush()  # the watchdog reads the epoch as soon as it ends
                checkpoint()
                out.info(_epoch_line(epoch, cfg.epochs, state.global_step, logger.last, val, time.perf_counter() - t0))
                if on_epoch_end is not None:
                    on_epoch_end(EpochEnd(epoch=epoch, global_step=state.global_step, run_dir=run_dir,
                                          checkpoint=ckpt_path, val=dict(val)))
            if d.enabled:
                dist.barrier()
            if _any_rank(stop.requested is not None, d, device):
                raise stop_now(stop.requested or "stopped by another rank")

    if writer is not None:
        writer.close()
    return TrainResult(run_dir=run_dir, checkpoint=ckpt_path, global_step=state.global_step,
                       epochs_done=state.epoch, val=val, config=cfg)
