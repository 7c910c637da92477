"""Bad input to `vaediag report` and its parts: one line, the right exit code, nothing written; targets files.
The markdown and plot building blocks: test_render_markdown.py, test_render_plots.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

import report_md as md
from report_runs import run_cli
from vaediag.errors import InputError, RulesError, UsageError
from vaediag.render.report import Target, check_destination, load_targets


# --------------------------------------------------------------------------------------------------
# The command line: every error path is one line on stderr and exit 2; nothing is written.


def _bad_targets(tmp_path, text: str) -> str:
    p = tmp_path / "targets.toml"
    p.write_text(text)
    return str(p)


CLI_ERRORS = [
    # (extra args, regular expression the one error line must match)
    (["--baseline", "version_9"], r"--baseline 'version_9' matches no run \(runs: ear_vae/version_0, "),
    (["--run", "nothing*"], r"--run 'nothing\*' matches no run"),
    (["--kl-weight", "-1"], r"--kl-weight: must be a finite number >= 0, got '-1'; see vaediag report --help$"),
    (["--kl-weight", "nan"], r"--kl-weight: must be a finite number >= 0, got 'nan'; see vaediag report --help$"),
    (["--steps-per-epoch", "0"], r"--steps-per-epoch: must be a positive integer, got '0'; see vaediag report --help$"),
    (["--latent-dim", "0"], r"--latent-dim: must be a positive integer, got '0'; see vaediag report --help$"),
    (["--targets", "{tmp}/missing.toml"], r"targets file '.*/missing.toml' does not exist; pass a TOML file"),
    (["--targets", "{bad_toml}"], r"targets file .*/targets.toml: .*\(at line 1, column \d+\)"),
    (["--rules", "{tmp}/missing_rules.toml"], r"rules file '.*/missing_rules.toml' does not exist"),
]


@pytest.mark.parametrize("extra, message", CLI_ERRORS)
def test_cli_errors_are_one_line_exit_2(seed_tree, tmp_path, capsys, extra, message):
    import re

    bad = _bad_targets(tmp_path, "[targets.kl\nterm = 'kl'\n")
    args = [a.format(tmp=tmp_path, bad_toml=bad) for a in extra]
    out = tmp_path / "out" / "r.md"
    assert run_cli("report", str(seed_tree), "-o", str(out), *args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and re.search(message, lines[0]), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


def test_cli_missing_path(tmp_path, capsys):
    assert run_cli("report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.md")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_cli_tree_without_event_files(tmp_path, capsys):
    (tmp_path / "empty" / "run").mkdir(parents=True)
    assert run_cli("report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.md")) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_cli_output_is_a_directory(seed_tree, tmp_path, capsys):
    assert run_cli("report", str(seed_tree), "-o", str(tmp_path)) == 2
    assert "is a directory; give a file name" in capsys.readouterr().err


def test_cli_output_under_a_file(seed_tree, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert run_cli("report", str(seed_tree), "-o", str(tmp_path / "f" / "r.md")) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_cli_same_path_twice(seed_tree, tmp_path, capsys):
    assert run_cli("report", str(seed_tree), str(seed_tree), "-o", str(tmp_path / "r.md")) == 2
    assert "is given twice" in capsys.readouterr().err


@pytest.mark.slow
def test_real_process_exit_code_and_no_heavy_imports(seed_tree, tmp_path):
    """A real `vaediag report` process: exit 2 with one line for a refusal; a report run imports neither
    torch nor pyplot (figures are drawn by the Agg canvas directly)."""
    out = tmp_path / "r.md"
    out.write_text("keep me")
    p = subprocess.run([sys.executable, "-m", "vaediag.cli", "report", str(seed_tree), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "pass --force" in p.stderr
    assert out.read_text() == "keep me"
    code = ("import sys; from vaediag.cli import main; rc = main(['report', sys.argv[1], '-o', sys.argv[2], "
            "'--run', '*version_2']); print(rc, 'torch' in sys.modules, 'matplotlib.pyplot' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code, str(seed_tree), str(tmp_path / "one.md")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "0 False False"
    assert "1 run: R1 ear_vae/version_2." in (tmp_path / "one.md").read_text(encoding="utf-8")


def test_several_paths_with_colliding_run_ids(seed_tree, tmp_path):
    """Two trees that both hold ear_vae/version_0: ids are prefixed with their folder, --run matches them."""
    import shutil

    import vaediag
    from vaediag.commands.report import load_paths

    a, b = tmp_path / "a" / "ear_teacher", tmp_path / "b" / "ear_teacher"
    shutil.copytree(seed_tree / "ear_vae" / "version_0", a / "ear_vae" / "version_0")
    shutil.copytree(seed_tree / "ear_vae" / "version_1", b / "ear_vae" / "version_0")
    rs = load_paths([str(a), str(b)])
    assert sorted(rs.runs) == ["a/ear_teacher/ear_vae/version_0", "b/ear_teacher/ear_vae/version_0"]
    assert sorted(rs.frame["run"].astype(str).unique()) == sorted(rs.runs)
    one = load_paths([str(a), str(b)], run_glob="b/*")
    assert list(one.runs) == ["b/ear_teacher/ear_vae/version_0"]
    # Same rows as loading that tree alone.
    alone = vaediag.load(b)
    assert len(one.frame) == len(alone.frame)


# --------------------------------------------------------------------------------------------------
# Destination checks (library level)


def test_check_destination_force_allows_existing(tmp_path):
    out = tmp_path / "r.md"
    out.write_text("x")
    with pytest.raises(UsageError, match=r"already exists; pass --force"):
        check_destination(out)
    check_destination(out, force=True)


# --------------------------------------------------------------------------------------------------
# Targets files


def test_default_targets_are_the_seeds():
    t = {x.name: x for x in load_targets()}
    assert [(x.term, x.low, x.high, x.direction) for x in t.values()] == [
        ("kl", 100, 500, "range"), ("perceptual", 0.15, 0.25, "lower"), ("psnr", 30, 35, "higher"),
        ("ssim", 0.85, 0.90, "higher"), ("recon", 0.03, 0.05, "lower")]


@pytest.mark.parametrize(
    "target, value, verdict",
    [
        (Target("kl", "kl", 100, 500, "range", "KL"), 1535.0, "high"),
        (Target("kl", "kl", 100, 500, "range", "KL"), 50.0, "low"),
        (Target("kl", "kl", 100, 500, "range", "KL"), 300.0, "met"),
        (Target("psnr", "psnr", 30, 35, "higher", "PSNR"), 36.0, "met"),  # above the range is better
        (Target("psnr", "psnr", 30, 35, "higher", "PSNR"), 23.9, "low"),
        (Target("recon", "recon", 0.03, 0.05, "lower", "Recon"), 0.01, "met"),
        (Target("recon", "recon", 0.03, 0.05, "lower", "Recon"), 0.111, "high"),
        (Target("recon", "recon", 0.03, 0.05, "lower", "Recon"), None, "missing"),
        (Target("recon", "recon", 0.03, 0.05, "lower", "Recon"), float("nan"), "nonfinite"),
        (Target("psnr", "psnr", 30, 35, "higher", "PSNR"), float("inf"), "nonfinite"),
    ],
)
def test_target_judgement(target, value, verdict):
    assert target.judge(value) == verdict


@pytest.mark.parametrize(
    "text, error, message",
    [
        ("[targets.kl\n", RulesError, r"targets file .*: .*line 1"),
        ("[other]\nx = 1\n", RulesError, r"unknown table\(s\) \['other'\]"),
        ("", RulesError, r"no \[targets.NAME\] tables"),
        ("[targets.kl]\nterm = 'kl'\nmin = 1\nmaxx = 2\n", RulesError, r"targets.kl has unknown key\(s\) \['maxx'\]"),
        ("[targets.x]\nterm = 'klx'\nmin = 1\n", RulesError, r"targets.x.term 'klx' is not a canonical term"),
        ("[targets.kl]\nmin = 'a'\n", RulesError, r"targets.kl.min must be a number, got 'a'"),
        ("[targets.kl]\nterm = 'kl'\n", RulesError, r"targets.kl needs min, max or both"),
        ("[targets.kl]\nmin = 5\nmax = 1\n", RulesError, r"targets.kl: min 5 is above max 1"),
        ("[targets.kl]\nmin = 5\ndirection = 'up'\n", RulesError, r"direction 'up' is unknown \(choose lower, higher, range\)"),
        ("[targets.kl]\nmin = 5\nsplit = 'test'\n", RulesError, r"split 'test' is unknown \(choose val, train\)"),
    ],
)
def test_bad_targets_files(tmp_path, text, error, message):
    with pytest.raises(error, match=message):
        load_targets(_bad_targets(tmp_path, text))


def test_missing_targets_file(tmp_path):
    with pytest.raises(InputError, match=r"targets file .* does not exist"):
        load_targets(tmp_path / "nope.toml")


def test_own_targets_change_the_table(seed_tree, tmp_path):
    import vaediag
    from vaediag.render.report import build_report, diagnose_runs

    rs = vaediag.load(seed_tree)
    t = load_targets(_bad_targets(tmp_path, "[targets.psnr]\nterm = 'psnr'\nmin = 20\nlabel = 'PSNR | easy'\n"))
    rep = build_report(rs, diagnose_runs(rs), targets=t, plots=False)
    (tab,) = [x for x in md.tables(rep.markdown) if x.heading == "Expected vs actual" and x.header[0] == "Metric"]
    assert tab.rows == [["PSNR | easy", "≥ 20.0 dB", "22.0", "32.5", "+10.5 dB", "✅ met"]]
