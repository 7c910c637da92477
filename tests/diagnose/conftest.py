"""Fixtures for the diagnosis tests: the seed's three runs and a factory of trainer-like runs, all written
as real event files (tests/helpers/seedruns.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import seedruns


@pytest.fixture(scope="session")
def seed_root(tmp_path_factory) -> Path:
    """``run1``, ``run2``, ``run3`` of the seed under one root (written once per session)."""
    return seedruns.write_seed(tmp_path_factory.mktemp("seed"))


@pytest.fixture(scope="session")
def seed_diags(seed_root):
    """The seed's runs diagnosed with run2 (the previous run of run3) as the baseline."""
    import vaediag
    from vaediag.diagnose import diagnose

    return {d.run: d for d in diagnose(vaediag.load(seed_root), baseline="run2")}
