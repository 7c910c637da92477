"""The KL's gradient share at the latent head, read from real event files and reported beside its value share.

Runs are trainer-like (seedruns.write_trainer_run: the seed's run2, kl_weight 1e-5 and KL 1,535, whose KL
penalty is 4.2 % of the total loss with the seed's recipe) plus the tags `--grad-share-every` writes
(``train/grad_norm/<term>``, ``train/grad_share/<term>``, ``train/grad_cos/kl``) on every 4th step, in an
event file of their own, as a resumed run or a callback's second writer would leave them. A run that did not
log them gets nothing: no gradient summary, no finding, no JSON key, no line.
"""

from __future__ import annotations

import json

import pytest

import tbwrite
import vaediag
from seedruns import STEPS_PER_EPOCH, healthy_curves, write_trainer_run
from vaediag.diagnose import diagnose
from vaediag.diagnose.penalty import gradient_sentence
from vaediag.errors import RulesError
from vaediag.terms import LOSS_TERMS, grad_tag

N = 12
EVERY = 2 * STEPS_PER_EPOCH  # a measurement every other epoch: epochs 0, 2, 4, ..., 10


def _run(root, *, kl_share=lambda e: 0.31, measured=lambda e: True, cosine=-0.4, config=None, curves=None):
    """run2 of the seed with gradient shares logged on every EVERY-th step: the KL's ``kl_share(epoch)``, the
    rest split over the other terms as 4 : 2 : 1 : 1 (norms: share x 0.01)."""
    run = root / "run"
    write_trainer_run(run, epochs=N, config=dict(kl_weight=1e-5, epochs=100, **(config or {})),
                      curves=curves or healthy_curves(N, kl=1535.0))
    series: dict[str, list] = {}
    others = {"recon": 4, "perceptual": 2, "ssim_loss": 1, "edge": 1}
    for step in range(0, N * STEPS_PER_EPOCH, EVERY):
        e = step // STEPS_PER_EPOCH
        if not measured(e):
            continue
        kl = kl_share(e)
        shares = {**{t: (1 - kl) * k / 8 for t, k in others.items()}, "kl": kl}
        for t in LOSS_TERMS:
            series.setdefault(grad_tag("grad_share", t), []).append((step, shares[t]))
            series.setdefault(grad_tag("grad_norm", t), []).append((step, shares[t] * 0.01))
        if cosine is not None:
            series.setdefault(grad_tag("grad_cos", "kl"), []).append((step, cosine))
    epochs = {s: float(s // STEPS_PER_EPOCH) for pts in series.values() for s, _ in pts}
    tbwrite.write_run(run, series, epochs=epochs, suffix=".grad", t0=1.8e9)
    return run


def _diag(run, **kw):
    (d,) = diagnose(vaediag.load(run), **kw)
    return d


def test_the_kl_gradient_share_is_read_beside_its_value_share(tmp_path):
    d = _diag(_run(tmp_path))
    g = d.penalty.gradient
    assert g["epoch"] == 10 and g["split"] == "train"  # the latest measured epoch (epochs 0, 2, ..., 10)
    assert g["kl_grad_share"] == pytest.approx(0.31)
    assert g["kl_value_share"] == pytest.approx(d.penalty.table.loc[10, "share"])
    assert g["kl_value_share"] == pytest.approx(0.01535 / (0.05 + 1.2 * 0.2 + 0.5 * 0.12 + 0.1 * 0.02 + 0.01535),
                                                rel=1e-4)
    assert g["shares"] == pytest.approx({"recon": 0.345, "perceptual": 0.1725, "ssim_loss": 0.08625,
                                         "edge": 0.08625, "kl": 0.31})
    assert g["norms"]["kl"] == pytest.approx(0.0031) and g["cosine"] == pytest.approx(-0.4)
    assert g["value_shares"]["kl"] == pytest.approx(g["kl_value_share"], rel=1e-5)
    assert sum(g["value_shares"].values()) == pytest.approx(1.0)
    assert g["sentence"] == ("KL is 4.2% of the loss value but 31.0% of the gradient at the encoder head "
                             "(mu, logvar), epoch 11")
    (f,) = d.findings_of("gradient_share")
    assert f.severity == "info" and f.value == pytest.approx(0.31) and f.threshold == 0.5 and f.epoch == 10
    assert f.message.startswith(g["sentence"] + " (the others: recon 34.5%, perceptual 17.2%")
    assert f.message.endswith("cosine of the KL's gradient with theirs -0.40")


@pytest.mark.parametrize(
    "kl_share, measured, epoch, sentence",
    [
        # the KL takes over the head: above [gradient] kl_share_warn (0.5): warn
        (lambda e: 0.8, lambda e: True, 10, "KL is 4.2% of the loss value but 80.0% of the gradient"),
        # alike in value and gradient: "and", not "but"
        (lambda e: 0.05, lambda e: True, 10, "KL is 4.2% of the loss value and 5.0% of the gradient"),
        # measured in the early epochs only: the latest measured epoch is named, not the penalty's
        (lambda e: 0.31, lambda e: e < 5, 4, "but 31.0% of the gradient at the encoder head (mu, logvar), epoch 5"),
        # the shares of the epoch's measurements are averaged
        (lambda e: 0.2 if e % 4 == 0 else 0.4, lambda e: True, 10, "but 40.0% of the gradient"),
    ],
)
def test_gradient_cases(tmp_path, kl_share, measured, epoch, sentence):
    d = _diag(_run(tmp_path, kl_share=kl_share, measured=measured))
    g = d.penalty.gradient
    assert g["epoch"] == epoch and sentence in g["sentence"]
    (f,) = d.findings_of("gradient_share")
    assert f.severity == ("warn" if g["kl_grad_share"] > 0.5 else "info")
    if f.severity == "warn":
        assert f.message.endswith("above 50.0%: the KL's pull on the encoder outweighs the reconstruction terms'")


def test_the_warning_threshold_comes_from_the_rules_file(tmp_path):
    run = _run(tmp_path, kl_share=lambda e: 0.8)
    rules = tmp_path / "rules.toml"
    rules.write_text("[gradient]\nkl_share_warn = 0.9\n")
    assert _diag(run).finding("gradient_share").severity == "warn"
    assert _diag(run, rules=rules).finding("gradient_share").severity == "info"
    rules.write_text("[gradient]\nkl_share_warn = 1.5\n")
    with pytest.raises(RulesError, match=r"kl_share_warn.*1\.5"):
        _diag(run, rules=rules)


def test_a_run_without_gradient_tags_gets_nothing_said(tmp_path, capsys):
    from vaediag.cli import main

    run = tmp_path / "plain"
    write_trainer_run(run, epochs=N, config=dict(kl_weight=1e-5, epochs=100), curves=healthy_curves(N, kl=1535.0))
    d = _diag(run)
    assert d.penalty.gradient is None and not d.findings_of("gradient_share")
    main(["check", str(run), "--json"])
    p = json.loads(capsys.readouterr().out)["runs"][0]["penalty"]
    assert "gradient" not in p  # absent, so the key set of other people's runs is what it was
    main(["check", str(run)])
    out = capsys.readouterr().out
    assert "Gradient:" not in out and "gradient_share" not in out and "of the gradient" not in out


def test_check_prints_it_beside_the_penalty_and_json_carries_it(tmp_path, capsys):
    from vaediag.cli import main

    run = _run(tmp_path)
    main(["check", str(run)])
    out = " ".join(capsys.readouterr().out.split())
    assert ("Ratio = 30.0% of reconstruction signal spent on regularisation (30.7% unrounded) Gradient: KL is 4.2% "
            "of the loss value but 31.0% of the gradient at the encoder head (mu, logvar), epoch 11") in out
    main(["check", str(run), "--json"])
    g = json.loads(capsys.readouterr().out)["runs"][0]["penalty"]["gradient"]
    assert set(g) == {"epoch", "split", "kl_grad_share", "kl_value_share", "cosine", "shares", "norms",
                      "value_shares", "sentence"}
    assert g["epoch"] == 10 and g["kl_grad_share"] == pytest.approx(0.31)


@pytest.mark.slow
def test_the_report_tables_value_and_gradient_shares(tmp_path):
    from vaediag.cli import main

    run = _run(tmp_path)
    assert main(["report", str(run), "-o", str(tmp_path / "r.md")]) in (0, 1)
    text = (tmp_path / "r.md").read_text()
    assert "| Term | Share of the loss value | Share of the gradient |" in text
    assert "| KL divergence | 4.2% | 31.0% |" in text
    assert "| reconstruction loss | 13.6% | 34.5% |" in text
    assert "Cosine of the KL's gradient with the sum of the others' at the head: -0.40" in text
    assert "- Gradient: KL is 4.2% of the loss value but 31.0% of the gradient" in text


def test_an_autoencoder_is_said_to_have_no_kl_gradient(tmp_path):
    run = _run(tmp_path, kl_share=lambda e: 0.0, cosine=None, config=dict(ae=True))
    g = _diag(run).penalty.gradient
    assert g["sentence"] == ("autoencoder: the KL is not penalised, 0% of the loss value and of the gradient at the "
                             "encoder head (mu, logvar), epoch 11")


def test_sentence_without_a_known_value_share():
    assert gradient_sentence({"epoch": 0, "kl_grad_share": 0.4, "kl_value_share": None}) == (
        "KL is 40.0% of the gradient at the encoder head (mu, logvar), epoch 1; its share of the loss value is "
        "unknown (kl_weight unknown)")
