"""The perceptual distance: the wheel's ST-LPIPS VGG16 loaded by torch alone; torchvision-format PATH; none."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from skimage.filters import gaussian

from train.config import PERCEPTUAL_LAYERS
from train.perceptual import _map_stlpips, load_perceptual, stlpips_weights_path
from vaediag.errors import InputError

SIGMAS = (0.5, 1.0, 2.0, 4.0)


@pytest.fixture(scope="module")
def full():
    dist, backbone = load_perceptual("auto", PERCEPTUAL_LAYERS)
    return dist, backbone


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.from_numpy(np.stack([gaussian(im.numpy(), sigma=sigma, channel_axis=0) for im in x])).float()


@pytest.fixture(scope="module")
def real(crops):
    return torch.from_numpy(crops[1]).permute(0, 3, 1, 2).float() / 255


def test_auto_is_the_wheels_st_lpips_with_heads(full):
    dist, backbone = full
    assert backbone.lpips_heads and "ST-LPIPS" in backbone.description and "vgg_shift_tolerant.pth" in backbone.path
    # Every trunk tensor and every LPIPS head in the file is used.
    sd = torch.load(stlpips_weights_path(), map_location="cpu", weights_only=True)
    trunk, heads = _map_stlpips(sd)
    assert set(trunk) == set(dist.features.state_dict())
    assert sorted(heads) == ["0", "1", "2", "3", "4"]
    for k, v in trunk.items():
        assert torch.equal(dist.features.state_dict()[k], v)
    assert torch.equal(dist.head2, heads["2"])
    assert torch.equal(dist.shift, sd["scaling_layer.shift"])


def test_neither_stlpips_modules_nor_torchvision_are_imported(full):
    assert "stlpips_pytorch" not in sys.modules
    assert "torchvision" not in sys.modules


@pytest.mark.slow
def test_zero_on_identical_and_grows_with_blur(full, real):
    dist, _ = full
    with torch.no_grad():
        assert float(dist(real, real)) == pytest.approx(0.0, abs=1e-6)
        d = [float(dist(_blur(real, s), real)) for s in SIGMAS]
    assert all(a < b for a, b in zip(d, d[1:])), d
    assert d[0] > 0.005 and d[-1] > 0.3  # heavy blur is far, as in the seed's 0.53-0.71


@pytest.mark.slow
def test_grey_is_repeated_to_three_channels(full, real):
    dist, _ = full
    g = real[:, :1]
    with torch.no_grad():
        assert float(dist(_blur(g, 2.0), g)) == pytest.approx(float(dist(_blur(g, 2.0).repeat(1, 3, 1, 1), g.repeat(1, 3, 1, 1))), rel=1e-5)


def test_fewer_layers_cut_the_trunk():
    short, b = load_perceptual("auto", ("relu1_2",))
    assert len(short.features) == 4 and "layers relu1_2" in b.description


def test_gradient_reaches_the_reconstruction_only(full, real):
    dist, _ = full
    r = _blur(real[:2], 1.0).requires_grad_(True)
    dist(r, real[:2]).backward()
    assert r.grad is not None and float(r.grad.abs().sum()) > 0
    assert all(p.grad is None for p in dist.parameters())


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """A torchvision-format VGG16 state dict (features.N.*), made from the wheel's conv weights."""
    sd = torch.load(stlpips_weights_path(), map_location="cpu", weights_only=True)
    trunk, _ = _map_stlpips(sd)
    st_convs = sorted({int(k.split(".")[0]) for k in trunk if k.endswith(".weight")})
    tv_convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's VGG16 conv indices
    out = {}
    for st, tv in zip(st_convs, tv_convs):
        out[f"features.{tv}.weight"] = trunk[f"{st}.weight"]
        out[f"features.{tv}.bias"] = trunk[f"{st}.bias"]
    out["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    p = tmp_path_factory.mktemp("tv") / "vgg16.pth"
    torch.save(out, p)
    return p


@pytest.mark.slow
def test_path_accepts_a_torchvision_state_dict(torchvision_file, real):
    dist, backbone = load_perceptual(str(torchvision_file), PERCEPTUAL_LAYERS)
    assert "torchvision-format" in backbone.description and not backbone.lpips_heads
    with torch.no_grad():
        d = [float(dist(_blur(real, s), real)) for s in SIGMAS]
    assert all(a < b for a, b in zip(d, d[1:])), d


def test_none_disables(full):
    dist, backbone = load_perceptual("none", PERCEPTUAL_LAYERS)
    assert dist is None and "disabled" in backbone.description


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "do not exist"),
        (b"not a torch file", "cannot be read with torch.load"),
        ({"weight": torch.zeros(3)}, "not a VGG16 trunk, missing features.0.bias, features.0.weight"),
        ({"features.0.weight": torch.zeros(64, 3, 5, 5), "features.0.bias": torch.zeros(64),
          "features.2.weight": torch.zeros(64, 64, 3, 3), "features.2.bias": torch.zeros(64)}, "has shape"),
        ([1, 2, 3], "not a state dict"),
    ],
)
def test_bad_path(tmp_path, content, match):
    p = tmp_path / "w.pth"
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        torch.save(content, p)
    with pytest.raises(InputError, match=match):
        load_perceptual(str(p), ("relu1_2",))
