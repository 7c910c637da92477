"""Perceptual distance on VGG16 features, offline, with weights loaded by torch alone.

Backbones (``--perceptual-weights``):

``auto``
    The shift-tolerant VGG16 of ST-LPIPS (Ghildyal & Liu, ECCV 2022; BSD-2), shipped in the
    ``stlpips-pytorch`` wheel as ``stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth``. The file is
    located with ``importlib.util.find_spec`` (the package's own modules import torchvision and IPython,
    so they are never imported) and read with ``torch.load(weights_only=True)``. It holds a complete
    LPIPS model: ``scaling_layer.{shift,scale}`` (input normalisation), ``net.sliceK.N.*`` (the 13 conv
    layers of VGG16, where every 2x2 max-pool is a stride-1 max-pool followed by a [1,2,1]x[1,2,1]/16
    blur with stride 2 on a reflection-padded map, whose ``filt`` kernels are stored too) and
    ``lin0..lin4.model.1.weight`` (the non-negative 1x1 "linear heads" LPIPS learned from human
    judgements). All of it is used: this is the real ST-LPIPS distance.
    When the wheel is absent, ``auto`` falls back to a torchvision VGG16 file in torch's hub cache.

``PATH``
    A torchvision-format VGG16 state dict (``features.N.weight`` / ``features.N.bias``; ``classifier.*``
    is ignored), the plain VGG16 trunk with 2x2 max-pools. It has no LPIPS heads, so every channel
    weighs 1 (LPIPS's "baseline" variant).

``none``
    No perceptual term; the loop says so loudly and records it.

The distance (LPIPS, Zhang et al. 2018): inputs in [0, 1] (grey repeated to 3 channels) are mapped to
[-1, 1] and normalised by ``(x - shift) / scale`` (the ImageNet statistics in that range:
shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450)); at each chosen layer the activations
are unit-normalised across channels, the squared difference is weighted per channel by the linear head
(or by 1) and summed over channels, averaged over pixels, and the layers are summed:

    d(x, y) = sum_l mean_hw( sum_c w_lc * (f_l(x)_chw / |f_l(x)_hw| - f_l(y)_chw / |f_l(y)_hw|)**2 )

averaged over the batch. The trunk is cut after the deepest chosen layer, so fewer layers cost less.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vaediag.errors import ConfigError, InputError
from vaediag.safeio import is_regular_file

from train.config import PERCEPTUAL_LAYERS

__all__ = ["PerceptualDistance", "load_perceptual", "stlpips_weights_path", "Backbone", "LPIPS_SHIFT", "LPIPS_SCALE"]

STLPIPS_FILE = ("weights", "vST0.0", "vgg_shift_tolerant.pth")
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# VGG16 configuration "D": conv widths, "M" = 2x2 down-sampling.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


@dataclass(frozen=True)
class Backbone:
    """What ran: a human-readable description plus the file it came from."""

    description: str
    path: str | None
    lpips_heads: bool


def stlpips_weights_path() -> Path | None:
    """The shift-tolerant VGG16 file inside the installed stlpips-pytorch wheel, without importing it."""
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root).joinpath(*STLPIPS_FILE)
        if p.is_file():
            return p
    return None


def _hub_vgg16() -> Path | None:
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    hits = sorted(glob.glob(str(hub / "vgg16-*.pth")))
    return Path(hits[0]) if hits else None


class _BlurPool(nn.Module):
    """Stride-2 [1,2,1]x[1,2,1]/16 blur on a reflection-padded map (ST-LPIPS's anti-aliased pooling)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _trunk(*, shift_tolerant: bool, depth: int) -> tuple[nn.Sequential, list[int]]:
    """VGG16 features with torchvision's (or ST-LPIPS's) module indices, up to layer ``depth`` (1..5).

    Returns the trunk and the indices of the ReLU modules whose outputs are relu1_2 ... relu5_3.
    """
    layers: list[nn.Module] = []
    taps: list[int] = []
    cin, block = 3, 0
    for v in _VGG16:
        if v == "M":
            taps.append(len(layers) - 1)
            block += 1
            if block == depth:
                break
            if shift_tolerant:
                layers += [nn.MaxPool2d(2, stride=1), _BlurPool(cin)]
            else:
                layers += [nn.MaxPool2d(2, stride=2)]
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    else:
        taps.append(len(layers) - 1)
    return nn.Sequential(*layers), taps


def _map_stlpips(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``net.sliceK.N.weight`` -> ``N.weight`` (trunk), ``linK.model.1.weight`` -> heads ``K``."""
    trunk, heads = {}, {}
    for k, v in sd.items():
        if k.startswith("net.slice"):
            _, _, rest = k.split(".", 2)
            trunk[rest] = v
        elif k.startswith("lin") and k.endswith(".model.1.weight"):
            heads[k.split(".", 1)[0][3:]] = v
    return trunk, heads


class PerceptualDistance(nn.Module):
    """LPIPS-style distance on (a prefix of) a frozen VGG16. Call ``d(recon, target)`` -> scalar."""

    def __init__(self, *, trunk_state: dict[str, torch.Tensor], layers: tuple[str, ...], shift_tolerant: bool,
                 heads: dict[str, torch.Tensor] | None = None, shift: torch.Tensor | None = None,
                 scale: torch.Tensor | None = None, source: str = "", key_prefix: str = "") -> None:
        super().__init__()
        bad = [name for name in layers if name not in PERCEPTUAL_LAYERS]
        if bad or not layers:
            raise ConfigError(f"perceptual layers {list(layers)} invalid (choose from {', '.join(PERCEPTUAL_LAYERS)})")
        self.layer_ids = [PERCEPTUAL_LAYERS.index(name) for name in layers]
        depth = max(self.layer_ids) + 1
        self.features, taps = _trunk(shift_tolerant=shift_tolerant, depth=depth)
        self.taps = [taps[i] for i in self.layer_ids]
        own = self.features.state_dict()
        wanted = {k: v for k, v in trunk_state.items() if k in own}
        missing = [key_prefix + k for k in sorted(set(own) - set(wanted), key=_natural)]
        if missing:
            raise InputError(f"perceptual weights {source}: not a VGG16 trunk, missing {', '.join(missing[:3])}"
                             f"{' ...' if len(missing) > 3 else ''}")
        for k, v in wanted.items():
            if v.shape != own[k].shape:
                raise InputError(f"perceptual weights {source}: {key_prefix}{k} has shape {tuple(v.shape)}, "
                                 f"VGG16 needs {tuple(own[k].shape)}")
        self.features.load_state_dict(wanted, strict=True)
        widths = [64, 128, 256, 512, 512]
        for i in self.layer_ids:
            w = (heads or {}).get(str(i))
            if w is None:
                w = torch.ones(1, widths[i], 1, 1)
            elif w.shape != (1, widths[i], 1, 1):
                raise InputError(f"perceptual weights {source}: LPIPS head {i} has shape {tuple(w.shape)}")
            self.register_buffer(f"head{i}", w.float().clone())
        self.register_buffer("shift", (shift if shift is not None else torch.tensor(LPIPS_SHIFT)).float().view(1, 3, 1, 1).clone())
        self.register_buffer("scale", (scale if scale is not None else torch.tensor(LPIPS_SCALE)).float().view(1, 3, 1, 1).clone())
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualDistance":
        return super().train(False)  # frozen: no dropout/norm state to switch, keep it in eval

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (2.0 * x - 1.0 - self.shift) / self.scale

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, want = [], set(self.taps)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                out.append(x)
        return out

    @staticmethod
    def _unit(f: torch.Tensor) -> torch.Tensor:
        return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

    def target_features(self, target: torch.Tensor) -> list[torch.Tensor]:
        """The target's trunk features (no graph), as :meth:`per_image` computes them: a caller that meets
        the same targets again (the val set, every epoch) keeps them and passes them back."""
        with torch.no_grad():
            return self._taps(self._prepare(target))

    def per_image(self, recon: torch.Tensor, target: torch.Tensor, *,
                  target_features: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Distance per image, shape ``(N,)``. Target features carry no graph (they need no gradient);
        ``target_features`` are :meth:`target_features` of ``target``, computed before (then the trunk runs
        on the reconstruction alone: the same numbers at half the cost).

        The trunk runs in the caller's autocast (``--precision bf16``: its convolutions in bfloat16); the
        unit normalisation, the squared differences and the sums over channels and pixels always run in
        float32 with autocast off (a no-op for float32 features)."""
        ft = target_features if target_features is not None else self.target_features(target)
        fr = self._taps(self._prepare(recon))
        with torch.autocast(recon.device.type, enabled=False):
            total = recon.new_zeros(recon.shape[0], dtype=torch.float32)
            for a, b, i in zip(fr, ft, self.layer_ids):
                diff = (self._unit(a.float()) - self._unit(b.float())).pow(2)
                total = total + (diff * getattr(self, f"head{i}")).sum(1).mean((1, 2))
        return total

    def forward(self, recon: torch.Tensor, target: torch.Tensor, *,
                target_features: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.per_image(recon, target, target_features=target_features).mean()


def _natural(key: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.exists() and not is_regular_file(path):  # a FIFO would block torch.load forever, a device never ends
        raise InputError(f"perceptual weights {str(path)!r} are not a regular file; pass a torchvision VGG16 "
                         f"state dict, 'auto' or 'none'")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"perceptual weights {str(path)!r} do not exist; pass a torchvision VGG16 "
                         f"state dict, 'auto' or 'none'") from None
    except Exception as exc:  # pickle/zip errors of many kinds: one line
        raise InputError(f"perceptual weights {path} cannot be read with torch.load(weights_only=True): "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"perceptual weights {path} are not a state dict of tensors")
    return sd


def load_perceptual(spec: str, layers: tuple[str, ...]) -> tuple[PerceptualDistance | None, Backbone]:
    """Build the distance for ``--perceptual-weights`` = ``spec`` (auto | none | PATH); None for 'none'.

    Raises:
        ConfigError: ``auto`` finds no backbone.
        InputError: ``PATH`` is missing, unreadable or not a VGG16 state dict.
    """
    layer_text = ",".join(layers)
    if spec == "none":
        return None, Backbone("none: perceptual term disabled (--perceptual-weights none)", None, False)
    if spec == "auto":
        path = stlpips_weights_path()
        if path is None:
            hub = _hub_vgg16()
            if hub is None:
                raise ConfigError("no perceptual backbone found: pip install stlpips-pytorch (ships VGG16 weights), "
                                  "pass --perceptual-weights PATH to a torchvision VGG16 state dict, "
                                  "or --perceptual-weights none")
            return _from_torchvision(hub, layers, layer_text)
        sd = _load_state(path)
        trunk, heads = _map_stlpips(sd)
        dist = PerceptualDistance(trunk_state=trunk, layers=layers, shift_tolerant=True, heads=heads,
                                  shift=sd.get("scaling_layer.shift"), scale=sd.get("scaling_layer.scale"),
                                  source=str(path))
        used_heads = all(str(i) in heads for i in dist.layer_ids)
        desc = (f"ST-LPIPS shift-tolerant VGG16 (stlpips-pytorch vST0.0, {path.name}), "
                f"{'LPIPS linear heads' if used_heads else 'unit channel weights'}, layers {layer_text}")
        return dist, Backbone(desc, str(path), used_heads)
    return _from_torchvision(Path(spec), layers, layer_text)


def _from_torchvision(path: Path, layers: tuple[str, ...], layer_text: str) -> tuple[PerceptualDistance, Backbone]:
    sd = _load_state(path)
    trunk = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    dist = PerceptualDistance(trunk_state=trunk, layers=layers, shift_tolerant=False, source=str(path),
                              key_prefix="features.")
    desc = f"torchvision-format VGG16 ({path}), unit channel weights (LPIPS baseline), layers {layer_text}"
    return dist, Backbone(desc, str(path.resolve()), False)
