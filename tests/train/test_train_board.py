"""TensorBoard reads the trainer's runs well: the Custom Scalars layout, the HParams session and the watchdog's
decisions as text, read back from real tiny runs with TensorBoard's own loader, protos and plugins; and
vaediag reads the same runs exactly as it did before these were written."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
from google.protobuf import json_format
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from train import board
from train.__main__ import main as train_main
from train.config import TrainConfig
from train.errors import TrainingDiverged
from train.loop import train
from trainhelp import ckpt_of, plugin_values, read_events, tiny_argv, tiny_overrides
from vaediag import terms
from vaediag.watch.control import REASON_MAX_CHARS, Control, write_control

STEPS_PER_EPOCH = 2  # 16 train images, batch 8
REASON = "kl 0.4 < 40 after epoch 1:\n raise kl_weight " + "x" * 1000  # two lines, far too long


# --- reading a log directory the way TensorBoard does -------------------------------------------------


def _tensorboard(logdir: Path):
    """TensorBoard's backend over ``logdir`` (the multiplexer and data provider ``tensorboard --logdir`` uses)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    return base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider), \
        context.RequestContext()


def tb_layout(logdir: Path) -> layout_pb2.Layout:
    """The layout the Custom Scalars dashboard shows (the plugin merges the latest layout of every run)."""
    from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin

    tb, ctx = _tensorboard(logdir)
    return json_format.Parse(CustomScalarsPlugin(tb).layout_impl(ctx, ""), layout_pb2.Layout())


def tb_session_groups(logdir: Path) -> list:
    """The rows of the HParams dashboard: its ListSessionGroups answer, every status allowed."""
    from tensorboard.plugins.hparams import backend_context, list_session_groups

    tb, ctx = _tensorboard(logdir)
    request = api_pb2.ListSessionGroupsRequest(allowed_statuses=list(api_pb2.Status.values()), slice_size=100)
    return list(list_session_groups.Handler(ctx, backend_context.Context(tb), "", request).run().session_groups)


def _hparams(run_dir: Path, tag: str) -> list[tuple[int, plugin_data_pb2.HParamsPluginData]]:
    return [(s, plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content))
            for s, v in plugin_values(run_dir) if v.tag == tag and v.metadata.plugin_data.plugin_name == "hparams"]


def _layouts(run_dir: Path) -> list[tuple[int, layout_pb2.Layout]]:
    return [(s, layout_pb2.Layout.FromString(v.tensor.string_val[0])) for s, v in plugin_values(run_dir)
            if v.tag == terms.CUSTOM_SCALARS_TAG and v.metadata.plugin_data.plugin_name == "custom_scalars"]


def _texts(run_dir: Path, tag: str) -> list[tuple[int, str]]:
    return [(s, b"".join(v.tensor.string_val).decode()) for s, v in plugin_values(run_dir)
            if v.tag == tag and v.metadata.plugin_data.plugin_name == "text"]


def _last(events: dict, tag: str) -> tuple[int, float]:
    step, value, _ = max(events["scalars"][tag], key=lambda p: p[0])
    return step, value


# --- one steered run, read many ways ----------------------------------------------------------------


@pytest.fixture(scope="module")
def steered(tmp_path_factory, crops):
    """Two epochs; after the first the 'watchdog' raises kl_weight through control.json with a long
    two-line reason. Returns (result, project log directory)."""
    import numpy as np

    tmp = tmp_path_factory.mktemp("steered")
    (tmp / "data").mkdir()
    np.save(tmp / "data" / "train.npy", crops[0])
    np.save(tmp / "data" / "val.npy", crops[1])
    # perceptual term and gradient shares on steps 0 and 2 (at step 0 the KL's cosine is not defined yet)
    cfg = TrainConfig(**{**tiny_overrides(tmp, (tmp / "data" / "train.npy", tmp / "data" / "val.npy")), "epochs": 2,
                         "perceptual_every": 2, "grad_share_every": 2})

    def steer(end):
        if end.epoch == 0:
            write_control(end.run_dir, Control(seq=1, kl_weight=0.5, reason=REASON,
                                               issued_at="2026-12-01T00:00:00+00:00"))

    result = train(cfg, on_epoch_end=steer)
    return result, tmp / "logs" / "proj"


