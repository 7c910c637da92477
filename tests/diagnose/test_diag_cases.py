"""A table of synthetic runs (real event files) and what the rules and the ladder must say about each."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

import seedruns
import tbwrite
import vaediag
from vaediag.diagnose import diagnose, diagnose_run, load_rules
from seedruns import approach, healthy_curves, write_trainer_run

def collapse(root: Path) -> None:
    n = 12  # KL rises for 3 epochs, then the penalty pushes it to ~0
    write_trainer_run(root, epochs=n, config=dict(kl_weight=1e-2, latent_dim=256),
                      curves=healthy_curves(n, kl=lambda e: [2.0, 8.0, 12.0][e] if e < 3 else 0.4, active_units=lambda e: 3.0,
                                     sharpness=0.3))


def early_low_kl(root: Path) -> None:
    write_trainer_run(root, epochs=3, config=dict(kl_weight=1e-2, latent_dim=256),
                      curves=healthy_curves(3, kl=0.4, active_units=3.0))


def nan(root: Path) -> None:
    n = 10
    write_trainer_run(root, epochs=n, curves=healthy_curves(n, recon=lambda e: 0.1 if e < 6 else math.nan,
                                                     kl=lambda e: 300.0 if e < 6 else math.nan))


def plateau(root: Path) -> None:
    n = 25
    write_trainer_run(root, epochs=n, curves=healthy_curves(n, recon=lambda e: max(0.05, 0.2 - 0.03 * e)))


def lr_to_zero(root: Path) -> None:
    n = 8
    write_trainer_run(root, epochs=n, curves=healthy_curves(n, recon=lambda e: 0.2 - 0.01 * e, lr=lambda e: 2e-4 * 10 ** (-2 * e)))


def pending(root: Path) -> None:
    n = 5  # a live run: its last event was written a minute ago
    write_trainer_run(root, epochs=n, curves=healthy_curves(n, recon=lambda e: 0.2 - 0.02 * e, kl=lambda e: 200.0 + 100 * e),
                      t0=time.time() - 60 - n * 2)


def divergence(root: Path) -> None:
    n = 20  # train recon keeps falling; val recon is best at epoch 8 and then climbs 40 %
    write_trainer_run(root, epochs=n, val=False, curves=healthy_curves(n, recon=lambda e: 0.2 - 0.005 * e))
    val = {"val/recon": [((e + 1) * 2 - 1, 0.2 - 0.015 * e if e <= 8 else 0.08 + 0.005 * (e - 8)) for e in range(n)],
           "val/kl": [((e + 1) * 2 - 1, 300.0) for e in range(n)]}
    tbwrite.write_run(root, val, suffix=".val", t0=1.8e9)


def ae_blurry(root: Path, latent: int = 1024) -> None:
    n = 35
    write_trainer_run(root, epochs=n, config=dict(ae=True, kl_weight=0.0, latent_dim=latent),
                      curves=healthy_curves(n, kl=5000.0, sharpness=0.4, psnr=26.0, recon=lambda e: 0.2 - 0.004 * e,
                                     ae_mode=1.0))


def tiny_weight_kl_high(root: Path) -> None:
    n = 12
    write_trainer_run(root, epochs=n, config=dict(kl_weight=1e-7, latent_dim=512),
                      curves=healthy_curves(n, kl=900.0, recon=lambda e: 0.2 - 0.01 * e))


def blurry_negligible_penalty(root: Path) -> None:
    n = 32
    write_trainer_run(root, epochs=n, config=dict(kl_weight=1e-6, latent_dim=512),
                      curves=healthy_curves(n, kl=300.0, sharpness=0.4, psnr=26.0, recon=lambda e: 0.3 - 0.005 * e))


def missing_kl(root: Path) -> None:
    n = 6
    series = {"train_recon": [(e, 0.2 - 0.01 * e) for e in range(n)], "val_psnr": [(e, 20.0 + e) for e in range(n)]}
    tbwrite.write_run(root, series, epochs={e: float(e) for e in range(n)})


CASES = [
    # (name, builder, {finding id: severity}, first recommended action)
    ("collapse", collapse, {"kl_collapse": "fail", "blurry": "warn"}, "reduce_kl_weight"),
    ("early_low_kl", early_low_kl, {"too_short": "pass_absent_collapse"}, "continue"),
    ("nan", nan, {"nonfinite": "fail"}, "stop_training"),
    ("plateau", plateau, {"converged": "info"}, "stop_training"),
    ("lr_to_zero", lr_to_zero, {"lr_vanished": "warn"}, "stop_training"),
    ("pending", pending, {"milestone_10.kl": "info", "milestone_30.psnr": "info", "milestone_60.converged": "info"},
     "continue"),
    ("divergence", divergence, {"val_recon_divergence": "warn"}, "stop_training"),
    ("ae_blurry", ae_blurry, {"blurry": "warn", "kl_too_high": "info"}, "increase_latent_dim"),
    ("tiny_weight_kl_high", tiny_weight_kl_high, {"kl_too_high": "fail"}, "switch_to_autoencoder"),
    ("blurry_negligible_penalty", blurry_negligible_penalty, {"blurry": "warn", "penalty_share": "pass"},
     "switch_to_autoencoder"),
    # A foreign run that logs no KL is shown as what it is: a model without a KL term, not a broken VAE.
    ("missing_kl", missing_kl, {"loss_arithmetic.convention": "info"}, "continue"),
]


@pytest.fixture(scope="module")
def case_diags(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    for name, build, _, _ in CASES:
        build(root / name)
    return {d.run: d for d in diagnose(vaediag.load(root))}


@pytest.mark.parametrize("name, expected, action", [(c[0], c[2], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_case(case_diags, name, expected, action):
    d = case_diags[name]
    ids = {f.id: f for f in d.findings}
    for f in d.findings:
        ids.setdefault(f.rule, f)  # a rule with keyed findings (nonfinite.<tag>) also answers to its rule id
    for fid, severity in expected.items():
        if severity == "pass_absent_collapse":
            assert "kl_collapse" not in ids  # the KL's early epochs are not judged
            continue
        assert fid in ids, (fid, sorted(ids))
        assert ids[fid].severity == severity, ids[fid]
    assert d.recommendations[0].action == action, [(r.action, r.reason) for r in d.recommendations]
    json.loads(d.to_json())  # strict JSON whatever the case (NaN -> null)


def test_collapse_message_and_numbers(case_diags):
    f = case_diags["collapse"].finding("kl_collapse")
    assert f.term == "kl_dim_mean" and f.value == pytest.approx(0.4 / 256, rel=1e-4)
    assert "KL per dim" in f.message and "3 of 256 latent units active" in f.message
    assert "the KL fell from 12" in f.message  # after the normal early rise
    r = case_diags["collapse"].recommendations[0]
    assert r.params["kl_weight"] == pytest.approx(1e-3) and r.evidence[0] == "kl_collapse"


def test_collapse_can_increase_the_weight_by_rules(tmp_path):
    collapse(tmp_path / "c")
    rules = tmp_path / "r.toml"
    rules.write_text('[recommend]\non_collapse = "increase_kl_weight"\nkl_increase_factor = 5.0\n')
    (d,) = diagnose(vaediag.load(tmp_path / "c"), rules=rules)
    r = d.recommendations[0]
    assert r.action == "increase_kl_weight" and r.params["kl_weight"] == pytest.approx(5e-2)
    assert r.command.endswith("--kl-weight 0.05")


def test_nan_reports_the_first_bad_step_and_nulls_in_json(case_diags):
    d = case_diags["nan"]
    bad = d.findings_of("nonfinite")
    assert {f.key for f in bad} >= {"train/recon", "val/recon", "train/kl"}
    f = next(f for f in bad if f.key == "val/recon")
    assert f.epoch == 6 and "from step 13 (epoch 7)" in f.message
    doc = json.loads(d.to_json())
    assert doc["metrics"]["recon"] is None  # NaN -> null
    assert [r.action for r in d.recommendations] == ["stop_training"]


def test_plateau_message(case_diags):
    f = case_diags["plateau"].finding("converged")
    assert f.epoch == 24 and f.value == pytest.approx(0.0, abs=1e-6) and "over the last 10 epochs" in f.message


def test_lr_vanished_numbers(case_diags):
    f = case_diags["lr_to_zero"].finding("lr_vanished")
    assert f.value == pytest.approx(2e-18, rel=1e-3) and f.threshold == pytest.approx(2e-7)


def test_pending_milestones_do_not_fail(case_diags):
    d = case_diags["pending"]
    ms = [f for f in d.findings if f.rule.startswith("milestone_")]
    assert ms and all(f.status == "pending" and f.severity == "info" for f in ms)
    assert "the run has 5 of 10 epochs" in d.finding("milestone_10", "kl").message
    assert not d.failed
    assert d.recommendations[0].params["next_milestone"] == 10


def test_ae_latent_dim_doubles_up_to_2048(case_diags, tmp_path):
    r = case_diags["ae_blurry"].recommendations[0]
    assert r.params["latent_dim"] == 2048 and r.command.endswith("--ae --latent-dim 2048")
    ae_blurry(tmp_path / "wide", latent=2048)
    (d,) = diagnose(vaediag.load(tmp_path / "wide"))
    assert "increase_latent_dim" not in [x.action for x in d.recommendations]
    assert d.penalty.kl_weight == 0


def test_tiny_weight_switches_to_autoencoder(case_diags):
    r = case_diags["tiny_weight_kl_high"].recommendations[0]
    assert "already at or below 0.0000001" in r.reason
    assert r.params == {"mode": "ae", "kl_weight": 0.0}
    assert r.command.endswith("--ae --kl-weight 0.0")


def test_partial_epoch_is_not_counted(tmp_path):
    write_trainer_run(tmp_path / "r", epochs=4, train_epochs=5, curves=healthy_curves(5))
    (d,) = diagnose(vaediag.load(tmp_path / "r"))
    assert d.epochs == 4
    assert d.penalty.latest["epoch"] == 3
    assert 4 in d.table.index  # the running epoch's train rows are in the table


def test_kl_weight_unknown_then_from_the_command_line(tmp_path):
    n = 4  # a foreign run whose total is not recon + w KL (a perceptual term in it): nothing to infer
    series = {"loss": [(e, v) for e, v in enumerate([0.5, 0.45, 0.47, 0.41])],
              "Reconstruction_Loss": [(e, 0.1) for e in range(n)], "KLD": [(e, 100.0 + 10 * e) for e in range(n)]}
    tbwrite.write_run(tmp_path / "f", series, epochs={e: float(e) for e in range(n)})
    (d,) = diagnose(vaediag.load(tmp_path / "f"))
    assert d.penalty.kl_weight is None and "pass --kl-weight W" in d.penalty.note
    assert d.finding("penalty_share").severity == "info"
    assert d.penalty.arithmetic[0].startswith("Effective KL penalty = unknown × 130")
    (d,) = diagnose(vaediag.load(tmp_path / "f"), kl_weight=1e-4)
    assert (d.penalty.kl_weight, d.penalty.kl_weight_source) == (1e-4, "--kl-weight")
    assert d.penalty.arithmetic[0] == "Effective KL penalty = 0.0001 × 130 = 0.013"


def test_the_command_line_kl_weight_beats_params(tmp_path):
    series = {"Reconstruction_Loss": [(e, 0.1) for e in range(3)], "KLD": [(e, 100.0) for e in range(3)]}
    tbwrite.write_run(tmp_path / "f", series, epochs={e: float(e) for e in range(3)},
                      hparams_yaml={"exp_params": {"kld_weight": 0.00025}, "model_params": {"latent_dim": 128}})
    (d,) = diagnose(vaediag.load(tmp_path / "f"), kl_weight=1.0, latent_dim=64)
    assert d.penalty.kl_weight == 1.0 and d.penalty.kl_weight_source == "--kl-weight"
    assert d.penalty.latent_dim == 64
    (d,) = diagnose(vaediag.load(tmp_path / "f"))
    assert d.penalty.kl_weight == 0.00025 and d.penalty.kl_weight_source == "parameter exp_params.kld_weight"
    assert d.penalty.latent_dim == 128
    assert "from the parameter's name alone" in d.finding("loss_arithmetic", "convention").message


def test_kl_weight_inferred_from_the_train_total(tmp_path):
    series = {"loss": [(s, 0.1 + 0.00025 * (40 + s)) for s in range(6)], "Reconstruction_Loss": [(s, 0.1) for s in range(6)],
              "KLD": [(s, -(40.0 + s)) for s in range(6)]}
    tbwrite.write_run(tmp_path / "f", series, epochs={s: float(s // 2) for s in range(6)})
    (d,) = diagnose(vaediag.load(tmp_path / "f"))
    assert d.penalty.kl_weight == pytest.approx(0.00025)
    assert d.penalty.kl_weight_source.startswith("the logged total (loss = 0.00025 × KLD + Reconstruction_Loss)")
    assert d.finding("kl_sign_convention", "KLD") is not None


def test_damaged_file_becomes_a_log_warning(tmp_path):
    path = write_trainer_run(tmp_path / "r", epochs=3, curves=healthy_curves(3))
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # a crash mid-record
    (d,) = diagnose(vaediag.load(tmp_path / "r"))
    w = d.findings_of("log_warning")
    assert w and w[0].severity == "warn" and "incomplete" in w[0].message


def test_diagnose_run_on_a_bare_frame(tmp_path):
    """The watchdog's entry: a frame without RunInfo (params and config passed in)."""
    write_trainer_run(tmp_path / "r", epochs=12, config=dict(kl_weight=1e-5), curves=healthy_curves(12, kl=1500.0))
    rs = vaediag.load(tmp_path / "r")
    d = diagnose_run(rs.frame, rules=load_rules(), config={}, params={}, profile="seed")
    assert d.run == "r" and d.finding("kl_too_high").severity == "fail"
    assert d.recommendations[0].action == "reduce_kl_weight" and d.recommendations[0].command is None


