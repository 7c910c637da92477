"""The models: the residual VAE's spatial latent layouts at every supported size, its shortcuts carrying
gradient, that it learns on a few real crops; the flat model kept behind ``arch = "flat"``."""

from __future__ import annotations

import pytest
import torch

from train.layout import latent_layout
from train.model import ConvVAE, FlatConvVAE, ResBlock, build_model, num_stages

SIZES = (32, 64, 128, 256)
LATENTS = (1, 3, 8, 16, 64, 100, 256, 512, 1024, 2048)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("latent_dim", LATENTS)
def test_latent_layout_holds_latent_dim_values(size, latent_dim):
    c, side = latent_layout(size, latent_dim)
    assert c * side * side == latent_dim
    assert side & (side - 1) == 0 and 1 <= side <= size // 4
    assert c >= 4 or side == 1
    assert c <= 256


@pytest.mark.parametrize("size, latent_dim, shape", [
    (64, 2048, (8, 16, 16)),  # the 16 x 16 x 8 = "latent dim 2048" at 64 px
    (64, 1024, (4, 16, 16)), (64, 512, (8, 8, 8)), (64, 256, (4, 8, 8)), (64, 8, (8, 1, 1)),
    (32, 2048, (32, 8, 8)), (128, 2048, (8, 16, 16)), (256, 2048, (8, 16, 16)),
])
def test_documented_layouts(size, latent_dim, shape):
    assert ConvVAE(channels=3, image_size=size, latent_dim=latent_dim, base_channels=4).latent_shape == shape


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("latent_dim", [8, 64, 2048])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(size, latent_dim, channels):
    torch.manual_seed(0)
    m = ConvVAE(channels=channels, image_size=size, latent_dim=latent_dim, base_channels=4)
    x = torch.rand(2, channels, size, size)
    recon, mu, logvar = m(x)
    assert recon.shape == x.shape
    assert mu.shape == logvar.shape == (2, latent_dim)  # flat, channel-major: KL and metrics count latent_dim values
    assert float(recon.detach().min()) >= 0.0 and float(recon.detach().max()) <= 1.0
    assert m.decode(mu).shape == x.shape
    assert torch.equal(m.decode(mu), m.decode(mu.view(2, *m.latent_shape)))  # the map and the vector decode alike


def test_explicit_latent_channels():
    m = ConvVAE(channels=3, image_size=64, latent_dim=256, base_channels=4, latent_channels=16)
    assert m.latent_shape == (16, 4, 4)
    assert ConvVAE(channels=3, image_size=64, latent_dim=256, base_channels=4, latent_channels=1).latent_shape == (1, 16, 16)


@pytest.mark.parametrize("size, latent_dim, channels, match", [
    (64, 257, 0, r"latent_dim 257 cannot be laid out as channels x side x side at 64 px .*choose 256 or 260"),
    (64, 1025, 0, r"choose 1024 or 1040"),
    (64, 2048, 3, r"cannot be laid out as 3 channels x side x side at 64 px"),
    (64, 2048, 2, r"side a power of two <= 16"),  # 2 x 32 x 32 would need a side above 64 / 4
])
def test_a_latent_that_cannot_be_laid_out_is_refused_in_one_line(size, latent_dim, channels, match):
    with pytest.raises(ValueError, match=match) as info:
        ConvVAE(channels=3, image_size=size, latent_dim=latent_dim, latent_channels=channels)
    assert "\n" not in str(info.value)


def test_config_refuses_the_layout_in_one_line():
    from train.config import TrainConfig
    from vaediag.errors import ConfigError

    with pytest.raises(ConfigError, match="latent_dim 257 cannot be laid out"):
        TrainConfig(image_size=64, latent_dim=257)
    TrainConfig(image_size=0, latent_dim=257)  # size unknown until the data is read: checked then
    TrainConfig(image_size=64, latent_dim=257, arch="flat")  # the flat model takes any size
    with pytest.raises(ConfigError, match="arch 'vq' is unknown"):
        TrainConfig(arch="vq")


def test_ae_mode_is_deterministic_and_vae_mode_samples():
    torch.manual_seed(0)
    m = ConvVAE(channels=3, image_size=64, latent_dim=16, base_channels=8).train()
    torch.nn.init.normal_(m.decoder[-1].weight, std=0.05)  # untrained, the output is grey whatever z is
    x = torch.rand(3, 3, 64, 64)
    a, mu_a, _ = m(x, deterministic=True)
    b, mu_b, _ = m(x, deterministic=True)
    assert torch.equal(a, b) and torch.equal(mu_a, mu_b)
    assert torch.equal(a, m.decode(mu_a))  # z = mu exactly
    c, _, _ = m(x)
    d, _, _ = m(x)
    assert not torch.equal(c, d)  # reparameterised samples differ


