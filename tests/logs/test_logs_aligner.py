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
