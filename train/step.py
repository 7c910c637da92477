"""One training step: forward, every loss term, backward, (clip), optimizer step; nothing in it waits for the
device."""

from __future__ import annotations

from typing import Callable

import torch

from train.device import autocast, in_precision
from train.losses import loss_terms, weighted_total

__all__ = ["train_step"]


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
                     perceptual=in_precision(perceptual, x.device, precision),
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
