"""A dead model (one output for every input, or no better than each image's mean colour) fails; the blur
verdict cannot be passed by noise or artefacts; one engine answers for check, report and the watchdog."""

from __future__ import annotations

import pytest

import vaediag
from seedruns import healthy_curves, write_trainer_run
from vaediag.diagnose import diagnose
from vaediag.diagnose.criteria import blur_verdict
from vaediag.render.report import diagnose_runs


def _run(root, **over):
    n = 8
    write_trainer_run(root, epochs=n, config=dict(kl_weight=1e-3, epochs=n), curves=healthy_curves(n, **over))


def test_demo_like_dead_model_fails(tmp_path):
    # the demo's numbers: val PSNR 12.5 dB, each image's mean colour 21.8 dB, outputs 3.7 % as varied as inputs
    _run(tmp_path / "dead", psnr=12.5, psnr_trivial=21.8, recon_spread=0.037, sharpness=1.18)
    (d,) = diagnose(vaediag.load(tmp_path))
    f = d.finding("dead_model")
    assert f.severity == "fail" and "12.5 dB" in f.message and "21.8 dB" in f.message
    assert d.recommendations[0].action == "fix_model"
    assert d.finding("blurry").severity != "pass"  # a ratio of 1.18 is artefacts, not sharpness
    assert d.finding("success", "sharpness").status == "fail"  # nor do the seed's success criteria call it sharp
    assert "continue" not in [r.action for r in d.recommendations]


def test_live_model_passes(tmp_path):
    _run(tmp_path / "ok", psnr=31.0, psnr_trivial=21.8, recon_spread=0.93, grad_similarity=0.9)
    (d,) = diagnose(vaediag.load(tmp_path))
    assert d.finding("dead_model").severity == "pass" and d.finding("blurry").severity == "pass"


@pytest.mark.parametrize("g, r, verdict", [
    (0.95, None, "sharp"), (0.5, None, "blurry"), (0.1, 1.2, "blurry"),  # similarity decides when logged
    (None, 0.4, "blurry"), (None, 1.18, "artefacts"), (None, 0.9, "unknown"),
])
def test_blur_verdict_table(g, r, verdict):
    out = blur_verdict(grad_similarity=g, sharpness=r, min_grad_similarity=0.85, min_sharpness=0.6, max_sharpness=1.1)
    assert out[0] == verdict


def test_check_and_report_agree(tmp_path):
    _run(tmp_path / "a", psnr=12.5, psnr_trivial=21.8, recon_spread=0.037)
    _run(tmp_path / "b", recon=lambda e: 0.05 * (1 + 0.4 * max(0, e - 1)))
    rs = vaediag.load(tmp_path)
    by_check = {d.run: ([f.id for f in d.findings if f.severity == "fail"], [r.action for r in d.recommendations])
                for d in diagnose(rs)}
    by_report = {d.run: ([f.id for f in d.findings if f.severity == "fail"], [r.action for r in d.recommendations])
                 for d in diagnose_runs(rs)}
    # the report compares each run with the previous one (checklist baselines); the engine's verdicts agree
    for run in by_check:
        assert [a for a in by_check[run][1]] == [a for a in by_report[run][1]], run
        assert {i for i in by_check[run][0] if not i.startswith(("milestone", "success"))} == \
            {i for i in by_report[run][0] if not i.startswith(("milestone", "success"))}


def test_a_dead_output_from_a_collapsed_posterior_is_fixed_by_the_kl_weight():
    """The shipped example `fixed_kl` (our trainer, kl_weight 1e-2 held for 6 epochs, real logs): 0 of 2048
    units active and one output for every input. The collapse explains the dead output, so the first step is
    the KL weight, with both findings as its evidence, not "fix the model"."""
    from vaediag.commands.examples import examples_dir

    (d,) = diagnose(vaediag.load(examples_dir() / "fixed_kl"))
    assert d.finding("dead_model").severity == "fail" and d.finding("kl_collapse").severity == "fail"
    first = d.recommendations[0]
    assert first.action == "reduce_kl_weight" and first.params["kl_weight"] == pytest.approx(1e-3)
    assert set(first.evidence) >= {d.finding("dead_model").id, d.finding("kl_collapse").id}
    assert "because the decoder gets no information through the collapsed latent" in first.reason
    assert "fix_model" not in [r.action for r in d.recommendations]
