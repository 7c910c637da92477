"""Checkpoints: what ``last.pt`` holds, how it is written, and how a resume checks and restores it.

A checkpoint is saved after every epoch and on SIGINT/SIGTERM, written to a temporary name and renamed (a
failed write leaves the previous one intact); it holds tensors and plain types only, so ``weights_only=True``
loads it. Loading checks its shape before anything is written (:func:`load_checkpoint`); a resume then checks
the run directory it names (:func:`check_run_dir`) and loads its weights, optimizer state, counters and random
state (:func:`restore`). ``--resume`` continues the same run directory and step counter (a new event file; no
step is purged), mid-epoch if the run was interrupted mid-epoch, and keeps saving beside the checkpoint it
resumed from (an older layout's ``checkpoints/<project>/<name>/version_N/last.pt`` included).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from vaediag.atomic import atomic_write
from vaediag.errors import CheckpointError, ConfigError, InputError

from train.config import ARCHITECTURE_FIELDS, LEGACY_RUN_FIELDS, TrainConfig, config_from_dict
from train.device import fit_optimizer
from train.distributed import Dist
from train.errors import one_line
from train.model import ConvVAE
from train.rundir import run_version

__all__ = ["CHECKPOINT_NAME", "CKPT_FORMAT", "LoopState", "save_checkpoint", "checkpoint_payload",
           "load_checkpoint", "check_run_dir", "resume_config", "load_weights", "restore", "finite_weights"]

CHECKPOINT_NAME = "last.pt"
CKPT_FORMAT = "vaediag-train/1"


@dataclass
class LoopState:
    """Everything the loop must remember across a resume besides weights and optimizer."""

    global_step: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of `epoch` already done
    kl_weight: float = 0.0  # the base KL weight (the config's, or the last applied control's)
    ae_mode: bool = False
    control_seq: int = -1  # last applied control.json seq; -1 = none yet

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
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
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"checkpoint {p} was not written by this training core (format {CKPT_FORMAT})")
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
    names = [f.name for f in fields(LoopState)]
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


def check_run_dir(ckpt: dict[str, Any], cfg: TrainConfig, p: Path) -> Path:
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
    if run_version(run_dir) < 0 or run_dir.parent.name != cfg.name:
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


def load_weights(ckpt: dict[str, Any], model: ConvVAE, optimizer: torch.optim.Optimizer, p: Path) -> None:
    """Load the checkpoint's weights and optimizer state, or raise CheckpointError (before any write)."""
    weights = ckpt["model"]
    if not all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point()):
        raise CheckpointError(f"checkpoint {p} holds non-finite (NaN or inf) weights; resume from an earlier one")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        arch = ckpt["config"].get("arch", "?")
        raise CheckpointError(f"checkpoint {p} does not fit the {arch} model of its own config: "
                              f"{one_line(exc)}") from None
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {p} holds an optimizer state that does not fit the model: "
                              f"{one_line(exc)}") from None

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
    fit_optimizer(optimizer, next(model.parameters()).device)


def finite_weights(model: torch.nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def restore(ckpt: dict[str, Any], p: Path, model: ConvVAE, optimizer: torch.optim.Optimizer, state: LoopState, *,
            cfg: TrainConfig, changed: dict[str, Any], device: torch.device, d: Dist) -> None:
    """Load a checked checkpoint into a fresh model, optimizer and counters, and restore its random state (rank
    0; the other ranks reseed from the step), or raise CheckpointError (before any write). A flag given
    explicitly on the resume command (``changed``) wins over what the checkpoint, or a control, set."""
    load_weights(ckpt, model, optimizer, p)
    for k, v in ckpt["state"].items():
        setattr(state, k, v)
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
                              f"({one_line(exc)})") from None


def checkpoint_payload(cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: LoopState,
                       run_dir: Path, device: torch.device) -> dict[str, Any]:
    """What ``last.pt`` holds: the format, config, weights, optimizer state, counters, run directory and the
    random state (CPU, and CUDA's on a GPU)."""
    payload = {"format": CKPT_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
               "optimizer": optimizer.state_dict(), "state": state.to_dict(), "run_dir": str(run_dir),
               "rng_cpu": torch.get_rng_state(), "torch_version": str(torch.__version__)}
    if device.type == "cuda":
        payload["rng_cuda"] = torch.cuda.get_rng_state(device)
    return payload
