"""Reports on awkward inputs: special characters in run names, the watchdog journal, the shared real logs,
and the file handling (refusal to overwrite, --force, missing directories)."""

from __future__ import annotations

import json

import pytest

import report_md as md
from report_runs import SPECIAL_NAMES, run_cli
from vaediag.render.report import GENERATED_PREFIX, files_dir_for


# --------------------------------------------------------------------------------------------------
# Special characters


@pytest.fixture(scope="module")
def special_report(special_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("special_out") / "odd|name*.md"
    assert run_cli("report", str(special_tree), "-o", str(out), "--title", "A *bold* | [title]") == 0
    return out


@pytest.mark.slow
def test_special_names_do_not_break_tables_or_format(special_report):
    text = special_report.read_text(encoding="utf-8")
    for block in md.raw_table_blocks(text):
        n = md.raw_cells(block[0])
        assert all(md.raw_cells(line) == n for line in block), block
    run_table = [t for t in md.tables(text) if t.heading == "Runs" and t.header[1] == "Run"][0]
    # The parser reads each name back exactly as the directory is called: no cell split, no emphasis.
    assert [r[1] for r in run_table.rows] == list(SPECIAL_NAMES)
    html = md.rendered(md.without_generated(text, GENERATED_PREFIX))  # that line is italic on purpose
    assert "<em>" not in html and "<s>" not in html and "<a href" not in html
    assert "<b>" not in html and "<code>q</code>" not in html
    assert "$m$" in md.visible_text(text)  # escaped: GitHub would otherwise render it as math
    assert md.headings(text, 1) == ["A *bold* | [title]"]
    assert any(h.startswith(f"R1: {SPECIAL_NAMES[0]} (") for h in md.headings(text, 3))
    assert any(h.startswith(f"R2: {SPECIAL_NAMES[1]} (") for h in md.headings(text, 3))
    visible = md.visible_text(text)
    for name in SPECIAL_NAMES:
        assert name in visible


@pytest.mark.slow
def test_special_output_name_links_resolve(special_report):
    text = special_report.read_text(encoding="utf-8")
    links = md.image_links(text)
    assert links and all(link.startswith("odd%7Cname%2A_files/") for link in links)
    from urllib.parse import unquote

    for link in links:
        assert (special_report.parent / unquote(link)).read_bytes().startswith(md.PNG_MAGIC)


# --------------------------------------------------------------------------------------------------
# Watchdog decisions


@pytest.fixture(scope="module")
def watch_report(watch_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("watch_out") / "watched.md"
    assert run_cli("report", str(watch_tree), "-o", str(out)) == 0
    return out


@pytest.mark.slow
def test_watchdog_section_lists_the_journal_decisions(watch_report, watch_tree):
    text = watch_report.read_text(encoding="utf-8")
    assert "Watchdog decisions" in md.headings(text, 2)
    journal = [json.loads(line) for line in (watch_tree / "ear_vae/version_0/watchdog.jsonl").read_text().splitlines()]
    changes = [r for r in journal if r["action"] != "keep"]
    assert [r["action"] for r in changes] == ["set_kl_weight"] and changes[0]["epoch"] == 9
    t = [t for t in md.tables(text) if t.heading == "R1: ear_vae/version_0" and t.header[0] == "#"][0]
    assert t.header == ["#", "After epoch", "Action", "kl_weight", "Mode", "Status", "Reason"]
    assert t.rows == [["D1", "10", "set_kl_weight", "0.0000001", "vae", "applied (control)", changes[0]["reason"]]]
    assert f"{len(journal) - 1} epoch(s) with no change (keep) are not listed." in text
    # The logs show the new weight from the next epoch: the run table reads it as a change.
    cfg = [t for t in md.tables(text) if t.heading == "Runs"][0]
    assert cfg.rows[0][3] == "0.00001 → 0.0000001"
    # A one-run report says so instead of ranking a single run.
    assert "**One run: R1** (ear_vae/version_0), final validation PSNR **32.0 dB** after 40 epochs." in text


def test_damaged_journal_is_reported_not_fatal(watch_tree, tmp_path):
    import shutil

    import vaediag
    from vaediag.render.report import diagnose_runs, write_report

    tree = tmp_path / "tree"
    shutil.copytree(watch_tree, tree)
    j = tree / "ear_vae/version_0/watchdog.jsonl"
    lines = j.read_text().splitlines()
    lines[2] = "{not json"
    j.write_text("\n".join(lines) + "\n")
    rs = vaediag.load(tree)
    out = write_report(rs, diagnose_runs(rs), tmp_path / "r.md", plots=False)
    text = out.read_text(encoding="utf-8")
    # The damaged line is skipped and counted; every decision around it is still reported.
    assert "The journal could not be read" not in text
    assert "1 line(s) of the journal were not complete JSON records" in text
    t = [t for t in md.tables(text) if t.heading == "R1: ear_vae/version_0" and t.header[0] == "#"][0]
    assert [r[:3] for r in t.rows] == [["D1", "10", "set_kl_weight"]]
    assert "## Curves" not in text and not files_dir_for(out).exists()


# --------------------------------------------------------------------------------------------------
# The shared real logs (AntixK lineage, dead runs, sign flips)


@pytest.fixture(scope="module")
def realworld_report(realworld, tmp_path_factory):
    out = tmp_path_factory.mktemp("rw_out") / "realworld.md"
    assert run_cli("report", str(realworld), "-o", str(out)) == 0
    return out


@pytest.mark.slow
def test_realworld_report(realworld_report):
    text = realworld_report.read_text(encoding="utf-8")
    assert md.headings(text, 2) == ["Summary", "Runs", "Evolution across runs", "Curves", "Milestones",
                                    "Expected vs actual", "Findings and recommendations", "Notes"]
    for block in md.raw_table_blocks(text):
        n = md.raw_cells(block[0])
        assert all(md.raw_cells(line) == n for line in block), block
    for link in md.image_links(text):
        assert (realworld_report.parent / link).read_bytes().startswith(md.PNG_MAGIC)
    summary = text.split("## Runs")[0]
    # No PSNR in these logs: ranked by validation reconstruction, with the caveat, and a next step.
    assert "ranked by final validation reconstruction loss" in summary
    assert "compare only between runs with the same loss and data" in summary
    assert "come from different folders" in summary
    assert "**Next:** `reduce_kl_weight`" in summary
    # Six runs have epochs; the five dead ones are explained in the notes, not compared.
    cfg = [t for t in md.tables(text) if t.heading == "Runs"][0]
    assert len(cfg.rows) == 6
    notes = text.split("## Notes")[1]
    assert notes.count("has no completed epoch and is left out of the comparison") == 5
    assert "logged as -KL, sign flipped" in notes
    assert "run metadata but no event file" in notes
    # The kl_weight the AntixK configs used, recovered from the train total.
    assert "| R7 | YitongTseo+prot_2_face/logs/VanillaVAE/version_3 | 100 | 0.00025 | loss arithmetic |" in text


# --------------------------------------------------------------------------------------------------
# File handling


@pytest.mark.slow
def test_refuses_to_overwrite_then_force_works(special_tree, tmp_path, capsys):
    out = tmp_path / "r.md"
    out.write_text("my notes\n")
    assert run_cli("report", str(special_tree), "-o", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"Error: {str(out)!r} already exists; pass --force to overwrite it or choose another -o"]
    assert out.read_text() == "my notes\n" and not files_dir_for(out).exists()

    assert run_cli("report", str(special_tree), "-o", str(out), "--force", "--title", "again") == 0
    assert out.read_text(encoding="utf-8").startswith("# again\n") and len(md.files_of(out)) == 5


def test_refuses_when_only_the_plots_folder_exists(special_tree, tmp_path, capsys):
    out = tmp_path / "r.md"
    files_dir_for(out).mkdir()
    (files_dir_for(out) / "mine.png").write_bytes(b"x")
    assert run_cli("report", str(special_tree), "-o", str(out)) == 2
    assert "r_files' already exists; pass --force" in capsys.readouterr().err
    assert not out.exists() and (files_dir_for(out) / "mine.png").read_bytes() == b"x"


def test_missing_output_directories_are_created(special_tree, tmp_path):
    import vaediag
    from vaediag.render.report import diagnose_runs, write_report

    rs = vaediag.load(special_tree)
    out = write_report(rs, diagnose_runs(rs), tmp_path / "a" / "b" / "c" / "deep.md", plots=False)
    assert out == tmp_path / "a/b/c/deep.md" and out.read_text(encoding="utf-8").startswith("# VAE training report")
    assert [p.name for p in out.parent.iterdir()] == ["deep.md"]  # no temporary files left behind


@pytest.mark.slow
def test_default_output_is_reports_name_in_a_new_folder(special_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "reports").exists()
    assert run_cli("report", str(special_tree)) == 0
    out = tmp_path / "reports" / "odd-project.md"
    text = out.read_text(encoding="utf-8")
    assert "](odd-project_files/loss_terms.png)" in text
    assert sorted(md.files_of(out)) == ["kl_weight.png", "loss_terms.png", "loss_terms_weighted.png",
                                        "penalty_share.png", "quality.png"]


# --------------------------------------------------------------------------------------------------
# A run that diverged, and foreign tag names mapped with --tags


def test_diverged_run_is_not_dressed_up(tmp_path):
    """A run whose losses went NaN shows NaN as its final values and is not ranked on stale numbers."""
    import math

    import vaediag
    from seedruns import SEED, write_seed_run
    from vaediag.render.report import build_report, diagnose_runs

    nan_after_8 = {k: (lambda e, c=c: c(e) if e < 8 else math.nan) for k, c in SEED["run3"]["curves"].items()}
    write_seed_run(tmp_path / "diverged" / "version_0", "run3", epochs=12, curves=nan_after_8)
    write_seed_run(tmp_path / "healthy" / "version_0", "run3", epochs=12, t0=1.8e9)
    rs = vaediag.load(tmp_path)
    text = build_report(rs, diagnose_runs(rs), plots=False).markdown
    assert "**Best run: R2** (healthy/version_0)" in text
    assert "Not ranked because their last value is not finite (the run diverged): R1." in text
    metrics = [t for t in md.tables(text) if t.heading == "Runs"][1]
    assert metrics.rows[0][:6] == ["R1", "NaN", "NaN", "NaN", "NaN", "NaN"]
    assert "- PSNR: 18.0-23.4 dB (final NaN: not finite)" in text
    every = [t for t in md.tables(text) if t.heading == "Expected vs actual" and t.header[0] == "#"][0]
    assert every.rows[0][3] == "❌ NaN"
    # The nonfinite findings (one per tag, 28 here) read as one row naming the rest.
    findings = [t for t in md.tables(text) if t.heading == "R1: diverged/version_0" and t.header[0] == "Severity"][0]
    nonfinite = [r for r in findings.rows if r[1].startswith("nonfinite")]
    assert len(nonfinite) == 1 and "more like it: " in nonfinite[0][3]


@pytest.mark.slow
def test_foreign_tags_mapped_with_a_tags_file(tmp_path):
    """`--tags FILE` reaches the reader: custom tag names become KL and reconstruction in the report."""
    import tbwrite

    run = tmp_path / "runs" / "exp1"
    series = {"mine/kl_term": [(s, 400.0 - 10 * s) for s in range(6)],
              "mine/rec_term": [(s, 0.2 - 0.01 * s) for s in range(6)]}
    tbwrite.write_run(run, series, epochs={s: float(s // 2) for s in range(6)})
    tags = tmp_path / "tags.toml"
    tags.write_text('[tags]\n"mine/kl_term" = "kl"\n"mine/rec_term" = "recon"\n')
    out = tmp_path / "r.md"
    assert run_cli("report", str(tmp_path / "runs"), "-o", str(out), "--tags", str(tags)) == 0
    text = out.read_text(encoding="utf-8")
    metrics = [t for t in md.tables(text) if t.heading == "Runs"][1]
    # Epoch 3's train means: KL (360 + 350) / 2, recon (0.16 + 0.15) / 2.
    assert metrics.rows == [["R1", "355", "—", "—", "—", "0.155", "—", "—"]]
    # A foreign run is judged by the generic profile: the milestone section says why it is empty, and does not
    # claim that the run has no completed epochs.
    assert "judged by the generic profile" in text and "no run has completed epochs" not in text
