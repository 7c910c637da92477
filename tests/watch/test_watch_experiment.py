"""The experiment script's reading of runs and its report (the runs themselves are not part of CI)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tbwrite import epoch_map, epoch_series, write_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("kl_sweep_experiment", ROOT / "scripts" / "kl_sweep_experiment.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_sweep_is_five_log_spaced_values(exp):
    assert len(exp.SWEEP) == 5
    assert exp.SWEEP[0] == pytest.approx(1e-2) and exp.SWEEP[-1] == pytest.approx(1e-7)
    ratios = [a / b for a, b in zip(exp.SWEEP, exp.SWEEP[1:])]
    assert ratios == pytest.approx([10 ** 1.25] * 4)


def test_final_metrics_reads_the_last_epoch(exp, tmp_path):
    run = tmp_path / "r"
    write_run(run, {"val/psnr": epoch_series([20.0, 24.5]), "val/ssim": epoch_series([0.5, 0.7]),
                    "val/kl": epoch_series([30.0, 80.0]), "train/kl_weight": [(s, 1e-3) for s in range(20)],
                    "train/ae_mode": [(0, 0.0), (10, 1.0)]}, epochs=epoch_map(2))
    m = exp.final_metrics(run)
    assert m == {"epochs": 2, "psnr": 24.5, "ssim": pytest.approx(0.7), "kl": 80.0,
                 "final_kl_weight": pytest.approx(1e-3), "final_mode": "ae"}


def test_report_verdict_and_tables(exp):
    R = exp.RunResult
    results = [
        R("fixed_1.0e-02", "fixed", 1e-2, epochs=20, psnr=18.0, ssim=0.40, kl=20.0, final_kl_weight=1e-2, seconds=60),
        R("fixed_1.8e-06", "fixed", 1.8e-6, epochs=20, psnr=24.0, ssim=0.75, kl=900.0, final_kl_weight=1.8e-6, seconds=60),
        R("watch_ladder", "watch", 1e-2, policy="ladder", epochs=20, psnr=23.7, ssim=0.74, final_kl_weight=0.0,
          final_mode="ae", seconds=70, decisions=[{"epoch": 1, "action": "set_kl_weight", "kl_weight": 1e-3,
                                                   "applied": True, "reason": "kl = 9 | x", "declined": None}]),
        R("watch_geco", "watch", 1e-2, policy="geco", epochs=20, psnr=22.9, ssim=0.70, final_kl_weight=1e-7, seconds=65),
        R("watch_controlvae", "watch", 1e-2, policy="controlvae", exit_code=1),
    ]
    md = exp.render_report(results, epochs=20, setup="setup text.", command="python scripts/kl_sweep_experiment.py")
    assert "The best fixed kl_weight was **1.8e-06**: val PSNR 24.00 dB" in md
    assert "**ladder**, started at 0.01: PSNR 23.70 dB (-0.30 dB against the best fixed value)" in md
    assert "it **meets** the goal of 0.5 dB" in md and "in autoencoder mode" in md
    assert "**geco**" in md and "(-1.10 dB against the best fixed value)" in md and "it **misses** the goal" in md
    assert "**controlvae**: the run did not finish (exit code 1)" in md
    assert "Best policy: **ladder** (23.70 dB PSNR)." in md
    results[3].psnr = 23.7
    assert "Best policy: **ladder** and **geco** (23.70 dB PSNR, a tie)." in exp.render_report(
        results, epochs=20, setup="", command="")
    assert "| 2 | set_kl_weight | 0.001 | yes | kl = 9 \\| x |" in md  # epochs shown 1-based, pipes escaped
    table = [line for line in md.splitlines() if line.startswith("| fixed_") or line.startswith("| watch_")]
    assert len(table) == 5 and all(line.count("|") == 10 for line in table)
