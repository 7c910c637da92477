"""The profile is decided once (vaediag.diagnose.profiles, pandas-free): check, report and every watchdog call
decide_profile, so "whose run is this" has one answer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vaediag.diagnose import profiles
from vaediag.diagnose.profiles import PROFILES, decide_profile, profile_reason, resolve_profile
from vaediag.errors import UsageError

OURS = {"train_npy": "t.npy", "val_npy": "v.npy", "kl_weight": 1e-3, "latent_dim": 512}


def test_module_doctests():
    import doctest

    assert doctest.testmod(profiles).failed == 0


def test_profiles_import_no_pandas():
    code = "import sys, vaediag.diagnose.profiles, vaediag.commands.options; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name,config,expect", [
    ("auto", OURS, "seed"), ("auto", {**OURS, "latent_dim": None}, "seed"), ("auto", {"lr": 1.0}, "generic"),
    ("auto", None, "generic"), ("auto", {}, "generic"), ("seed", None, "seed"), ("generic", OURS, "generic"),
])
def test_decide_profile(name, config, expect):
    assert decide_profile(name, config=config) == expect
    assert profile_reason(name, config=config).startswith(f"{expect} profile: ")


def test_unknown_profile_is_a_usage_error():
    with pytest.raises(UsageError, match=r"unknown profile 'seeds' \(choose auto, seed, generic\)"):
        resolve_profile("seeds", ours=True)


def test_check_and_the_options_use_the_one_list():
    from vaediag.commands.options import PROFILES as OPTIONS
    from vaediag.diagnose.engine import PROFILES as ENGINE
    from vaediag.diagnose.engine import resolve_profile as engine_resolve

    assert OPTIONS is ENGINE is PROFILES and engine_resolve is resolve_profile


def test_check_decides_through_decide_profile(monkeypatch):
    """diagnose_run asks decide_profile (patched here), with the run's config and the rules file's default."""
    import pandas as pd

    from vaediag.diagnose import engine

    seen = []
    monkeypatch.setattr(engine, "decide_profile", lambda name, *, config: seen.append((name, config)) or "generic")
    empty = pd.DataFrame({"run": [], "tag": [], "term": [], "split": [], "step": [], "epoch": [], "value": [],
                          "wall_time": []})
    d = engine.diagnose_run(empty, run="r", config=OURS, params={})
    assert d.profile == "generic" and seen == [("auto", OURS)]
