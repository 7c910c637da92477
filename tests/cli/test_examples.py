"""`vaediag examples`: the example logs shipped inside the package, where they are, a copy, and what check says.

The logs are vaediag/examples/ (scripts/make_examples.py); the numbers asserted here are read from them
(regenerating the examples means updating these). tests/test_wheel.py checks the same runs from an
installed wheel.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from vaediag.cli import main
from vaediag.commands import examples as ex

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "vaediag" / "examples"


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _tree(d: Path) -> dict[str, bytes]:
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


def test_the_listed_runs_are_the_shipped_runs_and_stay_small():
    runs = {str(p.parent.relative_to(EXAMPLES_DIR)) for p in EXAMPLES_DIR.rglob("events.out.tfevents.*")}
    assert runs == set(ex.EXAMPLES)
    assert ex.examples_dir() == EXAMPLES_DIR.resolve()
    assert (EXAMPLES_DIR / "README.md").is_file()
    size = sum(len(b) for b in _tree(EXAMPLES_DIR).values())
    assert size < 1_200_000, f"the example logs grew to {size / 1e6:.2f} MB; they ship in every wheel"


def test_examples_says_where_they_are_and_what_to_run(capsys):
    rc, out, err = _cli(capsys, "examples")
    assert rc == 0 and not err
    assert str(EXAMPLES_DIR.resolve()) in out
    for run_id in ex.EXAMPLES:
        assert run_id in out
    assert f"vaediag check {EXAMPLES_DIR.resolve()}" in out and "vaediag examples --copy DIR" in out
    rc, out, err = _cli(capsys, "examples", "--path")
    assert rc == 0 and out == f"{EXAMPLES_DIR.resolve()}\n" and not err


def test_copy_makes_a_whole_copy_and_never_writes_over_a_folder(capsys, tmp_path):
    dest = tmp_path / "new" / "examples"  # parents are created
    rc, out, err = _cli(capsys, "examples", "--copy", str(dest))
    assert rc == 0 and not err and f"vaediag check {dest}" in out
    assert _tree(dest) == _tree(EXAMPLES_DIR)
    assert os.listdir(dest.parent) == ["examples"]  # no temporary folder left beside it

    (dest / "mine.txt").write_text("keep me")
    before = _tree(dest)
    rc, out, err = _cli(capsys, "examples", "--copy", str(dest))
    assert rc == 2 and not out
    assert err.count("\n") == 1 and "already exists; nothing was copied" in err and "Traceback" not in err
    assert _tree(dest) == before

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    for target in (a_file, link):
        rc, _, err = _cli(capsys, "examples", "--copy", str(target))
        assert rc == 2 and "already exists" in err
    assert a_file.read_text() == "x" and link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_copy_into_an_empty_folder(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = _cli(capsys, "examples", "--copy", str(empty))
    assert rc == 0 and not err and _tree(empty) == _tree(EXAMPLES_DIR)


def test_the_copy_is_writable_whatever_the_installed_files_are(tmp_path, monkeypatch):
    installed = tmp_path / "site" / "examples"
    (installed / "r" / "version_0").mkdir(parents=True)
    f = installed / "r" / "version_0" / "events.out.tfevents.1.host.1.0"
    f.write_bytes(b"x")
    for p in (f, f.parent, f.parent.parent, installed):  # a read-only installation
        p.chmod(stat.S_IRUSR | stat.S_IXUSR if p.is_dir() else stat.S_IRUSR)
    monkeypatch.setattr(ex, "examples_dir", lambda: installed)
    try:
        dest = ex.copy_examples(tmp_path / "copy")
        copied = dest / "r" / "version_0" / "events.out.tfevents.1.host.1.0"
        assert copied.read_bytes() == b"x"
        assert os.access(copied, os.W_OK) and os.access(copied.parent, os.W_OK)
    finally:
        for p in (installed, f.parent.parent, f.parent):
            p.chmod(stat.S_IRWXU)


def test_usage_errors_are_one_line(capsys):
    for argv in (("examples", "--copy"), ("examples", "--path", "--copy", "x")):
        rc, out, err = _cli(capsys, *argv)
        assert rc == 2 and not out and err.count("\n") == 1 and "see vaediag examples --help" in err


def test_an_installation_without_its_examples_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(ex, "__file__", str(tmp_path / "commands" / "examples.py"))
    rc, out, err = _cli(capsys, "examples")
    assert rc == 2 and not out and err.count("\n") == 1 and "missing from this installation" in err


def test_check_on_the_examples(capsys):
    """What the README and `vaediag examples` promise: the collapse found in one run, the fix in the other."""
    rc, out, _ = _cli(capsys, "check", str(EXAMPLES_DIR), "--json")
    assert rc == 1  # both runs fail some success criterion (neither reached 30 dB)
    runs = {r["run"]: r for r in json.loads(out)["runs"]}
    assert set(runs) == set(ex.EXAMPLES)
    fixed, watched = runs["fixed_kl/version_0"], runs["watched/version_0"]
    sev = {f["id"]: f["severity"] for f in fixed["findings"]}
    assert fixed["epochs"] == 6 and fixed["model"] == "vae"
    assert sev["kl_collapse"] == "fail" and sev["dead_model"] == "fail"
    assert fixed["metrics"]["psnr"] == pytest.approx(12.8955, abs=1e-3)
    assert fixed["penalty"]["latest"]["kl_weight"] == pytest.approx(0.01)
    assert watched["epochs"] == 16 and watched["model"] == "ae"
    assert watched["metrics"]["psnr"] == pytest.approx(22.3029, abs=1e-3)
    assert [r["action"] for r in watched["recommendations"]] == ["continue"]


def test_following_a_shipped_run_is_refused_and_the_copy_is_followed(capsys, tmp_path):
    before = _tree(EXAMPLES_DIR)
    for run in ("fixed_kl/version_0", "watched", ".."):  # a run, a folder above one, the package above them all
        rc, out, err = _cli(capsys, "watch", "--follow", str(EXAMPLES_DIR / run), "--idle", "1", "--no-live")
        assert rc == 2 and err.count("\n") == 1, err
        assert "one of the example runs vaediag ships" in err and "vaediag examples --copy" in err
    assert _tree(EXAMPLES_DIR) == before  # no journal, no control file written into the installation
    ex.copy_examples(tmp_path / "mine")
    rc, out, err = _cli(capsys, "watch", "--follow", str(tmp_path / "mine" / "fixed_kl" / "version_0"), "--idle", "1",
                        "--poll", "0.1", "--no-live")
    assert rc == 0, err
    assert (tmp_path / "mine" / "fixed_kl" / "version_0" / "watchdog.jsonl").is_file()
