"""The loss terms of the seed's recipe, one documented function each, and their weighted sum.

All image arguments are float tensors ``(N, C, H, W)`` in [0, 1]; every function returns a scalar tensor
(a mean over the batch) unless it says otherwise. The total loss is

    loss = w_l1 * recon + w_perceptual * perceptual + w_ssim * ssim_loss + w_edge * edge + kl_weight * kl

and each term is logged raw and weighted (``terms.LOSS_TERMS``).
"""

from __future__ import annotations

from typing import Callable, Collection, Mapping

import torch
from pytorch_msssim import ssim as _ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d

__all__ = [
    "center_weight_map",
    "center_weighted_l1",
    "ssim_loss",
    "image_gradients",
    "edge_loss",
    "kl_divergence",
    "kl_elements",
    "kl_per_dim",
    "weighted_total",
    "loss_terms",
    "CENTER_SIGMA",
    "ssim_window",
]

# Width of the centre bump as a fraction of the image side (one standard deviation).
CENTER_SIGMA = 0.25


def center_weight_map(size: int, *, center_weight: float, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The L1 weight map, shape ``(1, 1, size, size)``, mean exactly 1.

    How it is built: pixel centres at ``(i, j)``, image centre ``c = (size - 1) / 2``, squared distance
    ``r2 = (i - c)**2 + (j - c)**2``, Gaussian bump with ``sigma = 0.25 * size``::

        g(i, j) = 1 + (center_weight - 1) * exp(-r2 / (2 * sigma**2))
        map     = g / mean(g)

    so the centre pixel weighs ``center_weight`` times a pixel far out, the weight falls off smoothly
    (no ring edge), and dividing by the mean keeps the loss on the scale of plain L1 (a uniform error of
    0.1 costs 0.1 whatever ``center_weight`` is). ``center_weight = 1`` gives plain L1.

    >>> m = center_weight_map(64, center_weight=3.0)
    >>> round(float(m.mean()), 6), bool(m[0, 0, 32, 32] > m[0, 0, 0, 0])
    (1.0, True)
    """
    idx = torch.arange(size, dtype=torch.float64)
    c = (size - 1) / 2.0
    r2 = (idx[:, None] - c) ** 2 + (idx[None, :] - c) ** 2
    sigma = CENTER_SIGMA * size
    g = 1.0 + (center_weight - 1.0) * torch.exp(-r2 / (2.0 * sigma**2))
    return (g / g.mean()).to(device=device, dtype=dtype)[None, None]


def center_weighted_l1(recon: torch.Tensor, x: torch.Tensor, weight_map: torch.Tensor) -> torch.Tensor:
    """``mean(weight_map * |recon - x|)`` over batch, channels and pixels (see :func:`center_weight_map`).

    >>> x = torch.zeros(2, 3, 8, 8)
    >>> round(float(center_weighted_l1(x + 0.1, x, center_weight_map(8, center_weight=3.0))), 6)
    0.1
    """
    return (weight_map * (recon - x).abs()).mean()


_WINDOWS: dict[tuple[str, int], torch.Tensor] = {}


def ssim_window(x: torch.Tensor) -> torch.Tensor:
    """pytorch-msssim's own window (11 taps, sigma 1.5, one row per channel) for ``x``, built once per device
    and channel count: left to itself, pytorch-msssim builds it on the CPU at every call and copies it to the
    device, a blocking host-to-device copy (a GPU synchronisation) in every training step."""
    key = (str(x.device), int(x.shape[1]))
    win = _WINDOWS.get(key)
    if win is None:
        win = _fspecial_gauss_1d(11, 1.5).repeat([x.shape[1], 1, 1, 1]).to(x.device)
        _WINDOWS[key] = win
    return win


def ssim_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM(recon, x)``, SSIM from pytorch-msssim with ``data_range=1.0`` (its default is 255,
    which would make every pair look nearly identical), an 11 x 11 Gaussian window with sigma 1.5,
    K = (0.01, 0.03), averaged over channels, pixels and the batch. Computed in float32 (bf16 inputs are
    cast up: SSIM's variances are differences of nearly equal means).

    >>> a, b = torch.full((1, 1, 32, 32), 0.5), torch.full((1, 1, 32, 32), 0.25)
    >>> round(float(ssim_loss(b, a)), 5)  # luminance term only: 1 - (2ab + C1) / (a^2 + b^2 + C1)
    0.19994
    """
    recon, x = recon.float(), x.float()
    return 1.0 - _ssim(recon, x, data_range=1.0, size_average=True, win=ssim_window(x))


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences ``(dy, dx)``: ``x[i+1, j] - x[i, j]`` and ``x[i, j+1] - x[i, j]``."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def edge_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mean|dx(recon) - dx(x)| + mean|dy(recon) - dy(x)|`` with forward differences.

    Penalises edges that are missing or smeared in the reconstruction, whatever their mean brightness.

    >>> x = torch.zeros(1, 1, 8, 8)
    >>> ramp = torch.arange(8.0).view(1, 1, 1, 8) * 0.05 + x  # dx = 0.05 everywhere, dy = 0
    >>> round(float(edge_loss(ramp, x)), 6)
    0.05
    """
    ry, rx = image_gradients(recon)
    xy, xx = image_gradients(x)
    return (rx - xx).abs().mean() + (ry - xy).abs().mean()


def kl_elements(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per sample and latent dimension, ``(N, latent_dim)``:
    ``0.5 * (mu**2 + exp(logvar) - 1 - logvar)``. The reductions below (and the val metrics) start here.
    A spatial latent ``(N, C, H, W)`` counts as its ``C * H * W`` values (flattened channel-major)."""
    mu, logvar = mu.flatten(1).float(), logvar.flatten(1).float()  # fp32 even from a bf16 forward pass
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent dimension, averaged over the batch: shape ``(latent_dim,)``."""
    return kl_elements(mu, logvar).mean(0)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) in nats: **summed over latent dimensions, averaged over the batch**.

    This is the reduction that makes "KL = 1535" in the seed meaningful (it grows with latent_dim).

    >>> round(float(kl_divergence(torch.ones(4, 10), torch.zeros(4, 10))), 6)  # 10 dims x 0.5
    5.0
    """
    return kl_elements(mu, logvar).sum(1).mean()


def weighted_total(raw: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(sum of weight * raw, {term: weight * raw})`` over the terms present in ``raw``."""
    weighted = {term: raw[term] * float(weights[term]) for term in raw}
    total = torch.stack(list(weighted.values())).sum()
    return total, weighted


def loss_terms(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *,
               weight_map: torch.Tensor,
               perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
               no_grad: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """Every raw loss term, keyed by canonical term in ``terms.LOSS_TERMS`` order.

    ``perceptual`` is None when the term is disabled; it is then absent from the result (not 0, which
    would read as a perfect perceptual match). Terms named in ``no_grad`` (the loop passes those of weight 0)
    are computed for the logs only, outside autograd, so they cost no backward pass.
    """
    def term(name: str, fn: Callable[[], torch.Tensor]) -> None:
        if name in no_grad:
            with torch.no_grad():
                raw[name] = fn()
        else:
            raw[name] = fn()

    raw: dict[str, torch.Tensor] = {}
    term("recon", lambda: center_weighted_l1(recon, x, weight_map))
    if perceptual is not None:
        term("perceptual", lambda: perceptual(recon, x))
    term("ssim_loss", lambda: ssim_loss(recon, x))
    term("edge", lambda: edge_loss(recon, x))
    term("kl", lambda: kl_divergence(mu, logvar))
    return raw
