"""Validation metrics: PSNR and SSIM (overall, grey, colour), sharpness, active units, KL per dimension.

Per-image functions return ``(N,)`` tensors; :class:`ValAccumulator` gathers them batch by batch and
:meth:`ValAccumulator.compute` turns them into the per-epoch scalars named in ``terms.METRIC_TERMS``.

* PSNR per image: ``10 * log10(1 / MSE)`` (data range 1), the set value is the mean over images
  (equal to scikit-image's ``peak_signal_noise_ratio`` per image). A perfect image gives +inf, which is
  capped at 100 dB so the log stays finite.
* SSIM per image: pytorch-msssim's Gaussian SSIM (11 x 11, sigma 1.5, K = 0.01, 0.03, data range 1),
  equal to scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``; mean over images.
* Grey / colour: the same means over the images marked grey / colour (``train.data.grey_mask``);
  omitted when the val set holds no image of that kind.
* Sharpness: gradient energy ``sum(dx**2) + sum(dy**2)`` (forward differences) of all reconstructions
  over that of all inputs; 1 means as much edge energy as the input, blur gives < 1 (omitted when the
  inputs have no edges at all).
* Active units (Burda et al. 2016): latent dims whose posterior mean varies across the val set,
  ``Var_x(mu_d) > 0.01`` (population variance over all val images).
* KL per dimension: ``0.5 * (mu**2 + exp(logvar) - 1 - logvar)`` averaged over the val images; its mean,
  median, max and min over dimensions are logged and the whole vector goes into a histogram.
"""

from __future__ import annotations

import torch
from pytorch_msssim import ssim as _ssim

from train.losses import image_gradients, kl_elements

__all__ = [
    "psnr_per_image",
    "ssim_per_image",
    "gradient_energy",
    "active_units",
    "kl_dim_summary",
    "ValAccumulator",
    "ACTIVE_UNIT_THRESHOLD",
    "PSNR_CAP_DB",
]

ACTIVE_UNIT_THRESHOLD = 0.01
PSNR_CAP_DB = 100.0


def psnr_per_image(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``10 * log10(1 / mean((recon - x)**2))`` per image (data range 1), capped at 100 dB.

    >>> x = torch.zeros(1, 1, 4, 4)
    >>> float(psnr_per_image(x + 0.1, x).round(decimals=4))  # MSE 0.01 -> 20 dB
    20.0
    """
    mse = (recon.double() - x.double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(1.0 / mse)).clamp(max=PSNR_CAP_DB).float()


def ssim_per_image(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gaussian SSIM per image with data range 1 (mean over channels and valid pixels)."""
    return _ssim(recon.float(), x.float(), data_range=1.0, size_average=False)


def gradient_energy(x: torch.Tensor) -> torch.Tensor:
    """``sum(dx**2) + sum(dy**2)`` per image (forward differences)."""
    dy, dx = image_gradients(x.float())
    return dx.pow(2).flatten(1).sum(1) + dy.pow(2).flatten(1).sum(1)


def active_units(mu: torch.Tensor, *, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Latent dims with ``Var_x(mu_d) > threshold`` over the rows of ``mu`` (N, D)."""
    if mu.shape[0] < 2:
        return 0
    return int((mu.double().var(0, correction=0) > threshold).sum())


def kl_dim_summary(kl_dims: torch.Tensor) -> dict[str, float]:
    """``{kl_dim_mean, kl_dim_median, kl_dim_max, kl_dim_min}`` of a ``(D,)`` KL-per-dimension vector."""
    k = kl_dims.double()
    return {"kl_dim_mean": float(k.mean()), "kl_dim_median": float(k.median()),
            "kl_dim_max": float(k.max()), "kl_dim_min": float(k.min())}


class ValAccumulator:
    """Collects per-image metric values over the val batches of one epoch (on CPU, in float64)."""

    def __init__(self) -> None:
        self._psnr: list[torch.Tensor] = []
        self._ssim: list[torch.Tensor] = []
        self._grey: list[torch.Tensor] = []
        self._mu: list[torch.Tensor] = []
        self._kl_sum: torch.Tensor | None = None
        self._energy = torch.zeros(2, dtype=torch.float64)  # (recon, input)
        self._n = 0

    def update(self, recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
               grey: torch.Tensor) -> None:
        recon, x = recon.detach(), x.detach()
        self._psnr.append(psnr_per_image(recon, x).cpu())
        self._ssim.append(ssim_per_image(recon, x).cpu())
        self._grey.append(grey.cpu().bool())
        self._mu.append(mu.detach().double().cpu())
        kl = kl_elements(mu, logvar).detach().double().sum(0).cpu()
        self._kl_sum = kl if self._kl_sum is None else self._kl_sum + kl
        self._energy += torch.stack([gradient_energy(recon).double().sum(), gradient_energy(x).double().sum()]).cpu()
        self._n += x.shape[0]

    def kl_per_dim(self) -> torch.Tensor:
        """KL per latent dimension averaged over every val image so far, ``(D,)``."""
        return (self._kl_sum / max(self._n, 1)).float()

    def compute(self) -> dict[str, float]:
        """The per-epoch metric scalars keyed by canonical term (see the module docstring)."""
        psnr, ssim, grey = torch.cat(self._psnr).double(), torch.cat(self._ssim).double(), torch.cat(self._grey)
        out: dict[str, float] = {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}
        for suffix, mask in (("grey", grey), ("colour", ~grey)):
            if mask.any():
                out[f"psnr_{suffix}"] = float(psnr[mask].mean())
                out[f"ssim_{suffix}"] = float(ssim[mask].mean())
        e_recon, e_input = self._energy.tolist()
        if e_input > 0:  # a flat val set has no edges to compare: leave the ratio out rather than log NaN
            out["sharpness"] = e_recon / e_input
        out["active_units"] = float(active_units(torch.cat(self._mu)))
        out.update(kl_dim_summary(self.kl_per_dim()))
        return out
