"""The seed's three runs, diagnosed as the seed's author did: same numbers, same next step."""

from __future__ import annotations

import json
import shlex

import pytest

import vaediag
from vaediag.diagnose import diagnose, load_rules


def test_run2_penalty_arithmetic_as_the_seed_writes_it(seed_diags):
    d = seed_diags["run2"]
    assert d.penalty.arithmetic[0] == "Effective KL penalty = 0.00001 × 1,535 = 0.015"
    assert d.penalty.arithmetic[1] == "Reconstruction loss  = 0.111"
    assert d.penalty.arithmetic[2].startswith("Ratio = 13.5% of reconstruction signal spent on regularisation")
    # The exact numbers stay in the data; the text says the unrounded ratio too.
    lt = d.penalty.latest
    assert lt["epoch"] == 199 and lt["split"] == "train"
    assert lt["kl"] == pytest.approx(1535, rel=1e-6)
    assert lt["penalty"] == pytest.approx(0.01535, rel=1e-5)
    assert lt["recon"] == pytest.approx(0.111, rel=1e-5)
    assert lt["ratio"] == pytest.approx(0.01535 / 0.111, rel=1e-4)
    assert "13.8% unrounded" in d.penalty.arithmetic[2]
    assert d.penalty.kl_weight == 1e-5 and d.penalty.kl_weight_source == "logged kl_weight"
    assert lt["kl_per_dim"] == pytest.approx(1535 / 1024, rel=1e-5)
    assert d.penalty.latent_dim == 1024


def test_run2_kl_too_high_since_epoch_10(seed_diags):
    f = seed_diags["run2"].finding("kl_too_high")
    assert f.severity == "fail" and f.value == pytest.approx(1535)
    assert "above the target 100-500" in f.message and "since epoch 10 (KL 1,660)" in f.message
    m10 = seed_diags["run2"].finding("milestone_10", "kl")
    assert (m10.status, m10.epoch, m10.value_text) == ("fail", 9, "1,660")


def test_run2_reduce_kl_weight_to_1e7_with_the_seed_plan(seed_diags, seed_root):
    """The seed's fix: 1e-5 -> 1e-7 (100x), the smallest power of 10 that brings 13.8 % under 1 %."""
    d = seed_diags["run2"]
    r = d.recommendations[0]
    assert r.action == "reduce_kl_weight"
    assert r.params["kl_weight"] == pytest.approx(1e-7) and r.params["from"] == 1e-5 and r.params["factor"] == 100
    assert "0.00001 → 0.0000001" in r.reason and "smallest power of 10" in r.reason
    assert set(r.evidence) >= {"kl_too_high", "penalty_share"}
    # Blurry with the original weights (perceptual 0.8, SSIM 0.3, no edge): the seed's recipe comes along.
    assert r.params["loss_weights"] == {"w_l1": 1.0, "w_perceptual": 1.2, "w_ssim": 0.5, "w_edge": 0.1}
    assert r.params["plan"] == [
        "Total reconstruction 1.0 + 1.2 + 0.5 + 0.1 = 2.8x",
        "Regularisation 0.0000001 × ~300 = 0.00003",
        "Ratio 93,000:1 reconstruction vs regularisation",
    ]
    assert r.params["recon_to_reg"] == pytest.approx(2.8 / 3e-5)
    cfg = seed_root / "run2" / "config.json"
    assert r.command == (f"python -m train --config {shlex.quote(str(cfg))} --kl-weight 1e-07 "
                         "--w-perceptual 1.2 --w-ssim 0.5 --w-edge 0.1")


def test_run2_command_is_accepted_by_the_trainer(seed_diags):
    """The command line parses with the training core's own parser into the intended config."""
    train_main = pytest.importorskip("train.__main__")
    cmd = seed_diags["run2"].recommendations[0].command
    argv = shlex.split(cmd)
    assert argv[:3] == ["python", "-m", "train"]
    cfg = train_main.config_from_args(train_main.build_parser().parse_args(argv[3:]))
    assert (cfg.kl_weight, cfg.w_perceptual, cfg.w_ssim, cfg.w_edge) == (1e-7, 1.2, 0.5, 0.1)
    assert (cfg.latent_dim, cfg.epochs, cfg.ae) == (1024, 200, False)