def test_bad_kl_weight_and_baseline_raise_usage_errors(tmp_path):
    write_trainer_run(tmp_path / "a", epochs=2, curves=healthy_curves(2))
    rs = vaediag.load(tmp_path)
    from vaediag.errors import UsageError

    with pytest.raises(UsageError, match="--kl-weight must be a finite number >= 0"):
        diagnose(rs, kl_weight=-1.0)
    with pytest.raises(UsageError, match="--baseline 'nope' matches no run"):
        diagnose(rs, baseline="nope")


def test_seedruns_wiggle_averages_out():
    assert seedruns.approach(1.0, 0.0, n=11)(10) == pytest.approx(0.0)
    assert approach(1.0, 0.0, n=11)(0) == pytest.approx(1.0)


def test_unaligned_steps_need_steps_per_epoch(tmp_path):
    """A plain runs/ folder logging per step with no epoch tag: say so, then align with --steps-per-epoch."""
    series = {"loss/kl": [(s, 100.0 + s) for s in range(50)], "loss/recon": [(s, 0.2) for s in range(50)],
              "kl_weight": [(s, 1e-3) for s in range(50)]}
    tbwrite.write_run(tmp_path / "runs" / "exp", series)
    (d,) = diagnose(vaediag.load(tmp_path))
    f = d.finding("missing_terms")
    assert d.epochs == 0 and "not aligned to epochs" in f.message and "--steps-per-epoch N" in f.message
    assert d.recommendations[0].action == "check_logging"
    (d,) = diagnose(vaediag.load(tmp_path, steps_per_epoch=10))
    assert d.epochs == 5 and d.finding("missing_terms") is None
    assert d.penalty.latest["kl"] == pytest.approx(144.5) and d.penalty.kl_weight == pytest.approx(1e-3)


