"""vaediag.integrations.optuna: real Optuna studies whose trials vaediag's diagnosis reports and prunes."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import optuna  # in the [dev] extra: a broken install fails here, it is not skipped
import pytest

from tbwrite import write_run
from vaediag.errors import InputError, UsageError
from vaediag.integrations.optuna import PRUNE_ON, EpochPruner, RunDirPruner, pruning_finding
from vaediag.diagnose.engine import diagnose_run
from vaediag.logs import frame_from_epochs

LATENT = 32
PRUNED, COMPLETE = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(direction: str = "maximize", pruner=None) -> optuna.Study:
    return optuna.create_study(direction=direction, pruner=pruner or optuna.pruners.NopPruner())


def _psnr(recon: float) -> float:
    return 10 * math.log10(1 / recon)


def collapsing(e: int) -> dict:
    """A heavy kl_weight: the KL is pushed to the prior, the latent units fall silent."""
    kl = 40 * 0.15 ** e
    return {"kl": kl, "kl_dim_mean": kl / LATENT, "active_units": max(0, LATENT - 10 * e), "recon": 0.20 - 0.002 * e,
            "psnr": _psnr(0.20 - 0.002 * e), "kl_weight": 0.5}


def healthy(e: int) -> dict:
    recon = 0.2 / (1 + e)
    return {"kl": 30.0 + e, "kl_dim_mean": (30.0 + e) / LATENT, "active_units": LATENT, "recon": recon,
            "psnr": _psnr(recon), "kl_weight": 1e-6}


def test_a_collapsing_trial_is_pruned_with_its_reason_and_a_healthy_one_completes():
    def objective(trial):
        w = trial.suggest_float("kl_weight", 1e-7, 1.0, log=True)
        pruner = EpochPruner(trial, latent_dim=LATENT)
        for epoch in range(8):
            pruner.step(epoch, collapsing(epoch) if w > 0.1 else healthy(epoch))
        return pruner.value

    study = _study()
    study.enqueue_trial({"kl_weight": 0.5})
    study.enqueue_trial({"kl_weight": 1e-6})
    study.optimize(objective, n_trials=2)
    bad, good = study.trials
    assert bad.state == PRUNED
    # judged from the engine's [collapse] after = 5 completed epochs: reported epochs 0..4, pruned at 4
    assert sorted(bad.intermediate_values) == [0, 1, 2, 3, 4]
    assert bad.user_attrs["vaediag_verdict"] == "pruned"
    assert bad.user_attrs["vaediag_reason"].startswith("kl_collapse: posterior collapse at epoch 5")
    assert bad.user_attrs["vaediag_objective"] == "val/psnr (maximize)"
    assert good.state == COMPLETE
    assert good.value == pytest.approx(_psnr(0.2 / 8), rel=1e-6)  # the last epoch's val PSNR
    assert good.intermediate_values == pytest.approx({e: _psnr(0.2 / (1 + e)) for e in range(8)}, rel=1e-6)
    assert good.user_attrs["vaediag_verdict"] != "pruned"
    assert study.best_trial.number == good.number


def test_the_trial_pruned_message_is_the_finding_with_its_numbers():
    study = _study()
    pruner = EpochPruner(study.ask(), latent_dim=LATENT)
    for epoch in range(4):
        pruner.step(epoch, collapsing(epoch))
    with pytest.raises(optuna.TrialPruned) as pruned:
        pruner.step(4, collapsing(4))
    msg = str(pruned.value)
    assert msg.startswith("vaediag: kl_collapse at step 4: posterior collapse at epoch 5: KL per dim")
    assert "active" in msg and pruner.pruned == msg
    with pytest.raises(optuna.TrialPruned):  # a pruned trial stays pruned
        pruner.step(5, healthy(5))


def test_a_nan_epoch_prunes_at_once_even_in_the_warm_up():
    study = _study()
    trial = study.ask()
    pruner = EpochPruner(trial, n_warmup_epochs=3)
    with pytest.raises(optuna.TrialPruned, match=r"^vaediag: nonfinite at step 0: val/psnr is nan"):
        pruner.step(0, {"kl": 3.0, "recon": float("nan"), "psnr": float("nan")})
    assert trial.user_attrs["vaediag_verdict"] == "pruned"
    assert study.trials[0].intermediate_values == {}  # a NaN is not reported as a value


def test_a_missing_objective_is_an_error_that_lists_what_the_loop_logs():
    pruner = EpochPruner(_study().ask(), objective="psnr")
    with pytest.raises(UsageError) as err:
        pruner.step(0, {"kl": 3.0, "recon": 0.2, "train/recon": 0.25})
    assert str(err.value) == ("objective 'val/psnr' is not logged by trial_0 in 1 completed epoch; it logs train/recon, "
                              "val/kl, val/recon: pass objective= one of these")
    with pytest.raises(UsageError, match=r"neither val/psnr nor val/recon \(the default objective\) in 1 completed "
                                         r"epoch; it logs val/kl: pass objective="):
        EpochPruner(_study().ask()).step(0, {"kl": 3.0})


def test_the_default_objective_falls_back_to_val_recon_and_checks_the_study_direction():
    study = _study("minimize")
    trial = study.ask()
    pruner = EpochPruner(trial)
    pruner.step(0, {"kl": 3.0, "recon": 0.2})
    assert trial.user_attrs["vaediag_objective"] == "val/recon (minimize)"
    assert study.trials[0].intermediate_values == {0: 0.2}
    with pytest.raises(UsageError, match=r"the objective 'val/psnr' is best high \(maximize\) but the study is created "
                                         r"with direction='minimize'"):
        EpochPruner(_study("minimize").ask()).step(0, {"psnr": 20.0, "recon": 0.2})
    with pytest.raises(UsageError, match="direction='maximize' or direction='minimize'"):
        EpochPruner(_study().ask(), objective="kl")  # no direction known for the KL
    assert EpochPruner(_study().ask(), objective="train/kl", direction="maximize").direction == "maximize"


def young(e: int, *, spread: float) -> dict:
    """A young run on images: PSNR still below each image's own mean colour (21.8 dB), climbing."""
    return {"kl": 30.0, "recon": 0.2 / (1 + e), "psnr": 14.0 + e, "psnr_trivial": 21.8, "recon_spread": spread}


