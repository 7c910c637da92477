"""The one engine on runs written the way each lineage logs (tests/helpers/lineages): what the arithmetic proves beats
what a parameter is called, the seed's bands are not applied to other people's runs, conventions read right."""

from __future__ import annotations

import pytest

import vaediag
from vaediag.diagnose.numbers import fmt_weight
from lineages import (write_antixk, write_hf_trainer, write_latent_diffusion, write_lightning, write_pl_bolts,
                      write_plain_loop, write_vqvae)
from vaediag.diagnose import diagnose


def _one(root, **kw):
    rs = vaediag.load(root)
    (d,) = diagnose(rs, **kw)
    return d


def _actions(d):
    return [r.action for r in d.recommendations]


def test_pl_bolts_kl_is_already_weighted_and_averaged_per_dim(tmp_path):
    t = write_pl_bolts(tmp_path / "bolts", kl_coeff=0.1, latent_dim=256)
    d = _one(tmp_path)
    c = d.convention
    assert c.logged == "weighted" and c.kl_weight == pytest.approx(0.1) and c.reduction == "mean_per_dim"
    assert "train_loss = train_kl + train_recon_loss" in c.fit.formula.replace("1 × ", "") or c.fit.parts
    lt = d.penalty.latest
    # penalty = the logged KL itself (kl_coeff already applied), against the logged reconstruction
    logged_kl = t.final["kl"] if lt["split"] == "val" else None
    assert lt["penalty"] == pytest.approx(lt["kl"] * 0.1)
    if logged_kl is not None:
        assert lt["penalty"] == pytest.approx(logged_kl, rel=1e-4)
    assert lt["ratio"] > 0.02  # not divided by kl_coeff a second time
    # The penalty is the logged train_kl (kl_coeff x KL, already weighted), not kl_coeff x it a second time: the
    # latest epoch's mean of the logged values, against the logged train_recon_loss of the same epoch.
    f = vaediag.load(tmp_path).frame
    logged = lambda tag: float(f[(f["tag"] == tag) & (f["epoch"] == lt["epoch"])]["value"].mean())
    assert lt["penalty"] == pytest.approx(logged("train_kl"), rel=1e-6)
    assert lt["ratio"] == pytest.approx(logged("train_kl") / logged("train_recon_loss"), rel=1e-6)
    assert lt["kl_per_dim"] == pytest.approx(logged("train_kl") / 0.1, rel=1e-6)  # the KL is a mean per dim already
    collapse = d.finding("kl_collapse")
    assert collapse is None or collapse.severity != "fail", collapse
    assert d.profile == "generic" and d.finding("kl_too_high") is None


def test_pl_bolts_regressing_is_not_converged(tmp_path):
    write_pl_bolts(tmp_path / "bolts", epochs=10, regress_after=2)
    d = _one(tmp_path)
    assert d.finding("converged") is None
    assert any(f.rule == "trend" and "regressing" in f.message for f in d.findings)
    assert "stop_training" not in _actions(d)


def test_vq_vae_beta_is_not_a_kl_weight(tmp_path):
    t = write_vqvae(tmp_path / "vq", beta=0.25)
    d = _one(tmp_path)
    assert d.model == "vq" and d.penalty.kl_weight is None
    assert "no KL is logged: a VQ-VAE" in d.finding("loss_arithmetic", "convention").message
    assert not {"reduce_kl_weight", "increase_kl_weight", "switch_to_autoencoder"} & set(_actions(d))
    assert d.finding("kl_collapse") is None and d.finding("penalty_share") is None
    # The case: the run's hparams carry the VQ commitment weight as `beta: 0.25` (AntixK's hparams.yaml is
    # empty; a script that saves its model params writes it there). Still no KL weight, still a VQ-VAE.
    (t.run_dir / "hparams.yaml").write_text("model_params:\n  name: VQVAE\n  beta: 0.25\n  embedding_dim: 64\n")
    d = _one(tmp_path)
    assert d.model == "vq" and d.penalty.kl_weight is None and d.convention.kl_weight is None
    assert "(parameter model_params.beta = 0.25 is not a KL weight here)" in d.finding("loss_arithmetic", "convention").message
    assert not {"reduce_kl_weight", "increase_kl_weight", "switch_to_autoencoder"} & set(_actions(d))


