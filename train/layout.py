"""How ``latent_dim`` values are laid out as the residual model's spatial latent (no torch: config checks it).

The residual model's latent is a map of ``channels x side x side`` numbers; ``--latent-dim`` is their count,
so the seed's ladder ("latent dim x2, up to 2048") keeps its meaning. The encoder reaches the map with
``log2(image_size / side)`` stride-2 stages (the down-sampling factor ``f``).

Rule (``latent_channels = 0``, the default): the largest power-of-two ``side`` with

* ``side <= image_size / 4`` (at least two down-sampling stages, so every latent value sees a neighbourhood),
* ``side * side`` dividing ``latent_dim`` and leaving ``channels = latent_dim / side**2 >= 4``
  (a map of fewer channels starves the decoder; below 4 values in all the latent is ``latent_dim x 1 x 1``),

and ``channels <= 256``. At 64 px: 2048 -> 8 x 16 x 16 (f 4), 1024 -> 4 x 16 x 16, 512 -> 8 x 8 x 8,
256 -> 4 x 8 x 8, 64 -> 4 x 4 x 4, 16 -> 4 x 2 x 2, 8 -> 8 x 1 x 1. At 128 px 2048 is 8 x 16 x 16 (f 8);
at 256 px, 8 x 16 x 16 (f 16).

``latent_channels = C`` asks for ``C`` channels: ``latent_dim / C`` must then be the square of a
power-of-two side ``<= image_size / 4``. A size that cannot be laid out is refused with one line naming
sizes that can (an odd ``latent_dim`` above 256, say, or 2048 with 3 channels).

>>> latent_layout(64, 2048)
(8, 16)
>>> latent_layout(64, 256)
(4, 8)
>>> latent_layout(64, 256, latent_channels=4)
(4, 8)
"""

from __future__ import annotations

__all__ = ["latent_layout", "MIN_CHANNELS", "MAX_CHANNELS"]

MIN_CHANNELS = 4
MAX_CHANNELS = 256


class LayoutError(ValueError):
    """A latent size that cannot be laid out (the message is one line)."""


def _sides(image_size: int) -> list[int]:
    """Power-of-two sides from ``image_size / 4`` down to 1."""
    out, s = [], max(1, image_size // 4)
    while s >= 1:
        out.append(s)
        s //= 2
    return out


def _near(image_size: int, latent_dim: int) -> str:
    """Two latent sizes near ``latent_dim`` that the default rule lays out, for the error message."""
    ok = [d for d in range(1, 2049) if _auto(image_size, d) is not None]
    below = max((d for d in ok if d < latent_dim), default=None)
    above = min((d for d in ok if d > latent_dim), default=None)
    return " or ".join(str(d) for d in (below, above) if d is not None)


def _auto(image_size: int, latent_dim: int) -> tuple[int, int] | None:
    for side in _sides(image_size):
        if latent_dim % (side * side):
            continue
        c = latent_dim // (side * side)
        if c >= MIN_CHANNELS or side == 1:
            return (c, side) if c <= MAX_CHANNELS else None
    return None


def latent_layout(image_size: int, latent_dim: int, latent_channels: int = 0) -> tuple[int, int]:
    """``(channels, side)`` of the spatial latent; raises :class:`LayoutError` (a ValueError) with one line."""
    if latent_dim < 1:
        raise LayoutError(f"latent_dim {latent_dim} must be >= 1")
    if latent_channels:
        per = latent_dim // latent_channels if latent_dim % latent_channels == 0 else 0
        for side in _sides(image_size):
            if per == side * side:
                return latent_channels, side
        sides = ", ".join(f"{latent_channels * s * s}" for s in reversed(_sides(image_size)))
        raise LayoutError(f"latent_dim {latent_dim} cannot be laid out as {latent_channels} channels x side x side "
                          f"at {image_size} px (side a power of two <= {max(1, image_size // 4)}): with "
                          f"--latent-channels {latent_channels} choose latent_dim {sides}, or --latent-channels 0")
    found = _auto(image_size, latent_dim)
    if found is None:
        raise LayoutError(f"latent_dim {latent_dim} cannot be laid out as channels x side x side at {image_size} px "
                          f"(side a power of two, {MIN_CHANNELS}..{MAX_CHANNELS} channels): choose "
                          f"{_near(image_size, latent_dim)}, or --arch flat")
    return found
