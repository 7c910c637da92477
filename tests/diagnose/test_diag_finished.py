"""A finished run is judged on its final state; a good run still improving at epoch 60 is not a failure.

A run has ended when it reached its planned epochs, its watchdog journal records the training process's exit,
or nothing was written for ``[finished] idle_seconds``. Then a milestone it never reached is "not reached: the
run ended at epoch E" (neither pending nor failed) and the success criteria are judged now. A live run keeps
its milestones pending.
"""

from __future__ import annotations

import json
import time

import pytest

import vaediag
from seedruns import healthy_curves, write_trainer_run
from vaediag.cli import main
from vaediag.diagnose import diagnose


def _short(root, *, planned: int, t0: float = 1.7e9, journal: bool = False):
    n = 8  # PSNR 26 dB: short of the seed's "PSNR > 30 dB" success criterion
    write_trainer_run(root, epochs=n, config=dict(kl_weight=1e-7, epochs=planned), t0=t0,
                      curves=healthy_curves(n, psnr=26.0, recon=lambda e: 0.2 - 0.01 * e))
    if journal:
        (root / "watchdog.jsonl").write_text(json.dumps({"event": "exit", "returncode": 0}) + "\n")


@pytest.mark.parametrize("how, kw, why", [
    ("planned", dict(planned=8), "reached its planned 8 epochs"),
    ("journal", dict(planned=100, journal=True, t0=time.time() - 30), "watchdog journal records"),
    ("idle", dict(planned=100), "no event for"),
])
def test_a_finished_run_is_judged_on_its_final_state(tmp_path, how, kw, why):
    _short(tmp_path / "r", **kw)
    (d,) = diagnose(vaediag.load(tmp_path))
    assert d.finished[0] and why in d.finding("run_finished").message
    m30 = d.finding("milestone_30", "psnr")
    assert m30.status == "not reached" and m30.severity == "info"
    assert "not reached: the run ended at epoch 8" in m30.message
    psnr = d.finding("success", "psnr")
    assert psnr.status == "fail" and "the run ended at epoch 8 short of it" in psnr.message
    assert d.failed
    top = d.recommendations[0]
    assert "no problem that needs a change" not in top.reason  # a failing run is not "fine"


def test_a_live_run_keeps_its_milestones_pending(tmp_path):
    _short(tmp_path / "r", planned=100, t0=time.time() - 60)
    (d,) = diagnose(vaediag.load(tmp_path))
    assert not d.finished[0]
    assert d.finding("milestone_30", "psnr").status == "pending"
    assert d.finding("success", "psnr").status == "pending" and not d.failed


def test_a_good_run_still_improving_at_epoch_60_is_not_a_failure(tmp_path, capsys):
    """Every success criterion met (KL 252 stable, perceptual 0.2, PSNR 32 dB) and the reconstruction still
    improving 1.3 % per 10 epochs at epoch 60: the "converged" line waits, the run is OK, exit 0, and the next
    step is to keep training, not a checkpoint at an epoch the run has already passed."""
    n = 60
    write_trainer_run(tmp_path / "good", epochs=n, config=dict(kl_weight=1e-7, epochs=100),
                      t0=time.time() - 2 * n * 2 - 60,
                      curves=healthy_curves(n, kl=252.0, perceptual=0.2, psnr=32.0,
                                            recon=lambda e: 0.04 * (1 + 0.0013 * (n - 1 - e))))
    (d,) = diagnose(vaediag.load(tmp_path))
    conv = d.finding("milestone_60", "converged")
    assert conv.status == "pending" and conv.severity == "info" and "still improving" in conv.message
    assert all(f.status == "pass" for f in d.findings_of("success") if f.status != "n/a")
    assert not d.failed and d.severity != "fail"
    top = d.recommendations[0]
    assert top.action == "continue"
    assert "next checkpoint: epoch 60" not in top.reason and "still improving" in top.reason
    assert main(["check", str(tmp_path)]) == 0
    assert "FAIL" not in capsys.readouterr().out
