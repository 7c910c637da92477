"""Validation: the val set through the model with ``z = mu``, every loss term and metric, the KL per
dimension and the reconstruction grid; under DDP each rank evaluates its share of the batches and rank 0
merges them in batch order, so the numbers are the single process's."""

from __future__ import annotations

import functools
from dataclasses import fields
from typing import Any, Callable

import torch
import torch.distributed as dist

from vaediag import terms

from train.config import TrainConfig
from train.data import ImageSet
from train.device import autocast, in_precision
from train.distributed import Dist
from train.losses import loss_terms
from train.metrics import ValAccumulator
from train.model import ConvVAE

__all__ = ["evaluate", "make_grid", "ValFeatureCache"]

# What the val targets' perceptual features may take in memory by default (TrainConfig.val_feature_cache_mb,
# --val-feature-cache-mb): the demo's 32 crops of 64 px at relu3_3 need 59 MB; a val set past it keeps what fits
# and computes the rest every epoch, as without a cache.
VAL_FEATURE_BUDGET = next(f.default for f in fields(TrainConfig) if f.name == "val_feature_cache_mb") * 2**20


class ValFeatureCache:
    """The val targets' perceptual trunk features, kept across epochs.

    The val set and the frozen trunk do not change within a process, so the target half of the perceptual
    term (half its cost) is computed once per val batch instead of every epoch, with the same numbers: the
    same batches, the same precision and memory format, the same no-grad trunk. Bounded by ``budget``
    bytes (held on the val batches' device; 0 keeps nothing): batches past it are computed every epoch. One
    cache per run (per process, per rank); a batch is kept under its index with the val set, batch size,
    precision and memory format it was computed for, so a call with other ones never reads it."""

    def __init__(self, budget: int = VAL_FEATURE_BUDGET) -> None:
        self.budget = budget
        self.nbytes = 0
        self._kept: dict[tuple, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, batch: tuple, compute: Callable[[], list[torch.Tensor]]) -> list[torch.Tensor]:
        kept = self._kept.get(batch)
        if kept is not None:
            return kept
        features = compute()
        size = sum(f.numel() * f.element_size() for f in features)
        if self.nbytes + size <= self.budget:
            self._kept[batch] = features
            self.nbytes += size
        return features


def make_grid(x: torch.Tensor, recon: torch.Tensor, *, pad: int = 2) -> torch.Tensor:
    """Inputs (top row) over reconstructions (bottom row) as one ``(C, H, W)`` image in [0, 1]."""
    n, c, h, w = x.shape
    grid = torch.ones(c, 2 * h + 3 * pad, n * w + (n + 1) * pad)
    for i in range(n):
        left = pad + i * (w + pad)
        grid[:, pad:pad + h, left:left + w] = x[i].float().cpu()
        grid[:, 2 * pad + h:2 * pad + 2 * h, left:left + w] = recon[i].float().cpu()
    return grid.clamp_(0, 1)


@torch.no_grad()
def evaluate(model: ConvVAE, data: ImageSet, *, weights: dict[str, float], weight_map: torch.Tensor,
             perceptual: torch.nn.Module | None, device: torch.device, batch_size: int,
             grid_images: int = 8, precision: str = "fp32", channels_last: bool = False,
             d: Dist | None = None, features: ValFeatureCache | None = None,
             ) -> tuple[dict[str, float] | None, torch.Tensor | None, torch.Tensor | None]:
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

    ``features``: the run's :class:`ValFeatureCache`, so the val targets' perceptual features are computed
    once, not every epoch (the loop passes one; without it every call computes them).
    """
    d = d or Dist()
    was_training = model.training
    model.eval()
    try:
        part = _my_batches(model, data, weight_map=weight_map, perceptual=perceptual, device=device,
                           batch_size=batch_size, grid_images=grid_images, precision=precision,
                           channels_last=channels_last, d=d, features=features)
    finally:
        model.train(was_training)
    parts = [part]
    if d.enabled:
        box: list[Any] | None = [None] * d.world if d.is_main else None
        dist.gather_object(parts[0], box, dst=0)
        if not d.is_main:
            return None, None, None
        parts = box
    return _merge(parts, weights, len(data))


# What one rank evaluated: per batch (index, images, loss terms, ValAccumulator record), its spread sums, the grid.
_Batch = tuple[int, int, dict[str, float], dict[str, torch.Tensor]]
_Part = tuple[list[_Batch], torch.Tensor | None, torch.Tensor | None]


def _my_batches(model: ConvVAE, data: ImageSet, *, weight_map: torch.Tensor, perceptual: Any, device: torch.device,
                batch_size: int, grid_images: int, precision: str, channels_last: bool, d: Dist,
                features: ValFeatureCache | None) -> _Part:
    """This rank's batches (``b % world == rank``) of the val set through the model with ``z = mu``."""
    p_fn = in_precision(perceptual, device, precision)
    n_total = len(data)
    starts = list(range(0, n_total, batch_size))
    mine: list[_Batch] = []
    spread: torch.Tensor | None = None
    grid = None
    for b in range(d.rank, len(starts), d.world):
        idx = torch.arange(starts[b], min(starts[b] + batch_size, n_total))
        x = data.batch(idx, device, channels_last=channels_last)
        with autocast(device, precision):
            recon, mu, logvar = model(x, deterministic=True)
        recon, mu, logvar = recon.float(), mu.float(), logvar.float()
        raw = loss_terms(recon, x, mu, logvar, weight_map=weight_map,
                         perceptual=_with_target_features(perceptual, p_fn, features,
                                                          (id(data), batch_size, b, precision, channels_last),
                                                          x, device, precision))
        values = dict(zip(raw, torch.stack(list(raw.values())).tolist()))
        rec = ValAccumulator.record(recon, x, mu, logvar, data.grey[idx])
        part = rec.pop("spread")
        spread = part if spread is None else spread + part
        mine.append((b, len(idx), values, rec))
        if b == 0 and grid_images > 0:
            grid = make_grid(x[:grid_images], recon[:grid_images])
    return mine, spread, grid


def _with_target_features(perceptual: Any, p_fn: Any, features: ValFeatureCache | None, key: tuple, x: torch.Tensor,
                          device: torch.device, precision: str) -> Any:
    """The perceptual distance for the val batch ``key`` names (val set, batch size, index, precision, memory
    format), given its targets' features from ``features`` (computed the first time, under the same autocast
    as the distance itself); ``p_fn`` as it is without a cache."""
    if features is None or perceptual is None or not hasattr(perceptual, "target_features"):
        return p_fn

    def compute() -> list[torch.Tensor]:
        with autocast(device, precision):
            return perceptual.target_features(x)

    return in_precision(functools.partial(perceptual, target_features=features.get(key, compute)), device, precision)


def _merge(parts: list[_Part], weights: dict[str, float],
           n_total: int) -> tuple[dict[str, float], torch.Tensor, torch.Tensor | None]:
    """Every rank's batches added in batch order, as one process adds them: the val scalars, the KL per
    dimension, and the grid (batch 0's, rank 0's)."""
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
