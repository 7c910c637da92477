"""Training data: load and validate ``.npy`` image arrays, and build the deterministic demo data set.

Accepted arrays (anything else raises :class:`DataError`, which the CLI turns into one line and exit 2):

* rank 3 ``(N, H, W)`` grey, or rank 4 ``(N, H, W, C)`` / ``(N, C, H, W)`` with C in {1, 3};
* ``uint8`` (0..255) or floating point in [0, 1], finite; at least one image; square images;
* train and val with the same channels and size.

Images stay in memory in their own dtype (uint8 stays uint8: a quarter of the memory) in ``(N, C, H, W)``
order and become float32 in [0, 1] one batch at a time, on the training device. On CUDA the loop first
places each set with :meth:`ImageSet.place`: in GPU memory when it takes at most a quarter of what is free
(a batch is then gathered and converted on the GPU, no host transfer per step); else it stays in host
memory and each batch is gathered there, pinned (torch's caching host allocator reuses the buffers) and
copied without blocking. On the CPU nothing moves. Each image is marked grey or colour: an RGB image
whose three channels are equal (to within half a uint8 step) is grey, as is every 1-channel image; the
validation metrics are split on that mark.

Demo data (``python -m train.data build-demo --out data/``, or :func:`build_demo` from Python): random
square crops of scikit-image's bundled photographs (they ship inside the wheel; nothing is downloaded),
resized to the requested size with anti-aliasing, as RGB uint8 ``(N, H, W, 3)``; grey photographs are
stored with three equal channels. Train crops come from the left 70 % of each photograph and val crops
from the right 30 %, so no val pixel is ever seen in training. Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vaediag.atomic import atomic_write
from vaediag.errors import DataError, VaediagError

if TYPE_CHECKING:  # torch is imported where an ImageSet is built, not by the numpy-only demo builder
    import torch

__all__ = [
    "ImageSet",
    "load_npy",
    "load_pair",
    "grey_mask",
    "to_nchw",
    "build_demo_arrays",
    "build_demo",
    "ensure_demo",
    "DEMO_COLOUR",
    "DEMO_GREY",
    "main",
]

# scikit-image photographs that ship in the wheel (skimage/data/*.png|jpg), chosen for varied texture.
DEMO_COLOUR = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
DEMO_GREY = ("camera", "moon", "coins", "brick", "grass", "gravel", "cell")
# Fraction of each photograph's width that train crops come from; val crops come from the rest.
_TRAIN_SPLIT = 0.7
# Half a uint8 step: RGB channels closer than this everywhere make the image grey.
_GREY_TOL = 0.5 / 255.0


@dataclass
class ImageSet:
    """Images in ``(N, C, H, W)`` order (uint8 or float32) and a grey mark per image."""

    images: torch.Tensor  # (N, C, H, W), uint8 or float32
    grey: torch.Tensor  # bool (N,), on the CPU
    path: str
    placement: str = "host"  # host (as loaded) or device (in GPU memory)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def nbytes(self) -> int:
        return int(self.images.numel() * self.images.element_size())

    def place(self, device: torch.device, *, budget: float = 0.25) -> "ImageSet":
        """This set ready for ``device``: on CUDA, in GPU memory when it fits in ``budget`` of the free
        memory (``placement`` "device"); otherwise itself (host memory: :meth:`batch` pins each batch)."""
        import torch

        if device.type != "cuda" or self.images.device.type != "cpu":
            return self
        free, _ = torch.cuda.mem_get_info(device)
        if self.nbytes <= budget * free:
            return ImageSet(images=self.images.to(device), grey=self.grey, path=self.path, placement="device")
        return self

    def batch(self, index: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
        """The images at ``index`` as float32 in [0, 1] on ``device`` (``channels_last``: in that memory
        format). The gather and the uint8 -> float conversion run where the images are; a host batch bound
        for CUDA goes through pinned memory, so its copy does not block."""
        import torch

        x = self.images[index.to(self.images.device)]
        if x.device != device:
            if device.type == "cuda" and x.device.type == "cpu":
                x = x.pin_memory()
            x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.float() if x.dtype.is_floating_point else x.float().div_(255.0)


# --------------------------------------------------------------------------------------------------
# Loading and validation (numpy only, so the checks are cheap and testable without torch).


def load_npy(path: str | os.PathLike[str], *, role: str = "train") -> np.ndarray:
    """Load and validate one array; return it as ``(N, C, H, W)`` in its own dtype (uint8 or float32).

    Raises:
        DataError: missing or unreadable file, wrong rank, dtype, range, NaN, empty or non-square.
    """
    p = Path(path)
    flag = f"--{role}-npy"
    if not p.is_file():
        if p.exists():  # a FIFO would block np.load forever, a device never ends
            raise DataError(f"{role} data {str(p)!r} is not a regular file; pass {flag} PATH of a .npy file")
        raise DataError(f"{role} data {str(p)!r} does not exist; pass {flag} PATH "
                        f"(or build demo data with: python -m train.data build-demo --out data/)")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError/UnpicklingError variously
        raise DataError(f"{role} data {p} is not a readable .npy array ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{role} data {p} holds several arrays (.npz); save one array with np.save")
    return to_nchw(arr, name=f"{role} data {p}")


def to_nchw(arr: np.ndarray, *, name: str = "data") -> np.ndarray:
    """Validate an image array and return it ``(N, C, H, W)``; raises DataError with one line."""
    if arr.ndim not in (3, 4):
        raise DataError(f"{name} has shape {tuple(arr.shape)} (rank {arr.ndim}); expected (N,H,W), "
                        f"(N,H,W,C) or (N,C,H,W)")
    if arr.size == 0:
        raise DataError(f"{name} is empty (shape {tuple(arr.shape)}); expected at least one image")
    if arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - finite.sum())
            raise DataError(f"{name} holds {bad} NaN or infinite value(s); clean the data first")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            hint = " (looks like 0..255: divide by 255 or save as uint8)" if hi > 1.0 and hi <= 255.0 and lo >= 0 else \
                   " (looks like [-1, 1]: use (x + 1) / 2)" if lo >= -1.0 and hi <= 1.0 else ""
            raise DataError(f"{name} has float values in [{lo:.4g}, {hi:.4g}]; expected [0, 1]{hint}")
    else:
        raise DataError(f"{name} has dtype {arr.dtype}; expected uint8 (0..255) or float in [0, 1]")

    if arr.ndim == 3:
        arr = arr[:, None]
    else:
        last, second = arr.shape[-1], arr.shape[1]
        if last in (1, 3) and second not in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)
        elif second in (1, 3) and last not in (1, 3):
            pass
        elif last in (1, 3) and second in (1, 3):
            raise DataError(f"{name} has shape {tuple(arr.shape)}: cannot tell the channel axis; "
                            f"use images larger than 3 pixels")
        else:
            raise DataError(f"{name} has shape {tuple(arr.shape)}: no axis of 1 or 3 channels "
                            f"(RGBA? drop the alpha channel); expected (N,H,W,C) or (N,C,H,W)")
    h, w = arr.shape[-2:]
    if h != w:
        raise DataError(f"{name} holds {h}x{w} images; crop them square (the model takes square images)")
    if h < 8:
        raise DataError(f"{name} holds {h}x{w} images; expected at least 8x8 (the model trains at 32 px or more)")
    out = np.ascontiguousarray(arr)
    if out.dtype != np.uint8:
        out = out.astype(np.float32, copy=False)
    if not out.flags.writeable:  # a memory-mapped file that needed no transpose: bring it into memory
        out = out.copy()
    return out


def grey_mask(images: np.ndarray) -> np.ndarray:
    """Per image: True when it is grey (1 channel, or 3 channels equal to within half a uint8 step)."""
    n, c = images.shape[:2]
    if c == 1:
        return np.ones(n, dtype=bool)
    tol = 0 if images.dtype == np.uint8 else _GREY_TOL
    out = np.empty(n, dtype=bool)
    for start in range(0, n, 256):  # chunks: int16 differences of a whole data set would be large
        x = images[start:start + 256].astype(np.float32 if tol else np.int16)
        spread = np.abs(x[:, 0] - x[:, 1]).reshape(len(x), -1).max(1)
        spread = np.maximum(spread, np.abs(x[:, 0] - x[:, 2]).reshape(len(x), -1).max(1))
        out[start:start + 256] = spread <= tol
    return out


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, C, H, W) images to size x size: area averaging down, bilinear up (antialiased)."""
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(images), 256):
        x = torch.from_numpy(np.asarray(images[start:start + 256], dtype=np.float32))
        if x.shape[-1] > size:
            y = F.interpolate(x, size=(size, size), mode="area")
        else:
            y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out.append(y.numpy())
    y = np.concatenate(out)
    if images.dtype == np.uint8:
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def load_pair(train_path: str | os.PathLike[str], val_path: str | os.PathLike[str], *,
              image_size: int = 0) -> tuple[ImageSet, ImageSet]:
    """Load, validate and cross-check the train and val arrays; resize when ``image_size`` differs."""
    import torch

    train = load_npy(train_path, role="train")
    val = load_npy(val_path, role="val")
    if train.shape[1:] != val.shape[1:]:
        raise DataError(f"train images are {'x'.join(map(str, train.shape[1:]))} (C x H x W) but val images "
                        f"are {'x'.join(map(str, val.shape[1:]))}; both sets need the same channels and size")
    size = train.shape[-1]
    if image_size == 0 and not (32 <= size <= 256 and size & (size - 1) == 0):
        raise DataError(f"images are {size}x{size}; the model takes 32, 64, 128 or 256 px: "
                        f"pass --image-size 64 (or 128) to resize on load")
    sets = []
    for arr, p in ((train, train_path), (val, val_path)):
        if image_size and arr.shape[-1] != image_size:
            arr = _resize(arr, image_size)
        sets.append(ImageSet(images=torch.from_numpy(np.ascontiguousarray(arr)),
                             grey=torch.from_numpy(grey_mask(arr)), path=str(p)))
    return sets[0], sets[1]


