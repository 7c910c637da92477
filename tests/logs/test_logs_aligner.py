"""The frame's rules in one place (logs/aligner.py) and notes as data (logs/notes.py): one EpochAligner decides
for a whole-run read and, kept, across a tail's polls; every note the reader shows is a structured fact."""

from __future__ import annotations

import numpy as np
import pytest

import vaediag
from lineages import write_latent_diffusion
from vaediag.logs import EpochAligner, Note, NoteKind
from vaediag.logs.aligner import dedup_order, kl_logged_negated
from vaediag.logs.conventions import TagSegments


def _kl(values):
    """One KL tag's rows, steps 0.., as the aligner takes them."""
    n = len(values)
    seg = TagSegments(["KLD"], ["kl"], ["train"], [False], np.array([0, n]))
    steps = np.arange(n, dtype=np.int64)
    return seg, steps, steps.astype(np.float64), np.asarray(values, dtype=np.float64), np.empty(n)


@pytest.mark.parametrize("values, verdict", [
    ([-1.0, -2.0, 0.0], True), ([-1.0, 2.0], False), ([0.0, 0.0], None), ([np.nan], None), ([], None),
    ([np.nan, -3.0], True),
])
def test_the_sign_rule(values, verdict):
    assert kl_logged_negated(np.asarray(values, dtype=np.float64)) is verdict


def test_a_live_aligner_keeps_its_sign_decision_a_fresh_one_decides_on_the_whole():
    live, notes = EpochAligner(live=True), []
    for batch, want in (([0.0], [0.0]), ([-5.0, -4.0], [5.0, 4.0]), ([2.0], [-2.0]), ([3.0], [-3.0])):
        seg, steps, walls, values, epochs = _kl(batch)
        notes += live.place(seg, steps, walls, values, epochs).notes
        assert values.tolist() == want
    assert notes == [Note.kl_sign_flipped("KLD", 2, so_far=True), Note.kl_sign_contradicted("KLD", 1)]
    assert notes[0].message == "'KLD' is <= 0 (2 values so far): logged as -KL, sign flipped"
    seg, steps, walls, values, epochs = _kl([0.0, -5.0, -4.0, 2.0])
    placed = EpochAligner().place(seg, steps, walls, values, epochs)
    assert values.tolist() == [0.0, -5.0, -4.0, 2.0] and placed.notes == []
    seg, steps, walls, values, epochs = _kl([0.0, -5.0, -4.0])
    placed = EpochAligner().place(seg, steps, walls, values, epochs)
    assert values.tolist() == [0.0, 5.0, 4.0]
    assert [(n.kind, n.tag, n.count) for n in placed.notes] == [(NoteKind.KL_SIGN_FLIPPED, "KLD", 3)]
    assert placed.split_codes.tolist() == [0, 0, 0]


def test_dedup_keeps_the_latest_wall_time_per_tag_and_step():
    codes = np.array([1, 0, 1, 0, 1])
    steps = np.array([5, 3, 5, 4, 2])
    walls = np.array([2.0, 1.0, 1.0, 1.0, 9.0])
    assert dedup_order(codes, steps, walls).tolist() == [1, 3, 4, 0]


def test_note_kinds_are_data_and_their_values():
    n = Note("post_fit_eval", "val_loss", "text", 1)
    assert n.kind is NoteKind.POST_FIT_EVAL and n.kind == "post_fit_eval" and str(n) == "text"
    with pytest.raises(ValueError):
        Note("sign flipped", None, "text")


def test_every_note_the_reader_shows_is_a_fact(tmp_path):
    write_latent_diffusion(tmp_path / "ld")
    csv = tmp_path / "csv" / "r" / "h.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("step,run_name,val/kl\n0,alpha,3.0\n1,alpha,2.0\n")
    for root, kind in ((tmp_path / "ld", NoteKind.PROJECT_CONFIG), (tmp_path / "csv", NoteKind.TEXT_COLUMNS)):
        for engine in ("numpy", "python"):
            (info,) = vaediag.load(root, engine=engine).runs.values()
            assert [f.kind for f in info.facts] == [kind]
            assert info.notes == [f.message for f in info.facts]


def test_a_row_after_its_epochs_validation_belongs_to_the_next_epoch(tmp_path):
    # LearningRateMonitor writes lr-Adam at on_train_epoch_start, at step _batches_that_stepped = e*N with no
    # epoch key: one step after epoch e-1's validation (step e*N-1, epoch e-1) and before epoch e's first
    # epoch-tagged row (step e*N+49). It is the lr epoch e trains with (tests/fixtures/realworld: lr-Adam at
    # 782 after val_loss at 781).
    from lineages import write_antixk

    write_antixk(tmp_path, epochs=3, steps_per_epoch=120, scheduler_gamma=0.5)
    f = vaediag.load(tmp_path).frame
    lr = f[f["tag"] == "lr-Adam"].sort_values("step")
    assert lr["step"].tolist() == [0, 120, 240]
    assert lr["epoch"].tolist() == [0.0, 1.0, 2.0]
    assert lr["value"].tolist() == pytest.approx([0.005, 0.0025, 0.00125])
    # the rows that carry their own epoch keep it: the validation closing epoch e is epoch e's
    val = f[f["tag"] == "val_loss"].sort_values("step")
    assert val["step"].tolist() == [119, 239, 359] and val["epoch"].tolist() == [0.0, 1.0, 2.0]
    hp = f[f["tag"] == "hp_metric"]
    assert hp["epoch"].tolist() == [0.0]


