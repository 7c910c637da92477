"""Loss terms: zero on identical images, known values on known pairs, the documented weight map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train.losses import (
    CENTER_SIGMA,
    center_weight_map,
    center_weighted_l1,
    edge_loss,
    kl_divergence,
    kl_per_dim,
    loss_terms,
    ssim_loss,
    weighted_total,
)


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, 3, 32, 32)


@pytest.mark.parametrize("size", [8, 64, 128])
@pytest.mark.parametrize("c", [1.0, 3.0, 10.0])
def test_weight_map_is_the_documented_formula(size, c):
    m = center_weight_map(size, center_weight=c)[0, 0].numpy().astype(np.float64)
    i = np.arange(size)
    r2 = (i[:, None] - (size - 1) / 2) ** 2 + (i[None, :] - (size - 1) / 2) ** 2
    g = 1 + (c - 1) * np.exp(-r2 / (2 * (CENTER_SIGMA * size) ** 2))
    np.testing.assert_allclose(m, g / g.mean(), rtol=1e-6)
    assert m.mean() == pytest.approx(1.0, abs=1e-6)
    assert m.max() / m.min() == pytest.approx(g.max() / g.min(), rel=1e-6)


def test_weight_map_one_is_plain_l1(x):
    y = torch.rand_like(x)
    assert float(center_weighted_l1(y, x, center_weight_map(32, center_weight=1.0))) == pytest.approx(
        float((y - x).abs().mean()), rel=1e-6)


@pytest.mark.parametrize("c", [1.0, 3.0, 10.0])
def test_l1_known_value_uniform_error(x, c):
    assert float(center_weighted_l1(x + 0.1, x, center_weight_map(32, center_weight=c))) == pytest.approx(0.1, rel=1e-5)


def test_l1_centre_error_costs_more_than_corner_error():
    base = torch.zeros(1, 1, 32, 32)
    wm = center_weight_map(32, center_weight=3.0)
    centre, corner = base.clone(), base.clone()
    centre[..., 14:18, 14:18] = 1.0
    corner[..., :4, :4] = 1.0
    assert float(center_weighted_l1(centre, base, wm)) > 2.5 * float(center_weighted_l1(corner, base, wm))


def test_each_loss_is_zero_on_identical_images(x):
    wm = center_weight_map(32, center_weight=3.0)
    assert float(center_weighted_l1(x, x, wm)) == 0.0
    assert float(ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(edge_loss(x, x)) == 0.0
    assert float(kl_divergence(torch.zeros(4, 8), torch.zeros(4, 8))) == 0.0


def test_ssim_loss_known_value_constant_images():
    # Constant images: variances 0, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.5, 0.25, 0.01**2
    expected = 1 - (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim_loss(torch.full((1, 1, 32, 32), b), torch.full((1, 1, 32, 32), a))
    assert float(got) == pytest.approx(expected, abs=1e-5)


def test_ssim_uses_data_range_one(x):
    # With pytorch-msssim's default data_range=255 this pair would look nearly identical (loss ~ 0).
    assert float(ssim_loss(torch.rand_like(x), x)) > 0.5


def test_edge_loss_known_value_ramp():
    x = torch.zeros(1, 1, 8, 8)
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8) * 0.05
    assert float(edge_loss(ramp, x)) == pytest.approx(0.05, rel=1e-6)
    assert float(edge_loss(ramp.transpose(-1, -2), x)) == pytest.approx(0.05, rel=1e-6)
    assert float(edge_loss(x + 0.3, x)) == pytest.approx(0.0, abs=1e-7)  # brightness shift: no edge change


@pytest.mark.parametrize(
    "mu, logvar, per_dim",
    [
        (1.0, 0.0, 0.5),  # 0.5 * mu^2
        (0.0, math.log(2.0), 0.5 * (2.0 - 1.0 - math.log(2.0))),
        (2.0, math.log(0.5), 0.5 * (4.0 + 0.5 - 1.0 - math.log(0.5))),
    ],
)
def test_kl_known_values_sum_over_dims_mean_over_batch(mu, logvar, per_dim):
    d = 10
    m, lv = torch.full((4, d), mu), torch.full((4, d), logvar)
    assert float(kl_divergence(m, lv)) == pytest.approx(d * per_dim, rel=1e-5)
    np.testing.assert_allclose(kl_per_dim(m, lv).numpy(), per_dim, rtol=1e-5)


def test_kl_per_dim_sums_to_kl():
    torch.manual_seed(1)
    mu, lv = torch.randn(5, 12), torch.randn(5, 12)
    assert float(kl_per_dim(mu, lv).sum()) == pytest.approx(float(kl_divergence(mu, lv)), rel=1e-5)


def test_weighted_total_and_loss_terms(x):
    wm = center_weight_map(32, center_weight=3.0)
    raw = loss_terms(x + 0.1, x, torch.ones(2, 4), torch.zeros(2, 4), weight_map=wm, perceptual=None)
    assert list(raw) == ["recon", "ssim_loss", "edge", "kl"]  # no perceptual when disabled
    total, weighted = weighted_total(raw, {"recon": 2.0, "ssim_loss": 0.5, "edge": 0.1, "kl": 1e-3})
    assert float(weighted["recon"]) == pytest.approx(0.2, rel=1e-5)
    assert float(weighted["kl"]) == pytest.approx(2e-3, rel=1e-5)
    assert float(total) == pytest.approx(sum(float(v) for v in weighted.values()), rel=1e-6)
    with_p = loss_terms(x, x, torch.ones(2, 4), torch.zeros(2, 4), weight_map=wm, perceptual=lambda a, b: (a - b).abs().mean())
    assert list(with_p) == ["recon", "perceptual", "ssim_loss", "edge", "kl"]


def test_terms_of_weight_zero_are_logged_without_a_backward_pass(x):
    wm = center_weight_map(x.shape[-1], center_weight=3.0)
    recon = (x + 0.1).clamp(0, 1).requires_grad_(True)
    mu, logvar = torch.ones(2, 4, requires_grad=True), torch.zeros(2, 4, requires_grad=True)
    full = loss_terms(recon, x, mu, logvar, weight_map=wm, perceptual=None)
    part = loss_terms(recon, x, mu, logvar, weight_map=wm, perceptual=None, no_grad=["ssim_loss", "edge", "kl"])
    assert full.keys() == part.keys()
    for k in full:
        assert torch.equal(full[k].detach(), part[k]), k  # the same values for the logs
    assert part["recon"].requires_grad and not any(part[k].requires_grad for k in ("ssim_loss", "edge", "kl"))
