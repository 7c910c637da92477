"""Shared fixtures: the real logs of public projects (tests/fixtures/realworld) and the seed's three runs, written
once per session as real event files (tests/helpers/seedruns.py) and diagnosed. Tests write their own event
files with tests/helpers/tbwrite.py (tests/helpers is on pytest's pythonpath)."""

from __future__ import annotations

import os
import re
from pathlib import Path

# One thread per process under pytest-xdist (make test runs one worker per core): torch's OpenMP pool, one
# thread per core in every worker and in every trainer a test starts, spins against the other workers'.
# Measured on 2 cores: a validation test that takes 0.8 CPU-s alone took 13 CPU-s beside a second worker.
# Set before numpy or torch is imported (the thread pools are sized then); child processes inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"

import pytest  # noqa: E402

import seedruns  # noqa: E402

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


# A copy of ../shared/realworld (real logs from public VAE projects) is committed under
# tests/fixtures/realworld so a clean clone tests against them; VAEDIAG_REALWORLD overrides.
REALWORLD = Path(os.environ.get("VAEDIAG_REALWORLD", TESTS / "fixtures" / "realworld"))


@pytest.fixture(scope="session")
def realworld() -> Path:
    if not REALWORLD.is_dir():
        pytest.fail(f"shared real logs not found at {REALWORLD}; set VAEDIAG_REALWORLD")
    return REALWORLD


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


_SLOW_MODULE = re.compile(r"^pytestmark = pytest\.mark\.slow\s*$", re.M)  # at the top level only


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """Under ``-m "not slow"`` (make test-fast), a module marked slow as a whole is not imported at all: none of
    its tests would be selected, and importing it costs each worker its imports (Lightning's: about 5 s)."""
    if config.getoption("markexpr", "") != "not slow" or collection_path.suffix != ".py":
        return None
    try:
        text = collection_path.read_text(encoding="utf-8")
    except OSError:
        return None
    return True if _SLOW_MODULE.search(text) else None
