"""The shared real logs (AntixK/PyTorch-VAE lineage, Lightning): what an expert would say about them."""

from __future__ import annotations

import json

import pytest

import vaediag
from vaediag.diagnose import diagnose

VANILLA = "YitongTseo+prot_2_face/logs/VanillaVAE/version_3"
BETA = "carmesaure+constellationProject/logs/BetaVAE/version_1"


@pytest.fixture(scope="module")
def rw(realworld):
    rs = vaediag.load(realworld)
    return rs, {d.run: d for d in diagnose(rs)}


def test_every_run_is_diagnosed_and_json_is_strict(rw):
    rs, diags = rw
    assert set(diags) == set(rs.runs)
    for d in diags.values():
        json.loads(d.to_json())
        assert d.recommendations, d.run


def test_kld_sign_note(rw):
    _, diags = rw
    f = diags[VANILLA].finding("kl_sign_convention", "KLD")
    assert f is not None and f.severity == "info" and "logged as -KL, sign flipped" in f.message
    assert diags[VANILLA].metrics["kl"] > 0
    assert diags[BETA].finding("kl_sign_convention") is None  # BetaVAE logs +KL


def test_no_overfitting_alarm_where_only_the_val_kl_rises(rw):
    """val_loss = recon + 1.0 x KL rises with the val KL while the val reconstruction falls: no alarm."""
    _, diags = rw
    d = diags[VANILLA]
    t = d.table
    assert t["val_loss"].iloc[-1] > t["val_loss"].iloc[10]  # the total the AntixK validation logs rises ...
    assert t["val_recon"].iloc[-1] < t["val_recon"].iloc[10]  # ... while reconstruction improves
    assert all(d.finding("val_recon_divergence") is None for d in diags.values())


@pytest.mark.parametrize("run", ["YitongTseo+prot_2_face/logs/DFCVAE/version_9",
                                 "carmesaure+constellationProject/logs/BetaVAE/version_0"])
def test_one_epoch_runs_are_too_short(rw, run):
    _, diags = rw
    d = diags[run]
    assert d.epochs == 1
    f = d.finding("too_short")
    assert f.severity == "warn" and "only 1 completed epoch" in f.message
    assert d.finding("converged") is None and d.finding("kl_collapse") is None


@pytest.mark.parametrize("run", ["YitongTseo+prot_2_face/logs/ConditionalVAE/version_2",
                                 "YitongTseo+prot_2_face/logs/DFCVAE/version_6",
                                 "sarahkorb+VAE-for-Medical-Image-Generation/logs/VanillaVAE/version_1",
                                 "sarahkorb+VAE-for-Medical-Image-Generation/logs/VanillaVAE/version_2",
                                 "sarahkorb+VAE-for-Medical-Image-Generation/runs/vae_gan_1"])
def test_dead_runs_have_no_scalars(rw, run):
    _, diags = rw
    d = diags[run]
    assert [f.rule for f in d.findings] == ["no_scalars"]
    assert d.finding("no_scalars").severity == "warn"
    assert [r.action for r in d.recommendations] == ["check_logging"]
    assert d.epochs == 0 and not d.failed


def test_folder_with_no_event_file_is_skipped_with_a_warning(rw):
    rs, diags = rw
    assert "YitongTseo+prot_2_face/logs/DFCVAE/version_7" not in diags
    assert any("DFCVAE/version_7" in w and "no event file" in w for w in rs.warnings)


def test_antixk_kl_weight_is_inferred_and_the_share_judged(rw):
    _, diags = rw
    d = diags[VANILLA]
    assert d.penalty.kl_weight == pytest.approx(0.00025)  # exp_params.kld_weight in configs/vae.yaml
    assert d.penalty.kl_weight_source.startswith("the logged total (loss = 0.00025 × KLD + Reconstruction_Loss)")
    assert diags[BETA].penalty.kl_weight == pytest.approx(0.001)  # beta 4 x kld_weight 0.00025
    share = d.finding("penalty_share")
    assert share.severity == "fail" and share.value == pytest.approx(0.5, abs=0.05)
    assert d.recommendations[0].action == "reduce_kl_weight"
    # 50 % of the signal: a 100x cut brings it under the 1 % warn line.
    assert d.recommendations[0].params["kl_weight"] == pytest.approx(0.0000025)
    assert d.recommendations[0].command is None  # not our trainer: no command line to give


def test_dfcvae_total_does_not_fit_so_the_weight_stays_unknown(rw):
    _, diags = rw
    d = diags["YitongTseo+prot_2_face/logs/DFCVAE/version_8"]
    assert d.penalty.kl_weight is None and "pass --kl-weight W" in d.penalty.note
    assert d.finding("penalty_share").severity == "info"
    assert d.profile == "generic" and d.finding("milestone_10", "kl") is None  # no seed bands on foreign runs


def test_converged_vanilla_vae_stops(rw):
    _, diags = rw
    d = diags[VANILLA]
    assert d.finding("converged") is not None
    assert "stop_training" in [r.action for r in d.recommendations]
