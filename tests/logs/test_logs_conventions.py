"""Foreign trainers' logging conventions (user reports), on real event files, for all three engines.

Each fixture writes the tags, steps, epoch values and record order the library itself writes:
Lightning (``logger_connector.log_metrics`` appends ``epoch`` after the metrics of each call; step
metrics at the batch index, val at ``N*(e+1)-1``, ``*_epoch`` at ``N*(e+1)``, a post-fit validate at
``N*E`` with ``epoch = E``), HF Trainer (``train/epoch`` = ``state.epoch``, fractional, on train and eval
logs), loops that evaluate the untrained model at ``global_step=-1``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import vaediag
from logs_helpers import scalar_event, write_raw
from vaediag.diagnose.tables import completed_epochs
from vaediag.logs import Note, Tail

ENGINES = ["numpy", "python", "tail"]


class _Log:
    """Events in write order with increasing wall times (one record each, like add_scalar)."""

    def __init__(self, t0: float = 1.7e9):
        self.events, self.t = [], t0

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for tag, v in metrics.items():
            self.t += 0.001
            self.events.append(scalar_event(tag, step, float(v), self.t))

    def write(self, run_dir, name="events.out.tfevents.1700000000.host.1.0"):
        return write_raw(run_dir, self.events, name=name)


def _read(root, engine):
    """(frame, RunInfo-like with notes, facts, unmapped_tags, warnings) of the one run under root/r."""
    if engine == "tail":
        tail = Tail(root / "r", run="r")
        frame = tail.poll()
        return frame, tail
    rs = vaediag.load(root, engine=engine)
    return rs.frame, rs.runs["r"]


def _rows(frame, tag):
    return frame[frame["tag"] == tag].sort_values("step")


def lightning_run(root, *, steps_per_epoch=4, epochs=3, validate_after_fit=True, kl_in_val_step=False):
    """A LightningModule logging ``loss`` on_step+on_epoch in training_step and ``val_loss`` in validation_step."""
    lg = _Log()
    n = steps_per_epoch
    for e in range(epochs):
        for b in range(n):
            lg.log(e * n + b, {"loss_step": 1.0 + e + b / n, "epoch": e})
        val = {"val_loss": 0.5 + e}
        if kl_in_val_step:
            val["kl"] = 10.0 + e  # self.log("kl", ...) in validation_step: no split marker
        lg.log(n * (e + 1) - 1, {**val, "epoch": e})
        lg.log(n * (e + 1), {"loss_epoch": 2.0 + e, "epoch": e})
    if validate_after_fit:
        lg.log(n * epochs, {"val_loss": 9.0, "epoch": epochs})  # trainer.validate() after fit
    lg.write(root / "r")


@pytest.mark.parametrize("engine", ENGINES)
def test_lightning_step_epoch_pairs_align_to_their_epoch(tmp_path, engine):
    lightning_run(tmp_path, validate_after_fit=False)
    f, _ = _read(tmp_path, engine)
    ep = _rows(f, "loss_epoch")
    # logged at steps 4, 8, 12 with epoch 0, 1, 2; the next epoch's first loss_step shares steps 4 and 8
    assert ep["step"].tolist() == [4, 8, 12] and ep["epoch"].tolist() == [0.0, 1.0, 2.0]
    st = _rows(f, "loss_step")
    assert st["epoch"].tolist() == [s // 4 for s in range(12)]
    assert set(f["term"][f["tag"].isin(["loss_step", "loss_epoch"])]) == {"loss"}


@pytest.mark.parametrize("engine", ENGINES)
def test_post_fit_validate_is_not_a_training_epoch(tmp_path, engine):
    lightning_run(tmp_path, epochs=25)
    f, info = _read(tmp_path, engine)
    val = _rows(f, "val_loss")
    assert val["split"].tolist() == ["val"] * 25 + ["other"]
    assert val["epoch"].tolist()[-1] == 25.0 and val["step"].tolist()[-1] == 100
    assert completed_epochs(f) == 25
    (fact,) = [n for n in info.facts if n.kind == "post_fit_eval"]
    assert fact.tag == "val_loss" and fact.count == 1 and "'val_loss'" in fact.message
    assert fact.message in info.notes


@pytest.mark.parametrize("engine", ENGINES)
def test_no_post_fit_note_without_one(tmp_path, engine):
    lightning_run(tmp_path, validate_after_fit=False)
    f, info = _read(tmp_path, engine)
    assert set(_rows(f, "val_loss")["split"]) == {"val"} and info.facts == [] and info.notes == []


def test_val_after_the_last_logged_train_step_of_a_sparse_run_stays_val(tmp_path):
    """log_every_n_steps larger than an epoch: epochs without train rows are not post-fit evaluations."""
    lg = _Log()
    for e in range(6):
        if e % 3 == 2:  # a train row only every third epoch
            lg.log(10 * e + 5, {"loss": 1.0, "epoch": e})
        lg.log(10 * (e + 1) - 1, {"val_loss": 1.0, "epoch": e})
    lg.write(tmp_path / "r")
    for engine in ENGINES:
        f, info = _read(tmp_path, engine)
        assert set(_rows(f, "val_loss")["split"]) == {"val"}, engine
        assert not info.facts


def hf_run(root, *, epochs=12, steps_per_epoch=50, logging_steps=20):
    """HF Trainer + TensorBoardCallback: rewrite_logs puts ``train/`` before every key but ``eval_*``."""
    lg = _Log()
    total = epochs * steps_per_epoch
    for step in range(1, total + 1):  # state.global_step after the optimizer step
        e = step / steps_per_epoch  # state.epoch
        if step % logging_steps == 0:
            lg.log(step, {"train/loss": 1.0 / step, "train/learning_rate": 1e-4, "train/epoch": round(e, 2)})
        if step % steps_per_epoch == 0:  # eval_strategy="epoch": Trainer.log adds epoch to eval logs too
            lg.log(step, {"eval/loss": 2.0 / step, "train/epoch": e})
    lg.write(root / "r")


@pytest.mark.parametrize("engine", ENGINES)
def test_hf_fractional_epochs_count_completed_epochs(tmp_path, engine):
    hf_run(tmp_path)
    f, _ = _read(tmp_path, engine)
    ev = _rows(f, "eval/loss")
    assert ev["epoch"].tolist() == [float(i) for i in range(12)]  # eval at epoch 1.0 closes epoch 0
    assert ev["split"].unique().tolist() == ["val"]
    tr = _rows(f, "train/loss")
    assert tr["epoch"].min() == 0 and tr["epoch"].max() == 11
    assert tr["epoch"].tolist() == [float(np.ceil(s / 50) - 1) for s in tr["step"]]
    assert completed_epochs(f) == 12
    ep = _rows(f, "train/epoch")
    assert ep["value"].max() == 12.0  # values stay as logged


@pytest.mark.parametrize("engine", ENGINES)
def test_integer_epochs_keep_their_meaning(tmp_path, engine):
    lg = _Log()
    for s in range(20):
        lg.log(s, {"train/loss": 1.0, "epoch": s // 10})
    lg.write(tmp_path / "r")
    f, _ = _read(tmp_path, engine)
    assert _rows(f, "train/loss")["epoch"].tolist() == [float(s // 10) for s in range(20)]


@pytest.mark.parametrize("engine", ENGINES)
def test_unprefixed_tag_at_val_cadence_is_val(tmp_path, engine):
    lightning_run(tmp_path, epochs=5, validate_after_fit=False, kl_in_val_step=True)
    f, info = _read(tmp_path, engine)
    kl = _rows(f, "kl")
    assert kl["split"].unique().tolist() == ["val"] and kl["epoch"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    (fact,) = [n for n in info.facts if n.kind == "split_from_cadence"]
    assert fact == Note(
        "split_from_cadence", "kl",
        "tag 'kl' has no split marker; logged once per epoch at the val steps: read as val", 5,
    )
    # loss_epoch is also once per epoch, but at the train epoch-end step, not the val steps
    assert _rows(f, "loss_epoch")["split"].unique().tolist() == ["train"]


@pytest.mark.parametrize(
    "case",
    ["one_point", "not_at_val_steps", "twice_an_epoch", "not_sparse", "no_val_tags"],
)
def test_cadence_needs_evidence(tmp_path, case):
    lg = _Log()
    for e in range(4):
        for b in range(2 if case == "not_sparse" else 10):
            lg.log(10 * e + b, {"train/loss": 1.0, "epoch": e})
        v = 10 * e + 9
        if case != "no_val_tags":
            lg.log(v, {"val/loss": 1.0, "epoch": e})
        if case == "one_point" and e == 0:
            lg.log(v, {"kl": 1.0, "epoch": e})
        elif case == "not_at_val_steps":
            lg.log(v - 1, {"kl": 1.0, "epoch": e})
        elif case == "twice_an_epoch":
            lg.log(v, {"kl": 1.0, "epoch": e})
            if e < 3:
                lg.log(10 * e + 10, {"val/loss": 1.0, "kl": 1.0, "epoch": e})  # 2 val passes, same epoch
        elif case in ("not_sparse", "no_val_tags"):
            lg.log(v, {"kl": 1.0, "epoch": e})
    lg.write(tmp_path / "r")
    for engine in ENGINES:
        f, info = _read(tmp_path, engine)
        assert _rows(f, "kl")["split"].unique().tolist() == ["train"], engine
        assert not [n for n in info.facts if n.kind == "split_from_cadence"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("with_epoch_tag", [True, False])
def test_step_minus_one_is_a_pre_training_evaluation(tmp_path, engine, with_epoch_tag):
    lg = _Log()
    lg.log(-1, {"val/loss": 9.0, "val/kl": 1.0, "val/psnr": 10.0, "val/ssim": 0.1, "val/recon": 3.0, "val/perceptual": 0.9})
    for e in range(3):
        for b in range(5):
            lg.log(5 * e + b, {"train/loss": 1.0, **({"epoch": e} if with_epoch_tag else {})})
        lg.log(5 * e + 4, {"val/loss": 1.0 + e, **({"epoch": e} if with_epoch_tag else {})})
    lg.write(tmp_path / "r")
    f, info = _read(tmp_path, engine)
    pre = f[f["step"] == -1]
    assert len(pre) == 6 and set(pre["epoch"]) == {-1.0} and set(pre["split"]) == {"val"}
    assert pre.set_index(pre["tag"].astype(str))["value"]["val/loss"] == 9.0
    assert _rows(f, "val/loss")["epoch"].tolist() == [-1.0, 0.0, 1.0, 2.0]
    assert completed_epochs(f) == 3
    facts = [n for n in info.facts if n.kind == "step_minus_one"]
    assert len(facts) == 6 and {n.count for n in facts} == {1}
    assert {n.tag for n in facts} == set(map(str, pre["tag"]))


def test_kl_sign_flip_is_a_structured_fact(tmp_path):
    lg = _Log()
    for s in range(5):
        lg.log(s, {"KLD": -1.0 - s, "epoch": 0})
    lg.write(tmp_path / "r")
    for engine in ENGINES:
        f, info = _read(tmp_path, engine)
        (fact,) = info.facts
        assert (fact.kind, fact.tag, fact.count) == ("kl_sign_flipped", "KLD", 5)
        assert info.notes == [fact.message] and "sign flipped" in fact.message


def test_unmapped_tags_are_listed(tmp_path):
    lg = _Log()
    lg.log(0, {"train/loss": 1.0, "train/logits_real": 0.3, "throughput": 7.0, "epoch": 0})
    lg.write(tmp_path / "r")
    for engine in ENGINES:
        _, info = _read(tmp_path, engine)
        assert info.unmapped_tags == ["throughput", "train/logits_real"], engine


def _two_files(root, first: range, second: range):
    a, b = _Log(1.7e9), _Log(1.8e9)
    for s in first:
        a.log(s, {"train/loss": 1.0, "epoch": s // 100})
    for s in second:
        b.log(s, {"train/loss": 2.0, "epoch": s // 100})
    a.write(root / "r", name="events.out.tfevents.1700000000.host.1.0")
    b.write(root / "r", name="events.out.tfevents.1800000000.host.2.0")


@pytest.mark.parametrize("engine", ["numpy", "python"])
def test_restarted_step_counter_warns(tmp_path, engine):
    _two_files(tmp_path, range(0, 1000), range(0, 300))
    rs = vaediag.load(tmp_path, engine=engine)
    (w,) = rs.runs["r"].warnings
    assert "events.out.tfevents.1800000000.host.2.0 (steps 0..299)" in w
    assert "events.out.tfevents.1700000000.host.1.0 (steps 0..999)" in w
    assert "own directory" in w and "later file's values" in w
    assert rs.warnings == [f"r: {w}"]
    # which values are kept is unchanged: the later file's where steps collide
    f = rs.frame
    assert _rows(f, "train/loss")["value"].tolist() == [2.0] * 300 + [1.0] * 700


@pytest.mark.parametrize("engine", ["numpy", "python"])
@pytest.mark.parametrize("second", [range(995, 1500), range(1000, 1500), range(0, 5000)], ids=["resume-relogs", "resume", "longer"])
def test_resumed_run_does_not_warn(tmp_path, engine, second):
    # Lightning resume restores _batches_that_stepped: the new file continues near the last step.
    # (A restart that runs far past the earlier file still overlaps all of it: "longer" warns.)
    _two_files(tmp_path, range(0, 1000), second)
    warns = vaediag.load(tmp_path, engine=engine).runs["r"].warnings
    assert (len(warns) == 1) == (second.start == 0)


def test_tail_polls_agree_with_a_whole_read(tmp_path):
    """The tail sees a Lightning run epoch by epoch (one poll per epoch) and labels rows like load()."""
    run = tmp_path / "r"
    lg = _Log()
    n, epochs = 4, 6
    path = None
    tail = Tail(run, run="r")
    polls = []
    for e in range(epochs):
        for b in range(n):
            lg.log(e * n + b, {"loss_step": 1.0, "epoch": e})
        lg.log(n * (e + 1) - 1, {"val_loss": 1.0, "kl": 2.0, "epoch": e})
        lg.log(n * (e + 1), {"loss_epoch": 1.0, "epoch": e})
        path = lg.write(run) if path is None else path
        path.write_bytes(_event_file_bytes(lg.events))
        polls.append(tail.poll())
    lg.log(n * epochs, {"val_loss": 3.0, "epoch": epochs})
    path.write_bytes(_event_file_bytes(lg.events))
    polls.append(tail.poll())
    got = pd.concat(polls, ignore_index=True)
    # a boundary step's epoch value is re-logged by the next epoch (another poll): keep the latest
    got = got.sort_values("wall_time", kind="stable").drop_duplicates(["tag", "step"], keep="last")
    ref = vaediag.load(tmp_path).frame
    cols = ["tag", "split", "step", "epoch", "value"]
    # kl is read as val from the second epoch on (two points are the least evidence): earlier rows stay
    got_kl = _rows(got, "kl")["split"].astype(str).tolist()
    assert got_kl == ["train"] + ["val"] * (epochs - 1)
    keep = got["tag"] != "kl"
    pd.testing.assert_frame_equal(
        got[keep][cols].astype({"tag": str, "split": str}).sort_values(["tag", "step"], ignore_index=True),
        ref[ref["tag"] != "kl"][cols].astype({"tag": str, "split": str}).reset_index(drop=True),
    )
    assert [n.kind for n in tail.facts] == ["split_from_cadence", "post_fit_eval"]


def _event_file_bytes(events):
    from logs_helpers import event_bytes, file_version_event

    return event_bytes([file_version_event()] + list(events))


@pytest.mark.parametrize("engine", ENGINES)
def test_unprefixed_val_tags_beside_marked_train_tags_are_val_and_said_to_be_a_guess(tmp_path, engine):
    """validation_step logs ``kl``/``recon``/``loss`` unprefixed, training_step ``train/kl_step`` etc.: no
    marked val tag exists, so the cadence rule has nothing to compare with; the sibling rule reads them as
    val and says it guessed."""
    from lineages.lightning_generic import write_lightning

    import shutil

    t = write_lightning(tmp_path / "x", epochs=6, unprefixed_val=True, post_fit_validate=False, post_fit_test=False)
    shutil.move(t.run_dir, tmp_path / "r")
    shutil.rmtree(tmp_path / "x")
    f, info = _read(tmp_path, engine)
    for tag in ("kl", "recon", "loss"):
        rows = _rows(f, tag)
        assert rows["split"].unique().tolist() == ["val"], (engine, tag)
        assert rows["epoch"].tolist() == [float(e) for e in range(6)]
    assert set(_rows(f, "train/kl_epoch")["split"]) == {"train"}
    facts = sorted((n.tag, n.count) for n in info.facts if n.kind == "split_from_sibling")
    assert facts == [("kl", 6), ("loss", 6), ("recon", 6)]
    assert all("a guess" in n.message for n in info.facts if n.kind == "split_from_sibling")


@pytest.mark.parametrize("engine", ENGINES)
def test_sibling_rule_needs_a_train_marked_sibling_and_one_point_per_epoch(tmp_path, engine):
    lg = _Log()
    for e in range(4):
        for b in range(10):
            lg.log(10 * e + b, {"train/loss": 1.0, "epoch": e})
        lg.log(10 * e + 9, {"kl": 1.0, "loss": 2.0, "epoch": e})  # kl: no train/kl sibling
        if e == 2:
            lg.log(10 * e + 5, {"loss": 2.0, "epoch": e})  # twice in epoch 2: not once per epoch
    lg.write(tmp_path / "r")
    f, info = _read(tmp_path, engine)
    assert set(_rows(f, "kl")["split"]) == {"train"} and set(_rows(f, "loss")["split"]) == {"train"}
    assert not [n for n in info.facts if n.kind == "split_from_sibling"]
