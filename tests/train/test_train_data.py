"""Data loading: layouts, grey detection, every validation error through the CLI, the demo builder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.__main__ import main as train_main
from train.data import build_demo, build_demo_arrays, ensure_demo, grey_mask, load_pair, to_nchw
from train.data import main as data_main
from trainhelp import run_python
from vaediag.errors import DataError


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_layouts_give_the_same_images(crops, dtype):
    nhwc = crops[1] if dtype == "uint8" else (crops[1] / 255.0).astype(dtype)
    a = to_nchw(nhwc)
    b = to_nchw(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))
    assert a.shape == (8, 3, 64, 64) and np.array_equal(a, b)
    assert a.dtype == (np.uint8 if dtype == "uint8" else np.float32)
    grey = to_nchw(nhwc[..., 0])  # (N, H, W)
    assert grey.shape == (8, 1, 64, 64) and np.array_equal(grey[:, 0], a[:, 0])
    assert np.array_equal(to_nchw(nhwc[..., :1]), grey)  # (N, H, W, 1)


def test_grey_detection_per_image():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)
    rgb = np.repeat(g[:, None], 3, axis=1)
    rgb[1, 2, 5, 5] ^= 1  # one channel of one pixel differs by one level: colour
    assert grey_mask(rgb).tolist() == [True, False, True, True]
    f = rgb.astype(np.float32) / 255
    assert grey_mask(f).tolist() == [True, False, True, True]
    f[2, 1] += 1e-4  # float noise far below half a uint8 step: still grey
    assert grey_mask(np.clip(f, 0, 1)).tolist() == [True, False, True, True]
    assert grey_mask(g[:, None]).all()


def test_load_pair_marks_and_resizes(tmp_path, npy):
    train, val = load_pair(*npy)
    assert (len(train), len(val), train.channels, train.size) == (16, 8, 3, 64)
    assert train.images.dtype.is_floating_point is False  # uint8 stays uint8 in memory
    expected = grey_mask(to_nchw(np.load(npy[1])))
    assert val.grey.numpy().tolist() == expected.tolist()
    import torch

    x = val.batch(torch.arange(3), torch.device("cpu"))
    assert x.dtype == torch.float32 and float(x.max()) <= 1.0
    t32, _ = load_pair(*npy, image_size=32)
    assert t32.size == 32 and t32.images.dtype == torch.uint8


def _save(path, arr):
    if isinstance(arr, bytes):
        path.write_bytes(arr)
    elif arr is not None:
        np.save(path, arr)


GOOD = np.zeros((4, 32, 32, 3), np.uint8)
BAD_DATA = [
    # (train array, val array, stderr pattern)
    (np.zeros((4, 32), np.uint8), GOOD, r"train data .* has shape \(4, 32\) \(rank 2\)"),
    (np.zeros((2, 4, 32, 32, 3), np.uint8), GOOD, r"rank 5"),
    (np.zeros((0, 32, 32, 3), np.uint8), GOOD, r"is empty"),
    (np.full((4, 32, 32, 3), np.nan, np.float32), GOOD, r"holds 12288 NaN or infinite"),
    (np.full((4, 32, 32, 3), 255.0, np.float32), GOOD, r"float values in \[255, 255\]; expected \[0, 1\] \(looks like 0..255"),
    (np.full((4, 32, 32, 3), -1.0, np.float32), GOOD, r"float values in \[-1, -1\].*\(x \+ 1\) / 2"),
    (np.zeros((4, 32, 32, 3), np.int64), GOOD, r"dtype int64; expected uint8"),
    (np.zeros((4, 32, 32, 4), np.uint8), GOOD, r"no axis of 1 or 3 channels \(RGBA\?"),
    (np.zeros((4, 32, 48, 3), np.uint8), GOOD, r"holds 32x48 images; crop them square"),
    (GOOD, np.zeros((4, 32, 32), np.uint8), r"train images are 3x32x32 .* but val images are 1x32x32"),
    (GOOD, np.zeros((4, 64, 64, 3), np.uint8), r"val images are 3x64x64"),
    (None, GOOD, r"train data '.*train.npy' does not exist; pass --train-npy"),
    (GOOD, None, r"val data '.*val.npy' does not exist; pass --val-npy"),
    (b"definitely not numpy", GOOD, r"is not a readable .npy array"),
    (np.zeros((4, 40, 40, 3), np.uint8), np.zeros((4, 40, 40, 3), np.uint8), r"images are 40x40.*--image-size 64"),
]


@pytest.mark.parametrize("train_arr, val_arr, pattern", BAD_DATA)
def test_bad_data_is_one_line_and_exit_2(tmp_path, capsys, train_arr, val_arr, pattern):
    t, v = tmp_path / "train.npy", tmp_path / "val.npy"
    _save(t, train_arr)
    _save(v, val_arr)
    rc = train_main(["--train-npy", str(t), "--val-npy", str(v), "--logdir", str(tmp_path / "logs" / "p"),
                     "--checkpoint-dir", str(tmp_path / "ckpt"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "logs").exists() and not (tmp_path / "ckpt").exists()  # nothing created


@pytest.mark.slow
def test_bad_data_from_a_real_process(tmp_path):
    t = tmp_path / "train.npy"
    np.save(t, np.full((4, 32, 32), np.nan, np.float32))
    proc = run_python(["-m", "train", "--train-npy", str(t), "--val-npy", str(t), "--logdir", str(tmp_path / "l")])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"Error: train data {t} holds 4096 NaN or infinite value(s); clean the data first"]


def test_to_nchw_error_type():
    with pytest.raises(DataError, match="cannot tell the channel axis"):
        to_nchw(np.zeros((2, 3, 3, 3), np.uint8))


def test_demo_arrays_are_deterministic_and_mixed():
    a = build_demo_arrays(n_train=12, n_val=6, size=32, seed=5)
    b = build_demo_arrays(n_train=12, n_val=6, size=32, seed=5)
    c = build_demo_arrays(n_train=12, n_val=6, size=32, seed=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (12, 32, 32, 3) and a[0].dtype == np.uint8
    g = grey_mask(to_nchw(np.concatenate([a[0], a[1]])))
    assert g.any() and (~g).any()
    assert a[0].std() > 10  # real photographs, not blank frames


def test_build_demo_writes_and_never_overwrites(tmp_path):
    train, val = build_demo(tmp_path / "d", n_train=4, n_val=2, size=32)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["size"] == 32 and len(manifest["train_sources"]) == 4
    before = train.read_bytes()
    with pytest.raises(DataError, match="already exist.*nothing was overwritten"):
        build_demo(tmp_path / "d", n_train=8, n_val=2, size=32)
    assert train.read_bytes() == before
    assert ensure_demo(tmp_path / "d", n_train=4, n_val=2, size=32) == (train, val)
    assert np.load(val).shape == (2, 32, 32, 3)
    # Demo arrays of other sizes are neither reused silently nor overwritten.
    with pytest.raises(DataError, match=r"4 train / 2 val at 32 px; this needs 8 / 2 at 32 px.*nothing was overwritten"):
        ensure_demo(tmp_path / "d", n_train=8, n_val=2, size=32)
    assert train.read_bytes() == before


def test_build_demo_cli(tmp_path, capsys):
    assert data_main(["build-demo", "--out", str(tmp_path / "d"), "--n-train", "4", "--n-val", "2", "--size", "32"]) == 0
    assert "python -m train --train-npy" in capsys.readouterr().out
    assert data_main(["build-demo", "--out", str(tmp_path / "d"), "--n-train", "4"]) == 2
    assert "already exist" in capsys.readouterr().err
