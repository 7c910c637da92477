"""Shared fixtures. Tests write real event files with tests/helpers/tbwrite.py (helpers: tests/helpers, on pytest's
pythonpath); the real logs of public projects are under tests/fixtures/realworld."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
