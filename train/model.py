"""The models: a residual autoencoder with a spatial latent (``arch = "resnet"``, the default) and the seed's
flat-vector conv VAE (``arch = "flat"``, kept so that its checkpoints resume), behind one surface::

    recon, mu, logvar = model(x)                      # x: (N, C, S, S) in [0, 1]
    recon, mu, logvar = model(x, deterministic=True)  # z = mu: Option B (the AE) and every evaluation

``mu`` and ``logvar`` are ``(N, latent_dim)`` for both models: the residual model's latent map
``(N, channels, side, side)`` is flattened channel-major (``mu.view(N, *model.latent_shape)`` gives the map back),
so the KL (summed over latent values, mean over the batch), the KL per dimension, active units and the KL
histogram count the same ``latent_dim`` values the user asked for. ``decode`` takes either form.

Residual model (``ConvVAE``), for an ``S x S`` image and the latent layout ``channels x side x side`` of
:func:`train.layout.latent_layout` (``f = S / side`` is the down-sampling factor, ``n = log2 f`` stages)::

    encoder: conv3x3 C -> w0 | for i in 0..n-1: [ResBlock(w_i) if i > 0], Down(w_i -> w_i+1) | ResBlock(w_n)
             | GroupNorm, SiLU, conv3x3 -> 2 x channels (mu, logvar)        (+ shortcut into mu)
    decoder: conv3x3 channels -> w_n (+ shortcut) | ResBlock(w_n) | for i in n-1..0: Up(w_i+1 -> w_i),
             [ResBlock(w_i) if i > 0] | GroupNorm, SiLU, conv3x3 w0 -> C (zero-initialised), + 0.5,
             clamp to [0, 1] (straight-through)

with widths ``w_i = base_channels * 2**i`` capped at ``4 * base_channels``. ``ResBlock(w)`` is
``x + conv3x3(SiLU(GroupNorm(conv3x3(SiLU(GroupNorm(x))))))``. Every change of resolution has a parameter-free
shortcut beside its conv, as in DC-AE (Chen et al. 2024, "residual autoencoding"): ``Down`` adds the input
rearranged space-to-channel (pixel unshuffle, 4x the channels) and averaged in groups down to ``w_i+1``
channels; ``Up`` adds the input's channels repeated up to ``4 w_i`` before the pixel shuffle; ``mu`` gets the
last features averaged down to the latent channels, and the decoder's first map the latent repeated up to
``w_n`` channels (each shortcut is left out where the channel counts do not divide). So a signal can run from
pixels to latent and back through shortcuts and residuals alone, and the model starts near a patch-wise linear
code instead of having to discover one. Measured on the demo data (64 px, 96 crops, latent 8 x 16 x 16,
16 base channels, batch 8, Adam 1e-3, plain L1, one CPU thread): val PSNR after 60 CPU-s was 22.9 dB without
the shortcuts, 25.0 dB with them, 27.2 dB with them and a linear output instead of a sigmoid (which learns
slowly near 0 and 1). The output clamp keeps reconstructions in [0, 1] while its straight-through gradient
stays that of the identity. There is no residual block at full resolution, where a block costs the most:
without them a step is a third cheaper and val PSNR after 150 CPU-s (cosine schedule) rose from 30.2 to
31.7 dB. ``python -m bench reference`` measures the model in our trainer against a minimal loop.

GroupNorm rather than BatchNorm: statistics per image behave the same under DistributedDataParallel, for any
batch size, and in eval mode (``gcd(channels, 8)`` groups, so any width works).

Option B of the seed (a plain autoencoder) is ``deterministic=True``: ``z = mu``; the loop sets the KL weight to
0 with it. Evaluation always uses ``z = mu``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.layout import latent_layout

__all__ = ["ConvVAE", "FlatConvVAE", "ResBlock", "build_model", "reparameterize", "num_stages", "ARCHS"]

ARCHS = ("resnet", "flat")

# logvar is clamped so exp(logvar) neither overflows nor underflows in float32 early in training.
_LOGVAR_RANGE = (-30.0, 20.0)


def num_stages(image_size: int) -> int:
    """Down-sampling stages of the flat model, from ``image_size`` to its 4 x 4 bottleneck map."""
    if image_size < 32 or image_size & (image_size - 1):
        raise ValueError(f"image_size {image_size} is not a power of two >= 32")
    return int(math.log2(image_size // 4))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``z = mu + sigma * eps`` with ``eps ~ N(0, I)`` (the gradient flows through mu and logvar)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def build_model(*, arch: str = "resnet", channels: int, image_size: int, latent_dim: int, base_channels: int = 32,
                latent_channels: int = 0) -> nn.Module:
    """The model a config asks for (``arch``: resnet or flat; ``latent_channels`` is the resnet's only)."""
    if arch == "resnet":
        return ConvVAE(channels=channels, image_size=image_size, latent_dim=latent_dim,
                       base_channels=base_channels, latent_channels=latent_channels)
    if arch == "flat":
        return FlatConvVAE(channels=channels, image_size=image_size, latent_dim=latent_dim,
                           base_channels=base_channels)
    raise ValueError(f"arch {arch!r} is unknown (choose {', '.join(ARCHS)})")


# --------------------------------------------------------------------------------------------------
# The residual model.


def _gnorm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=math.gcd(ch, 8), num_channels=ch)