def test_latent_diffusion_standard_weight_is_left_alone(tmp_path):
    write_latent_diffusion(tmp_path / "ldm", kl_weight=1e-6)
    # rec_loss and nll_loss stay apart: the penalty is judged against the reconstruction, not their average
    d = _one(tmp_path, kl_weight=1e-6)
    assert d.convention.kl_weight == pytest.approx(1e-6) and d.convention.reduction == "sum"
    assert "reduce_kl_weight" not in _actions(d)
    share = d.finding("penalty_share")
    assert share is not None and share.severity != "fail", share
    assert d.penalty.latest["ratio"] < 0.05
    # Without --kl-weight: 1e-6 x KL is below float32 noise of this total, so the arithmetic cannot prove the
    # weight; main.py's configs/<now>-project.yaml, three levels above the event files, says it.
    d = _one(tmp_path)
    assert d.convention.kl_weight == pytest.approx(1e-6)
    assert d.convention.kl_weight_source == "parameter model.params.lossconfig.params.kl_weight"
    assert "reduce_kl_weight" not in _actions(d) and not d.failed
    # Without that file vaediag says it does not know rather than guessing, and still advises no cut.
    for cfg in tmp_path.rglob("*-project.yaml"):
        cfg.unlink()
    d = _one(tmp_path)
    assert d.convention.kl_weight is None
    assert "reduce_kl_weight" not in _actions(d) and not d.failed


def test_latent_diffusion_penalty_is_judged_against_the_nll_in_the_total(tmp_path):
    """latent-diffusion's total is nll_loss + kl_weight x kl_loss + ...: nll_loss (the per-sample SUM of
    rec / exp(logvar) + logvar) is the reconstruction term of the objective; rec_loss is its per-pixel mean, logged
    for show. The KL penalty 1e-6 x ~7,000 is ~3e-7 of the nll (the issue's "~1e-6"), not 5 % of rec_loss."""
    t = write_latent_diffusion(tmp_path / "ldm", kl_weight=1e-6)
    d = _one(tmp_path)
    lt = d.penalty.latest
    assert lt["recon"] > 1000 and lt["ratio"] < 1e-5, lt  # against nll_loss (~20,000), not rec_loss (~0.14)
    assert d.finding("penalty_share").severity == "pass"
    assert "the logged NLL" in lt["context"]
    assert d.metrics["recon"] == pytest.approx(t.final["recon"], rel=1e-6)  # shown and trended: rec_loss


def test_project_config_is_used_only_when_it_is_a_model_config(tmp_path):
    from vaediag.logs.projectconfig import read_project_config

    run = tmp_path / "logs" / "x" / "testtube" / "version_0"
    run.mkdir(parents=True)
    (tmp_path / "logs" / "x" / "configs").mkdir()
    (tmp_path / "logs" / "x" / "configs" / "a-project.yaml").write_text("lr: 1\n")  # not a model config
    assert read_project_config(run) == ({}, None)
    (tmp_path / "logs" / "x" / "configs" / "b-project.yaml").write_text("model: {params: {embed_dim: 4}}\n")
    data, note = read_project_config(run)
    assert data["model"]["params"]["embed_dim"] == 4 and "b-project.yaml" in note  # the newest by name
    (tmp_path / "logs" / "x" / "configs" / "c-project.yaml").write_text("model: [unclosed\n")
    data, note = read_project_config(run)
    assert data == {} and "c-project.yaml ignored: c-project.yaml is not valid YAML" in note
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    (tmp_path / "logs" / "x" / "configs" / "d-project.yaml").write_text("model: {params: {}}\n" + bomb)
    data, note = read_project_config(run)
    assert data == {} and note.startswith("d-project.yaml ignored")  # refused, not expanded


