"""Validation metrics against scikit-image on the same arrays; grey/colour split; sharpness; active units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from train.metrics import (
    PSNR_CAP_DB,
    ValAccumulator,
    active_units,
    kl_dim_summary,
    psnr_per_image,
    ssim_per_image,
)


def _pairs(crops, channels):
    """Real crops (N, C, H, W) in [0, 1] and a noisy, blurred version of them."""
    x = crops[1].astype(np.float64).transpose(0, 3, 1, 2) / 255.0
    if channels == 1:
        x = x[:, :1]
    rng = np.random.default_rng(0)
    y = np.stack([gaussian(im, sigma=1.0, channel_axis=0) for im in x]) + rng.normal(0, 0.03, x.shape)
    return x, np.clip(y, 0, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_equals_scikit_image(crops, channels):
    x, y = _pairs(crops, channels)
    ours = psnr_per_image(torch.from_numpy(y), torch.from_numpy(x)).numpy()
    ref = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x, y)]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_equals_scikit_image(crops, channels):
    x, y = _pairs(crops, channels)
    ours = ssim_per_image(torch.from_numpy(y).float(), torch.from_numpy(x).float()).numpy()
    ref = [structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=0) for a, b in zip(x, y)]
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_psnr_of_identical_images_is_capped():
    x = torch.rand(2, 3, 16, 16)
    assert psnr_per_image(x, x).tolist() == [PSNR_CAP_DB, PSNR_CAP_DB]


def _acc(recon, x, grey):
    acc = ValAccumulator()
    mu, logvar = torch.zeros(len(x), 4), torch.zeros(len(x), 4)
    for s in range(0, len(x), 3):  # several batches, as in an epoch
        acc.update(recon[s:s + 3], x[s:s + 3], mu[s:s + 3], logvar[s:s + 3], grey[s:s + 3])
    return acc.compute()


def test_grey_and_colour_split(crops):
    from train.data import grey_mask, to_nchw

    arr = to_nchw(crops[1])
    grey = torch.from_numpy(grey_mask(arr))
    x = torch.from_numpy(arr).float() / 255
    recon = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    out = _acc(recon, x, grey)
    per = psnr_per_image(recon, x).double()
    assert out["psnr"] == pytest.approx(float(per.mean()))
    assert out["psnr_grey"] == pytest.approx(float(per[grey].mean()))
    assert out["psnr_colour"] == pytest.approx(float(per[~grey].mean()))
    s = ssim_per_image(recon, x).double()
    assert out["ssim_grey"] == pytest.approx(float(s[grey].mean()))
    assert out["ssim_colour"] == pytest.approx(float(s[~grey].mean()))


def test_split_is_omitted_when_a_kind_is_absent():
    x = torch.rand(4, 3, 16, 16)
    out = _acc(x.clone(), x, torch.zeros(4, dtype=torch.bool))
    assert "psnr_colour" in out and "psnr_grey" not in out and "ssim_grey" not in out


def test_sharpness_ratio(crops):
    x = torch.from_numpy(crops[1]).permute(0, 3, 1, 2).float() / 255
    blurred = torch.from_numpy(np.stack([gaussian(im.numpy(), sigma=2.0, channel_axis=0) for im in x])).float()
    assert _acc(x.clone(), x, torch.zeros(len(x), dtype=torch.bool))["sharpness"] == pytest.approx(1.0)
    assert _acc(blurred, x, torch.zeros(len(x), dtype=torch.bool))["sharpness"] < 0.5


def test_active_units_counts_dims_with_variance_over_threshold():
    torch.manual_seed(0)
    mu = torch.zeros(500, 8)
    mu[:, :3] = torch.randn(500, 3)  # variance ~1
    mu[:, 3] = 0.05 * torch.randn(500)  # variance ~0.0025 < 0.01
    assert active_units(mu) == 3
    assert active_units(mu[:1]) == 0


def test_kl_dim_summary():
    s = kl_dim_summary(torch.tensor([0.0, 1.0, 2.0, 10.0, 3.0]))
    assert s == {"kl_dim_mean": 3.2, "kl_dim_median": 2.0, "kl_dim_max": 10.0, "kl_dim_min": 0.0}
