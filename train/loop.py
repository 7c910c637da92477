"""The training loop: one function, :func:`train`, that takes a :class:`TrainConfig` and runs it.

Reading order (top to bottom, like nanoGPT's train.py): pure schedules; the distributed setup; the run
directory and checkpoints; control.json; logging; one train step; validation; then :func:`train`.

What a run leaves behind (ARCHITECTURE):

* ``<logdir>/<name>/version_N/`` (N = next free number, claimed with an atomic ``mkdir``): event files,
  ``config.json``, ``hparams.yaml``. Train scalars every step (``terms.TRAIN_STEP_TAGS`` plus the
  0-based ``epoch``; the perceptual term's only on the steps that compute it, :func:`perceptual_factor`),
  every ``--grad-share-every`` steps each weighted term's gradient norm and share at the latent head and the
  KL's cosine with the rest (``terms.GRADIENT_TAGS``, :func:`grad_share_due`,
  :mod:`vaediag.integrations.gradients`; rank 0's batch),
  val scalars once per epoch at the epoch's last global step
  (``terms.VAL_EPOCH_TAGS``), what control.json made the loop apply (``terms.CONTROL_TAGS``) at each
  epoch's first step, a reconstruction grid, a KL-per-dimension histogram, the backbone as text. For
  TensorBoard's dashboards (train/board.py): a Custom Scalars layout (``terms.board_layout``) and the HParams
  session (config values at the start; success or failure at the end: a signal leaves the session open,
  since the run goes on with ``--resume``), and each applied control.json as text (``terms.DECISION_TEXT_TAG``).
* ``<logdir>/<name>/version_N/checkpoints/last.pt`` (beside the run, as Lightning keeps them), or with an
  explicit ``--checkpoint-dir DIR`` ``DIR/<project>/<name>/version_N/last.pt`` (N is the run's; a directory
  already there, another run's, is never written into: ``version_N_2``, ``_3``, ... instead, said in one
  line), after every epoch and on SIGINT/SIGTERM, written to a temporary name and renamed; tensors and
  plain types only, so ``weights_only=True`` loads it. ``--resume`` continues the same run directory and
  step counter (a new event file; no step is purged), mid-epoch if the run was interrupted mid-epoch, and
  keeps saving beside the checkpoint it resumed from (an older layout's
  ``checkpoints/<project>/<name>/version_N/last.pt`` included).
* When ``VAEDIAG_RUN_DIR_FILE`` is set, rank 0 writes the absolute run directory + newline to that file
  (temp + rename) right after creating it, before the first step: the watchdog's handshake.

Under ``torchrun`` every process trains on its shard (DistributedSampler) with ``batch_size`` images per
step; every process validates its share of the val batches (batch b on rank b % world) and rank 0 merges
them in batch order, so the val numbers are the single process's (:func:`evaluate`); rank 0 alone logs and
checkpoints.

On a GPU (ARCHITECTURE, issue 11): ``--precision bf16`` runs the model's forward pass and the VGG trunk under
bfloat16 autocast (the loss terms are reduced in fp32; bf16 keeps fp32's exponent range, so no grad scaler),
``--channels-last`` keeps model, trunk and batches in channels_last memory format, ``--compile`` wraps the model
(or its DDP wrapper) in ``torch.compile``, Adam is the fused kernel on CUDA (plain on the CPU), the uint8 data
sit in GPU memory (or, too large, on the host, each batch pinned) and become float per batch there. The step
itself never waits for the GPU: the losses stay on the device until a check (``--sync-every`` steps: 1 on CPU,
20 on CUDA, and each epoch end), which moves them to the host in one transfer and agrees between the
processes, in one all_reduce, whether any saw a signal, a non-finite loss or a failed write. A signal
therefore stops the run at the next check. ``python -m bench gpu`` measures what each of these buys.

Why torchrun DDP and not Lightning Fabric (or Accelerate): DDP already works here and is tested (gloo on CPU,
NCCL on CUDA), it costs no dependency, and this module's linear loop, its checkpoint format (loadable with
``weights_only=True``) and its agreement between ranks stay as they are. What Fabric adds beyond that (FSDP,
multi-node launchers, plugins) is not needed for a model of a few million parameters that fits one GPU
many times over; its precision and compile switches are the three flags above.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from vaediag import terms
from vaediag.atomic import atomic_write
from vaediag.errors import CheckpointError, ConfigError, ControlFileError, InputError, Interrupted, VaediagError
from vaediag.integrations.gradients import TermGradients, term_gradients
from vaediag.watch.control import (CONTROL_FILENAME, RUN_CHECKPOINT_DIR, RUN_DIR_FILE_ENV, Control, read_control,
                                   reason_line, wait_for_watchdog)

from train import board
from train.config import ARCHITECTURE_FIELDS, LEGACY_RUN_FIELDS, TrainConfig, config_from_dict, save_run_config
from train.data import ImageSet, load_pair
from train.errors import OutputError, TrainingDiverged, describe_os_error, shown
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
    "grad_share_due",
    "load_checkpoint",
    "resume_config",
    "train_step",
    "evaluate",
    "StepLogger",
    "BadStep",
    "make_grid",
    "RUN_DIR_FILE_ENV",
    "CHECKPOINT_NAME",
    "CHECKPOINT_SUBDIR",
]

CHECKPOINT_NAME = "last.pt"
#: The folder of a run directory that holds its checkpoints (the default layout, Lightning's name).
CHECKPOINT_SUBDIR = RUN_CHECKPOINT_DIR
_CKPT_FORMAT = "vaediag-train/1"
# Fields a resume may change without it counting as an override of the run: they are about where and how
# fast, not what (the resume line lists those that changed).
_HOW_FIELDS = ("precision", "channels_last", "compile", "sync_every")
_RUNTIME_FIELDS = ("resume", "quiet", "device", *_HOW_FIELDS)


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


def grad_share_due(step: int, *, every: int, perceptual_every: int = 1) -> bool:
    """Whether ``step`` measures each loss term's gradient at the latent head (``--grad-share-every``):
    the first step of each ``every``-step window (``step % every < perceptual_every``) that computes every
    term (``step % perceptual_every == 0``, :func:`perceptual_factor`), so each measurement covers every
    term, the perceptual one at the weight it has on its steps. One step per window when ``every >=
    perceptual_every``; every perceptual step when ``every`` is smaller; never when ``every`` is 0.

    >>> [s for s in range(45) if grad_share_due(s, every=10, perceptual_every=4)]
    [0, 12, 20, 32, 40]
    >>> [s for s in range(45) if grad_share_due(s, every=20)]
    [0, 20, 40]
    """
    if every <= 0:
        return False
    return step % perceptual_every == 0 and step % every < perceptual_every


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


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context of the forward passes: bfloat16 autocast on ``device``'s type for ``bf16``, nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _in_precision(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, device: torch.device,
                  precision: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``fn`` (the perceptual distance) called under :func:`autocast`; ``fn`` itself for fp32."""
    if fn is None or precision == "fp32":
        return fn

    def run(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return fn(recon, x)

    return run


def sync_every(cfg: TrainConfig, device: torch.device) -> int:
    """Steps between the loop's checks (``--sync-every``; 0 = 1 on the CPU, 20 on CUDA)."""
    return cfg.sync_every or (1 if device.type == "cpu" else 20)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam; the fused CUDA kernel on CUDA (one launch for every parameter), the plain one on the CPU."""
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


def _fit_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """After loading a checkpoint's optimizer state: run it the way this run runs, whatever wrote it.

    ``load_state_dict`` takes the saved groups' ``fused`` flag and keeps the saved tensors' strides; a run
    resumed on another device or memory format must use its own: fused on CUDA only, ``step`` counters on
    the parameter's device when fused (on the CPU otherwise, where the plain Adam reads them without a
    GPU synchronisation), moment buffers in the parameter's memory format."""
    fused = device.type == "cuda"
    for group in optimizer.param_groups:
        group["fused"] = fused
        group["foreach"] = None
        for param in group["params"]:
            st = optimizer.state.get(param)
            if not st:
                continue
            for k, v in list(st.items()):
                if not isinstance(v, torch.Tensor):
                    continue
                if k == "step":
                    st[k] = v.to(device=param.device if fused else "cpu", dtype=torch.float32)
                elif v.shape == param.shape and v.stride() != param.stride():
                    st[k] = torch.empty_like(param).copy_(v)


