"""`vaediag report` on the seed's three runs (real event files): sections, tables, plots, numbers, bytes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

import report_md as md
from vaediag.render.report import GENERATED_PREFIX

SECTIONS = [
    "Summary",
    "Runs",
    "Evolution across runs",
    "Curves",
    "Milestones",
    "Expected vs actual",
    "Findings and recommendations",
    "Notes",
]
PLOTS = ["loss_terms.png", "loss_terms_weighted.png", "quality.png", "penalty_share.png", "kl_weight.png"]


@pytest.fixture(scope="module")
def text(seed_report) -> str:
    return seed_report.read_text(encoding="utf-8")


def _table(text: str, heading: str, first_header: str) -> md.Table:
    found = [t for t in md.tables(text) if t.heading == heading and t.header[0] == first_header]
    assert found, f"no table under {heading!r} starting with {first_header!r}"
    return found[0]


def _row(t: md.Table, key: str) -> dict[str, str]:
    (row,) = [r for r in t.rows if r[0] == key]
    return dict(zip(t.header, row))


def test_every_section_in_order(text):
    assert md.headings(text, 1) == ["Seed runs"]
    assert md.headings(text, 2) == SECTIONS
    # The evolution section tells the runs' story in the order they ran.
    h3 = md.headings(text, 3)
    evo = [h for h in h3 if h.startswith("R") and "(" in h]
    assert evo == [
        "R1: ear_vae/version_0 (failing)",
        "R2: ear_vae/version_1 (failing)",
        "R3: ear_vae/version_2 (meets the success criteria)",
    ]


def test_one_generated_line(text):
    assert sum(line.startswith(GENERATED_PREFIX) for line in text.splitlines()) == 1


def test_tables_parse_with_equal_cells_per_row(text):
    blocks = md.raw_table_blocks(text)
    parsed = md.tables(text)
    assert len(blocks) == len(parsed) >= 8
    for block, t in zip(blocks, parsed):
        n = md.raw_cells(block[0])
        assert set(block[1].replace("|", "").replace(":", "").replace("-", "")) == set(), block[1]
        assert md.raw_cells(block[1]) == n
        assert all(md.raw_cells(line) == n for line in block[2:]), block
        # The parser agrees: every row has the header's number of cells, none empty.
        assert len(t.header) == n
        assert all(len(r) == n and all(c.strip() for c in r) for r in t.rows), t


def test_every_image_link_is_an_existing_png(seed_report, text):
    links = md.image_links(text)
    assert links == [f"seed_files/{p}" for p in PLOTS]
    for link in links:
        data = (seed_report.parent / link).read_bytes()
        assert data.startswith(md.PNG_MAGIC)
        assert md.png_text_chunks(data) == []  # no Software/time metadata: identical logs -> identical bytes
    assert sorted(md.files_of(seed_report)) == sorted(PLOTS)  # and nothing unlinked beside them


def test_summary_says_which_run_is_best_by_how_much_and_why(text):
    summary = text.split("## Runs")[0].split("## Summary")[1]
    assert "**Best run: R3** (ear_vae/version_2), ranked by final validation PSNR" in summary
    assert "**32.5 dB** after 60 epochs" in summary
    assert "higher than the runner-up R2 (23.9 dB)" in summary
    assert "10.5 dB higher than the baseline R1 (22.0 dB)" in summary
    # Why: the configuration differences from the runner-up, with both values.
    assert "kl_weight 0.0000001 vs 0.00001, 100× lower" in summary
    assert "perceptual weight 1.2 vs 0.8" in summary and "edge weight 0.1 vs 0.0" in summary
    assert "It meets 5 of the 5 targets" in summary
    # What next: the best run's top recommendation (converged and successful -> stop).
    assert "**Next:** `stop_training` for R3" in summary


def test_run_tables(text):
    cfg = _table(text, "Runs", "#")
    assert cfg.header == ["#", "Run", "Epochs", "kl_weight", "kl_weight from", "Latent dim", "Mode", "Loss weights"]
    assert _row(cfg, "R2") == {"#": "R2", "Run": "ear_vae/version_1", "Epochs": "200", "kl_weight": "0.00001",
                               "kl_weight from": "logged", "Latent dim": "1024", "Mode": "VAE",
                               "Loss weights": "1.0 / 0.8 / 0.3 / 0.0"}
    metrics = [t for t in md.tables(text) if t.heading == "Runs"][1]
    r2 = _row(metrics, "R2")
    # The seed's run 2: KL 1,535 (1,660 at epoch 10), PSNR 23.9, SSIM 0.645, perceptual 0.532, recon 0.111,
    # and the penalty relative to recon the seed computed as 13.5 % (0.015 / 0.111; 13.8 % unrounded).
    assert r2["KL"] == "1,535" and r2["PSNR (dB)"] == "23.9" and r2["SSIM"] == "0.645"
    assert r2["Perceptual"] == "0.532" and r2["Recon"] == "0.111"
    assert r2["KL penalty / recon"] == "13.8%"
    assert _row(metrics, "R3")["KL penalty, % of loss"] == "0.0091%"


def test_evolution_ranges_and_changes(text):
    evo = text.split("## Evolution across runs")[1].split("## Curves")[0]
    r2 = evo.split("### R2")[1].split("### R3")[0]
    assert "- KL divergence: 1,535-1,536 (final 1,535); 8.5× higher vs R1" in r2
    assert "- PSNR: 23.9 dB; +1.9 dB vs R1" in r2
    assert "- Reconstruction loss: 0.111; 15% lower vs R1" in r2
    r3 = evo.split("### R3")[1]
    assert "- Verdict: **meets the success criteria**\n" in r3  # every milestone too (a missed one: the next test)
    assert "Verdict: **failing**: misses 6 of 7 success criteria; KL = 1,535 at epoch 200 is above the target" in r2



def test_a_milestone_missed_on_the_way_is_named_in_the_verdict(tmp_path):
    """The end state outranks a milestone missed on the way, which the verdict still names: the seed's run 3
    with its KL 7 higher (307 after epoch 30, above the band 100-300; 297 at the end)."""
    import vaediag
    from seedruns import SEED, write_seed_run
    from vaediag.render.report import build_report, diagnose_runs

    kl = SEED["run3"]["curves"]["kl"]
    write_seed_run(tmp_path / "ear_vae" / "version_2", "run3", curves={"kl": lambda e: kl(e) + 7.0})
    rs = vaediag.load(tmp_path)
    text = build_report(rs, diagnose_runs(rs), plots=False).markdown
    assert "Verdict: **meets the success criteria**: on the way it missed after epoch 30: KL = 307" in text


def test_milestone_table(text):
    t = _table(text, "Milestones", "#")
    assert t.header == ["#", "Epochs", "After epoch 10", "After epoch 30", "After epoch 60", "Success criteria"]
    assert _row(t, "R1")["After epoch 60"] == "not reached"  # it ended after 50 epochs: neither pending nor failed
    assert _row(t, "R2")["After epoch 10"] == "❌ fail"  # KL 1,660 > 500 at epoch 10
    assert _row(t, "R3")["Success criteria"] == "✅ pass"
    # "Better than the previous run" is judged against the run before it (R1 has none: n/a).
    detail = text.split("### Milestones of R2")[1].split("### Milestones of R3")[0]
    assert "recon = 0.243 vs 0.158 in baseline ear_vae/version_0 at epoch 10 (not better): fail" in detail
    first = text.split("### Milestones of R1")[1].split("### Milestones of R2")[0]
    assert "no baseline run to compare with" in first


def test_expected_vs_actual(text):
    t = _table(text, "Expected vs actual", "Metric")
    assert t.header == ["Metric", "Target", "Baseline R1", "Best R3", "Change vs baseline", "Verdict"]
    assert _row(t, "PSNR") == {"Metric": "PSNR", "Target": "30.0-35.0 dB", "Baseline R1": "22.0",
                               "Best R3": "32.5", "Change vs baseline": "+10.5 dB", "Verdict": "✅ met"}
    assert _row(t, "Recon")["Change vs baseline"] == "3.3× lower"
    every = _table(text, "Expected vs actual", "#")
    assert [r[-1] for r in every.rows] == ["1/5", "0/5", "5/5"]
    assert _row(every, "R2")["KL loss"] == "❌ 1,535"


def test_findings_and_recommendations_match_check(text, seed_tree):
    """The same rules as `vaediag check`: the seed's diagnosis of run 2 and its next command."""
    sec = text.split("## Findings and recommendations")[1]
    r2 = sec.split("### R2")[1].split("### R3")[0]
    assert "Effective KL penalty = 0.00001 × " in r2
    assert "kl_too_high" in r2 and "penalty_share" in r2
    assert "1. **reduce_kl_weight**" in r2
    assert f"python -m train --config {seed_tree}/ear_vae/version_1/config.json --kl-weight 1e-07" in r2


