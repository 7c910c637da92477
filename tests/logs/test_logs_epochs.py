"""Epoch alignment (ARCHITECTURE, in order): the epoch logged at the same step; the run's epoch tag at
the nearest earlier step; the n-th val point of a run without an epoch tag; --steps-per-epoch; NaN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import vaediag
from tbwrite import write_run

NAN = float("nan")


@pytest.mark.parametrize(
    "series, epochs, spe, tag, expected",
    [
        # epoch logged at the same steps (Lightning)
        ({"loss": [(0, 1.0), (5, 1.0), (10, 1.0)]}, {0: 0, 5: 0, 10: 1}, None, "loss", [0, 0, 1]),
        # epoch at earlier steps only: nearest earlier one
        ({"loss": [(3, 1.0), (7, 1.0), (12, 1.0)]}, {0: 0, 10: 1}, None, "loss", [0, 0, 1]),
        # before the first epoch point: that point's epoch
        ({"loss": [(0, 1.0), (2, 1.0)]}, {5: 3}, None, "loss", [3, 3]),
        # val-only run without an epoch tag: n-th val point is epoch n (steps irrelevant)
        ({"val_loss": [(99, 1.0), (199, 1.0), (250, 1.0)]}, None, None, "val_loss", [0, 1, 2]),
        # train rows without epoch tag: steps // steps_per_epoch ...
        ({"loss": [(0, 1.0), (99, 1.0), (100, 1.0), (250, 1.0)]}, None, 100, "loss", [0, 0, 1, 2]),
        # ... and val rows keep their rank even when steps_per_epoch is given
        ({"val/psnr": [(99, 20.0), (199, 21.0)]}, None, 1000, "val/psnr", [0, 1]),
        # nothing to align with
        ({"loss": [(0, 1.0), (10, 1.0)]}, None, None, "loss", [NAN, NAN]),
        # the epoch tag aligns itself
        ({"loss": [(0, 1.0)]}, {0: 0, 10: 1, 20: 2}, None, "epoch", [0, 1, 2]),
    ],
    ids=["same-step", "earlier-step", "before-first", "val-rank", "steps-per-epoch", "val-with-spe", "none", "epoch-tag"],
)
@pytest.mark.parametrize("engine", ["numpy", "python"])
def test_alignment(tmp_path, engine, series, epochs, spe, tag, expected):
    write_run(tmp_path / "r", series, epochs=epochs)
    f = vaediag.load(tmp_path, steps_per_epoch=spe, engine=engine).frame
    np.testing.assert_array_equal(f[f["tag"] == tag]["epoch"].to_numpy(), np.asarray(expected, dtype=float))


def test_epoch_with_resumed_duplicate_takes_latest(tmp_path):
    write_run(tmp_path / "r", {"loss": [(5, 1.0)]}, epochs={0: 0, 5: 0}, t0=1.7e9, suffix=".a")
    write_run(tmp_path / "r", {"loss": [(5, 2.0)]}, epochs={5: 7}, t0=1.8e9, suffix=".b")
    for engine in ("numpy", "python"):
        f = vaediag.load(tmp_path, engine=engine).frame
        assert f.query("tag == 'loss'")[["value", "epoch"]].values.tolist() == [[2.0, 7.0]]


def test_runs_are_aligned_independently(tmp_path):
    write_run(tmp_path / "a", {"loss": [(10, 1.0)]}, epochs={10: 4})
    write_run(tmp_path / "b", {"loss": [(10, 1.0)]})
    f = vaediag.load(tmp_path, steps_per_epoch=5).frame
    got = f.query("tag == 'loss'").set_index(f.query("tag == 'loss'")["run"].astype(str))["epoch"].to_dict()
    assert got == {"a": 4.0, "b": 2.0}
    assert isinstance(f, pd.DataFrame)