# --------------------------------------------------------------------------------------------------
# Run directory, handshake file and checkpoints.


def _version(p: Path) -> int:
    name = p.name
    return int(name[len("version_"):]) if name.startswith("version_") and name[len("version_"):].isdigit() else -1


def _new_version_dirs(cfg: TrainConfig) -> tuple[Path, Path, str | None]:
    """Claim ``version_N`` (the next free N of the log tree, nothing else) with an atomic mkdir, never reusing
    one, and make its checkpoint directory. Returns ``(run_dir, ckpt_dir, note)``.

    By default the checkpoints live beside the run, in ``version_N/checkpoints``. An explicit
    ``checkpoint_dir`` gives ``DIR/<project>/<name>/version_N``; that directory is made with an exclusive
    mkdir too, and when it already exists (another logdir of the same basename sharing DIR, or a tree left
    from runs whose logs are gone) the run takes ``version_N_2``, ``version_N_3``, ... instead and ``note``
    says so: another run's last.pt is never overwritten, and its versions never push this logdir's on.
    """
    base = Path(cfg.logdir) / cfg.name
    ckpt_base = Path(cfg.checkpoint_dir) / cfg.project / cfg.name if cfg.checkpoint_dir else None
    base.mkdir(parents=True, exist_ok=True)
    if ckpt_base is not None:
        ckpt_base.mkdir(parents=True, exist_ok=True)  # before a version is claimed: a bad --checkpoint-dir leaves none
    n = max((_version(p) for p in base.iterdir()), default=-1) + 1
    while True:
        run_dir = base / f"version_{n}"
        try:
            run_dir.mkdir()  # atomic: of two runs racing for N, exactly one succeeds
            break
        except FileExistsError:
            n += 1
    if ckpt_base is None:
        ckpt_dir = run_dir / CHECKPOINT_SUBDIR
        ckpt_dir.mkdir()
        return run_dir.resolve(), ckpt_dir.resolve(), None
    wanted = ckpt_base / f"version_{n}"
    ckpt_dir, k = wanted, 1
    while True:
        try:
            ckpt_dir.mkdir()  # exclusive: a directory that exists is someone else's
            break
        except FileExistsError:
            k += 1
            ckpt_dir = ckpt_base / f"version_{n}_{k}"
    note = None
    if k > 1:
        note = (f"warning: checkpoint directory {wanted.resolve()} already exists (another run's: a logdir of the same "
                f"name '{cfg.project}' sharing --checkpoint-dir, or older runs); it is left alone and this run's "
                f"checkpoints go to {ckpt_dir.resolve()}")
    return run_dir.resolve(), ckpt_dir.resolve(), note



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


