"""The schedules of a run: pure functions of the global step (no torch, no state).

The learning rate (warm-up, then constant or cosine), the KL weight (warm-up ramp, 0 in AE mode), the
perceptual term's cadence (``--perceptual-every``) and the steps that measure each term's gradient at the
latent head (``--grad-share-every``).
"""

from __future__ import annotations

import math

__all__ = ["lr_at", "kl_weight_at", "perceptual_factor", "grad_share_due"]


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
