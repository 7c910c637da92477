"""Trends: every monitored series is improving, plateau, regressing or too noisy; a run that gets worse is
never "converged" and never told to stop as if finished."""

from __future__ import annotations

import math

import pytest

from seedruns import healthy_curves, write_trainer_run
import vaediag
from vaediag.diagnose import diagnose
from vaediag.diagnose.criteria import classify_trend

E = list(range(30))


@pytest.mark.parametrize(
    "values, kind",
    [
        # the user report: val 0.042 -> 0.142 after epoch 1
        ([0.05, 0.042, 0.08, 0.11, 0.13, 0.142], "regressing"),
        ([0.2 * math.exp(-e / 8) + 0.01 for e in E], "improving"),
        ([max(0.05, 0.2 - 0.03 * e) for e in E], "plateau"),
        ([0.1 + (0.05 if e % 2 else -0.05) for e in E], "noisy"),
        ([0.1, 0.09], "short"),
        ([0.1, 0.1, 0.1, 0.1], "short"),  # flat, but a plateau needs a window of history
        # a noisy but falling curve still improves
        ([0.2 * math.exp(-e / 5) + 0.002 * (e % 2) for e in E], "improving"),
        # a blip above the best that comes back is not a regression
        ([0.1, 0.08, 0.07, 0.09, 0.069] + [0.068] * 20, "plateau"),
        # at its best for a while, then 60 % worse over 30 epochs: a regression, not a plateau (the rise is
        # measured from the last epoch at the best, not from the first)
        ([0.05] * 40 + [0.05 * (1 + 0.02 * k) for k in range(1, 31)], "regressing"),
        ([0.2 * math.exp(-e / 5) + 0.05 for e in E[:20]] + [0.0505, 0.0502, 0.0501, 0.0504, 0.0503]
         + [0.05 * (1 + 0.03 * k) for k in range(1, 21)], "regressing"),
    ],
)
def test_classify_trend_table(values, kind):
    t = classify_trend(range(len(values)), values, window=10, min_delta=0.01)
    assert t.kind == kind, t


def test_higher_is_better_series():
    psnr = [20.0, 24.0, 26.0, 22.0, 19.0, 18.0]
    t = classify_trend(range(6), psnr, higher_is_better=True)
    assert t.kind == "regressing" and t.best == 26.0 and t.best_epoch == 2 and t.last == 18.0


def test_regressing_run_is_not_converged_and_not_stopped(tmp_path):
    n = 12  # train and val reconstruction rise 2-3x after epoch 1
    recon = lambda e: 0.042 if e == 1 else (0.05 if e == 0 else 0.042 * (1 + 0.25 * (e - 1)))
    write_trainer_run(tmp_path / "worse", epochs=n, config=dict(kl_weight=1e-7, epochs=n),
                      curves=healthy_curves(n, recon=recon))
    (d,) = diagnose(vaediag.load(tmp_path))
    trend = d.finding("trend", "val_recon")
    assert trend.severity == "fail" and "regressing" in trend.message and "best 0.042 at epoch 2" in trend.message
    assert d.finding("converged") is None
    assert d.recommendations[0].action == "lower_learning_rate"
    assert "stop_training" not in [r.action for r in d.recommendations]
    assert d.recommendations[0].params["best_epoch"] == 1
    for f in d.findings:  # "X % better" is never negative
        assert "-" not in (f.value_text or "").split("%")[0]
        assert " -" not in f.message.split("better")[0][-8:]


def test_a_run_that_rises_after_sitting_at_its_best_is_regressing_not_converged(tmp_path):
    """The reconstruction reaches its best, stays there, then gets 58 % worse over the last 30 epochs: the
    trend is a regression (fail), the seed's epoch-60 "converged" line fails, nothing says stop."""
    n = 70
    recon = lambda e: 0.05 if e < 40 else 0.05 * (1 + 0.02 * (e - 40))
    write_trainer_run(tmp_path / "late", epochs=n, config=dict(kl_weight=1e-7, epochs=n),
                      curves=healthy_curves(n, recon=recon))
    (d,) = diagnose(vaediag.load(tmp_path))
    trend = d.finding("trend", "val_recon")
    assert trend.severity == "fail" and "regressing" in trend.message, trend
    assert d.finding("converged") is None
    assert d.finding("milestone_60", "converged").status == "fail"
    assert "stop_training" not in [r.action for r in d.recommendations]
    assert d.recommendations[0].action == "lower_learning_rate"


@pytest.mark.parametrize("n, rise", [(12, 0.05), (20, 0.01)], ids=["3-epoch-rise", "divergence"])
def test_val_only_regression_is_overfitting_keep_the_best_checkpoint(tmp_path, n, rise):
    """Val reconstruction best at epoch 9 then rising while train still improves: overfitting. The advice is to
    stop and keep the best checkpoint (named), never "continue: no problem" beside a failing trend; with or
    without the 5-epoch val_recon_divergence rule having fired yet."""
    import tbwrite

    write_trainer_run(tmp_path / "r", epochs=n, val=False, config=dict(kl_weight=1e-7, epochs=100),
                      curves=healthy_curves(n, recon=lambda e: 0.2 - 0.005 * e))
    val = {"val/recon": [((e + 1) * 2 - 1, 0.2 - 0.015 * e if e <= 8 else 0.08 * (1 + rise * 12 * (e - 8)))
                         for e in range(n)],
           "val/kl": [((e + 1) * 2 - 1, 300.0) for e in range(n)]}
    tbwrite.write_run(tmp_path / "r", val, suffix=".val", t0=1.8e9)
    (d,) = diagnose(vaediag.load(tmp_path))
    assert d.finding("trend", "val_recon").severity in ("warn", "fail")
    actions = [r.action for r in d.recommendations]
    assert "continue" not in actions and "stop_training" in actions, [(r.action, r.reason) for r in d.recommendations]
    stop = d.recommendations[actions.index("stop_training")]
    assert "keep the checkpoint of epoch 9" in stop.reason and stop.params["best_epoch"] == 8
    assert "trend.val_recon" in stop.evidence
