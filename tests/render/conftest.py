"""Fixtures for the report tests: trees of real event files (seedruns.py, report_runs.py) and reports written once."""

from __future__ import annotations

from pathlib import Path

import pytest

import seedruns
from report_runs import SPECIAL_NAMES, run_cli, write_supervised_run


@pytest.fixture(scope="session")
def seed_tree(tmp_path_factory) -> Path:
    """logs/ear_teacher with the seed's three runs as ear_vae/version_0..2 (read-only for tests)."""
    root = tmp_path_factory.mktemp("seed") / "ear_teacher"
    return seedruns.write_seed(root, run_dirs=[f"ear_vae/version_{i}" for i in range(3)])


@pytest.fixture(scope="session")
def seed_report(seed_tree, tmp_path_factory) -> Path:
    """`vaediag report` over the seed's three runs, written once for the tests that read it."""
    out = tmp_path_factory.mktemp("seed_report") / "reports" / "seed.md"
    assert run_cli("report", str(seed_tree), "-o", str(out), "--title", "Seed runs") == 0
    return out


@pytest.fixture(scope="session")
def watch_tree(tmp_path_factory) -> Path:
    """One run trained under the watchdog (ladder policy) with its watchdog.jsonl."""
    root = tmp_path_factory.mktemp("watched") / "ear_teacher"
    write_supervised_run(root / "ear_vae" / "version_0")
    return root


@pytest.fixture(scope="session")
def special_tree(tmp_path_factory) -> Path:
    """Two short runs whose directory names are full of markdown syntax."""
    root = tmp_path_factory.mktemp("special") / "odd project"
    for i, name in enumerate(SPECIAL_NAMES):
        seedruns.write_seed_run(root / name, "run3", epochs=4, t0=1.7e9 + i * 1e5, config={"kl_weight": 1e-5 * (i + 1)},
                                curves={"psnr_grey": None, "psnr_colour": None})
    return root