class _KeepWriteError:
    """The file ``torch.save`` writes into, keeping the OSError of a failed write: torch turns it into a
    RuntimeError without the errno ("unexpected pos ..."), and the user needs "No space left on device"."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary name, fsync, rename): a failed write leaves the
    previous checkpoint as it was and raises the OSError of the disk (ENOSPC, EIO, EFBIG, ...)."""

    def write(fh: Any) -> None:
        sink = _KeepWriteError(fh)
        try:
            torch.save(payload, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None
            raise

    atomic_write(path, write)


# What a checkpoint holds (beside "format"): key -> (type, what it is, required).
_CKPT_FIELDS: dict[str, tuple[type | tuple[type, ...], str, bool]] = {
    "config": (dict, "the run's config", True),
    "model": (dict, "the model's weights", True),
    "optimizer": (dict, "the optimizer's state", True),
    "state": (dict, "the loop's counters", True),
    "run_dir": (str, "the run directory", True),
    "rng_cpu": (torch.Tensor, "the CPU random state", False),
    "rng_cuda": (torch.Tensor, "the CUDA random state", False),
    "torch_version": (str, "the torch version", False),
}


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check its fields; raises CheckpointError with one line.

    Only the shape of the payload is checked here (every field present, of the right type, the loop's
    counters in range); :func:`train` then loads the weights into the model before it writes anything.
    """
    p = Path(path)
    if not p.is_file():
        what = "is not a regular file" if p.exists() else "does not exist"
        raise CheckpointError(f"checkpoint {str(p)!r} {what}; pass the last.pt of a run to --resume")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and unpickler errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {p} cannot be loaded with weights_only=True: {first[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CKPT_FORMAT:
        raise CheckpointError(f"checkpoint {p} was not written by this training core (format {_CKPT_FORMAT})")
    for key, (kind, what, required) in _CKPT_FIELDS.items():
        if key not in ckpt:
            if required:
                raise CheckpointError(f"checkpoint {p} is incomplete: {what} ({key!r}) is missing; resume from "
                                      "a last.pt that python -m train wrote")
        elif not isinstance(ckpt[key], kind):
            raise CheckpointError(f"checkpoint {p} is damaged: {what} ({key!r}) is a {type(ckpt[key]).__name__}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["model"].items()):
        raise CheckpointError(f"checkpoint {p} is damaged: the model's weights are not a mapping of names to tensors")
    opt = ckpt["optimizer"]
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise CheckpointError(f"checkpoint {p} is damaged: the optimizer's state lacks 'state' or 'param_groups'")
    _check_loop_state(ckpt["state"], p)
    if isinstance(ckpt.get("config"), dict):
        ckpt["config"] = {**LEGACY_RUN_FIELDS, **ckpt["config"]}
    return ckpt


def _check_loop_state(data: dict[str, Any], p: Path) -> None:
    names = [f.name for f in fields(_LoopState)]
    missing, unknown = [k for k in names if k not in data], sorted(str(k) for k in data if k not in names)
    if missing or unknown:
        what = f"lack {', '.join(missing)}" if missing else f"have unknown key(s) {', '.join(unknown)}"
        raise CheckpointError(f"checkpoint {p} is damaged: the loop's counters {what}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    checks = {
        "global_step": is_int(data["global_step"]) and data["global_step"] >= 0,
        "epoch": is_int(data["epoch"]) and data["epoch"] >= 0,
        "batch_in_epoch": is_int(data["batch_in_epoch"]) and data["batch_in_epoch"] >= 0,
        "kl_weight": isinstance(data["kl_weight"], (int, float)) and not isinstance(data["kl_weight"], bool)
                     and math.isfinite(data["kl_weight"]) and data["kl_weight"] >= 0,
        "ae_mode": isinstance(data["ae_mode"], bool),
        "control_seq": is_int(data["control_seq"]) and data["control_seq"] >= -1,
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise CheckpointError(f"checkpoint {p} is damaged: the loop's {bad[0]} is {str(data[bad[0]])[:40]!r}")


def _check_run_dir(ckpt: dict[str, Any], cfg: TrainConfig, p: Path) -> Path:
    """The checkpoint's run directory, if it is one of ours; CheckpointError otherwise.

    A resumed run appends event files to it and rotates its config.json, so it must be the directory this
    trainer made for the checkpoint's run: an absolute ``.../<name>/version_N`` holding a config.json of
    the same run (same name and architecture) and an event file. A checkpoint edited (or damaged) to name
    any other directory is refused before anything is written.
    """
    raw = ckpt["run_dir"]
    run_dir = Path(raw)
    where = f"checkpoint {p} names run directory {raw[:200]!r}"
    hint = "resume from the last.pt of a run that python -m train wrote, beside its logs"
    if not run_dir.is_absolute() or "\0" in raw:
        raise CheckpointError(f"{where}, which is not an absolute path; {hint}")
    if not run_dir.is_dir():
        raise CheckpointError(f"{where}, which no longer exists (moved or deleted?); {hint}")
    if _version(run_dir) < 0 or run_dir.parent.name != cfg.name:
        raise CheckpointError(f"{where}, which is not a run directory of this trainer (not "
                              f"<logdir>/{cfg.name}/version_N); {hint}")
    try:
        from train.config import load_config_file

        theirs = load_config_file(run_dir / "config.json")
    except (InputError, ConfigError):
        theirs = None
    if theirs is None or any(getattr(theirs, k) != getattr(cfg, k) for k in (*ARCHITECTURE_FIELDS, "name")):
        raise CheckpointError(f"{where}, which holds no config.json of this run; {hint}")
    if not any(run_dir.glob("events.out.tfevents.*")):
        raise CheckpointError(f"{where}, which holds no event file; {hint}")
    return run_dir


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

    def poll(self, state: _LoopState) -> str | None:
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


def _sync_control(state: _LoopState, d: _Dist) -> None:
    """Rank 0 read the file; every rank adopts its decision."""
    if not d.enabled:
        return
    box = [(state.kl_weight, state.ae_mode, state.control_seq)]
    dist.broadcast_object_list(box, src=0)
    state.kl_weight, state.ae_mode, state.control_seq = box[0]


# --------------------------------------------------------------------------------------------------
# Logging.


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


class _EventLog:
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


def _quiet_writer_threads() -> Callable[[], None]:
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
               deterministic: bool, grad_clip: float, precision: str = "fp32",
               before_backward: Callable[[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], None] | None = None,
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forward, every loss term, backward, (clip), optimizer step. Returns (total, raw, weighted), on the
    device: nothing here waits for it (no ``.item()``, no host copy).

    ``precision`` bf16: the model's forward pass and the perceptual trunk run under bfloat16 autocast; the
    outputs are cast to float32 and every loss term is reduced in float32 (fp32: all of it as written).

    ``before_backward(weighted, (mu, logvar))`` is called after the loss terms and before ``backward()``
    with the weighted terms and the latent head as the model returned it (bf16 under autocast: the tensors
    the decoder consumed), for :func:`vaediag.integrations.gradients.term_gradients`; it must leave the
    graph intact (``retain_graph=True``)."""
    with autocast(x.device, precision):
        recon, mu, logvar = model(x, deterministic=deterministic)
    head = (mu, logvar)
    recon, mu, logvar = recon.float(), mu.float(), logvar.float()  # no-ops in fp32
    raw = loss_terms(recon, x, mu, logvar, weight_map=weight_map,
                     perceptual=_in_precision(perceptual, x.device, precision),
                     no_grad=[t for t, w in weights.items() if w == 0])  # logged, not back-propagated
    total, weighted = weighted_total(raw, weights)
    if before_backward is not None:
        before_backward(weighted, head)
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
             grid_images: int = 8, precision: str = "fp32", channels_last: bool = False,
             d: _Dist | None = None) -> tuple[dict[str, float] | None, torch.Tensor | None, torch.Tensor | None]:
    """Val scalars keyed by canonical term, the KL per dimension, and the reconstruction grid.

    Uses ``z = mu`` (the deterministic reconstruction); loss terms are image-weighted means over the set.
    The forward passes run in ``precision`` like training's; the loss terms and metrics in float32/64.

    Under DDP (``d`` with more than one process) the val set is cut into the same batches as in one process
    and batch ``b`` is evaluated on rank ``b % world``. Each rank keeps, per batch, the loss terms, the
    per-image values and the batch's sums (:meth:`ValAccumulator.record`), plus its own total of the
    per-pixel sums behind ``recon_spread``; rank 0 gathers them (one ``gather_object``) and adds the batches
    in batch order, as the single process does. So every val number is the single process's, exactly, but
    ``recon_spread``, whose float64 per-pixel sums are added per rank first (equal to float64 rounding).
    Ranks other than 0 return ``(None, None, None)``.
    """
    d = d or _Dist()
    was_training = model.training
    model.eval()
    n_total = len(data)
    starts = list(range(0, n_total, batch_size))
    mine: list[tuple[int, int, dict[str, float], dict[str, torch.Tensor]]] = []
    spread: torch.Tensor | None = None
    grid = None
    p_fn = _in_precision(perceptual, device, precision)
    try:
        for b in range(d.rank, len(starts), d.world):
            idx = torch.arange(starts[b], min(starts[b] + batch_size, n_total))
            x = data.batch(idx, device, channels_last=channels_last)
            with autocast(device, precision):
                recon, mu, logvar = model(x, deterministic=True)
            recon, mu, logvar = recon.float(), mu.float(), logvar.float()
            raw = loss_terms(recon, x, mu, logvar, weight_map=weight_map, perceptual=p_fn)
            values = dict(zip(raw, torch.stack(list(raw.values())).tolist()))
            rec = ValAccumulator.record(recon, x, mu, logvar, data.grey[idx])
            part = rec.pop("spread")
            spread = part if spread is None else spread + part
            mine.append((b, len(idx), values, rec))
            if b == 0 and grid_images > 0:
                grid = make_grid(x[:grid_images], recon[:grid_images])
    finally:
        model.train(was_training)
    parts = [(mine, spread, grid)]
    if d.enabled:
        box: list[Any] | None = [None] * d.world if d.is_main else None
        dist.gather_object(parts[0], box, dst=0)
        if not d.is_main:
            return None, None, None
        parts = box
    acc = ValAccumulator()
    sums: dict[str, float] = {}
    for b, n, values, rec in sorted((r for part in parts for r in part[0]), key=lambda r: r[0]):
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v * n
        acc.add(rec)
    for _, part_spread, _ in parts:
        acc.add_spread(part_spread)
    grid = parts[0][2]
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