def test_a_metric_written_one_step_after_its_validation_stays_in_that_epoch(tmp_path):
    # A callback's val metric at trainer.global_step (one past _batches_that_stepped during validation) and no
    # epoch key sits where LearningRateMonitor's next-epoch lr would: only state terms take the next epoch; a
    # loss or metric is its validation's (moved, the last one read as a trainer.validate() after fit).
    from lineages._common import EventLog, LightningSim

    n, log = 100, EventLog()
    sim = LightningSim(log, n, 50)
    sim.start()
    for e in range(3):
        sim.current_epoch = e
        for b in range(n):
            if (sim.batches_that_stepped + 1) % 50 == 0:
                sim.log_metrics({"train_loss": 1.0 / (e + 1), "train_kl": 5.0})
            if b == n - 1:
                sim.log_metrics({"val_loss": 1.0 / (e + 1), "val_kl": 5.0 + e})
                sim._emit({"val/psnr": 20.0 + e}, sim.batches_that_stepped + 1)
            sim.batches_that_stepped += 1
    log.write(tmp_path / "run")
    rs = vaediag.load(tmp_path)
    psnr = rs.frame[rs.frame["tag"] == "val/psnr"].sort_values("step")
    assert psnr["step"].tolist() == [100, 200, 300] and psnr["epoch"].tolist() == [0.0, 1.0, 2.0]
    (info,) = rs.runs.values()
    assert info.notes == []
    from vaediag.diagnose import diagnose

    (d,) = diagnose(rs)
    assert d.epochs == 3 and d.metrics["psnr"] == 22.0


def _boundary_rows(val_steps, epoch_points):
    """A val tag and an untagged tag (rows at steps 0, 120, 240) with the given epoch points (step, value), walls
    in step order (a row written after the points at lower steps)."""
    seg = TagSegments(["val_loss", "lr-Adam"], ["total", "lr"], ["val", "train"], [True, False],
                      np.array([0, len(val_steps), len(val_steps) + 3]))
    steps = np.array(list(val_steps) + [0, 120, 240], dtype=np.int64)
    walls = steps.astype(np.float64) + 0.5
    ps, pv = (np.array(x, dtype=np.int64 if i == 0 else np.float64) for i, x in enumerate(zip(*epoch_points)))
    from vaediag.logs.aligner import EpochPoints

    return seg, steps, walls, np.ones(len(steps)), np.empty(len(steps)), EpochPoints(ps, ps + 0.25, pv)


def test_only_a_validation_that_ends_its_epoch_closes_it():
    # end-of-epoch validation at 119 and 239: the rows at 120 and 240 are the next epochs'
    seg, steps, walls, values, epochs, pts = _boundary_rows(
        [119, 239], [(49, 0), (99, 0), (119, 0), (169, 1), (219, 1), (239, 1), (289, 2)])
    EpochAligner().place(seg, steps, walls, values, epochs, epoch_points=pts)
    assert epochs[2:].tolist() == [0.0, 1.0, 2.0]
    # a mid-epoch validation (val_check_interval 0.5) at 59 and 119 of a 240-step epoch: the points after 119
    # still say epoch 0, so the row at 120 stays in epoch 0; the one at 240 follows the validation at 239
    seg, steps, walls, values, epochs, pts = _boundary_rows(
        [59, 119, 179, 239], [(49, 0), (59, 0), (99, 0), (119, 0), (169, 0), (179, 0), (239, 0), (289, 1)])
    EpochAligner().place(seg, steps, walls, values, epochs, epoch_points=pts)
    assert epochs[4:].tolist() == [0.0, 0.0, 1.0]
    # no validation at all: nothing proves where an epoch ended, the rows keep the last point's epoch
    seg = TagSegments(["lr-Adam"], ["lr"], ["train"], [False], np.array([0, 3]))
    steps = np.array([0, 120, 240], dtype=np.int64)
    epochs = np.empty(3)
    _, _, _, _, _, pts = _boundary_rows([], [(119, 0), (169, 1), (239, 1), (289, 2)])
    EpochAligner().place(seg, steps, steps + 0.5, np.ones(3), epochs, epoch_points=pts)
    assert epochs.tolist() == [0.0, 0.0, 1.0]
