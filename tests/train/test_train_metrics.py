"""Validation metrics against scikit-image on the same arrays; grey/colour split; trivial PSNR baseline;
recon spread by hand; sharpness; active units."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from train.metrics import (
    PSNR_CAP_DB,
    ValAccumulator,
    active_units,
    gradient_similarity_per_image,
    kl_dim_summary,
    psnr_per_image,
    recon_spread,
    ssim_per_image,
    trivial_psnr_per_image,
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


# --- trivial baseline and input dependence ----------------------------------------------------------
# Two one-channel 2 x 2 images whose own mean colour is 0.1 and 0.4, each 0.1 away from every pixel:
# the trivial reconstruction has MSE 0.01 (20 dB) on both.
_X2 = torch.tensor([[0.0, 0.2, 0.0, 0.2], [0.3, 0.5, 0.3, 0.5]]).view(2, 1, 2, 2)
# SSIM (also computed by the accumulator) warns that its 11 px window does not fit a 2 px image.
_tiny_images = pytest.mark.filterwarnings("ignore:Skipping Gaussian Smoothing")


@_tiny_images
def test_trivial_psnr_by_hand():
    assert trivial_psnr_per_image(_X2).tolist() == pytest.approx([20.0, 20.0])
    out = _acc(_X2.clone(), _X2, torch.ones(2, dtype=torch.bool))
    assert out["psnr_trivial"] == pytest.approx(20.0)


def test_trivial_psnr_is_psnr_of_the_mean_colour_image(crops):
    x = torch.from_numpy(crops[1]).permute(0, 3, 1, 2).float() / 255
    mean_colour = x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    out = _acc(mean_colour, x, torch.zeros(len(x), dtype=torch.bool))
    # the two logged numbers are the same statistic: a model that outputs the mean colour ties the baseline
    assert out["psnr"] == pytest.approx(out["psnr_trivial"], abs=1e-4)
    ref = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x.double().numpy(), mean_colour.double().numpy())]
    assert out["psnr_trivial"] == pytest.approx(float(np.mean(ref)), rel=1e-5)


@_tiny_images
def test_constant_output_has_no_spread_and_known_psnr():
    recon = torch.full_like(_X2, 0.1)  # one output for every input
    out = _acc(recon, _X2, torch.ones(2, dtype=torch.bool))
    assert out["recon_spread"] == 0.0
    # image 1: errors +-0.1, MSE 0.01 -> 20 dB; image 2: errors 0.2 and 0.4, MSE 0.1 -> 10 dB
    assert out["psnr"] == pytest.approx(15.0)
    assert out["psnr_trivial"] == pytest.approx(20.0)


@pytest.mark.parametrize(
    "make_recon, expected",
    [
        (lambda x: x.clone(), 1.0),  # identity
        (lambda x: 0.5 * x + 0.25, 0.5),  # a * x + b -> |a|
        (lambda x: 1.0 - x, 1.0),  # inverted still depends on the input
        (lambda x: x.mean(0, keepdim=True).expand_as(x).clone(), 0.0),  # the average image for every input
    ],
)
def test_recon_spread_by_hand(crops, make_recon, expected):
    x = torch.from_numpy(crops[1]).permute(0, 3, 1, 2).float() / 255
    out = _acc(make_recon(x), x, torch.zeros(len(x), dtype=torch.bool))
    assert out["recon_spread"] == pytest.approx(expected, abs=1e-6)


def test_recon_spread_over_batches_equals_the_whole_set_in_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 16, 16, generator=g)
    recon = (0.3 * x + 0.2 * torch.rand(10, 3, 16, 16, generator=g)).clamp(0, 1)
    xn, rn = x.double().numpy(), recon.double().numpy()
    ref = np.sqrt(rn.var(axis=0).mean()) / np.sqrt(xn.var(axis=0).mean())  # population variance over images
    assert recon_spread(recon, x) == pytest.approx(ref, rel=1e-9)
    assert _acc(recon, x, torch.zeros(10, dtype=torch.bool))["recon_spread"] == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("x", [torch.rand(1, 3, 16, 16), torch.full((4, 3, 16, 16), 0.5)])
def test_recon_spread_is_omitted_when_inputs_do_not_vary(x):
    assert recon_spread(torch.rand_like(x), x) is None
    assert "recon_spread" not in _acc(torch.rand_like(x), x, torch.zeros(len(x), dtype=torch.bool))


def test_grad_similarity_on_flat_inputs():
    flat = torch.full((2, 3, 16, 16), 0.4)
    assert gradient_similarity_per_image(flat.clone(), flat).tolist() == [1.0, 1.0]
    noisy = (flat + 0.1 * torch.randn_like(flat)).clamp(0, 1)
    assert gradient_similarity_per_image(noisy, flat).max() < 0.01


def test_module_doctests():
    import train.metrics

    assert doctest.testmod(train.metrics).failed == 0