def _collective_device(d: _Dist) -> torch.device:
    """Where the small tensors of this loop's own collectives live (NCCL needs CUDA, gloo takes CPU)."""
    if d.enabled and dist.get_backend() == "nccl":
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def _agree(d: _Dist, *values: float) -> list[float]:
    """Each value maxed over every process (one all_reduce), so all ranks take the same branch; in a single
    process, the values themselves."""
    if not d.enabled:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device(d))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def _any_rank(flag: bool, d: _Dist) -> bool:
    """True on every rank when any rank saw a signal (so all stop at the same step)."""
    return _agree(d, 1.0 if flag else 0.0)[0] > 0


# A step travels through MAX as _STEP_BASE - step, so the earliest bad step of any rank wins.
_STEP_BASE = float(2**52)


def _step_code(step: int | None) -> float:
    return 0.0 if step is None else _STEP_BASE - step


def _step_of(code: float) -> int | None:
    return None if code <= 0 else int(_STEP_BASE - code)


def _failure_code(exc: BaseException | None) -> float:
    return float(getattr(exc, "exit_code", 1) or 1) if exc is not None else 0.0


def _elsewhere(code: float) -> VaediagError:
    """What a rank raises when another one failed (that one prints why)."""
    return VaediagError("stopped: another process of this run failed (its message says why)", exit_code=int(code))


