"""Fixtures for the training core's tests: tiny real data sets and tiny configs (their helpers are in
tests/helpers/trainhelp.py).

Data are real crops of scikit-image's bundled photographs (train.data.build_demo_arrays), a few of
them at 64 px, mixed grey and colour, so every split of the metrics is exercised. Configs keep the
model small and the perceptual trunk short (relu1_2) unless a test is about perception.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainhelp import tiny_overrides


@pytest.fixture(scope="session")
def crops() -> tuple[np.ndarray, np.ndarray]:
    """(train, val): 16 and 8 RGB uint8 64 px crops, both sets holding grey and colour images."""
    from train.data import build_demo_arrays, grey_mask, to_nchw

    train, val, _ = build_demo_arrays(n_train=16, n_val=8, size=64, grey_fraction=0.4, seed=3)
    for arr in (train, val):
        g = grey_mask(to_nchw(arr))
        assert g.any() and (~g).any(), "fixture must mix grey and colour images"
    return train, val


@pytest.fixture
def npy(tmp_path: Path, crops) -> tuple[Path, Path]:
    """The crops written as train.npy / val.npy under tmp_path/data."""
    d = tmp_path / "data"
    d.mkdir()
    np.save(d / "train.npy", crops[0])
    np.save(d / "val.npy", crops[1])
    return d / "train.npy", d / "val.npy"


@pytest.fixture
def tiny_cfg(tmp_path: Path, npy):
    from train.config import TrainConfig

    return TrainConfig(**tiny_overrides(tmp_path, npy))
