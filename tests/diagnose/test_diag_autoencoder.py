"""A run switched to the autoencoder (the seed's Option B, z = mu, kl_weight 0) is not failed on the KL band:
its KL is logged but not penalised. Before the switch, the same KL fails as it should."""

from __future__ import annotations

import pytest

import vaediag
from seedruns import healthy_curves, write_trainer_run
from vaediag.diagnose import diagnose


def _kl_checks(d) -> dict[str, str]:
    return {f.id: f.status for f in d.findings if f.rule.startswith(("milestone", "success")) and f.term == "kl"}


def test_kl_band_is_not_judged_after_the_switch_to_the_autoencoder(tmp_path):
    n, switch = 36, 3  # the demo's story: Option B from epoch index 3 on, the KL then grows to ~1,000
    write_trainer_run(tmp_path / "ae", epochs=n, config=dict(kl_weight=1e-2, epochs=n),
                      curves=healthy_curves(n, kl=lambda e: 20.0 if e < switch else 1000.0,
                                     kl_weight=lambda e: 1e-2 if e < 1 else (1e-4 if e < switch else 0.0)),
                      extra_train={"train/ae_mode": lambda e: float(e >= switch)})
    (d,) = diagnose(vaediag.load(tmp_path / "ae"))
    checks = _kl_checks(d)
    assert checks and set(checks.values()) == {"n/a"}, checks
    f = next(f for f in d.findings if f.rule == "success" and f.term == "kl" and f.label == "KL loss < 500")
    assert "autoencoder mode" in f.message and "not penalised" in f.message


def test_the_same_kl_in_vae_mode_still_fails(tmp_path):
    n = 36
    write_trainer_run(tmp_path / "vae", epochs=n, config=dict(kl_weight=1e-4, epochs=n),
                      curves=healthy_curves(n, kl=1000.0), extra_train={"train/ae_mode": lambda e: 0.0})
    (d,) = diagnose(vaediag.load(tmp_path / "vae"))
    assert "fail" in _kl_checks(d).values()


@pytest.mark.slow
def test_the_report_does_not_count_the_kl_target_of_an_autoencoder_as_missed(tmp_path):
    from vaediag.cli import main as cli

    n, switch = 12, 3
    write_trainer_run(tmp_path / "logs" / "ae", epochs=n, config=dict(kl_weight=1e-2, epochs=n),
                      curves=healthy_curves(n, kl=lambda e: 20.0 if e < switch else 1000.0,
                                     kl_weight=lambda e: 1e-2 if e < switch else 0.0),
                      extra_train={"train/ae_mode": lambda e: float(e >= switch)})
    assert cli(["report", str(tmp_path / "logs"), "-o", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "n/a (autoencoder: the KL is not penalised)" in text
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "targets its logs can be judged on" in summary and "missed: KL" not in summary
