"""epoch_table, penalty_table, the number formats of the seed's arithmetic, and the JSON helpers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import tbwrite
import vaediag
from vaediag.diagnose import completed_epochs, epoch_table, jsonable, penalty_table
from vaediag.diagnose.numbers import fmt_kl, fmt_pct, fmt_ratio, fmt_sig, fmt_weight, human_epoch
from vaediag.diagnose.penalty import penalty_arithmetic
from vaediag.diagnose.recommend import next_command, plan_arithmetic


@pytest.fixture
def small_run(tmp_path):
    # train steps 0-3 in epoch 0, 4-7 in epoch 1; val once per epoch; lr logged at epoch starts only
    series = {
        "train/kl": [(s, 100.0 + s) for s in range(8)],
        "train/recon": [(s, 0.2) for s in range(8)],
        "val/kl": [(3, 90.0), (7, 95.0)],
        "val/psnr": [(7, 25.0)],
        "train/kl_weight": [(s, 1e-5) for s in range(8)],
        "train/lr": [(0, 1e-3)],
        "test/kl": [(7, 1.0)],
    }
    tbwrite.write_run(tmp_path / "r", series, epochs={s: float(s // 4) for s in range(8)})
    return vaediag.load(tmp_path / "r").frame


def test_epoch_table_columns(small_run):
    t = epoch_table(small_run)
    assert list(t.index) == [0, 1] and t.index.name == "epoch"
    assert t.loc[0, "train_kl"] == pytest.approx(101.5) and t.loc[1, "train_kl"] == pytest.approx(105.5)  # mean
    assert t.loc[0, "val_kl"] == 90.0 and t.loc[1, "val_kl"] == 95.0
    assert t.loc[1, "kl"] == 95.0  # val preferred
    assert t.loc[0, "recon"] == pytest.approx(0.2)  # train where there is no val
    assert math.isnan(t.loc[0, "val_psnr"]) and t.loc[1, "psnr"] == 25.0
    assert t.loc[1, "lr"] == pytest.approx(1e-3)  # carried forward
    assert t.loc[1, "kl_weight"] == pytest.approx(1e-5)
    assert not any(c.startswith("other_") or c == "test_kl" for c in t.columns)  # split "other" left out
    assert completed_epochs(small_run) == 2


def test_epoch_table_rejects_several_runs(small_run):
    two = pd.concat([small_run, small_run.assign(run=small_run["run"].cat.rename_categories(["x"]))])
    with pytest.raises(ValueError, match="one run's rows"):
        epoch_table(two)


def test_epoch_table_of_nothing(small_run):
    assert epoch_table(small_run.iloc[:0]).empty
    assert completed_epochs(small_run.iloc[:0]) == 0


def test_penalty_table_prefers_train_and_uses_weighted_terms():
    t = pd.DataFrame(
        {"train_kl": [1500.0, 1535.0], "train_recon": [0.12, 0.111], "val_kl": [1400.0, 1450.0],
         "val_recon": [0.1, 0.1], "train_recon_weighted": [0.12, 0.111], "train_perceptual_weighted": [0.6, 0.5],
         "kl_weight": [1e-5, 1e-5]},
        index=pd.Index([0, 1], name="epoch"),
    )
    p = penalty_table(t, latent_dim=1024)
    row = p.loc[1]
    assert row["split"] == "train" and row["kl"] == 1535.0
    assert row["penalty"] == pytest.approx(0.01535)
    assert row["ratio"] == pytest.approx(0.01535 / 0.111)
    assert row["recon_signal"] == pytest.approx(0.611)
    assert row["share"] == pytest.approx(0.01535 / (0.611 + 0.01535))
    assert row["recon_to_reg"] == pytest.approx(0.611 / 0.01535)
    assert row["kl_per_dim"] == pytest.approx(1535 / 1024)


def test_penalty_table_val_fallback_and_loss_weights():
    t = pd.DataFrame({"val_kl": [300.0], "val_recon": [0.05], "val_perceptual": [0.2]},
                     index=pd.Index([0], name="epoch"))
    p = penalty_table(t, kl_weight=1e-7, loss_weights={"recon": 1.0, "perceptual": 1.2})
    assert p.loc[0, "split"] == "val" and p.loc[0, "recon_signal"] == pytest.approx(0.05 + 0.24)
    assert np.isnan(p.loc[0, "kl_per_dim"])
    assert penalty_table(t).loc[0, "penalty"] != penalty_table(t).loc[0, "penalty"]  # unknown weight: NaN


@pytest.mark.parametrize("fn, x, out", [
    (fmt_weight, 1e-5, "0.00001"), (fmt_weight, 1e-7, "0.0000001"), (fmt_weight, 9.99999974738e-06, "0.00001"),
    (fmt_weight, 0.00025, "0.00025"), (fmt_weight, 0.0, "0"), (fmt_weight, None, "unknown"),
    (fmt_kl, 1535.2, "1,535"), (fmt_kl, 25.5534, "25.6"), (fmt_kl, float("nan"), "n/a"),
    (lambda v: fmt_sig(v, 2), 0.01535, "0.015"), (lambda v: fmt_sig(v, 2), 0.0003, "0.0003"),
    (lambda v: fmt_sig(v, 3), 0.111, "0.111"), (lambda v: fmt_sig(v, 3), 0.13, "0.13"),
    (fmt_pct, 0.13514, "13.5%"), (fmt_pct, 0.000727, "0.073%"), (fmt_ratio, 93333.3, "93,000:1"),
    (fmt_ratio, 9333.3, "9,300:1"), (human_epoch, 9, "epoch 10"),
])
def test_number_formats(fn, x, out):
    assert fn(x) == out


@pytest.mark.parametrize("w, kl, recon, lines", [
    (1e-5, 1535.0, 0.111, ["Effective KL penalty = 0.00001 × 1,535 = 0.015", "Reconstruction loss  = 0.111",
                           "Ratio = 13.5% of reconstruction signal spent on regularisation (13.8% unrounded)"]),
    (1e-5, 1500.0, 0.111, ["Effective KL penalty = 0.00001 × 1,500 = 0.015", "Reconstruction loss  = 0.111",
                           "Ratio = 13.5% of reconstruction signal spent on regularisation"]),
    (0.0, 5000.0, 0.05, ["Effective KL penalty = 0 × 5,000 = 0", "Reconstruction loss  = 0.05",
                         "Ratio = 0.0% of reconstruction signal spent on regularisation"]),
])
def test_penalty_arithmetic(w, kl, recon, lines):
    assert penalty_arithmetic(w, kl, recon) == lines


def test_plan_arithmetic_and_command():
    lines, ratio = plan_arithmetic(None, 1e-6, 300.0)
    assert lines[0].startswith("Total reconstruction 1.0 = 1.0x") and ratio == pytest.approx(1 / 3e-4)
    assert next_command("runs/a b/config.json", {"ae": True, "kl_weight": 0.0}, config={"resume": "x.pt"}) == (
        "python -m train --config 'runs/a b/config.json' --ae --kl-weight 0.0 --resume ''")


def test_jsonable():
    assert jsonable({"a": float("nan"), "b": [np.float32(1.5), (1, float("inf"))], "c": np.int64(3)}) == {
        "a": None, "b": [1.5, [1, None]], "c": 3}