@pytest.mark.slow
def test_deterministic_bytes(seed_tree, seed_report, tmp_path, monkeypatch):
    """Same logs -> same markdown bytes (but the generated line) and the same PNG bytes."""
    from report_runs import run_cli

    out = tmp_path / "reports" / "seed.md"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    assert run_cli("report", str(seed_tree), "-o", str(out), "--title", "Seed runs") == 0
    a, b = seed_report.read_text(encoding="utf-8"), out.read_text(encoding="utf-8")
    assert "_Generated 1970-01-02 00:00 UTC" in b
    assert md.without_generated(a, GENERATED_PREFIX) == md.without_generated(b, GENERATED_PREFIX)
    fa, fb = md.files_of(seed_report), md.files_of(out)
    assert sorted(fa) == sorted(fb) == sorted(PLOTS)
    for name in PLOTS:
        assert fa[name] == fb[name], f"{name} differs between two reports of the same logs"


def test_build_report_is_pure_and_repeatable(seed_tree):
    """The Python API: build_report renders in memory; two builds with a fixed time are identical."""
    import vaediag
    from vaediag.render.report import build_report, diagnose_runs

    rs = vaediag.load(seed_tree)
    diags = diagnose_runs(rs)
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    r1 = build_report(rs, diags, out_name="x", generated_at=when, plots=False)
    r2 = build_report(rs, diags, out_name="x", generated_at=when, plots=False)
    assert r1.markdown == r2.markdown and r1.files == {} and "## Curves" not in r1.markdown


def test_explicit_baseline(seed_tree):
    """--baseline RUN: the comparative checks and the expected-vs-actual column both use that run."""
    import vaediag
    from vaediag.render.report import build_report, diagnose_runs

    rs = vaediag.load(seed_tree)
    diags = diagnose_runs(rs, baseline="ear_vae/version_1")
    text = build_report(rs, diags, baseline="ear_vae/version_1", plots=False).markdown
    t = _table(text, "Expected vs actual", "Metric")
    assert t.header[2] == "Baseline R2" and _row(t, "PSNR")["Change vs baseline"] == "+8.6 dB"
    # R1 is now judged against R2 as well (the default would give it no baseline).
    first = text.split("### Milestones of R1")[1].split("### Milestones of R2")[0]
    assert "in baseline ear_vae/version_1 at epoch 10" in first
    from vaediag.errors import UsageError

    with pytest.raises(UsageError, match="--baseline 'version_7' matches no run"):
        diagnose_runs(rs, baseline="version_7")
    with pytest.raises(UsageError, match="--baseline 'version_7' is not a run of this report"):
        build_report(rs, diags, baseline="version_7", plots=False)
