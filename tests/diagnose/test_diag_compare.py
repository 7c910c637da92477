"""The run comparison (vaediag.diagnose.compare): what `vaediag report` says about the seed's three runs, as data,
before any formatting (the report's own tests, tests/render, check the words)."""

from __future__ import annotations

import dataclasses

import pytest

import vaediag
from vaediag.diagnose.compare import ConfigDifference, compare_runs
from vaediag.diagnose.targets import load_targets
from vaediag.errors import UsageError


@pytest.fixture(scope="module")
def seed(seed_root, seed_diags):
    return vaediag.load(seed_root), list(seed_diags.values())


def test_the_seed_runs_compare_as_its_write_up_does(seed):
    runset, diags = seed
    c = compare_runs(runset, diags, journals={})
    assert [(v.label, v.run) for v in c.runs] == [("R1", "run1"), ("R2", "run2"), ("R3", "run3")]
    assert c.ranking.column == "val_psnr" and [v.run for v in c.ranking.ranked] == ["run3", "run2", "run1"]
    assert c.best.run == "run3" and c.best.final("val_psnr") == pytest.approx(32.5)
    # The baseline defaults to the earliest run; it is measured against too, being neither best nor runner-up.
    assert c.baseline.run == "run1" and c.compared_baseline is c.baseline
    # What sets run3 apart from the runner-up: the seed's fix, weight by weight.
    assert c.contrast.other.run == "run2" and c.contrast.caveat is None
    assert c.contrast.differences == (ConfigDifference("kl_weight", 1e-7, 1e-5), ConfigDifference("perceptual", 1.2, 0.8),
                                      ConfigDifference("ssim_loss", 0.5, 0.3), ConfigDifference("edge", 0.1, 0.0))
    r1, r2, r3 = c.runs
    assert r3.verdict.label == "meets the success criteria" and r3.verdict.reason is None
    assert r2.verdict.label == "failing" and r2.verdict.reason.startswith("misses 6 of 7 success criteria; KL = 1,535")
    assert [(t.target.name, t.verdict) for t in r2.targets] == [("kl", "high"), ("perceptual", "high"), ("psnr", "low"),
                                                                 ("ssim", "low"), ("recon", "high")]
    assert (r3.targets_met, r3.targets_judged) == (5, 5) and (r1.targets_met, r1.targets_judged) == (1, 5)
    assert c.milestone_rules == ("milestone_10", "milestone_30", "milestone_60", "success")
    assert r1.milestones == {"milestone_10": "fail", "milestone_30": "fail", "milestone_60": "not reached",
                             "success": "fail"}
    assert r1.milestones_reached == (9, 29) and r3.milestones_reached == (9, 29, 59)  # run1 stopped at epoch 50
    assert c.failing == (r1, r2) and c.decisions == ()


def test_it_is_frozen_data(seed):
    runset, diags = seed
    c = compare_runs(runset, diags, journals={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.baseline = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.runs[0].number = 9
    assert "diag=" not in repr(c.runs[0])  # the diagnosis and run info are there, not in its repr


def test_decisions_are_numbered_across_runs_without_the_keeps(seed):
    from vaediag.watch.journal import RunDecisions

    runset, diags = seed
    keep = {"event": "decision", "action": "keep", "epoch": 0}
    declined = {"event": "decision", "action": "keep", "declined": "cool-down", "epoch": 1}
    change = {"event": "decision", "action": "set_kl_weight", "kl_weight": 1e-6, "epoch": 2}
    journals = {"run3": RunDecisions((keep, change)), "run1": RunDecisions((declined, keep, change), skipped=1)}
    c = compare_runs(runset, diags, journals=journals)
    assert [(d.number, d.run, d.record["epoch"]) for d in c.decisions] == [(1, "run1", 1), (2, "run1", 2), (3, "run3", 2)]
    r1, r2, r3 = c.runs
    assert (r1.keeps, r1.journal_skipped, r2.decisions, r3.keeps) == (1, 1, (), 1)
    assert [d.number for d in c.decisions_of(r3)] == [3]


def test_a_given_baseline_and_targets(seed):
    runset, diags = seed
    psnr_only = [t for t in load_targets() if t.term == "psnr"]
    c = compare_runs(runset, diags, baseline="run2", targets=psnr_only, journals={})
    assert c.baseline.run == "run2" and c.compared_baseline is None  # the runner-up already
    assert [r.target.name for r in c.best.targets] == ["psnr"]
    with pytest.raises(UsageError, match=r"^--baseline 'run9' is not a run of this report \(runs: run1, run2, run3\)$"):
        compare_runs(runset, diags, baseline="run9", journals={})
    with pytest.raises(UsageError, match=r"no diagnosis for run\(s\) run3"):
        compare_runs(runset, diags[:2], journals={})