def test_hf_fractional_epochs_count_right(tmp_path):
    t = write_hf_trainer(tmp_path / "hf", epochs=12)
    d = _one(tmp_path)
    assert d.epochs == t.epochs == 12


@pytest.mark.parametrize("beta", [0.5, 0.4999, 0.00025])
def test_the_fitted_weight_is_the_one_people_wrote_where_the_logs_cannot_tell_it_apart(tmp_path, beta):
    # HF rounds its logged loss to 4 decimals: the least-squares fit reads 0.499998 x kl + 1.00002 x recon. The
    # logs hold 0.5 and 1 just as exactly, and that is what was written; a weight they pin (0.4999) stays.
    write_hf_trainer(tmp_path / "hf", beta=beta)
    conv = _one(tmp_path).convention
    assert conv.kl_weight == beta and conv.kl_weight_source.startswith("the logged total")
    assert conv.fit.formula == f"train/loss = {fmt_weight(beta)} × train/kl + train/recon"


def test_lightning_post_fit_validate_is_not_an_epoch(tmp_path):
    t = write_lightning(tmp_path / "pl", epochs=8, unprefixed_val=False, post_fit_validate=True, post_fit_test=True)
    d = _one(tmp_path)
    assert d.epochs == t.epochs == 8


def test_plain_loop_latent_name_step_minus_one_and_restart(tmp_path):
    t = write_plain_loop(tmp_path / "loop", d_latent=64, val_step_minus_one=True)
    d = _one(tmp_path)
    assert d.convention.latent_dim == 64
    assert d.finding("no_scalars") is None
    assert d.epochs == t.epochs  # the evaluation before training (step -1) is not an epoch
    write_plain_loop(tmp_path / "again", restart_counter=True)
    d = _one(tmp_path / "again")
    assert any("restart" in f.message.lower() for f in d.findings if f.rule == "log_warning")


def test_kl_weight_zero_is_an_autoencoder(tmp_path):
    import seedruns
    from seedruns import healthy_curves

    seedruns.write_trainer_run(tmp_path / "ae0", epochs=12, config=dict(kl_weight=0.0, epochs=12),
                               curves=healthy_curves(12, kl=0.3))
    d = _one(tmp_path)
    assert d.model == "ae"
    assert d.finding("kl_collapse") is None
    assert "reduce_kl_weight" not in _actions(d)


def test_small_latent_healthy_kl_is_not_judged_by_the_seed_band(tmp_path):
    t = write_lightning(tmp_path / "pl16", epochs=8, latent_dim=16)
    d = _one(tmp_path)
    assert d.finding("kl_too_high") is None and d.finding("milestone_30", "kl") is None
    d_seed = _one(tmp_path, profile="seed")
    assert d_seed.profile == "seed"


def test_plans_of_other_runs_use_their_own_kl_and_reconstruction(tmp_path):
    """A Lightning VAE (beta 1, KL ~26 over 16 dims, reconstruction ~79): the reduce plan works at the run's own
    KL, never the seed's "~300", and its ratio is the run's reconstruction against the new penalty, the same
    ratio the penalty finding states (a 100x cut makes it 100x larger, not "3.9:1" from a sum of weights)."""
    write_lightning(tmp_path / "pl16", epochs=8, latent_dim=16)
    d = _one(tmp_path)
    (r,) = [x for x in d.recommendations if x.action == "reduce_kl_weight"]
    lt = d.penalty.latest
    plan = r.params["plan"]
    assert "~" not in plan[1] and f"× {lt['kl']:.1f}" in plan[1], plan
    assert r.params["expected_kl"] == pytest.approx(lt["kl"])
    assert r.params["recon_to_reg"] == pytest.approx(lt["recon_signal"] / (r.params["kl_weight"] * lt["kl"]), rel=1e-6)
    assert r.params["recon_to_reg"] == pytest.approx(lt["recon_to_reg"] * r.params["factor"], rel=1e-6)