def test_dead_model_prunes_on_an_output_that_ignores_the_input_not_on_a_psnr_still_below_the_baseline():
    d = diagnose_run(frame_from_epochs([young(e, spread=0.8) for e in range(3)]), finished=False)
    assert d.finding("dead_model").severity == "fail"  # the engine's verdict: below each image's mean colour
    assert pruning_finding(d) is None  # ... which a healthy young run is: no pruning on it
    d = diagnose_run(frame_from_epochs([young(e, spread=0.02) for e in range(3)]), finished=False)
    assert pruning_finding(d).rule == "dead_model"

    study = _study()
    spreads = {"dead": [0.02] * 6,
               "slow start": [0.22, 0.19, 0.23, 0.49, 0.66, 0.81],  # kl_weight 4.1e-4 on the demo data
               "alive": [0.8] * 6}

    def objective(trial):
        kind = trial.suggest_categorical("spread", list(spreads))
        pruner = EpochPruner(trial)
        for e in range(6):
            pruner.step(e, young(e, spread=spreads[kind][e]))
        return pruner.value

    for kind in spreads:
        study.enqueue_trial({"spread": kind})
    study.optimize(objective, n_trials=3)
    dead, slow, alive = study.trials
    # the first three epochs are the warm-up (n_warmup_epochs=3): the dead model is pruned after its fourth
    assert dead.state == PRUNED and sorted(dead.intermediate_values) == [0, 1, 2, 3]
    assert dead.user_attrs["vaediag_reason"].startswith("dead_model: the model's output does not follow its input at "
                                                        "epoch 4: reconstructions vary 2.0% as much")
    # input-independent for three epochs, then alive: not pruned
    assert slow.state == COMPLETE and alive.state == COMPLETE
    assert alive.user_attrs["vaediag_verdict"] == "fail"  # the engine still says so; it did not prune


def test_without_warm_up_the_first_epoch_prunes():
    pruner = EpochPruner(_study().ask(), n_warmup_epochs=0)
    with pytest.raises(optuna.TrialPruned, match="^vaediag: dead_model at step 0"):
        pruner.step(0, young(0, spread=0.22))


