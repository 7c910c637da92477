"""The convolutional VAE: encoder -> (mu, logvar) -> reparameterisation -> decoder.

Shapes for an ``S x S`` image with ``C`` channels (S a power of two, 32..256) and ``n = log2(S / 4)``
stages: the encoder halves the side ``n`` times (stride-2 3x3 convs, channels ``base * 2**i`` capped at
``8 * base``) down to a ``4 x 4`` map, flattens it and maps it to ``mu`` and ``logvar`` (``latent_dim``
each); the decoder mirrors it with nearest-neighbour upsampling + 3x3 convs (no transposed convs, so no
checkerboard artefacts) and ends in a sigmoid, so reconstructions live in [0, 1] like the data.

GroupNorm rather than BatchNorm: statistics per image behave the same under DistributedDataParallel, for
any batch size, and in eval mode.

Option B of the seed (a plain autoencoder) is ``deterministic=True``: ``z = mu``; the loop sets the KL
weight to 0 with it. Evaluation always uses ``z = mu``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["ConvVAE", "reparameterize", "num_stages"]

# logvar is clamped so exp(logvar) neither overflows nor underflows in float32 early in training.
_LOGVAR_RANGE = (-30.0, 20.0)


def num_stages(image_size: int) -> int:
    """Down-sampling stages from ``image_size`` to the 4 x 4 bottleneck map."""
    if image_size < 32 or image_size & (image_size - 1):
        raise ValueError(f"image_size {image_size} is not a power of two >= 32")
    return int(math.log2(image_size // 4))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``z = mu + sigma * eps`` with ``eps ~ N(0, I)`` (the gradient flows through mu and logvar)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(8, ch), num_channels=ch)


class _Down(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1), _norm(cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.SiLU(),
        )


class _Up(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.SiLU(),
        )


class ConvVAE(nn.Module):
    """A convolutional VAE for square images.

    >>> m = ConvVAE(channels=3, image_size=64, latent_dim=16)
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
            enc.append(_Down(cin, w))
            cin = w
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)

        self.from_z = nn.Linear(latent_dim, flat)
        dec: list[nn.Module] = []
        rev = widths[::-1]
        for i, w in enumerate(rev):
            dec.append(_Up(w, rev[i + 1] if i + 1 < len(rev) else base_channels))
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
