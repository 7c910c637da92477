"""The console view of `vaediag check`, printed into a fixed-width console and read back as text."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from vaediag.render.console import render_check


def _text(diags, **kw) -> str:
    buf = io.StringIO()
    render_check(diags, console=Console(file=buf, width=100, color_system=None), **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def run2_text(seed_diags):
    return _text([seed_diags["run2"]])


def test_header_shows_run_epochs_verdict_and_latest_metrics(run2_text):
    assert "run2  ·  200 completed epochs  ·  FAIL" in run2_text
    flat = " ".join(run2_text.split())
    assert "latest (epoch 200): KL 1,535 · recon 0.111 · perceptual 0.532" in flat
    assert "PSNR 23.9 dB" in flat and "SSIM 0.645" in flat and "kl_weight 0.00001" in flat


def test_penalty_written_as_the_seed_writes_it(run2_text):
    assert "  Effective KL penalty = 0.00001 × 1,535 = 0.015\n" in run2_text
    assert "  Reconstruction loss  = 0.111\n" in run2_text
    assert "  Ratio = 13.5% of reconstruction signal spent on regularisation" in run2_text
    assert "KL penalty (epoch 200, train split; kl_weight 0.00001 (logged kl_weight))" in run2_text


@pytest.mark.parametrize("row", [
    r"After epoch 10\s+KL loss < 500\s+1,660\s+FAIL",
    r"Perceptual < 0.4\s+0.889\s+FAIL",
    r"After epoch 30\s+KL loss 100-300 \(stabilised\)\s+1,624\s+FAIL",
    r"PSNR > 28 dB\s+21.4 dB\s+FAIL",
    r"Success\s+KL loss < 500\s+1,535\s+FAIL",
    r"KL stable \(last 5 epochs within 20%\)\s+0.028% spread\s+PASS",
])
def test_checklist_rows(run2_text, row):
    import re

    assert re.search(row, run2_text), run2_text


def test_findings_and_next_steps_with_command(run2_text, seed_root):
    flat = " ".join(run2_text.split())
    assert "✗ kl_too_high: KL = 1,535 at epoch 200 is above the target 100-500" in flat
    assert "1. reduce_kl_weight:" in flat and "0.00001 → 0.0000001" in flat
    assert "Total reconstruction 1.0 + 1.2 + 0.5 + 0.1 = 2.8x" in run2_text
    assert "Regularisation 0.0000001 × ~300 = 0.00003" in run2_text
    assert "Ratio 93,000:1 reconstruction vs regularisation" in run2_text
    # The command is printed on one line (soft wrap) so it copies in one piece.
    cmd_line = next(line for line in run2_text.splitlines() if line.strip().startswith("$ python -m train"))
    assert cmd_line.strip().endswith("--kl-weight 1e-07 --w-perceptual 1.2 --w-ssim 0.5 --w-edge 0.1")
    assert str(seed_root / "run2" / "config.json") in cmd_line


def test_pending_and_summary(seed_diags):
    text = _text(list(seed_diags.values()), warnings=["x/version_7: run metadata but no event file; skipped"])
    assert "3 runs checked: 2 fail, 1 ok" in text
    assert "! x/version_7: run metadata but no event file; skipped" in text
    run1 = _text([seed_diags["run1"]])
    assert __import__("re").search(r"After epoch 60\s+Converged: can stop training\s+not reached", run1)


def test_run3_passes(seed_diags):
    text = _text([seed_diags["run3"]])
    assert "run3  ·  60 completed epochs  ·  OK" in text  # converged is news (info), nothing failed
    assert "FAIL" not in text
    assert "1. stop_training:" in text


def test_dead_run_shows_only_what_is_known(realworld):
    import vaediag
    from vaediag.diagnose import diagnose

    rs = vaediag.load(realworld / "sarahkorb+VAE-for-Medical-Image-Generation" / "runs")
    text = _text(diagnose(rs))
    assert "vae_gan_1  ·  0 completed epochs  ·  WARN" in text
    assert "no_scalars" in text and "check_logging" in text
    assert "Checklist" not in text and "Effective KL penalty" not in text