def test_gradient_reaches_every_parameter_and_flows_through_the_skips():
    torch.manual_seed(0)
    m = ConvVAE(channels=3, image_size=64, latent_dim=2048, base_channels=8)
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(m(x)[0], torch.full_like(x, 0.5))  # untrained: flat grey (the last conv starts at zero)
    torch.nn.init.normal_(m.decoder[-1].weight, std=0.05)  # as after a first step, so every layer gets gradient
    recon, mu, logvar = m(x)
    (recon.sub(x).abs().mean() + 1e-3 * mu.pow(2).mean() + 1e-3 * logvar.mean()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"

    # A residual block passes the gradient through its skip even when its own branch is dead.
    block = ResBlock(8)
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.conv2.bias)
    h = torch.rand(1, 8, 4, 4, requires_grad=True)
    block(h).sum().backward()
    assert torch.equal(h.grad, torch.ones_like(h))

    # The parameter-free shortcuts alone carry the signal from pixels to the latent and back: with every conv
    # zeroed except the first (pixels -> features) and the last (features -> pixels), mu still depends on
    # the input and the reconstruction on z, through residuals, pixel (un)shuffles and channel means/repeats.
    keep = {id(m.encoder[0]), id(m.decoder[-1])}
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv2d) and id(mod) not in keep:
            torch.nn.init.zeros_(mod.weight)
            torch.nn.init.zeros_(mod.bias)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    mu, _ = m.encode(x)
    mu.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0
    z = torch.randn(2, 2048, requires_grad=True)
    m.decode(z).sum().backward()
    assert z.grad.abs().sum() > 0


def _real_batch(crops, n=8):
    return torch.from_numpy(crops[0][:n]).permute(0, 3, 1, 2).float() / 255


@pytest.mark.slow
def test_a_tiny_model_learns_a_real_batch(crops):
    """Loss falls clearly within a few dozen steps: to under half its start, and below the L1 of each image's
    own mean colour (what a model that ignores its input can reach at best)."""
    torch.manual_seed(0)
    x = _real_batch(crops, n=4)
    m = ConvVAE(channels=3, image_size=64, latent_dim=2048, base_channels=8)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        recon, _, _ = m(x, deterministic=True)
        loss = (recon - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    mean_colour = (x - x.mean((2, 3), keepdim=True)).abs().mean()  # L1 of each image's own mean colour
    assert losses[-1] < 0.5 * losses[0], losses
    assert losses[-1] < 0.8 * float(mean_colour), (losses[-1], float(mean_colour))


# --- the flat model, behind arch = "flat" ----------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_flat_shapes(size, channels):
    torch.manual_seed(0)
    m = build_model(arch="flat", channels=channels, image_size=size, latent_dim=16, base_channels=8)
    assert isinstance(m, FlatConvVAE)
    x = torch.rand(2, channels, size, size)
    recon, mu, logvar = m(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 16)
    assert m.decode(mu).shape == x.shape


def test_flat_state_dict_keys_are_the_seeds():
    """The flat model keeps its module names, so checkpoints written before the residual model load."""
    keys = set(FlatConvVAE(channels=3, image_size=64, latent_dim=8, base_channels=8).state_dict())
    assert {"to_mu.weight", "to_logvar.weight", "from_z.weight", "encoder.0.weight", "decoder.4.weight"} <= keys


def test_build_model_default_is_the_residual_model():
    m = build_model(channels=3, image_size=64, latent_dim=64, base_channels=4)
    assert isinstance(m, ConvVAE) and m.latent_shape == (4, 4, 4)
    with pytest.raises(ValueError, match="arch 'vq' is unknown"):
        build_model(arch="vq", channels=3, image_size=64, latent_dim=8)


@pytest.mark.parametrize("size, stages", [(32, 3), (64, 4), (128, 5), (256, 6)])
def test_num_stages(size, stages):
    assert num_stages(size) == stages


@pytest.mark.parametrize("size", [16, 48, 100])
def test_unsupported_size(size):
    with pytest.raises(ValueError, match="not a power of two"):
        num_stages(size)
    with pytest.raises(ValueError, match="not a power of two"):
        ConvVAE(channels=3, image_size=size, latent_dim=8)


def test_channels_must_be_1_or_3():
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ConvVAE(channels=4, image_size=64, latent_dim=8)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        FlatConvVAE(channels=4, image_size=64, latent_dim=8)
