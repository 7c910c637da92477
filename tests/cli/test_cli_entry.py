"""The entry points: ``vaediag --version`` and ``python -m vaediag``, with the version written in one place."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import vaediag
from vaediag.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version_is_written_once_and_pyproject_reads_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vaediag.__version__"}
    assert vaediag.__version__.count(".") == 2 and all(p.isdigit() for p in vaediag.__version__.split("."))


def test_version_option(capsys):
    try:
        code = main(["--version"])
    except SystemExit as exc:  # argparse's version action exits
        code = exc.code
    assert code == 0 and capsys.readouterr().out.strip() == f"vaediag {vaediag.__version__}"


@pytest.mark.slow
def test_python_dash_m_vaediag_is_the_command_line(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "vaediag", *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=ROOT, timeout=60)
    v = run("--version")
    assert v.returncode == 0 and v.stdout.strip() == f"vaediag {vaediag.__version__}" and not v.stderr
    missing = run("check", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    helped = run("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: vaediag ")