def _together(d: _Dist, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on every process; when it raises a VaediagError on any of them, every process raises, so
    no rank is left waiting in a collective for one that has gone."""
    failure: VaediagError | None = None
    result = None
    try:
        result = fn()
    except VaediagError as exc:
        failure = exc
    worst = _agree(d, _failure_code(failure))[0]
    if failure is not None:
        raise failure
    if worst:
        raise _elsewhere(worst)
    return result


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
        DataError, ConfigError, InputError, CheckpointError: bad input, before anything is written.
        Interrupted: SIGINT/SIGTERM; the step in flight was finished and a checkpoint saved.
        TrainingDiverged: the loss or the weights became non-finite; that step is logged, nothing
            non-finite is checkpointed (exit code 3).
        OutputError: a write failed (disk full, I/O error, file-size limit); the previous checkpoint is
            intact (exit code 4).
    """
    d = _init_distributed(cfg.device)
    undo = _quiet_writer_threads()
    together = False  # every rank ends here at the same point (a result, or an error all of them raise)
    try:
        result = _train(cfg, d, on_epoch_end)
        together = True
        return result
    except VaediagError:
        together = True  # the loop's own errors are agreed between ranks before any of them raises
        raise
    finally:
        undo()
        if d.enabled and dist.is_initialized():
            if together:
                # No rank tears its process group down while another may still communicate: the last
                # collective can complete on one rank before its peer is done with it, and a peer whose
                # connections close under it can be aborted by gloo ("terminate called ...").
                try:
                    dist.barrier()
                except Exception:
                    pass
            # Whatever still holds the process group (a DDP wrapper in a traceback's reference cycle) goes
            # now, while the interpreter is whole: gloo objects freed during interpreter shutdown abort the
            # process ("terminate called without an active exception", SIGABRT) after its work is done.
            gc.collect()
            dist.destroy_process_group()
            gc.collect()


@dataclass
class _Prepared:
    """Everything :func:`_prepare` checked and built; nothing of it is on disk yet."""

    cfg: TrainConfig
    device: torch.device
    train_set: ImageSet
    val_set: ImageSet
    perceptual: torch.nn.Module | None
    backbone: Any
    model: ConvVAE
    optimizer: torch.optim.Optimizer
    state: _LoopState
    changed: dict[str, tuple[Any, Any]]
    runtime_changed: dict[str, tuple[Any, Any]]  # how the steps run (precision, compile, ...): no override
    run_dir: Path | None  # a resumed run's (checked on rank 0); None for a new run
    ckpt_dir: Path | None
    notes: list[str] = field(default_factory=list)  # said once the run is open


def _prepare(cfg: TrainConfig, d: _Dist) -> _Prepared:
    """Everything that can fail on bad input, before anything is written: the checkpoint (fields, run
    directory, weights, optimizer, random state), the device, the data, the perceptual trunk."""
    ckpt = load_checkpoint(cfg.resume) if cfg.resume else None
    device = _resolve_device(cfg.device, d)
    train_set, val_set = load_pair(cfg.train_npy, cfg.val_npy, image_size=cfg.image_size)
    cfg = cfg.replace(image_size=train_set.size, channels=train_set.channels)
    perceptual, backbone = load_perceptual(cfg.perceptual_weights, cfg.layers)
    cfg = cfg.replace(perceptual_backbone=backbone.description)
    changed: dict[str, tuple[Any, Any]] = {}
    runtime_changed: dict[str, tuple[Any, Any]] = {}
    notes: list[str] = []
    run_dir = ckpt_dir = None
    if ckpt is not None:
        source = Path(cfg.resume)
        old = config_from_dict(ckpt["config"], source=f"checkpoint {cfg.resume}")
        if cfg.checkpoint_dir != old.checkpoint_dir:  # where a run's checkpoint is does not change on resume
            notes.append(f"--checkpoint-dir is for new runs: a resumed run keeps saving beside its checkpoint, "
                         f"{source.resolve()}")
            cfg = cfg.replace(checkpoint_dir=old.checkpoint_dir)
        changed = _changed_fields(old, cfg)
        runtime_changed = {k: (getattr(old, k), getattr(cfg, k)) for k in _HOW_FIELDS
                           if getattr(old, k) != getattr(cfg, k)}
        fixed = [k for k in ARCHITECTURE_FIELDS if k in changed]
        if fixed:
            k = fixed[0]
            raise ConfigError(f"cannot resume with {k} = {changed[k][1]}: the checkpoint's model has {k} = "
                              f"{changed[k][0]} (start a new run to change the architecture)")
        if d.is_main:
            run_dir = _check_run_dir(ckpt, old, source)
        ckpt_dir = source.resolve().parent
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    if perceptual is not None:
        perceptual = perceptual.to(device, memory_format=memory_format)
    train_set, val_set = train_set.place(device), val_set.place(device)

    torch.manual_seed(cfg.seed)
    model = build_model(arch=cfg.arch, channels=cfg.channels, image_size=cfg.image_size, latent_dim=cfg.latent_dim,
                        base_channels=cfg.base_channels, latent_channels=cfg.latent_channels)
    model = model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(model, cfg, device)
    state = _LoopState(kl_weight=cfg.kl_weight, ae_mode=cfg.ae)
    torch.manual_seed(cfg.seed + 1 + d.rank)  # sampling noise differs per rank
    if ckpt is not None:
        _load_weights(ckpt, model, optimizer, Path(cfg.resume))
        for k, v in ckpt["state"].items():
            setattr(state, k, v)
        # An explicit flag on the resume command wins over what the checkpoint (or a control) set.
        if "kl_weight" in changed:
            state.kl_weight = cfg.kl_weight
        if "ae" in changed:
            state.ae_mode = cfg.ae
        try:
            if d.is_main and "rng_cpu" in ckpt:
                torch.set_rng_state(ckpt["rng_cpu"])
            else:
                torch.manual_seed(cfg.seed + 1 + d.rank + state.global_step)
            if "rng_cuda" in ckpt and device.type == "cuda" and d.is_main:
                torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {cfg.resume} is damaged: its random state cannot be restored "
                                  f"({_one_line(exc)})") from None
    return _Prepared(cfg=cfg, device=device, train_set=train_set, val_set=val_set, perceptual=perceptual,
                     backbone=backbone, model=model, optimizer=optimizer, state=state, changed=changed,
                     runtime_changed=runtime_changed, run_dir=run_dir, ckpt_dir=ckpt_dir, notes=notes)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_weights(ckpt: dict[str, Any], model: ConvVAE, optimizer: torch.optim.Optimizer, p: Path) -> None:
    """Load the checkpoint's weights and optimizer state, or raise CheckpointError (before any write)."""
    weights = ckpt["model"]
    if not all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point()):
        raise CheckpointError(f"checkpoint {p} holds non-finite (NaN or inf) weights; resume from an earlier one")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        arch = ckpt["config"].get("arch", "?")
        raise CheckpointError(f"checkpoint {p} does not fit the {arch} model of its own config: "
                              f"{_one_line(exc)}") from None
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {p} holds an optimizer state that does not fit the model: "
                              f"{_one_line(exc)}") from None

    def number(v: Any, lo: float, hi: float) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi

    for group in optimizer.param_groups:
        betas = group.get("betas")
        ok = (number(group.get("lr"), 0, math.inf) and number(group.get("eps"), 0, math.inf)
              and number(group.get("weight_decay"), 0, math.inf) and isinstance(betas, (tuple, list))
              and len(betas) == 2 and all(number(b, 0, 1) for b in betas))
        if not ok:
            raise CheckpointError(f"checkpoint {p} holds a damaged optimizer setting (lr, eps, betas or weight_decay)")
        for param in group["params"]:
            for k, v in optimizer.state.get(param, {}).items():
                if k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") and (
                        not isinstance(v, torch.Tensor) or v.shape != param.shape):
                    raise CheckpointError(f"checkpoint {p} holds an optimizer state ({k}) of the wrong shape")
    _fit_optimizer(optimizer, next(model.parameters()).device)


def _is_compile_error(exc: BaseException) -> bool:
    """An error raised by torch.compile's machinery (dynamo, inductor, or the compiler they call)."""
    mod = type(exc).__module__ or ""
    if mod.startswith(("torch._dynamo", "torch._inductor")):
        return True
    return isinstance(exc, ImportError) and "triton" in str(exc)


def _finite_weights(model: torch.nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def _os_failure(exc: OSError, what: str, then: str) -> VaediagError:
    """One line for an OSError while creating or writing ``what``: the machine's refusals (disk full,
    quota, I/O error, file-size limit, read-only) are OutputError (exit 4); a path that cannot be used
    (not a directory, no permission, a name too long) is InputError (exit 2)."""
    said, advice = describe_os_error(exc)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EIO, errno.EFBIG, errno.EROFS):
        return OutputError(f"cannot write {what}: {said}; {then}; {advice}")
    name = f" ({shown(exc.filename)})" if exc.filename else ""
    return InputError(f"cannot create {what}: {said}{name}; choose another --logdir or --checkpoint-dir")


