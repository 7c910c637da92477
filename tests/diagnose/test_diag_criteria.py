"""The criteria, defined once in pandas-free code (vaediag.diagnose.criteria): the rule families read numbers
from the epoch table and call them; the watchdog's policies call the same functions with an epoch's metrics."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest

from vaediag.diagnose import collapse, criteria, health, penalty
from vaediag.diagnose.criteria import (collapse_verdict, divergence_verdict, kl_band_verdict, lr_vanished_verdict,
                                       penalty_share_verdict)


def test_module_doctests():
    import doctest

    assert doctest.testmod(criteria).failed == 0


def test_criteria_import_no_pandas():
    code = "import sys, vaediag.diagnose.criteria; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("ratio, fail, expect", [
    (0.138, 0.10, "fail"), (0.05, 0.10, "warn"), (0.01, 0.10, "pass"), (0.5, None, "warn"),
    (None, 0.10, None), (math.nan, 0.10, None), (math.inf, 0.10, None),
])
def test_penalty_share_verdict(ratio, fail, expect):
    assert penalty_share_verdict(ratio, warn_ratio=0.01, fail_ratio=fail) == expect


@pytest.mark.parametrize("kl, expect", [
    (501.0, "above"), (500.0, "within"), (100.0, "within"), (99.0, "below"), (math.inf, "above"),
    (-math.inf, "below"), (math.nan, None),
])
def test_kl_band_verdict(kl, expect):
    assert kl_band_verdict(kl, low=100.0, high=500.0) == expect


def test_divergence_verdict():
    base = dict(points=12, best=0.08, best_epoch=5, last=0.12, last_epoch=11, window=5, rise=0.1)
    assert divergence_verdict(**base)
    assert divergence_verdict(**base, train_at_best=0.09, train_last=0.06)
    assert not divergence_verdict(**base, train_at_best=0.09, train_last=0.10)  # both rising: instability
    assert not divergence_verdict(**{**base, "points": 5})
    assert not divergence_verdict(**{**base, "last_epoch": 9})  # the best is less than a window back
    assert not divergence_verdict(**{**base, "last": 0.088})  # within the allowed rise
    assert not divergence_verdict(**{**base, "best": 0.0})


def test_lr_vanished_verdict():
    assert lr_vanished_verdict(1.0, 1e-4, vanished_ratio=1e-3) == pytest.approx(1e-4)
    assert lr_vanished_verdict(1.0, 1e-2, vanished_ratio=1e-3) is None
    assert lr_vanished_verdict(0.0, 0.0, vanished_ratio=1e-3) is None


def test_collapse_verdict_kinds():
    kw = dict(kl_per_dim_max=0.01, kl_total_max=0.5, active_fraction_min=0.05)
    kinds = lambda **m: [r.kind for r in collapse_verdict(**{**dict(kl_per_dim=None, active_fraction=None,
                                                                     active_units=None, kl_total=None), **m}, **kw)]
    assert kinds(kl_per_dim=0.001, kl_total=0.1) == ["kl_per_dim"]  # the per-dim KL wins over the total
    assert kinds(kl_per_dim=0.5, kl_total=0.1) == []
    assert kinds(kl_total=0.4) == ["kl_total"]
    assert kinds(active_fraction=0.02, active_units=40) == ["active_fraction"]
    assert kinds(active_units=0) == ["no_active"]
    assert kinds(active_fraction=0.5, active_units=0) == []  # a known fraction decides
    assert kinds(kl_per_dim=math.nan, kl_total=0.4) == ["kl_total"]


def _spy(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def spy(*a, **k):
        calls.append((a, k))
        return real(*a, **k)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_the_families_call_the_criteria(monkeypatch):
    """Each family decides through the criteria function (patched here): nothing keeps a second copy."""
    t = pd.DataFrame({"kl": [900.0, 800.0, 700.0], "lr": [1e-3, 1e-5, 1e-8], "val_recon": [0.1, 0.2, 0.3],
                      "train_recon": [0.1, 0.09, 0.08], "active_units": [10.0, 2.0, 1.0]},
                     index=pd.RangeIndex(3, name="epoch"))
    c = _spy(monkeypatch, collapse, "collapse_verdict")
    assert collapse.check_kl_collapse(t, run="r", epochs=3, latent_dim=512, after=1, kl_per_dim_max=0.01,
                                      active_fraction_min=0.05, kl_total_max=0.5)[0].severity == "fail"
    assert len(c) == 1 and c[0][1]["active_fraction"] == pytest.approx(1 / 512)
    lr = _spy(monkeypatch, health, "lr_vanished_verdict")
    assert health.check_lr_vanished(t, run="r", vanished_ratio=1e-3)[0].rule == "lr_vanished"
    assert lr and lr[0][0] == (1e-3, 1e-8)
    dv = _spy(monkeypatch, health, "divergence_verdict")
    assert health.check_val_recon_divergence(t, run="r", window=2, rise=0.1)[0].rule == "val_recon_divergence"
    assert dv and dv[0][1]["train_last"] == pytest.approx(0.08)
    band = _spy(monkeypatch, penalty, "kl_band_verdict")
    assert penalty.check_kl_too_high(t, run="r", epochs=3, target=(100.0, 500.0), too_high_after=1)[0].severity == "fail"
    assert band
