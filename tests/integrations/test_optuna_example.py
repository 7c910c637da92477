"""Optuna studies that train: a tiny real loop in process, and examples/optuna_kl_study.py end to end."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import optuna  # in the [dev] extra: a broken install fails here, it is not skipped
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "optuna_kl_study.py"


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.slow
def test_a_tiny_real_loop_collapses_at_a_heavy_kl_weight_and_is_pruned():
    torch = pytest.importorskip("torch")  # the [train] extra
    import torch.nn.functional as F

    from vaediag.integrations.optuna import EpochPruner

    latent = 8

    def objective(trial):
        kl_weight = trial.suggest_float("kl_weight", 1e-6, 1.0, log=True)
        torch.manual_seed(0)
        data = torch.rand(256, 64)
        enc, dec = torch.nn.Linear(64, 2 * latent), torch.nn.Linear(latent, 64)
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)

        def losses(x):
            mu, logvar = enc(x).chunk(2, dim=1)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            mse = F.mse_loss(torch.sigmoid(dec(z)), x)
            kl_dims = (-0.5 * (1 + logvar - mu**2 - logvar.exp())).mean(0)  # per latent dim, batch mean
            return mse, kl_dims, mu

        pruner = EpochPruner(trial, latent_dim=latent)
        for epoch in range(8):
            for x in data.split(32):
                mse, kl_dims, _ = losses(x)
                loss = mse + kl_weight * kl_dims.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                mse, kl_dims, mu = losses(data)
            pruner.step(epoch, {"recon": mse.item(), "psnr": -10 * torch.log10(mse).item(), "kl": kl_dims.sum().item(),
                                "kl_dim_mean": kl_dims.mean().item(), "active_units": int((mu.var(0) > 0.01).sum()),
                                "kl_weight": kl_weight})
        return pruner.value

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"kl_weight": 1.0})
    study.enqueue_trial({"kl_weight": 1e-4})
    study.optimize(objective, n_trials=2)
    heavy, light = study.trials
    assert heavy.state == optuna.trial.TrialState.PRUNED, heavy.user_attrs
    assert heavy.user_attrs["vaediag_reason"].startswith("kl_collapse: posterior collapse at epoch 5")
    assert light.state == optuna.trial.TrialState.COMPLETE, light.user_attrs
    assert light.value > max(heavy.intermediate_values.values())  # the latent code carried information


def _example():
    spec = importlib.util.spec_from_file_location("optuna_kl_study", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_example_refuses_an_existing_journal_and_a_resume_of_nothing(tmp_path, capsys):
    ex = _example()
    journal = tmp_path / "kl_study.journal"
    journal.write_text("an earlier study\n")
    with pytest.raises(SystemExit) as code:
        ex.main(["--out", str(tmp_path)])
    assert code.value.code == 2 and "kl_study.journal exists (an earlier study): pass --resume" in capsys.readouterr().err
    assert journal.read_text() == "an earlier study\n"
    with pytest.raises(SystemExit):
        ex.main(["--out", str(tmp_path), "--study", "other", "--resume"])
    assert "--resume: there is no" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ex.main(["--out", str(tmp_path), "--study", "other", "--enqueue", "0.5"])
    assert "--enqueue 0.5 is outside the study's range [1e-07, 0.1]" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_example_study_runs_in_parallel_workers_and_prunes_the_collapsing_trial(tmp_path):
    out = tmp_path / "optuna"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("VAEDIAG_RUN_DIR_FILE", None)
    cmd = [sys.executable, str(EXAMPLE), "--trials", "2", "--workers", "2", "--epochs", "5", "--enqueue", "0.1,1e-7",
           "--out", str(out), "--data-dir", str(tmp_path / "data"), "--poll", "0.5"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]

    ex = _example()
    study = optuna.load_study(study_name="kl_study", storage=ex.storage(out / "kl_study.journal"))
    collapsing, healthy = sorted(study.trials, key=lambda t: -t.params["kl_weight"])
    assert collapsing.params["kl_weight"] == 0.1 and collapsing.state == optuna.trial.TrialState.PRUNED
    assert collapsing.user_attrs["vaediag_reason"].split(":")[0] in ("dead_model", "kl_collapse")
    assert len(collapsing.intermediate_values) == 4  # pruned after the warm-up (3 epochs), not trained to the end
    assert healthy.state == optuna.trial.TrialState.COMPLETE
    assert sorted(healthy.intermediate_values) == [0, 1, 2, 3, 4] and healthy.value == healthy.intermediate_values[4]
    for t in (collapsing, healthy):  # each trial is a real run of the trainer that vaediag reads
        assert list(Path(t.user_attrs["run_dir"]).glob("events.out.tfevents.*"))
    text = proc.stdout
    assert f"best: trial {healthy.number}, kl_weight 1e-07: val PSNR {healthy.value:.2f} dB after 5 epochs" in text
    assert "pruned: 1 of 2:" in text
    assert f"  trial {collapsing.number} (kl_weight 0.1), after {len(collapsing.intermediate_values)} epoch(s): " \
           f"{collapsing.user_attrs['vaediag_reason']}" in text