def _channel_mean(x: torch.Tensor, cout: int) -> torch.Tensor | None:
    """``x`` with its channels averaged in consecutive groups down to ``cout`` (None when they do not divide)."""
    n, c, h, w = x.shape
    if c == cout:
        return x
    if c % cout:
        return None
    return x.view(n, cout, c // cout, h, w).mean(2)


def _channel_repeat(x: torch.Tensor, cout: int) -> torch.Tensor | None:
    """``x`` with each channel repeated up to ``cout`` channels (None when they do not divide)."""
    c = x.shape[1]
    if c == cout:
        return x
    if cout % c:
        return None
    return x.repeat_interleave(cout // c, dim=1)


class ResBlock(nn.Module):
    """``x + conv(SiLU(GroupNorm(conv(SiLU(GroupNorm(x))))))``, 3 x 3 convs, same width in and out."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _gnorm(ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2, self.conv2 = _gnorm(ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class _Down(nn.Module):
    """Stride-2 conv plus the space-to-channel shortcut (pixel unshuffle, channel groups averaged)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.cout = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _channel_mean(F.pixel_unshuffle(x, 2), self.cout)
        h = self.conv(x)
        return h if s is None else h + s


class _Up(nn.Module):
    """Conv to 4x the output channels plus the channel-repeat shortcut, then pixel shuffle (no checkerboard)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 4 * cout, 3, padding=1)
        self.cout = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _channel_repeat(x, 4 * self.cout)
        h = self.conv(x)
        return F.pixel_shuffle(h if s is None else h + s, 2)


class ConvVAE(nn.Module):
    """The residual VAE with a spatial latent (module docstring); ``latent_dim`` values in all.

    >>> m = ConvVAE(channels=3, image_size=64, latent_dim=2048, base_channels=8)
    >>> m.latent_shape
    (8, 16, 16)
    >>> recon, mu, logvar = m(torch.rand(2, 3, 64, 64))
    >>> tuple(recon.shape), tuple(mu.shape)
    ((2, 3, 64, 64), (2, 2048))
    """

    def __init__(self, *, channels: int, image_size: int, latent_dim: int, base_channels: int = 32,
                 latent_channels: int = 0) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if image_size < 32 or image_size & (image_size - 1):
            raise ValueError(f"image_size {image_size} is not a power of two >= 32")
        zc, side = latent_layout(image_size, latent_dim, latent_channels)
        self.channels, self.image_size, self.latent_dim = channels, image_size, latent_dim
        self.latent_shape = (zc, side, side)
        n = int(math.log2(image_size // side))
        w = [min(base_channels * 2**i, base_channels * 4) for i in range(n + 1)]
        self.widths = tuple(w)

        # No residual block at full resolution (module docstring: it costs the most and was worth the least).
        enc: list[nn.Module] = [nn.Conv2d(channels, w[0], 3, padding=1)]
        for i in range(n):
            enc += ([ResBlock(w[i])] if i else []) + [_Down(w[i], w[i + 1])]
        enc.append(ResBlock(w[n]))
        self.encoder = nn.Sequential(*enc)
        self.to_latent = nn.Sequential(_gnorm(w[n]), nn.SiLU(), nn.Conv2d(w[n], 2 * zc, 3, padding=1))

        self.from_latent = nn.Conv2d(zc, w[n], 3, padding=1)
        dec: list[nn.Module] = [ResBlock(w[n])]
        for i in reversed(range(n)):
            dec += [_Up(w[i + 1], w[i])] + ([ResBlock(w[i])] if i else [])
        dec += [_gnorm(w[0]), nn.SiLU(), nn.Conv2d(w[0], channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # The untrained model outputs flat grey (0.5), not clamped noise: its first grids and metrics read as
        # "nothing learnt yet" (noise scored a sharpness ratio of 57 and PSNR 8 dB), and it learns as fast.
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(N, latent_dim)`` (the latent map flattened channel-major)."""
        h = self.encoder(x)
        mu, logvar = self.to_latent(h).chunk(2, dim=1)
        s = _channel_mean(h, self.latent_shape[0])
        if s is not None:
            mu = mu + s
        return mu.flatten(1), logvar.clamp(*_LOGVAR_RANGE).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction in [0, 1] from ``z``, ``(N, latent_dim)`` or the map ``(N, *latent_shape)``."""
        z = z.view(z.shape[0], *self.latent_shape)
        h = self.from_latent(z)
        s = _channel_repeat(z, h.shape[1])
        if s is not None:
            h = h + s
        out = self.decoder(h) + 0.5
        # Clamp forward, identity backward: outputs stay in [0, 1] and a pixel pushed past an edge still
        # gets the gradient that brings it back (a hard clamp would leave it stuck at zero gradient).
        return out + (out.clamp(0.0, 1.0) - out).detach()

    def forward(self, x: torch.Tensor, *, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(reconstruction, mu, logvar)``; ``deterministic`` uses ``z = mu`` (AE mode, eval)."""
        mu, logvar = self.encode(x)
        z = mu if deterministic else reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


# --------------------------------------------------------------------------------------------------
# The seed's flat-vector model (arch = "flat"), unchanged so that its checkpoints load.
#
# The encoder halves the side n = log2(S / 4) times (stride-2 3x3 convs, channels base * 2**i capped at
# 8 * base) down to a 4 x 4 map, flattens it and maps it to mu and logvar (latent_dim each); the decoder
# mirrors it with nearest-neighbour upsampling + 3x3 convs and ends in a sigmoid. It has no residual paths
# and squeezes everything through the flat vector: on the demo data it learns one output for every input
# (issue 11: val PSNR 12.5 dB, below each image's mean colour).


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(8, ch), num_channels=ch)


class _FlatDown(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1), _norm(cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.SiLU(),
        )


class _FlatUp(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.SiLU(),
        )


class FlatConvVAE(nn.Module):
    """The seed's convolutional VAE with a flat latent vector (``arch = "flat"``).

    >>> m = FlatConvVAE(channels=3, image_size=64, latent_dim=16)
    >>> recon, mu, logvar = m(torch.rand(2, 3, 64, 64))
    >>> tuple(recon.shape), tuple(mu.shape)
    ((2, 3, 64, 64), (2, 16))
    """

    def __init__(self, *, channels: int, image_size: int, latent_dim: int, base_channels: int = 32) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels, self.image_size, self.latent_dim = channels, image_size, latent_dim
        n = num_stages(image_size)
        widths = [min(base_channels * 2**i, base_channels * 8) for i in range(n)]
        self._bottleneck = (widths[-1], 4, 4)
        flat = widths[-1] * 16

        enc: list[nn.Module] = [nn.Conv2d(channels, base_channels, 3, padding=1), _norm(base_channels), nn.SiLU()]
        cin = base_channels
        for w in widths:
            enc.append(_FlatDown(cin, w))
            cin = w
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)

        self.from_z = nn.Linear(latent_dim, flat)
        dec: list[nn.Module] = []
        rev = widths[::-1]
        for i, w in enumerate(rev):
            dec.append(_FlatUp(w, rev[i + 1] if i + 1 < len(rev) else base_channels))
        self.decoder = nn.Sequential(*dec, nn.Conv2d(base_channels, channels, 3, padding=1), nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h).clamp(*_LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(-1, *self._bottleneck)
        return self.decoder(h)

    def forward(self, x: torch.Tensor, *, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(reconstruction, mu, logvar)``; ``deterministic`` uses ``z = mu`` (AE mode, eval)."""
        mu, logvar = self.encode(x)
        z = mu if deterministic else reparameterize(mu, logvar)
        return self.decode(z), mu, logvar
