"""Everything a run checks and builds before it writes anything: the checkpoint to resume (its fields, its
run directory, the overrides of the resume command), the device, the data, the perceptual trunk, the model
and optimizer, and, on a resume, their restored state. Bad input raises here, on every rank, with nothing
on disk yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from vaediag import terms
from vaediag.errors import ConfigError

from train.checkpoint import LoopState, check_run_dir, load_checkpoint, restore
from train.config import ARCHITECTURE_FIELDS, TrainConfig, config_from_dict
from train.data import ImageSet, load_pair
from train.device import make_optimizer, resolve_device
from train.distributed import Dist
from train.model import ConvVAE, build_model
from train.perceptual import load_perceptual

__all__ = ["Prepared", "prepare"]

# Fields a resume may change without it counting as an override of the run: they are about where and how
# fast, not what (the resume line lists those that changed).
_HOW_FIELDS = ("precision", "channels_last", "compile", "sync_every", "val_feature_cache_mb")
_RUNTIME_FIELDS = ("resume", "quiet", "device", *_HOW_FIELDS)


def _changed_fields(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    return {f.name: (getattr(old, f.name), getattr(new, f.name)) for f in fields(TrainConfig)
            if f.name not in _RUNTIME_FIELDS and getattr(old, f.name) != getattr(new, f.name)}


@dataclass
class Prepared:
    """Everything :func:`prepare` checked and built; nothing of it is on disk yet."""

    cfg: TrainConfig
    device: torch.device
    train_set: ImageSet
    val_set: ImageSet
    perceptual: torch.nn.Module | None
    backbone: Any
    model: ConvVAE
    optimizer: torch.optim.Optimizer
    state: LoopState
    changed: dict[str, tuple[Any, Any]]
    runtime_changed: dict[str, tuple[Any, Any]]  # how the steps run (precision, compile, ...): no override
    run_dir: Path | None  # a resumed run's (checked on rank 0); None for a new run
    ckpt_dir: Path | None
    notes: list[str] = field(default_factory=list)  # said once the run is open

    def loss_terms(self) -> list[str]:
        """The loss terms this session computes (the perceptual term only with a backbone)."""
        return [t for t in terms.LOSS_TERMS if t != "perceptual" or self.perceptual is not None]


def prepare(cfg: TrainConfig, d: Dist) -> Prepared:
    """Everything that can fail on bad input, before anything is written: the checkpoint (fields, run
    directory, weights, optimizer, random state), the device, the data, the perceptual trunk."""
    ckpt = load_checkpoint(cfg.resume) if cfg.resume else None
    device = resolve_device(cfg.device, d)
    train_set, val_set = load_pair(cfg.train_npy, cfg.val_npy, image_size=cfg.image_size)
    cfg = cfg.replace(image_size=train_set.size, channels=train_set.channels)
    perceptual, backbone = load_perceptual(cfg.perceptual_weights, cfg.layers)
    cfg = cfg.replace(perceptual_backbone=backbone.description)
    resume = _Resume()
    if ckpt is not None:
        cfg, resume = _check_resume(ckpt, cfg, d)
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    if perceptual is not None:
        perceptual = perceptual.to(device, memory_format=memory_format)
    train_set, val_set = train_set.place(device), val_set.place(device)
    model, optimizer, state = _build(cfg, device, memory_format, d)
    if ckpt is not None:
        restore(ckpt, Path(cfg.resume), model, optimizer, state, cfg=cfg, changed=resume.changed, device=device,
                d=d)
    return Prepared(cfg=cfg, device=device, train_set=train_set, val_set=val_set, perceptual=perceptual,
                    backbone=backbone, model=model, optimizer=optimizer, state=state, changed=resume.changed,
                    runtime_changed=resume.runtime_changed, run_dir=resume.run_dir, ckpt_dir=resume.ckpt_dir,
                    notes=resume.notes)


@dataclass
class _Resume:
    """How a resume command differs from the run its checkpoint holds (empty for a new run)."""

    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    runtime_changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    run_dir: Path | None = None
    ckpt_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def _check_resume(ckpt: dict[str, Any], cfg: TrainConfig, d: Dist) -> tuple[TrainConfig, _Resume]:
    """The resume's config (its checkpoint_dir the run's) and what it changes; ConfigError when it changes
    the architecture, CheckpointError (rank 0) when the checkpoint's run directory is not one of ours."""
    source = Path(cfg.resume)
    old = config_from_dict(ckpt["config"], source=f"checkpoint {cfg.resume}")
    resume = _Resume()
    if cfg.checkpoint_dir != old.checkpoint_dir:  # where a run's checkpoint is does not change on resume
        resume.notes.append(f"--checkpoint-dir is for new runs: a resumed run keeps saving beside its checkpoint, "
                            f"{source.resolve()}")
        cfg = cfg.replace(checkpoint_dir=old.checkpoint_dir)
    resume.changed = changed = _changed_fields(old, cfg)
    resume.runtime_changed = {k: (getattr(old, k), getattr(cfg, k)) for k in _HOW_FIELDS
                              if getattr(old, k) != getattr(cfg, k)}
    fixed = [k for k in ARCHITECTURE_FIELDS if k in changed]
    if fixed:
        k = fixed[0]
        raise ConfigError(f"cannot resume with {k} = {changed[k][1]}: the checkpoint's model has {k} = "
                          f"{changed[k][0]} (start a new run to change the architecture)")
    if d.is_main:
        resume.run_dir = check_run_dir(ckpt, old, source)
    resume.ckpt_dir = source.resolve().parent
    return cfg, resume


def _build(cfg: TrainConfig, device: torch.device, memory_format: torch.memory_format,
           d: Dist) -> tuple[ConvVAE, torch.optim.Optimizer, LoopState]:
    """The model (seeded by ``cfg.seed``), its optimizer and fresh counters; then the sampling noise's seed,
    which differs per rank."""
    torch.manual_seed(cfg.seed)
    model = build_model(arch=cfg.arch, channels=cfg.channels, image_size=cfg.image_size, latent_dim=cfg.latent_dim,
                        base_channels=cfg.base_channels, latent_channels=cfg.latent_channels)
    model = model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(model, cfg, device)
    state = LoopState(kl_weight=cfg.kl_weight, ae_mode=cfg.ae)
    torch.manual_seed(cfg.seed + 1 + d.rank)  # sampling noise differs per rank
    return model, optimizer, state