# --------------------------------------------------------------------------------------------------
# Demo data.


def _photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as float RGB in [0, 1] (grey photographs repeated to 3 channels)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    img = np.asarray(img, dtype=np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3]


def _crop(img: np.ndarray, rng: np.random.Generator, *, size: int, cols: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    h = img.shape[0]
    c0, c1 = cols
    max_side = min(h, c1 - c0)
    # Sides from `size` up to half the region: zoomed-out crops would all look alike.
    side = int(rng.integers(size, max(size, max_side // 2) + 1)) if max_side >= size else max_side
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(c0, c1 - side + 1))
    patch = img[top:top + side, left:left + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if side != size:
        patch = resize(patch, (size, size), order=1, anti_aliasing=side > size, preserve_range=True)
    return np.clip(np.rint(patch * 255.0), 0, 255).astype(np.uint8)


def build_demo_arrays(*, n_train: int = 256, n_val: int = 64, size: int = 64, grey_fraction: float = 0.35,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Deterministic (train, val, manifest): uint8 (N, size, size, 3) crops of bundled photographs.

    About ``grey_fraction`` of the crops come from grey photographs (stored with 3 equal channels).
    """
    if n_train < 1 or n_val < 1:
        raise DataError(f"demo data needs at least one train and one val image (got {n_train}, {n_val})")
    if not 16 <= size <= 512:
        raise DataError(f"demo image size {size} is out of range (choose 16..512)")
    rng = np.random.default_rng(seed)
    photos = {name: _photo(name) for name in DEMO_COLOUR + DEMO_GREY}
    out, manifest = {}, {"seed": seed, "size": size, "grey_fraction": grey_fraction,
                         "photos": list(photos), "train_split": _TRAIN_SPLIT}
    for split, n in (("train", n_train), ("val", n_val)):
        arr = np.empty((n, size, size, 3), dtype=np.uint8)
        sources = []
        for i in range(n):
            pool = DEMO_GREY if rng.random() < grey_fraction else DEMO_COLOUR
            name = pool[int(rng.integers(len(pool)))]
            img = photos[name]
            cut = int(img.shape[1] * _TRAIN_SPLIT)
            cols = (0, cut) if split == "train" else (cut, img.shape[1])
            arr[i] = _crop(img, rng, size=size, cols=cols)
            sources.append(name)
        out[split] = arr
        manifest[f"{split}_sources"] = sources
    return out["train"], out["val"], manifest


def _save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, arr))


def build_demo(out_dir: str | os.PathLike[str], *, n_train: int = 256, n_val: int = 64, size: int = 64,
               seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.npy``, ``val.npy`` and ``manifest.json`` into ``out_dir``; never overwrites.

    Raises:
        DataError: one of the files already exists.
    """
    d = Path(out_dir)
    targets = [d / "train.npy", d / "val.npy", d / "manifest.json"]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise DataError(f"{', '.join(existing)} already exist(s); choose another --out (nothing was overwritten)")
    d.mkdir(parents=True, exist_ok=True)
    train, val, manifest = build_demo_arrays(n_train=n_train, n_val=n_val, size=size, seed=seed)
    _save_npy(targets[0], train)
    _save_npy(targets[1], val)
    manifest["train_grey"] = int(grey_mask(to_nchw(train)).sum())
    manifest["val_grey"] = int(grey_mask(to_nchw(val)).sum())
    atomic_write(targets[2], json.dumps(manifest, indent=1) + "\n")
    return targets[0], targets[1]


def ensure_demo(out_dir: str | os.PathLike[str], *, n_train: int = 256, n_val: int = 64, size: int = 64,
                seed: int = 0) -> tuple[Path, Path]:
    """The demo arrays in ``out_dir``: built when absent (:func:`build_demo`), reused when both are there
    with the asked-for number and size of images (their shapes on disk).

    Raises:
        DataError: ``out_dir`` holds demo arrays of other sizes (they are never overwritten).
    """
    d = Path(out_dir)
    train, val = d / "train.npy", d / "val.npy"
    if not (train.is_file() and val.is_file()):
        return build_demo(d, n_train=n_train, n_val=n_val, size=size, seed=seed)
    want = {"n_train": n_train, "n_val": n_val, "size": size}
    try:
        t_shape = np.load(train, mmap_mode="r").shape
        v_shape = np.load(val, mmap_mode="r").shape
    except (OSError, ValueError) as exc:
        raise DataError(f"{d} holds unreadable demo arrays ({exc}); remove them or pass another directory") from None
    have = {"n_train": t_shape[0], "n_val": v_shape[0], "size": t_shape[1] if len(t_shape) > 1 else None}
    if have != want:
        raise DataError(
            f"{d} holds demo arrays of another size ({have['n_train']} train / {have['n_val']} val at "
            f"{have['size']} px; this needs {want['n_train']} / {want['n_val']} at {want['size']} px): "
            "remove them or pass another directory (nothing was overwritten)"
        )
    return train, val


# --------------------------------------------------------------------------------------------------
# `python -m train.data build-demo --out data/`


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-demo", help="write deterministic demo train/val arrays from scikit-image photos")
    b.add_argument("--out", default="data", help="output directory (default: data)")
    b.add_argument("--n-train", type=int, default=256, help="training images (default: 256)")
    b.add_argument("--n-val", type=int, default=64, help="validation images (default: 64)")
    b.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    try:
        train, val = build_demo(args.out, n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.seed)
    except VaediagError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {train} and {val}")
    print(f"train with: python -m train --train-npy {train} --val-npy {val} --epochs 100")
    return 0


if __name__ == "__main__":
    sys.exit(main())
