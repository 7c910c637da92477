"""Scale: thousands of runs with nothing logged are diagnosed without the epoch-table machinery per run,
give the same diagnosis as before, and print as one block."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

import vaediag
import vaediag.diagnose.engine as engine
from bench.trees import empty_runs, many_tags_run
from tbwrite import epoch_map, epoch_series, write_run
from vaediag.diagnose import diagnose
from vaediag.render.console import GROUP_EMPTY_AFTER, render_check


def _text(diags) -> str:
    buf = io.StringIO()
    render_check(diags, console=Console(file=buf, width=100, color_system=None))
    return buf.getvalue()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """12 runs with nothing logged (header-only and zero-byte files), 3 Lightning runs that died after
    their start records (hp_metric), and one run with epochs."""
    root = tmp_path_factory.mktemp("mixed")
    empty_runs(root / "header", 8, kind="header")
    empty_runs(root / "zero", 4, kind="zero")
    empty_runs(root / "lightning", 3, kind="lightning")
    write_run(root / "real", {"train/loss": epoch_series([0.5, 0.4, 0.3]), "val/loss": epoch_series([0.6, 0.5, 0.4])},
              epochs=epoch_map(3))
    return vaediag.load(root)


def test_runs_without_table_rows_skip_the_epoch_table_machinery(mixed, monkeypatch):
    calls = []
    real = engine._tables
    monkeypatch.setattr(engine, "_tables", lambda frame: calls.append(len(frame)) or real(frame))
    monkeypatch.setattr(engine, "_EMPTY", None)
    diagnose(mixed)
    # One call for the real run, one (empty) to build the shared empty tables; none per empty run.
    assert sorted(calls) == [0, max(calls)] and max(calls) > 0


def test_the_fast_path_gives_the_diagnosis_the_full_path_gives(mixed, monkeypatch):
    fast = [json.dumps(d.to_dict(), sort_keys=True) for d in diagnose(mixed)]
    # Force every run through _tables / penalty_table / latest_metrics, as before the fast path.
    monkeypatch.setattr(engine, "_terms_present", lambda frame: set(engine._TABLE_TERMS))
    full = [json.dumps(d.to_dict(), sort_keys=True) for d in diagnose(mixed)]
    assert fast == full
    assert sum('"rule": "no_scalars"' in x for x in fast) == 15


def test_many_runs_with_nothing_logged_print_as_one_block(mixed):
    diags = diagnose(mixed)
    text = _text(diags)
    assert text.count("runs with nothing to judge") == 1
    assert "12 runs with nothing to judge  ·  0 completed epochs  ·  WARN" in text
    assert "header/run_00000, header/run_00001" in text and "zero/run_00003" in text
    assert text.count("no scalars logged at all") == 2  # the finding and the recommendation, once
    # Runs that differ (the Lightning ones name their bookkeeping tag; 3 is too few to group) and the
    # real run keep their own blocks; the summary still counts every run.
    assert text.count("lightning/run_0000") == 3 and "real  ·  3 completed epochs" in text
    assert "16 runs checked: 16 warn" in text


def test_a_few_empty_runs_keep_their_own_blocks(tmp_path):
    empty_runs(tmp_path, GROUP_EMPTY_AFTER, kind="header")
    text = _text(diagnose(vaediag.load(tmp_path)))
    assert "nothing to judge" not in text
    assert text.count("0 completed epochs  ·  WARN") == GROUP_EMPTY_AFTER


def test_the_group_lists_twenty_ids_and_counts_the_rest(tmp_path):
    empty_runs(tmp_path, 23, kind="zero")
    flat = " ".join(_text(diagnose(vaediag.load(tmp_path))).split())
    assert "runs: run_00000, run_00001," in flat and "run_00019 and 3 more (--json lists each)" in flat
    assert "run_00020" not in flat


def test_the_loss_fit_reads_the_most_logged_tags_among_thousands(tmp_path):
    # A real total (loss = recon + 0.5 x kl, every step) among 3,000 per-sample losses and 40 per-sample
    # reconstruction terms logged once: the fit tried every total against every part (hours at 120,000).
    from bench.trees import scalar_record, header_record
    from vaediag.diagnose.arithmetic import fit_total

    recs = [header_record()]
    for step in range(30):
        recon, kl = 1.0 / (step + 1), 2.0 + step % 3
        for tag, v in (("train/recon", recon), ("train/kl", kl), ("train/loss", recon + 0.5 * kl)):
            recs.append(scalar_record(tag, step, v, 1.7e9 + step))
    recs += [scalar_record(f"train/sample_{i:04d}/loss", 29, 0.1, 1.7e9 + 30) for i in range(3000)]
    recs += [scalar_record(f"train/sample_{i:02d}/recon", 29, 0.1, 1.7e9 + 30) for i in range(40)]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "events.out.tfevents.1.host").write_bytes(b"".join(recs))
    frame = vaediag.load(tmp_path).frame
    fit = fit_total(frame, "train")
    assert fit is not None and fit.total == "train/loss"
    assert fit.terms == {"train/recon": "recon", "train/kl": "kl"} and fit.steps == 30


def test_run_warnings_are_told_from_tree_warnings_by_lookup():
    from vaediag.commands.check import _of_a_run

    runs = {"a": 1, "a: b": 2, "x/y": 3}
    ws = ["a: damaged", "a: b: damaged", "x/y: truncated", "x: y", "3 directories could not be read: a: b", "ab: no"]
    assert [_of_a_run(w, runs) for w in ws] == [any(w.startswith(f"{r}: ") for r in runs) for w in ws]
    assert [_of_a_run(w, runs) for w in ws] == [True, True, True, False, False, False]