def _fmt(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def _nonfinite_terms(values: dict[str, float]) -> str:
    """``"kl inf, kl_weighted inf; "``, or ``"every term nan; "``: the terms besides the total that are not finite."""
    terms_ = {k: v for k, v in values.items() if k != "loss"}
    bad = {k: v for k, v in terms_.items() if not math.isfinite(v)}
    if not bad:
        return ""
    if len(bad) == len(terms_) and len({_fmt(v) for v in bad.values()}) == 1:
        return f"every term {_fmt(next(iter(bad.values())))}; "
    shown_ = [f"{k} {_fmt(v)}" for k, v in bad.items()]
    more = f" and {len(shown_) - 4} more" if len(shown_) > 4 else ""
    return ", ".join(shown_[:4]) + more + "; "


def _train(cfg: TrainConfig, d: _Dist, on_epoch_end: Callable[[EpochEnd], None] | None) -> TrainResult:
    prep: _Prepared = _together(d, lambda: _prepare(cfg, d))  # bad input: every rank stops, nothing written
    run = _Run(prep, d, on_epoch_end)
    _together(d, run.open)
    try:
        return run.loop()
    finally:
        run.release()


class _Run:
    """One run after its input was checked: where it writes, what it has kept, and how it stops.

    Every way out of the loop goes through :meth:`settle`, one all_reduce at each check (every
    ``--sync-every`` steps and at each epoch's end and start) that tells every rank whether any rank saw a
    signal, a non-finite step or a failed write, so all of them stop at the same step and none is left
    waiting in a collective. The checks fall on the same global steps on every rank.
    """

    def __init__(self, prep: _Prepared, d: _Dist, on_epoch_end: Callable[[EpochEnd], None] | None) -> None:
        self.prep, self.d, self.on_epoch_end = prep, d, on_epoch_end
        self.cfg, self.state, self.model, self.optimizer = prep.cfg, prep.state, prep.model, prep.optimizer
        self.device = prep.device
        self.out = _Out(d.is_main)
        self.resumed = bool(self.cfg.resume)
        self.run_dir, self.ckpt_dir = prep.run_dir, prep.ckpt_dir
        self.ckpt_path: Path | None = None
        self.events: _EventLog | None = None
        self.logger: StepLogger | None = None
        self.stop: _StopOnSignal | None = None
        # The last checkpoint that holds finite weights, (path, step): where a diverged or failed run resumes.
        self.last_good: tuple[Path, int] | None = None
        self.lr, self.kl_w = self.cfg.lr, self.state.kl_weight  # in effect at the last step
        self.gradients: TermGradients | None = None  # the last step's gradient measurement (--grad-share-every)

    # --- setup (rank 0 writes) ----------------------------------------------------------------------
    def open(self) -> None:
        cfg, state, out = self.cfg, self.state, self.out
        if self.d.is_main:
            note = None
            if not self.resumed:
                under = cfg.logdir + (f" and {cfg.checkpoint_dir}" if cfg.checkpoint_dir else "")
                try:
                    self.run_dir, self.ckpt_dir, note = _new_version_dirs(cfg)
                except OSError as exc:
                    raise _os_failure(exc, f"the run's directories under {under}", "nothing was trained") from None
                if note is None and cfg.checkpoint_dir:  # not beside the run: say where
                    note = f"checkpoints: {self.ckpt_dir}"
            _announce_run_dir(self.run_dir)
            if note:
                (out.warn if note.startswith("warning") else out.info)(note)
            try:
                save_run_config(cfg, self.run_dir)
            except OSError as exc:
                raise _os_failure(exc, f"the config in {self.run_dir}", "nothing was trained") from None
            self.events = _EventLog(self.run_dir, self._event_failure)
        self.ckpt_path = self.ckpt_dir / CHECKPOINT_NAME if self.ckpt_dir is not None else None
        if self.resumed and self.d.is_main:
            self.last_good = (Path(cfg.resume), state.global_step)
        backbone = self.prep.backbone
        if self.prep.perceptual is None:
            out.warn("WARNING: the perceptual loss is DISABLED (--perceptual-weights none): reconstructions will be "
                     "judged by pixels, SSIM and edges only; the logs record it under "
                     f"{terms.BACKBONE_TEXT_TAG}")
        else:
            out.info(f"perceptual backbone: {backbone.description}")
        cadence = ""
        if self.prep.perceptual is not None and cfg.perceptual_every > 1:
            n = cfg.perceptual_every
            cadence = (f"; computed on one step in {n} (global step % {n} == 0) at {n} x its weight, so its "
                       f"expected contribution is unchanged; train/perceptual is logged on those steps only")
            out.info("perceptual term" + cadence)
        how = [f"precision {cfg.precision}"] + (["channels_last"] if cfg.channels_last else []) + \
            (["torch.compile"] if cfg.compile else [])
        sets = {self.prep.train_set.placement, self.prep.val_set.placement}
        out.info(f"device {self.device}: {', '.join(how)}, Adam{' (fused)' if self.device.type == 'cuda' else ''}, "
                 f"images on the {'/'.join(sorted(sets))}, checks every {sync_every(cfg, self.device)} step(s)")
        if self.resumed:
            msg = (f"resumed {cfg.resume} at step {state.global_step} (epoch {state.epoch}, "
                   f"batch {state.batch_in_epoch})")
            if self.prep.changed:
                msg += "; overrides: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in self.prep.changed.items())
            if self.prep.runtime_changed:
                msg += "; runs as: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                  for k, (a, b) in self.prep.runtime_changed.items())
            out.info(msg)
            for note in self.prep.notes:
                out.info(note)
            if self.events is not None:
                self.events.add_text(terms.RESUME_TEXT_TAG, msg, state.global_step)
        if self.events is not None:
            self.events.add_text(terms.BACKBONE_TEXT_TAG, backbone.description + cadence, state.global_step)
            loss_terms, metric_terms = self.board_terms()
            layout = terms.board_layout(loss_terms, metric_terms, gradients=cfg.grad_share_every > 0)
            self.events.add_summary(board.layout_summary(layout), state.global_step)
            self.events.add_summary(board.experiment_summary(), state.global_step)
            self.events.add_summary(board.session_start_summary(cfg, start_time=time.time()), state.global_step)

    def loss_terms(self) -> list[str]:
        """The loss terms this session computes (the perceptual term only with a backbone)."""
        return [t for t in terms.LOSS_TERMS if t != "perceptual" or self.prep.perceptual is not None]

    def board_terms(self) -> tuple[list[str], list[str]]:
        """The loss terms and val metrics this run directory holds, for the Custom Scalars layout: this
        session's, and after a resume that changed them those of the config it resumed too (a term the
        resume turned off keeps its chart; TensorBoard shows the latest layout of a run)."""
        changed = self.prep.changed
        loss = self.loss_terms()
        if "perceptual" not in loss and changed.get("perceptual_weights", ("none",))[0] != "none":
            loss = list(terms.LOSS_TERMS)
        grey = self.prep.val_set.grey
        new_val = "val_npy" in changed  # the earlier val set may have held the other kind of image
        has = {"grey": new_val or bool(grey.any()), "colour": new_val or bool((~grey).any())}
        metrics = [t for t in terms.METRIC_TERMS if has.get(t.rpartition("_")[2], True)]
        return loss, metrics

    def release(self) -> None:
        if self.events is not None:
            self.events.abandon()  # a no-op after a clean close; after a failure, stops its thread quietly

    # --- the loop -----------------------------------------------------------------------------------
    def loop(self) -> TrainResult:
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
        cfg, d, state, out, device = self.cfg, self.d, self.state, self.out, self.device
        model, optimizer, perceptual = self.model, self.optimizer, self.prep.perceptual
        train_set = self.prep.train_set
        model.train()

        weight_map = center_weight_map(cfg.image_size, center_weight=cfg.center_weight, device=device)
        self.weight_map = weight_map
        sampler = DistributedSampler(range(len(train_set)), num_replicas=d.world, rank=d.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=d.enabled)
        steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
        total_steps = cfg.epochs * steps_per_epoch
        every = sync_every(cfg, device)
        # The gradient measurements fall on steps that compute every term (grad_share_due).
        p_every = cfg.perceptual_every if perceptual is not None else 1
        # The loop flushes the logger itself, at each check, so that a failed write happens at a check.
        self.logger = logger = StepLogger(self.events, self.loss_terms(), flush_every=0)
        control = _ControlReader(self.run_dir) if d.is_main else None
        show_bar = d.is_main and not cfg.quiet and sys.stdout.isatty()
        val: dict[str, float] = {}

        if state.epoch >= cfg.epochs:
            out.warn(f"nothing to train: the checkpoint has finished {state.epoch} epoch(s) and --epochs is "
                     f"{cfg.epochs}; pass a larger --epochs to continue")

        with _StopOnSignal() as stop:
            self.stop = stop
            for epoch in range(state.epoch, cfg.epochs):
                t0 = time.perf_counter()
                if control is not None and epoch > 0:
                    note = control.await_watchdog(epoch - 1, lambda: stop.requested is not None)
                    if note:
                        out.warn(note)
                # A signal during that wait (the watchdog's stop, or its restart, follows its decision) stops the
                # run here, on the epoch boundary, not after one more step at the settings it is about to change.
                if _any_rank(stop.requested is not None, d):
                    raise self.stop_now(stop.requested or "stopped by another rank")
                # control.json is read at the start of each epoch; a new seq is applied once.
                if control is not None:
                    message = control.poll(state)
                    if message:
                        (out.warn if message.startswith("warning") else out.info)(message)
                _sync_control(state, d)
                failure = None
                if self.events is not None:
                    try:
                        self.events.add_scalar(terms.tag("train", "control_seq"), state.control_seq, state.global_step)
                        self.events.add_scalar(terms.tag("train", "ae_mode"), float(state.ae_mode), state.global_step)
                        if control is not None and control.applied is not None:
                            applied, kl_before, ae_before = control.applied
                            text = board.decision_text(applied, kl_before=kl_before, ae_before=ae_before,
                                                       step=state.global_step, epoch=epoch)
                            self.events.add_text(terms.DECISION_TEXT_TAG, text, state.global_step)
                    except OutputError as exc:
                        failure = exc
                self.settle(failure, stop_here=False)  # a signal now stops after the epoch's first step, as before

                sampler.set_epoch(epoch)
                order = torch.as_tensor(list(sampler), dtype=torch.int64).to(train_set.images.device)
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
                        self.lr, self.kl_w = lr, kl_w
                        x = train_set.batch(batches[b], device, channels_last=cfg.channels_last)
                        weights = cfg.loss_weights(kl_w)
                        p_factor = perceptual_factor(step, every=cfg.perceptual_every)
                        weights["perceptual"] *= p_factor
                        # rank 0 measures; every rank runs that step alike (uncompiled under --compile)
                        due = grad_share_due(step, every=cfg.grad_share_every, perceptual_every=p_every)
                        total, raw, weighted = self.step(x, weights, perceptual if p_factor else None,
                                                         measure=due and d.is_main, eager=due)
                        # every step is checked for NaN/inf at the next check; --log-every decides which are written
                        logger.log(step, epoch, total, raw, weighted, kl_weight=kl_w, lr=lr,
                                   write=step % cfg.log_every == 0,
                                   extra=self.gradients.scalars() if self.gradients is not None else None)
                        state.global_step += 1
                        state.batch_in_epoch = b + 1
                        # A check: the buffered losses go to the host (one transfer) and every rank agrees
                        # whether to stop. Every `every` global steps; the epoch's last step is checked
                        # right below, after the loop.
                        if state.global_step % every == 0 and b + 1 < len(batches):
                            self.check()
                        if progress is not None:  # the loss of the last check
                            info = f"loss {logger.last['loss']:.4f}" if logger.last else ""
                            progress.update(task, advance=1, info=info)
                finally:
                    if progress is not None:
                        progress.stop()
                self.check()

                # --- end of epoch: validate (every rank its share), log at the epoch's last step,
                # checkpoint (rank 0) ---------------------------------------------------------------------
                state.epoch, state.batch_in_epoch = epoch + 1, 0
                failure = None
                try:
                    val = self.validate()
                except VaediagError as exc:
                    failure = exc
                if d.is_main and failure is None:
                    try:
                        self.checkpoint()
                        out.info(_epoch_line(epoch, cfg.epochs, state.global_step, logger.last, val,
                                             time.perf_counter() - t0))
                        if self.on_epoch_end is not None:
                            self.on_epoch_end(EpochEnd(epoch=epoch, global_step=state.global_step, run_dir=self.run_dir,
                                                       checkpoint=self.ckpt_path, val=dict(val)))
                    except VaediagError as exc:
                        failure = exc
                self.settle(failure)

        self.end_session("success")
        self.close_events()
        return TrainResult(run_dir=self.run_dir, checkpoint=self.ckpt_path, global_step=state.global_step,
                           epochs_done=state.epoch, val=val, config=cfg)

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
        stop_f, bad_f, fail_f = _agree(self.d, 1.0 if requested else 0.0, _step_code(bad.step if bad else None),
                                       _failure_code(failure))
        if failure is not None:
            raise failure
        if fail_f:
            raise _elsewhere(fail_f)
        if bad_f:
            raise self.diverged(_step_of(bad_f))
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
        step that way, so DDP's ranks take the same path."""
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
            if cfg.compile and _is_compile_error(exc):
                raise ConfigError(f"--compile failed at step {self.state.global_step} ({type(exc).__name__}: "
                                  f"{_one_line(exc)}); train without it: --no-compile (a resume may drop it)") from None
            raise

    # --- validation and checkpoints (rank 0) ----------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Evaluate (every rank its share of the batches); on rank 0 log every val scalar (non-finite ones
        too: the ``nonfinite`` rule must see them), the histogram and image only when finite;
        TrainingDiverged when a val loss term is not finite. Other ranks return {}."""
        cfg, state, ev = self.cfg, self.state, self.events
        val_step = state.global_step - 1
        kl_w = kl_weight_at(val_step, kl_weight=state.kl_weight, warmup_steps=cfg.kl_warmup_steps,
                            ae_mode=state.ae_mode)
        val, kl_dims, grid = evaluate(self.model, self.prep.val_set, weights=cfg.loss_weights(kl_w),
                                      weight_map=self.weight_map, perceptual=self.prep.perceptual, device=self.device,
                                      batch_size=cfg.batch_size, grid_images=cfg.grid_images,
                                      precision=cfg.precision, channels_last=cfg.channels_last, d=self.d)
        if val is None or kl_dims is None:  # not rank 0: it has sent its share
            return {}
        for term, value in val.items():
            ev.add_scalar(terms.tag("val", term), value, val_step)
        if bool(torch.isfinite(kl_dims).all()):
            ev.add_histogram(terms.KL_PER_DIM_HIST_TAG, kl_dims.numpy(), val_step)
        if grid is not None and bool(torch.isfinite(grid).all()):
            ev.add_image(terms.RECON_GRID_TAG, grid, val_step, dataformats="CHW")
        ev.flush()  # the watchdog reads the epoch as soon as it ends
        bad = [k for k in self.logger.names if k in val and not math.isfinite(val[k])]
        if bad:
            losses = {k: val[k] for k in self.logger.names if k in val}
            raise self._diverged_error(val_step, f"val loss {_fmt(val.get('loss'))} ({_nonfinite_terms(losses)}"
                                                 f"kl_weight {kl_w:.3g}, lr {self.lr:.3g})")
        return val

    def checkpoint(self) -> None:
        """Save ``last.pt`` (rank 0): never non-finite weights, and a failed write leaves the old one intact."""
        if not self.d.is_main:
            return
        state = self.state
        if not _finite_weights(self.model):
            raise self._diverged_error(state.global_step - 1, "the model's weights are not finite (NaN or inf) "
                                       f"although the logged loss was (kl_weight {self.kl_w:.3g}, lr {self.lr:.3g})")
        payload = {"format": _CKPT_FORMAT, "config": self.cfg.to_dict(), "model": self.model.state_dict(),
                   "optimizer": self.optimizer.state_dict(), "state": state.to_dict(), "run_dir": str(self.run_dir),
                   "rng_cpu": torch.get_rng_state(), "torch_version": str(torch.__version__)}
        if self.device.type == "cuda":
            payload["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        try:
            _save_checkpoint(self.ckpt_path, payload)
        except OSError as exc:
            said, kept = self._what_is_kept(exc)
            raise OutputError(f"cannot save checkpoint {self.ckpt_path}: {said}; training stopped at step "
                              f"{state.global_step}; {kept}") from None
        self.last_good = (self.ckpt_path, state.global_step)

    # --- ways to stop -------------------------------------------------------------------------------
    def _what_is_kept(self, exc: OSError) -> tuple[str, str]:
        """(what failed, what is intact and what to do) for a refused write."""
        said, advice = describe_os_error(exc)
        if self.last_good is None:
            return said, f"no checkpoint was saved; {advice}, then start the run again"
        path, step = self.last_good
        return said, f"the checkpoint {path} (step {step}) is intact; {advice}, then continue with --resume {path}"

    def _event_failure(self, exc: OSError) -> OutputError:
        said, kept = self._what_is_kept(exc)
        return OutputError(f"cannot write the event log in {self.run_dir}: {said}; training stopped at step "
                           f"{self.state.global_step}; {kept}")

    def diverged(self, step: int | None) -> TrainingDiverged:
        """The error for a non-finite train step (``step``, agreed between ranks)."""
        bad = self.logger.bad if self.logger is not None else None
        if bad is not None and bad.step == step:
            seq = self.state.control_seq
            source = f" from control.json seq {seq}" if seq >= 0 and bad.kl_weight == self.state.kl_weight else ""
            detail = (f"loss {_fmt(bad.values.get('loss'))} ({_nonfinite_terms(bad.values)}"
                      f"kl_weight {bad.kl_weight:.3g}{source}, lr {bad.lr:.3g})")
        else:
            detail = "the loss was not finite on another process"
        return self._diverged_error(step, detail)

    def _diverged_error(self, step: int | None, detail: str) -> TrainingDiverged:
        if self.events is not None:  # the non-finite values must reach the disk: they are the evidence
            try:
                self.end_session("failure")
            except OutputError:
                pass
            try:
                self.events.close()
            except OutputError:
                pass
        if self.last_good is not None:
            path, good_step = self.last_good
            kept = f"last good checkpoint {path} (step {good_step})"
        else:
            kept = "no checkpoint was saved (the run diverged in its first epoch)"
        logged = f"; logged in {self.run_dir}" if self.run_dir is not None else ""
        return TrainingDiverged(f"training diverged at step {step}: {detail}; {kept}{logged}; "
                                "try a lower --lr or --kl-weight")

    def stop_now(self, reason: str) -> VaediagError:
        """After a signal: save a checkpoint (finite weights only) and say how to continue."""
        try:
            self.logger.flush()
        except OutputError as exc:
            return exc
        if self.logger.bad is not None:
            return self.diverged(self.logger.bad.step)
        try:
            self.checkpoint()
            self.close_events()
        except (TrainingDiverged, OutputError) as exc:
            return exc
        where = f"; checkpoint {self.ckpt_path}; continue with --resume {self.ckpt_path}" if self.ckpt_path else ""
        return Interrupted(f"{reason}: stopped after step {self.state.global_step}{where}")

    def end_session(self, status: str) -> None:
        """Tell TensorBoard's HParams tab how the run ended (rank 0, while its event log is open). Only a
        run that trained every epoch (success) or diverged (failure) ends its session: after a signal or a
        refused write the run goes on with --resume, and TensorBoard keeps a run's first end status."""
        if self.events is not None and self.events.is_open:
            self.events.add_summary(board.session_end_summary(status, end_time=time.time()), self.state.global_step)

    def close_events(self) -> None:
        if self.events is not None:
            self.events.close()