@pytest.mark.slow
def test_the_layout_charts_each_loss_term_train_and_val_raw_beside_weighted(steered):
    result, logdir = steered
    (step, layout), = _layouts(result.run_dir)  # written once, at the start
    assert step == 0
    cats = {c.title: c for c in layout.category}
    assert list(cats) == ["loss terms (raw)", "loss terms (weighted)", "quality (val)",
                          "gradient at the latent head (train)", "bookkeeping"]
    assert [c.closed for c in layout.category] == [False, False, False, False, True]

    def charts(cat):
        return {tuple(ch.multiline.tag) for ch in cats[cat].chart}

    for t in terms.LOSS_TERMS:  # the perceptual term is on in this run: it has its charts
        assert (f"^train/{t}$", f"^val/{t}$") in charts("loss terms (raw)"), t
        assert (f"^train/{t}_weighted$", f"^val/{t}_weighted$") in charts("loss terms (weighted)"), t
    assert ("^train/loss$", "^val/loss$") in charts("loss terms (weighted)")
    assert {("^train/lr$",), ("^train/kl_weight$",), ("^train/control_seq$",), ("^train/ae_mode$",),
            ("^epoch$",)} == charts("bookkeeping")
    assert ("^val/psnr$", "^val/psnr_grey$", "^val/psnr_colour$", "^val/psnr_trivial$") in charts("quality (val)")
    assert tuple(f"^train/grad_share/{t}$" for t in terms.LOSS_TERMS) in charts("gradient at the latent head (train)")

    # Every scalar the run logged is on exactly one chart, and every chart line is a tag the run logged.
    patterns = [re.compile(p) for c in layout.category for ch in c.chart for p in ch.multiline.tag]
    logged = set(read_events(result.run_dir)["scalars"])
    for tag in logged:
        assert sum(bool(p.match(tag)) for p in patterns) == 1, tag
    assert all(any(p.match(tag) for tag in logged) for p in patterns)

    assert tb_layout(logdir) == layout  # what the Custom Scalars dashboard shows


@pytest.mark.slow
def test_the_hparams_tab_shows_the_config_and_the_final_metrics(steered):
    result, logdir = steered
    run_dir = result.run_dir
    (_, experiment), = _hparams(run_dir, terms.HPARAMS_EXPERIMENT_TAG)
    (_, start), = _hparams(run_dir, terms.HPARAMS_SESSION_START_TAG)
    (end_step, end), = _hparams(run_dir, terms.HPARAMS_SESSION_END_TAG)
    columns = {h.name for h in experiment.experiment.hparam_infos}
    assert columns == {f.name for f in fields(TrainConfig)} - set(board.HPARAMS_LEFT_OUT)
    assert [m.name.tag for m in experiment.experiment.metric_infos] == list(terms.HPARAMS_METRIC_TAGS)
    hp = start.session_start_info.hparams
    assert set(hp) == columns and not {"train_npy", "logdir", "checkpoint_dir", "resume"} & set(hp)
    assert hp["kl_weight"].number_value == pytest.approx(1e-7) and hp["latent_dim"].number_value == 8
    assert hp["ae"].WhichOneof("kind") == "bool_value" and hp["ae"].bool_value is False
    assert hp["arch"].string_value == "resnet" and hp["perceptual_backbone"].string_value.startswith("ST-LPIPS")
    assert end.session_end_info.status == api_pb2.STATUS_SUCCESS and end_step == 2 * STEPS_PER_EPOCH
    assert end.session_end_info.end_time_secs >= start.session_start_info.start_time_secs > 0

    # TensorBoard's HParams dashboard: one row, this run, its config and its final logged values.
    (group,) = tb_session_groups(logdir)
    (session,) = group.sessions
    assert session.name == "run/version_0" and session.status == api_pb2.STATUS_SUCCESS
    assert group.hparams["lr"].number_value == pytest.approx(2e-4) and group.hparams["ae"].bool_value is False
    events = read_events(run_dir)
    metrics = {m.name.tag: m for m in session.metric_values}
    assert list(metrics) == list(terms.HPARAMS_METRIC_TAGS)
    for tag, m in metrics.items():
        step, value = _last(events, tag)
        assert (m.training_step, m.value) == (step, pytest.approx(value, rel=1e-6)), tag
        split, term = tag.split("/")
        if split == "val":
            assert step == 2 * STEPS_PER_EPOCH - 1 and m.value == pytest.approx(result.val[term], rel=1e-6), tag
    assert metrics["train/kl_weight"].value == 0.5  # the final kl_weight: the one the control set