def test_the_studys_own_pruner_is_asked_after_vaediag():
    def objective(trial):
        pruner = EpochPruner(trial, study_pruner=trial.number == 0)
        for e in range(3):
            pruner.step(e, healthy(e))
        return pruner.value

    study = _study(pruner=optuna.pruners.ThresholdPruner(lower=10.0))  # healthy(0) is 7.0 dB
    study.optimize(objective, n_trials=2)
    asked, not_asked = study.trials
    assert asked.state == PRUNED and asked.user_attrs["vaediag_reason"] == "the study's pruner (ThresholdPruner) at step 0"
    assert not_asked.state == COMPLETE


def test_prune_on_chooses_the_rules_and_rejects_unknown_ids():
    pruner = EpochPruner(_study().ask(), prune_on=("penalty_share",), n_warmup_epochs=0)
    with pytest.raises(optuna.TrialPruned, match="penalty_share"):
        for e in range(3):
            pruner.step(e, collapsing(e))
    with pytest.raises(UsageError, match=r"prune_on: unknown rule id 'collapse' \(choose from kl_too_high, kl_collapse"):
        EpochPruner(_study().ask(), prune_on=["collapse"])
    assert set(PRUNE_ON) == {"kl_collapse", "dead_model", "nonfinite", "trend"}


def test_epochs_go_in_order_and_metrics_are_checked():
    pruner = EpochPruner(_study().ask())
    pruner.step(0, healthy(0))
    with pytest.raises(UsageError, match="epoch 0 was handed over after epoch 0"):
        pruner.step(0, healthy(0))
    with pytest.raises(UsageError, match="unknown metric 'psnr_db'"):
        pruner.step(1, {"psnr_db": 20.0})
    pruner.step(1, healthy(1))  # a refused epoch leaves nothing behind
    assert pruner.reported == pytest.approx({0: _psnr(0.2), 1: _psnr(0.1)})


# --------------------------------------------------------------------------------------------------
# The run-directory entry point, on real event files


STEPS = 4  # train steps per epoch


def write_epochs(run_dir: Path, vals: list[dict], *, first: int = 0, next_epoch_started: bool = True) -> None:
    """Epochs ``first ...`` of a run as our trainer logs them, in a new event file: per-step train values, then
    each epoch's val values at its last step; ``next_epoch_started``: the first train step of the epoch after."""
    series: dict[str, list] = {}
    epochs: dict[int, float] = {}
    for i, val in enumerate(vals):
        e = first + i
        for s in range(e * STEPS, (e + 1) * STEPS):
            series.setdefault("train/recon", []).append((s, val["recon"] * 1.1))
            series.setdefault("train/kl", []).append((s, val["kl"]))
            epochs[s] = float(e)
        for key, v in val.items():
            series.setdefault(f"val/{key}", []).append(((e + 1) * STEPS - 1, v))
    if next_epoch_started:
        s = (first + len(vals)) * STEPS
        series.setdefault("train/recon", []).append((s, vals[-1]["recon"]))
        epochs[s] = float(first + len(vals))
    write_run(run_dir, series, epochs=epochs, t0=1.7e9 + 100 * first)


def test_run_dir_pruner_reports_whole_epochs_and_prunes_a_dead_run(tmp_path):
    run = tmp_path / "logs" / "version_0"
    study = _study()
    trial = study.ask()
    pruner = RunDirPruner(trial, run, n_warmup_epochs=1)
    run.mkdir(parents=True)
    assert pruner.poll() is None  # nothing logged yet
    write_epochs(run, [young(0, spread=0.02)])
    d = pruner.poll()  # epoch 0 is whole (epoch 1 has begun): reported, not pruned (the warm-up)
    assert d.epochs == 1 and pruner.reported == {0: 14.0}
    write_epochs(run, [young(1, spread=0.02)], first=1)
    with pytest.raises(optuna.TrialPruned, match=r"^vaediag: dead_model at step 1: .* at epoch 2: reconstructions vary 2.0%"):
        pruner.poll()
    assert study.trials[0].intermediate_values == {0: 14.0, 1: 15.0}
    assert trial.user_attrs["vaediag_verdict"] == "pruned"


