"""vaediag.watch.tracker: the tail's rows become completed epochs and their metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from tbwrite import epoch_map, epoch_series, scalar_event, write_events, write_run
from vaediag.logs import Tail
from vaediag.watch.tracker import EpochTracker


def _append(run_dir: Path, rows: list[tuple[str, int, float]]) -> None:
    write_events(run_dir, [scalar_event(t, s, v, 1.7e9 + s) for t, s, v in rows])


def test_tracker_completes_epochs_by_later_rows_and_quiet_polls(tmp_path):
    run = tmp_path / "run"
    tail, tr = Tail(run), EpochTracker()
    _append(run, [("epoch", s, 0) for s in range(3)] + [("train/kl", s, 10.0 + s) for s in range(3)])
    tr.feed(tail.poll())
    assert tr.ready() == []  # train rows only: the epoch may still be running
    _append(run, [("epoch", 2, 0), ("val/kl", 2, 7.0), ("val/psnr", 2, 21.0)])
    tr.feed(tail.poll())
    assert tr.ready() == []  # the val point just arrived: wait one quiet poll
    tr.feed(tail.poll())
    (em,) = tr.ready()
    assert em.epoch == 0 and em.metrics["kl"] == 7.0 and em.metrics["psnr"] == 21.0
    # epoch 1: train only, completed by epoch 2's rows
    _append(run, [("epoch", 3, 1), ("train/kl", 3, 5.0), ("train/kl", 4, 7.0), ("train/kl_weight", 4, 1e-3),
                  ("epoch", 4, 1), ("epoch", 5, 2), ("train/kl", 5, 1.0)])
    tr.feed(tail.poll())
    (em,) = tr.ready()
    assert em.epoch == 1 and em.metrics["kl"] == pytest.approx(6.0) and em.metrics["kl_weight"] == 1e-3
    assert tr.ready(final=True) == []  # epoch 2 has train rows only, in a run that logs val: cut short


def test_tracker_needs_no_quiet_poll_once_it_knows_the_val_terms(tmp_path):
    run = tmp_path / "run"
    tail, tr = Tail(run), EpochTracker()
    _append(run, [("epoch", 9, 0), ("val/kl", 9, 7.0), ("val/psnr", 9, 21.0)])
    tr.feed(tail.poll())
    assert tr.ready() == []  # first val point: is it whole? wait one poll
    tr.feed(tail.poll())
    assert [e.epoch for e in tr.ready()] == [0]
    _append(run, [("epoch", 19, 1), ("val/kl", 19, 6.0)])
    tr.feed(tail.poll())
    assert tr.ready() == []  # val/psnr of epoch 1 still missing
    _append(run, [("epoch", 19, 1), ("val/psnr", 19, 22.0)])
    tr.feed(tail.poll())
    (em,) = tr.ready()  # whole now: decided without a quiet poll
    assert em.epoch == 1 and em.metrics["psnr"] == 22.0


def test_val_points_without_epoch_tag_are_counted_across_polls(tmp_path):
    """The tail counts a run's val points over all its polls (the tracker has no count of its own): with one val
    point per poll, a count per poll would make each of them epoch 0."""
    run = tmp_path / "run"
    tail, tr = Tail(run), EpochTracker()
    for i in range(3):  # one val point per poll
        _append(run, [("val_loss", 10 * i + 9, 1.0 / (i + 1)), ("val_KLD", 10 * i + 9, -5.0 * (i + 1))])
        tr.feed(tail.poll())
    tr.feed(tail.poll())
    got = tr.ready()
    assert [e.epoch for e in got] == [0, 1, 2]
    assert [e.metrics["kl"] for e in got] == [5.0, 10.0, 15.0]  # AntixK's -KL, sign-normalised


def test_tracker_skips_rows_of_decided_epochs_and_nonfinite_epochs(tmp_path):
    run = tmp_path / "run"
    write_run(run, {"val/kl": epoch_series([3.0, 4.0])}, epochs=epoch_map(2))
    tail, tr = Tail(run), EpochTracker()
    tr.feed(tail.poll())
    tr.feed(None)
    assert [e.epoch for e in tr.ready()] == [0, 1]
    _append(run, [("epoch", 19, 1), ("val/kl", 19, 99.0)])  # a resumed run re-logs epoch 1
    tr.feed(tail.poll())
    assert tr.ready(final=True) == []
