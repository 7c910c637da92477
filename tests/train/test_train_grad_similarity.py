"""The blur measure's validation table on real photographs: blur ranks in order, nothing else passes.

``grad_similarity`` must rank Gaussian blur of sigma 0.5 / 1 / 2 strictly in that order, score a clean copy
~1, and put sigma 0.5 above :data:`BLUR_THRESHOLD` while sigma 2 and every corruption that is not blur
(noise, salt and pepper, blocking, checkerboard, a wrong image, the mean colour) falls below it; the old
sharpness ratio is printed beside it for comparison. On failure the whole table is in the message.
Print it with ``python tests/train/test_train_grad_similarity.py``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch

from train.metrics import gradient_energy, gradient_similarity_per_image

# Between sigma 2 and everything non-blur (at most ~0.75 here) and sigma 0.5 (at least ~0.95 here).
BLUR_THRESHOLD = 0.85
PHOTOS = ("astronaut", "camera", "coffee")
BLURS = (0.5, 1.0, 2.0)
# Rows that must fail the threshold; "blur 1" and "noise 0.02" are shown but not judged.
MUST_FAIL = ("blur 2", "noise 0.1", "noise 0.2", "salt+pepper 5%", "blocks 8x8", "checker +-0.05",
             "checker alone", "wrong image", "mean colour")


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    a = getattr(skimage.data, name)().astype(np.float64) / 255.0
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3].transpose(2, 0, 1))  # (3, H, W)


def crop(name: str, size: int, zoom: int) -> np.ndarray:
    """A centred ``size * zoom`` square of the photograph, resized to ``size`` like the demo's crops."""
    from skimage.transform import resize

    a = _photo(name)
    side = size * zoom
    top, left = (a.shape[1] - side) // 2, (a.shape[2] - side) // 2
    patch = a[:, top:top + side, left:left + side]
    if zoom > 1:
        patch = resize(patch, (3, size, size), order=1, anti_aliasing=True)
    return patch


def corruptions(x: np.ndarray, other: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Name -> corrupted copy of ``x`` (3, H, W) in [0, 1]; ``other`` is a crop of another photograph."""
    from skimage.filters import gaussian

    rng = np.random.default_rng(seed)
    c, h, w = x.shape
    out = {"clean": x.copy()}
    for s in BLURS:
        out[f"blur {s:g}"] = gaussian(x, sigma=s, channel_axis=0, mode="reflect")
    for s in (0.02, 0.1, 0.2):
        out[f"noise {s:g}"] = np.clip(x + rng.normal(0.0, s, x.shape), 0, 1)
    sp, u = x.copy(), rng.random((h, w))
    sp[:, u < 0.025], sp[:, u > 0.975] = 0.0, 1.0
    out["salt+pepper 5%"] = sp
    # JPEG-like blocking: every 8 x 8 block replaced by its mean
    blocks = x.reshape(c, h // 8, 8, w // 8, 8).mean(axis=(2, 4), keepdims=True)
    out["blocks 8x8"] = np.broadcast_to(blocks, (c, h // 8, 8, w // 8, 8)).reshape(c, h, w).copy()
    yy, xx = np.mgrid[:h, :w]
    checker = ((yy + xx) % 2) * 2.0 - 1.0  # the transposed-convolution artefact's period-2 pattern
    out["checker +-0.05"] = np.clip(x + 0.05 * checker, 0, 1)
    out["checker alone"] = np.broadcast_to(0.5 + 0.25 * checker, x.shape).copy()
    out["wrong image"] = other
    out["mean colour"] = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape).copy()
    return out


def table(name: str, size: int, zoom: int) -> dict[str, tuple[float, float]]:
    """Corruption -> (grad_similarity, old sharpness ratio) for one crop."""
    x = crop(name, size, zoom)
    other = crop(PHOTOS[(PHOTOS.index(name) + 1) % len(PHOTOS)], size, zoom)
    xt = torch.from_numpy(x)[None]
    rows = {}
    for k, r in corruptions(x, other).items():
        rt = torch.from_numpy(np.ascontiguousarray(r))[None]
        g = float(gradient_similarity_per_image(rt, xt))
        ratio = float(gradient_energy(rt) / gradient_energy(xt))
        rows[k] = (g, ratio)
    return rows


def format_table(rows: dict[str, tuple[float, float]], title: str) -> str:
    lines = [title, f"{'corruption':16s} {'grad_sim':>9s} {'sharpness':>10s}"]
    lines += [f"{k:16s} {g:9.3f} {s:10.3f}" for k, (g, s) in rows.items()]
    return "\n".join(lines)


CASES = [(p, size, zoom) for size in (64, 128) for zoom in (1, 2) for p in PHOTOS]


@pytest.mark.parametrize("name, size, zoom", CASES, ids=[f"{p}-{s}px-zoom{z}" for p, s, z in CASES])
def test_grad_similarity_validation_table(name, size, zoom):
    rows = table(name, size, zoom)
    g = {k: v[0] for k, v in rows.items()}
    shown = "\n" + format_table(rows, f"{name}, {size} px, crop zoom {zoom}, threshold {BLUR_THRESHOLD}")
    assert g["clean"] == pytest.approx(1.0, abs=1e-6), shown
    assert g["blur 0.5"] > g["blur 1"] > g["blur 2"], shown
    assert g["blur 0.5"] >= BLUR_THRESHOLD, shown
    passing = [k for k in MUST_FAIL if g[k] >= BLUR_THRESHOLD]
    assert not passing, f"pass the blur threshold but must not: {passing}{shown}"
    assert all(-1.0 <= v <= 1.0 for v in g.values()), shown


if __name__ == "__main__":  # print the whole table
    for case in CASES:
        print(format_table(table(*case), "{}, {} px, crop zoom {}".format(*case)), end="\n\n")
