"""ConvVAE: shapes for 64/128 px and 1/3 channels, latent up to 2048, AE mode deterministic."""

from __future__ import annotations

import pytest
import torch

from train.model import ConvVAE, num_stages


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(size, channels):
    torch.manual_seed(0)
    m = ConvVAE(channels=channels, image_size=size, latent_dim=16, base_channels=8)
    x = torch.rand(2, channels, size, size)
    recon, mu, logvar = m(x)
    assert recon.shape == x.shape
    assert mu.shape == logvar.shape == (2, 16)
    assert float(recon.detach().min()) >= 0.0 and float(recon.detach().max()) <= 1.0
    assert m.decode(mu).shape == x.shape


def test_latent_2048():
    m = ConvVAE(channels=3, image_size=64, latent_dim=2048, base_channels=8)
    recon, mu, _ = m(torch.rand(2, 3, 64, 64))
    assert mu.shape == (2, 2048) and recon.shape == (2, 3, 64, 64)


def test_ae_mode_is_deterministic_and_vae_mode_samples():
    torch.manual_seed(0)
    m = ConvVAE(channels=3, image_size=64, latent_dim=16, base_channels=8).train()
    x = torch.rand(3, 3, 64, 64)
    a, mu_a, _ = m(x, deterministic=True)
    b, mu_b, _ = m(x, deterministic=True)
    assert torch.equal(a, b) and torch.equal(mu_a, mu_b)
    assert torch.equal(a, m.decode(mu_a))  # z = mu exactly
    c, _, _ = m(x)
    d, _, _ = m(x)
    assert not torch.equal(c, d)  # reparameterised samples differ


@pytest.mark.parametrize("size, stages", [(32, 3), (64, 4), (128, 5), (256, 6)])
def test_num_stages(size, stages):
    assert num_stages(size) == stages


@pytest.mark.parametrize("size", [16, 48, 100])
def test_unsupported_size(size):
    with pytest.raises(ValueError, match="not a power of two"):
        num_stages(size)


def test_channels_must_be_1_or_3():
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ConvVAE(channels=4, image_size=64, latent_dim=8)