def test_baseline_lookup(tmp_path):
    from vaediag.diagnose import find_run
    from vaediag.errors import UsageError

    for proj in ("a", "b"):
        for v in (0, 1):
            write_trainer_run(tmp_path / proj / f"version_{v}", epochs=10,
                              curves=healthy_curves(10, recon=0.05 if proj == "a" else 0.08))
    rs = vaediag.load(tmp_path)
    assert find_run(rs, "a/version_1") == "a/version_1"
    assert find_run(rs, "b/*_0") == "b/version_0"
    with pytest.raises(UsageError, match=r"--baseline 'version_1' matches 2 runs \(a/version_1, b/version_1\)"):
        find_run(rs, "version_1")
    with pytest.raises(UsageError, match="the baseline path holds 2 runs"):
        diagnose(rs, baseline=vaediag.load(tmp_path / "a"))
    (d, *_) = diagnose(rs, baseline=vaediag.load(tmp_path / "b" / "version_0"))
    f = d.finding("milestone_10", "recon_vs_baseline")
    assert d.run == "a/version_0" and f.status == "pass" and f.threshold == pytest.approx(0.08)
    assert "in baseline version_0 at epoch 10 (better)" in f.message


def test_kl_sign_finding_reads_structured_facts_not_note_text():
    from vaediag.diagnose.health import check_kl_sign_convention
    from vaediag.logs import Note

    facts = [Note("post_fit_eval", "val-KL", "1 val value ('val-KL') logged after the last training epoch; sign flipped", 1),
             Note("kl_sign_flipped", "KLD", "'KLD' is <= 0 throughout (3): logged as -KL, sign flipped", 3)]
    (f,) = check_kl_sign_convention(facts, run="r")
    assert f.key == "KLD" and f.message.startswith("'KLD' is <= 0 throughout")