def test_lightning_step_and_epoch_tags_are_one_metric_not_averaged(tmp_path):
    """``self.log(..., on_step=True, on_epoch=True)`` writes train/loss_step and train/loss_epoch: the epoch table
    uses Lightning's own epoch mean (train/loss_epoch), never the mean of the two tags."""
    write_lightning(tmp_path / "pl", epochs=6, unprefixed_val=False)
    rs = vaediag.load(tmp_path)
    (d,) = diagnose(rs)
    f = rs.frame
    for term in ("loss", "kl", "recon"):
        epoch_tag = f[f["tag"] == f"train/{term}_epoch"].set_index("epoch")["value"]
        got = d.table[f"train_{term}"].dropna()
        assert got.to_numpy() == pytest.approx(epoch_tag.loc[got.index].to_numpy(), rel=1e-7), term
        steps = f[f["tag"] == f"train/{term}_step"].groupby("epoch")["value"].mean()
        assert not got.to_numpy() == pytest.approx(((steps + epoch_tag) / 2).loc[got.index].to_numpy(), rel=1e-7)


def test_config_and_arithmetic_disagreeing_is_said_and_the_user_wins(tmp_path):
    """hparams say kld_weight 0.001; the logged total holds with 0.00025 x KL on every step: the arithmetic is used
    and the disagreement is a warning. --kl-weight 1 wins over both, and the disagreement is still said."""
    import tbwrite

    steps = range(40)
    series = {"loss": [(s, 0.1 + 0.00025 * (40.0 + s)) for s in steps], "Reconstruction_Loss": [(s, 0.1) for s in steps],
              "KLD": [(s, -(40.0 + s)) for s in steps]}
    tbwrite.write_run(tmp_path / "r", series, epochs={s: float(s // 10) for s in steps},
                      hparams_yaml={"exp_params": {"kld_weight": 0.001}})
    d = _one(tmp_path)
    assert d.penalty.kl_weight == pytest.approx(0.00025) and d.penalty.kl_weight_source.startswith("the logged total")
    (w,) = [f for f in d.findings if f.rule == "loss_arithmetic" and f.severity == "warn"]
    assert "config and arithmetic disagree" in w.message and "0.001" in w.message and "0.00025" in w.message
    d = _one(tmp_path, kl_weight=1.0)
    assert (d.penalty.kl_weight, d.penalty.kl_weight_source) == (1.0, "--kl-weight")
    assert any(f.rule == "loss_arithmetic" and f.severity == "warn" and "--kl-weight" in f.message for f in d.findings)


def test_check_lists_the_tags_it_could_not_map(tmp_path, capsys):
    from vaediag.cli import main

    write_latent_diffusion(tmp_path / "ldm")
    main(["check", str(tmp_path)])
    out = " ".join(capsys.readouterr().out.split())
    assert "unmapped_tags: 6 tags not mapped to any term, ignored: aeloss_epoch, aeloss_step" in out
    assert "(map them with --tags FILE)" in out


def test_lr_vanished_fires_on_the_vq_fixture(tmp_path):
    # configs/vq_vae.yaml's scheduler_gamma 0.0: lr-Adam 0.005 for epoch 0, then 0. LearningRateMonitor writes each
    # epoch's lr at its first step, one step after the previous epoch's validation: read as the previous epoch's,
    # epoch 0 took epoch 1's lr (0) and the rule saw a first value of 0 and stayed silent.
    write_vqvae(tmp_path / "vq")
    f = _one(tmp_path).finding("lr_vanished")
    assert f is not None and f.severity == "warn" and f.value == 0.0 and f.epoch == 5
    assert "of its first value 0.005 " in f.message


def test_lr_vanished_names_the_lr_each_epoch_trained_with(tmp_path):
    # AntixK with a fast-decaying ExponentialLR: the first value is epoch 0's lr (0.005), not epoch 1's (0.00025),
    # and the last is the lr of the last epoch, 0.005 * 0.05**7
    write_antixk(tmp_path / "ax", epochs=8, scheduler_gamma=0.05)
    f = _one(tmp_path).finding("lr_vanished")
    assert f is not None and f.epoch == 7 and f.value == pytest.approx(0.005 * 0.05 ** 7, rel=1e-5)
    assert "of its first value 0.005 " in f.message