@pytest.mark.slow
def test_the_applied_decision_is_text_at_the_step_it_took_effect(steered):
    result, _ = steered
    (step, text), = _texts(result.run_dir, terms.DECISION_TEXT_TAG)
    seq_steps = {s: v for s, v, _ in read_events(result.run_dir)["scalars"]["train/control_seq"]}
    assert step == STEPS_PER_EPOCH and seq_steps[step] == 1.0  # where train/control_seq turns to 1
    assert text.startswith(f"control.json seq 1 applied at step {STEPS_PER_EPOCH} (first step of epoch index 1): "
                           "kl_weight 1e-07 -> 0.5, mode vae (unchanged); reason: kl 0.4 < 40 after epoch 1: raise "
                           "kl_weight xxx")
    assert text.endswith("\u2026; issued 2026-12-01T00:00:00+00:00") and "\n" not in text
    reason = text.split("; reason: ", 1)[1].split("; issued")[0]
    assert len(reason) == REASON_MAX_CHARS


def _copy_without(run_dir: Path, dest: Path, tags: set[str]) -> None:
    """``run_dir`` as the trainer wrote it before these tags existed: the same files and records, less every
    summary value under ``tags`` (an event left empty is dropped)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.summary.writer.record_writer import RecordWriter

    dest.mkdir(parents=True)
    for f in run_dir.iterdir():
        if f.is_dir():  # checkpoints/
            shutil.copytree(f, dest / f.name)
            continue
        if not f.name.startswith("events.out.tfevents."):
            shutil.copy2(f, dest / f.name)
            continue
        with open(dest / f.name, "wb") as out:
            writer = RecordWriter(out)
            for record in RawEventFileLoader(str(f)).Load():
                ev = event_pb2.Event.FromString(record)
                if ev.HasField("summary"):
                    keep = [v for v in ev.summary.value if v.tag not in tags]
                    if not keep:
                        continue
                    del ev.summary.value[:]
                    ev.summary.value.extend(keep)
                writer.write(ev.SerializeToString())


@pytest.mark.slow
def test_vaediag_reads_the_run_as_before(steered, tmp_path, capsys):
    from vaediag.cli import main as vaediag_main
    from vaediag.logs import load

    result, logdir = steered
    runs = load(logdir)
    assert list(runs.runs) == ["run/version_0"]  # the session is no extra run
    info = runs.runs["run/version_0"]
    assert info.unmapped_tags == [] and not runs.warnings
    assert info.texts[terms.DECISION_TEXT_TAG].startswith("control.json seq 1 applied")
    assert info.hparams["kl_weight"] == pytest.approx(1e-7) and info.hparams["ae"] is False
    assert info.param("kl_weight") == pytest.approx(1e-7)  # config.json's, as before

    new = {terms.CUSTOM_SCALARS_TAG, terms.HPARAMS_EXPERIMENT_TAG, terms.HPARAMS_SESSION_START_TAG,
           terms.HPARAMS_SESSION_END_TAG, terms.DECISION_TEXT_TAG}
    before = tmp_path / "before" / "proj"
    _copy_without(result.run_dir, before / "run" / "version_0", new)
    assert set(read_events(before / "run" / "version_0")["other"]) == set(read_events(result.run_dir)["other"]) - new

    def check(root: Path) -> dict:
        capsys.readouterr()
        rc = vaediag_main(["check", str(root), "--json"])
        return {"rc": rc, "out": json.loads(capsys.readouterr().out.replace(str(root), "ROOT"))}

    assert check(logdir) == check(before)


# --- a resume, a divergence ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_resume_keeps_one_layout_and_one_session_in_tensorboard(tmp_path, npy, capsys):
    assert train_main(tiny_argv(tmp_path, npy)) == 0
    ckpt = ckpt_of(tmp_path)
    # the resume turns the perceptual term off: the run directory holds it all the same (epoch 1)
    assert train_main(["--resume", str(ckpt), "--epochs", "2", "--perceptual-weights", "none"]) == 0
    logdir = tmp_path / "logs" / "proj"
    run_dir = logdir / "run" / "version_0"
    assert [s for s, _ in _layouts(run_dir)] == [0, STEPS_PER_EPOCH]  # one per session
    layout = tb_layout(logdir)
    for cat in layout.category:
        titles = [ch.title for ch in cat.chart]
        assert len(titles) == len(set(titles)), cat.title  # nothing twice
    raw = {tuple(ch.multiline.tag) for ch in layout.category[0].chart}
    assert ("^train/perceptual$", "^val/perceptual$") in raw

    (group,) = tb_session_groups(logdir)
    (session,) = group.sessions
    assert session.name == "run/version_0" and session.status == api_pb2.STATUS_SUCCESS
    val_loss = {m.name.tag: m for m in session.metric_values}["val/loss"]
    assert (val_loss.training_step, val_loss.value) == (2 * STEPS_PER_EPOCH - 1,
                                                        pytest.approx(_last(read_events(run_dir), "val/loss")[1]))
    from vaediag.logs import load

    assert list(load(logdir).runs) == ["run/version_0"]


def test_a_diverged_run_ends_its_session_with_failure(tmp_path, tiny_cfg):
    with pytest.raises(TrainingDiverged, match="at step 1"):
        train(tiny_cfg.replace(lr=1e30))
    run_dir = tmp_path / "logs" / "proj" / "run" / "version_0"
    (step, end), = _hparams(run_dir, terms.HPARAMS_SESSION_END_TAG)
    assert end.session_end_info.status == api_pb2.STATUS_FAILURE
    (group,) = tb_session_groups(tmp_path / "logs" / "proj")
    assert group.sessions[0].status == api_pb2.STATUS_FAILURE


# --- the pieces ---------------------------------------------------------------------------------------


def test_module_doctests():
    import doctest

    assert doctest.testmod(board).failed == 0


def test_the_plugin_tags_are_the_ones_tensorboard_reads():
    from tensorboard.plugins.custom_scalar import metadata as cs
    from tensorboard.plugins.hparams import metadata as hp

    assert terms.CUSTOM_SCALARS_TAG == cs.CONFIG_SUMMARY_TAG
    assert (terms.HPARAMS_EXPERIMENT_TAG, terms.HPARAMS_SESSION_START_TAG, terms.HPARAMS_SESSION_END_TAG) == (
        hp.EXPERIMENT_TAG, hp.SESSION_START_INFO_TAG, hp.SESSION_END_INFO_TAG)


def test_hparam_values_leave_out_paths_and_cut_long_strings(tmp_path, npy):
    cfg = TrainConfig(**{**tiny_overrides(tmp_path, npy), "perceptual_weights": "/very/long/" * 30 + "vgg.pth"})
    values = board.hparam_values(cfg)
    assert set(values) == {f.name for f in fields(TrainConfig)} - set(board.HPARAMS_LEFT_OUT)
    cut = values["perceptual_weights"]
    assert len(cut) == board.HPARAM_TEXT_MAX and cut.startswith("/very/long/") and cut.endswith("\u2026")
    assert values["ae"] is False and values["epochs"] == 1.0 and isinstance(values["epochs"], float)
    with pytest.raises(ValueError, match="unknown session status 'aborted'"):
        board.session_end_summary("aborted", end_time=0.0)


@pytest.mark.parametrize(
    "control, before, expected",
    [
        (Control(seq=0, kl_weight=0.0, mode="ae"), (1e-7, False),
         "control.json seq 0 applied at step 8 (first step of epoch index 3): kl_weight 1e-07 -> 0, mode vae -> ae; "
         "reason: none given"),
        (Control(seq=4, kl_weight=1e-3, mode="vae", reason="back to\tthe VAE", issued_at="t"), (1e-3, True),
         "control.json seq 4 applied at step 8 (first step of epoch index 3): kl_weight 0.001 (unchanged), "
         "mode ae -> vae; reason: back to the VAE; issued t"),
    ],
)
def test_decision_text(control, before, expected):
    assert board.decision_text(control, kl_before=before[0], ae_before=before[1], step=8, epoch=3) == expected