@pytest.mark.parametrize(
    "rules_text, factor, plan_ratio",
    [
        ("[recommend]\nmax_reduce_factor = 10.0\n", 10, "9,300:1"),  # a single 10x step, as run 1 -> 2 was
        ("[recommend]\nkl_reduce_factor = 100.0\n", 100, "93,000:1"),
        ("[penalty]\nwarn_ratio = 0.0001\n", 1000, "930,000:1"),  # capped at max_reduce_factor
    ],
)
def test_reduce_factor_is_configurable(seed_root, tmp_path, rules_text, factor, plan_ratio):
    rules = tmp_path / "rules.toml"
    rules.write_text(rules_text)
    (d,) = diagnose(vaediag.load(seed_root, run_glob="run2"), rules=rules)
    r = d.recommendations[0]
    assert r.action == "reduce_kl_weight" and r.params["factor"] == factor
    assert r.params["kl_weight"] == pytest.approx(1e-5 / factor)
    assert r.params["plan"][2] == f"Ratio {plan_ratio} reconstruction vs regularisation"


def test_run1_blurry_with_a_big_penalty_share_reduces_the_weight(seed_diags):
    d = seed_diags["run1"]
    assert d.epochs == 50
    assert 160 <= d.metrics["kl"] <= 180 and 19 <= d.metrics["psnr"] <= 22
    assert d.finding("kl_too_high").severity == "pass"  # KL 160-180 is within the band
    share = d.finding("penalty_share")
    assert share.severity == "fail" and share.value == pytest.approx(1e-4 * 180 / 0.13, rel=1e-3)
    assert d.finding("blurry").severity == "warn"
    assert d.finding("kl_collapse").severity == "pass"  # KL per dim 0.18 nats, 700 active units
    r = d.recommendations[0]
    # 13.8 % of the signal: one 10x step (the seed's run 2) would leave 1.4 %; the cut is 100x.
    assert r.action == "reduce_kl_weight" and r.params["kl_weight"] == pytest.approx(1e-6)
    assert "blurry" in r.evidence and "penalty_share" in r.evidence


def test_run3_passes_every_milestone_and_stops(seed_diags):
    d = seed_diags["run3"]
    checklist = [f for f in d.findings if f.rule.startswith("milestone_") or f.rule == "success"]
    assert {f.rule for f in checklist} == {"milestone_10", "milestone_30", "milestone_60", "success"}
    assert all(f.status == "pass" for f in checklist), [(f.id, f.status, f.message) for f in checklist if f.status != "pass"]
    assert d.finding("milestone_10", "recon_vs_baseline").threshold == pytest.approx(seed_diags["run2"].table.loc[9, "recon"])
    assert not d.failed
    assert [r.action for r in d.recommendations] == ["stop_training"]
    assert "every success criterion is met" in d.recommendations[0].reason
    assert d.finding("penalty_share").severity == "pass"


def test_baseline_run_is_not_compared_with_itself(seed_diags):
    f = seed_diags["run2"].finding("milestone_10", "recon_vs_baseline")
    assert f.status == "n/a" and "this run is the baseline" in f.message


def test_without_baseline_the_comparisons_are_na_with_a_note(seed_root):
    (d,) = diagnose(vaediag.load(seed_root, run_glob="run3"))
    for key in ("recon_vs_baseline", "sharpness_vs_baseline"):
        f = d.finding("milestone_10", key)
        assert f.status == "n/a" and f.severity == "info" and "--baseline RUN" in f.message
    assert not d.failed


def test_json_of_the_seed_runs_is_strict_json(seed_diags):
    for d in seed_diags.values():
        doc = json.loads(d.to_json())
        assert list(doc) == ["run", "epochs", "metrics", "penalty", "findings", "recommendations", "model", "profile",
                             "finished", "kl_convention", "unmapped_tags", "source"]
        assert doc["source"]["kind"] == "tensorboard" and doc["source"]["files"]
        assert len(doc["penalty"]["per_epoch"]) == d.epochs


def test_rules_object_is_reused(seed_root):
    rules = load_rules()
    a = diagnose(vaediag.load(seed_root, run_glob="run1"), rules=rules)
    b = diagnose(vaediag.load(seed_root, run_glob="run1"), rules=rules)
    assert a[0].to_dict() == b[0].to_dict()