def test_run_dir_pruner_waits_for_a_half_written_epoch_and_completes_a_healthy_run(tmp_path):
    run = tmp_path / "version_0"
    study = _study()
    trial = study.ask()
    pruner = RunDirPruner(trial, run)
    write_epochs(run, [young(0, spread=0.8)])
    # epoch 1's val PSNR is written, its recon_spread not yet: a reader between two writes
    write_run(run, {"val/psnr": [(2 * STEPS - 1, 0.5)]}, epochs={STEPS + 1: 1.0}, t0=1.7e9 + 50)
    pruner.poll()
    assert pruner.reported == {0: 14.0}  # epoch 1 is not judged until epoch 2 begins
    write_epochs(run, [young(e, spread=0.8) for e in (1, 2)], first=1, next_epoch_started=False)
    pruner.poll()
    assert pruner.reported == {0: 14.0, 1: 15.0}  # epoch 2 is the last: whole only once the run has ended
    d = pruner.poll(final=True)
    assert d.epochs == 3 and pruner.reported == {0: 14.0, 1: 15.0, 2: 16.0} and pruner.value == 16.0
    study.tell(trial, pruner.value)
    assert study.trials[0].state == COMPLETE and study.best_value == 16.0


def test_run_dir_pruner_on_a_run_that_diverged(tmp_path):
    run = tmp_path / "version_0"
    pruner = RunDirPruner(_study().ask(), run)
    write_epochs(run, [young(0, spread=0.8), {**young(1, spread=0.8), "recon": float("nan")}], next_epoch_started=False)
    with pytest.raises(optuna.TrialPruned, match=r"^vaediag: nonfinite at step 1: train/recon is nan from step 4"):
        pruner.poll(final=True)  # the trainer exits on a NaN: its last poll judges everything


def test_run_dir_pruner_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        RunDirPruner(_study().ask(), tmp_path / "nowhere").poll()
    write_epochs(tmp_path / "tree" / "a", [young(0, spread=0.8)])
    write_epochs(tmp_path / "tree" / "b", [young(0, spread=0.8)])
    with pytest.raises(UsageError, match=r"holds 2 runs \(a, b\); give one run directory"):
        RunDirPruner(_study().ask(), tmp_path / "tree").poll()
    write_epochs(tmp_path / "one", [young(0, spread=0.8)])
    with pytest.raises(UsageError, match=r"objective 'val/ssim' is not logged by .* it logs train/kl, train/recon, "
                                         r"val/kl, val/psnr, val/psnr_trivial, val/recon, val/recon_spread"):
        RunDirPruner(_study().ask(), tmp_path / "one", objective="ssim").poll()


def test_without_optuna_the_import_says_how_to_install_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "vaediag.integrations.optuna")
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an environment without optuna looks like to import
    with pytest.raises(ModuleNotFoundError) as err:
        importlib.import_module("vaediag.integrations.optuna")
    assert err.value.name == "optuna"
    assert str(err.value) == "vaediag.integrations.optuna needs optuna: pip install 'vaediag[optuna]' (or pip install optuna)"


@pytest.mark.parametrize("kwargs, message", [
    ({"kl_weight": -1.0}, "kl_weight must be a finite number >= 0, got -1.0"),
    ({"latent_dim": 0}, "latent_dim must be an integer >= 1, got 0"),
    ({"direction": "up"}, "direction 'up' is not one of maximize, minimize"),
    ({"objective": "ssim_db"}, "objective 'ssim_db' is not a loss or metric term (choose a canonical term, optionally "
                               "as train/<term> or val/<term>: loss, recon, perceptual"),
    ({"objective": "test/psnr"}, "objective 'test/psnr' is not a loss or metric term"),
    ({"n_warmup_epochs": -1}, "n_warmup_epochs must be an integer >= 0, got -1"),
    ({"profile": "strict"}, "unknown profile 'strict' (choose auto, seed, generic)"),
])
def test_arguments_are_checked_when_the_pruner_is_made(kwargs, message):
    with pytest.raises(UsageError) as err:
        EpochPruner(_study().ask(), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
