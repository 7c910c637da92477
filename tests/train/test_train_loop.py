"""The training loop end to end on tiny real data: tags, run directories, resume, control.json."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from train.__main__ import main as train_main
from train.loop import RUN_DIR_FILE_ENV, kl_weight_at, load_checkpoint, lr_at, resume_config, train
from trainhelp import ckpt_of, plugin_values, read_events, steps_of, tiny_argv
from vaediag import terms
from vaediag.errors import CheckpointError, ConfigError
from vaediag.watch.control import Control, write_control

STEPS_PER_EPOCH = 2  # 16 train images, batch 8


@pytest.mark.parametrize(
    "step, kw, expected",
    [
        (0, dict(warmup_steps=10, schedule="constant"), 0.1),
        (9, dict(warmup_steps=10, schedule="constant"), 1.0),
        (50, dict(warmup_steps=10, schedule="constant"), 1.0),
        (10, dict(warmup_steps=10, schedule="cosine"), 1.0),
        (55, dict(warmup_steps=10, schedule="cosine"), 0.55),  # half way down to min_lr 0.1
        (100, dict(warmup_steps=10, schedule="cosine"), 0.1),
        (500, dict(warmup_steps=0, schedule="cosine"), 0.1),
    ],
)
def test_lr_schedule(step, kw, expected):
    assert lr_at(step, lr=1.0, total_steps=100, min_lr=0.1, **kw) == pytest.approx(expected)


@pytest.mark.parametrize(
    "step, warmup, ae, expected",
    [(0, 0, False, 1e-3), (0, 4, False, 2.5e-4), (3, 4, False, 1e-3), (99, 4, False, 1e-3), (99, 0, True, 0.0)],
)
def test_kl_weight_schedule(step, warmup, ae, expected):
    assert kl_weight_at(step, kl_weight=1e-3, warmup_steps=warmup, ae_mode=ae) == pytest.approx(expected)


def _digest(d):
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_one_epoch_writes_every_trainer_tag(tmp_path, tiny_cfg, capsys, monkeypatch):
    handshake = tmp_path / "run_dir.txt"
    monkeypatch.setenv(RUN_DIR_FILE_ENV, str(handshake))
    result = train(tiny_cfg)
    run_dir = result.run_dir
    assert run_dir == (tmp_path / "logs" / "proj" / "run" / "version_0").resolve()
    assert handshake.read_text() == f"{run_dir}\n"
    assert f"run directory: {run_dir}" in capsys.readouterr().out

    ev = read_events(run_dir)
    # The KL's gradient cosine is undefined at step 0, the one --grad-share-every step of this run: the residual
    # decoder's output conv starts at 0, so no reconstruction gradient reaches the head (test_train_grad_share).
    cosine = terms.grad_tag("grad_cos", "kl")
    missing = set(terms.TRAINER_SCALAR_TAGS) - set(ev["scalars"]) - {cosine}
    assert not missing, f"not logged: {sorted(missing)}"
    assert cosine not in ev["scalars"]
    for t in set(terms.GRADIENT_TAGS) - {cosine}:
        assert steps_of(ev, t) == [0], t
    assert ev["other"][terms.RECON_GRID_TAG] == "image"
    assert ev["other"][terms.KL_PER_DIM_HIST_TAG] == "histo"
    assert ev["other"][terms.BACKBONE_TEXT_TAG] == "text"
    # per step: every train tag and the 0-based epoch; per epoch: val at the epoch's last step.
    # The perceptual term (raw and weighted) only on the steps that computed it: step % perceptual_every == 0.
    every = tiny_cfg.perceptual_every
    assert every == 4
    for t in terms.TRAIN_STEP_TAGS:
        want = [s for s in range(STEPS_PER_EPOCH) if "perceptual" not in t or s % every == 0]
        assert steps_of(ev, t) == want, t
    assert [v for _, v, _ in ev["scalars"][terms.EPOCH_TAG]] == [0.0] * STEPS_PER_EPOCH
    for t in terms.VAL_EPOCH_TAGS:
        assert steps_of(ev, t) == [STEPS_PER_EPOCH - 1], t
    assert steps_of(ev, "train/control_seq") == [0]
    sc = {t: [v for _, v, _ in pts] for t, pts in ev["scalars"].items()}
    assert sc["train/kl_weight"] == pytest.approx([1e-7, 1e-7])
    assert sc["train/kl_weighted"][0] == pytest.approx(1e-7 * sc["train/kl"][0], rel=1e-4)
    # weighted `every` x on its steps, so its expected contribution is the configured 1.2 x per step
    assert sc["train/perceptual_weighted"][0] == pytest.approx(every * 1.2 * sc["train/perceptual"][0], rel=1e-5)
    total = sum(sc[f"train/{t}_weighted"][0] for t in terms.LOSS_TERMS)
    assert sc["train/loss"][0] == pytest.approx(total, rel=1e-5)
    rest = sum(sc[f"train/{t}_weighted"][1] for t in terms.LOSS_TERMS if t != "perceptual")
    assert sc["train/loss"][1] == pytest.approx(rest, rel=1e-5)  # step 1 had no perceptual term
    assert sc["val/perceptual_weighted"][0] == pytest.approx(1.2 * sc["val/perceptual"][0], rel=1e-5)
    assert sc["val/psnr_grey"][0] > 5 and sc["val/psnr_colour"][0] > 5
    assert (sc["train/control_seq"], sc["train/ae_mode"]) == ([-1.0], [0.0])

    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["perceptual_backbone"].startswith("ST-LPIPS") and cfg["channels"] == 3 and cfg["image_size"] == 64
    assert "kl_weight: 1.0e-07" in (run_dir / "hparams.yaml").read_text()
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["state"]["global_step"] == STEPS_PER_EPOCH and ckpt["config"] == cfg
    assert result.checkpoint == ckpt_of(tmp_path).resolve()  # beside the run, as Lightning keeps them


@pytest.mark.slow
def test_second_run_gets_version_1_and_leaves_version_0_untouched(tmp_path, tiny_cfg):
    first = train(tiny_cfg)
    before_logs, before_ckpt = _digest(first.run_dir), _digest(first.checkpoint.parent)
    second = train(tiny_cfg)
    assert second.run_dir.name == "version_1" and second.checkpoint == second.run_dir / "checkpoints" / "last.pt"
    assert _digest(first.run_dir) == before_logs and _digest(first.checkpoint.parent) == before_ckpt


@pytest.mark.slow
def test_resume_continues_steps_in_the_same_run_dir(tmp_path, npy, capsys):
    assert train_main(tiny_argv(tmp_path, npy)) == 0
    ckpt = ckpt_of(tmp_path)
    run_dir = tmp_path / "logs" / "proj" / "run" / "version_0"
    first_file = _digest(run_dir)
    capsys.readouterr()
    assert train_main(["--resume", str(ckpt), "--epochs", "2", "--kl-weight", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "overrides: kl_weight 1e-07 -> 0.001" in out and "epochs 1 -> 2" in out
    assert sorted(p.name for p in (tmp_path / "logs" / "proj" / "run").iterdir()) == ["version_0"]
    ev = read_events(run_dir)
    steps = steps_of(ev, "train/loss")
    assert steps == list(range(2 * STEPS_PER_EPOCH))  # continued, nothing repeated or purged
    assert len({f for _, _, f in ev["scalars"]["train/loss"]}) == 2  # a second event file, the first kept
    assert all(first_file[k] == v for k, v in _digest(run_dir).items() if k.startswith("events") and k in first_file)
    kl = {s: v for s, v, _ in ev["scalars"]["train/kl_weight"]}
    assert kl[STEPS_PER_EPOCH - 1] == pytest.approx(1e-7) and kl[STEPS_PER_EPOCH] == pytest.approx(1e-3)
    assert ev["other"][terms.RESUME_TEXT_TAG] == "text"
    assert json.loads((run_dir / "config.before_resume_1.json").read_text())["kl_weight"] == 1e-7
    assert json.loads((run_dir / "config.json").read_text())["kl_weight"] == 1e-3
    assert steps_of(ev, "val/psnr") == [STEPS_PER_EPOCH - 1, 2 * STEPS_PER_EPOCH - 1]
    assert load_checkpoint(ckpt)["state"]["epoch"] == 2


@pytest.mark.slow
def test_resume_refuses_an_architecture_change(tmp_path, tiny_cfg):
    first = train(tiny_cfg)
    with pytest.raises(ConfigError, match="cannot resume with latent_dim = 16"):
        train(resume_config(first.checkpoint, latent_dim=16))


@pytest.mark.parametrize(
    "content, match",
    [(None, "does not exist"), (b"garbage", "cannot be loaded with weights_only=True"),
     ({"format": "other"}, "not written by this training core")],
)
def test_bad_checkpoint(tmp_path, content, match):
    p = tmp_path / "last.pt"
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        torch.save(content, p)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(p)


def _epoch_values(ev, tag):
    """{epoch: set of values of tag at that epoch's train steps}."""
    epochs = {s: int(v) for s, v, _ in ev["scalars"][terms.EPOCH_TAG]}
    out: dict[int, set] = {}
    for s, v, _ in ev["scalars"][tag]:
        out.setdefault(epochs[s], set()).add(round(v, 12))
    return out


@pytest.mark.slow
def test_control_file_is_applied_exactly_once(tmp_path, tiny_cfg, capsys):
    def steer(end):
        if end.epoch == 0:
            write_control(end.run_dir, Control(seq=1, kl_weight=0.5, reason="test"))
        if end.epoch == 1:  # same seq, new value: already applied, must be ignored
            write_control(end.run_dir, Control(seq=1, kl_weight=0.9))

    result = train(tiny_cfg.replace(epochs=3), on_epoch_end=steer)
    out = capsys.readouterr().out
    assert out.count("control: applied seq 1") == 1 and "kl_weight 1e-07 -> 0.5" in out
    ev = read_events(result.run_dir)
    assert _epoch_values(ev, "train/kl_weight") == {0: {1e-7}, 1: {0.5}, 2: {0.5}}
    assert [v for _, v, _ in ev["scalars"]["train/control_seq"]] == [-1.0, 1.0, 1.0]
    assert steps_of(ev, "train/control_seq") == [0, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert load_checkpoint(result.checkpoint)["state"]["control_seq"] == 1

    # A resumed run remembers the applied seq and does not apply it again.
    capsys.readouterr()
    resumed = train(resume_config(result.checkpoint, epochs=4))
    assert "control: applied" not in capsys.readouterr().out
    assert _epoch_values(read_events(resumed.run_dir), "train/kl_weight")[3] == {0.5}


@pytest.mark.slow
def test_control_mode_ae_switches_to_z_equals_mu(tmp_path, tiny_cfg):
    result = train(tiny_cfg.replace(epochs=2),
                   on_epoch_end=lambda e: write_control(e.run_dir, Control(seq=0, kl_weight=1e-4, mode="ae")))
    ev = read_events(result.run_dir)
    assert _epoch_values(ev, "train/kl_weight") == {0: {1e-7}, 1: {0.0}}
    assert _epoch_values(ev, "train/kl_weighted")[1] == {0.0}
    assert [v for _, v, _ in ev["scalars"]["train/ae_mode"]] == [0.0, 1.0]
    assert load_checkpoint(result.checkpoint)["state"]["ae_mode"] is True


@pytest.mark.slow
def test_malformed_control_file_is_reported_once_and_ignored(tmp_path, tiny_cfg, capsys):
    def corrupt(end):
        (end.run_dir / "control.json").write_text('{"seq": 1, "kl_weight": ')

    result = train(tiny_cfg.replace(epochs=3), on_epoch_end=corrupt)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "control file" in line]
    assert len(warnings) == 1 and "is not valid JSON" in warnings[0], err
    assert result.epochs_done == 3
    assert _epoch_values(read_events(result.run_dir), "train/kl_weight")[2] == {1e-7}


@pytest.mark.slow
def test_ae_flag_trains_as_autoencoder(tmp_path, tiny_cfg):
    result = train(tiny_cfg.replace(ae=True))
    sc = read_events(result.run_dir)["scalars"]
    assert {v for _, v, _ in sc["train/kl_weight"]} == {0.0} and sc["train/ae_mode"][0][1] == 1.0


def test_perceptual_none_warns_and_records(tmp_path, tiny_cfg, capsys):
    result = train(tiny_cfg.replace(perceptual_weights="none"))
    err = capsys.readouterr().err
    assert "WARNING: the perceptual loss is DISABLED" in err
    ev = read_events(result.run_dir)
    assert "train/perceptual" not in ev["scalars"] and "val/perceptual" not in ev["scalars"]
    assert json.loads((result.run_dir / "config.json").read_text())["perceptual_backbone"].startswith("none")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_requested_but_absent(tmp_path, npy, capsys):
    assert train_main(tiny_argv(tmp_path, npy, device="cuda")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda was requested but CUDA is not available" in err[0]
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_grey_single_channel_data_at_128px(tmp_path, crops):
    import numpy as np

    d = tmp_path / "g"
    d.mkdir()
    from skimage.transform import resize

    up = np.stack([resize(im[..., 0], (128, 128), preserve_range=True) for im in crops[0][:8]]).astype(np.uint8)
    np.save(d / "t.npy", up)
    np.save(d / "v.npy", up[:4])
    from train.config import TrainConfig

    result = train(TrainConfig(train_npy=str(d / "t.npy"), val_npy=str(d / "v.npy"), logdir=str(tmp_path / "l"),
                               epochs=1, batch_size=8, latent_dim=8,
                               base_channels=8, perceptual_layers="relu1_2", quiet=True))
    cfg = result.config
    assert (cfg.channels, cfg.image_size) == (1, 128)
    sc = read_events(result.run_dir)["scalars"]
    assert "val/psnr_grey" in sc and "val/psnr_colour" not in sc
    assert math.isfinite(sc["val/loss"][0][1])
    from tensorboard.plugins.custom_scalar import layout_pb2

    (layout,) = [layout_pb2.Layout.FromString(v.tensor.string_val[0]) for _, v in plugin_values(result.run_dir)
                 if v.tag == terms.CUSTOM_SCALARS_TAG]
    charted = {t for c in layout.category for ch in c.chart for t in ch.multiline.tag}
    assert "^val/psnr_grey$" in charted and "^val/psnr_colour$" not in charted  # only what the run logs


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so(tmp_path, tiny_cfg, capsys):
    first = train(tiny_cfg)
    capsys.readouterr()
    again = train(resume_config(first.checkpoint))
    assert "nothing to train: the checkpoint has finished 1 epoch(s) and --epochs is 1" in capsys.readouterr().err
    assert again.global_step == first.global_step
    assert steps_of(read_events(first.run_dir), "train/loss") == list(range(STEPS_PER_EPOCH))


@pytest.mark.slow
def test_a_signal_while_waiting_for_the_watchdog_stops_on_the_epoch_boundary(tmp_path, tiny_cfg, monkeypatch):
    # Under `vaediag watch` the loop waits at each epoch start for the decision about the last epoch; the
    # watchdog's SIGINT (a stop or a restart) lands in that wait. The run must stop there, with no step of
    # the next epoch trained at the old settings, so a restart resumes exactly at the boundary.
    import os
    import signal
    import threading

    from vaediag.errors import Interrupted
    from vaediag.watch.control import WATCHDOG_PID_ENV, WATCHDOG_WAIT_ENV

    monkeypatch.setenv(WATCHDOG_PID_ENV, str(os.getpid()))  # a watchdog that is alive and never decides
    monkeypatch.setenv(WATCHDOG_WAIT_ENV, "30")
    timers = []

    def signal_during_the_wait(end):
        t = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timers.append(t)
        t.start()

    try:
        with pytest.raises(Interrupted, match=f"SIGINT: stopped after step {STEPS_PER_EPOCH};"):
            train(tiny_cfg.replace(epochs=3), on_epoch_end=signal_during_the_wait)
    finally:
        for t in timers:
            t.cancel()
    ckpt = load_checkpoint(ckpt_of(tmp_path))
    assert (ckpt["state"]["epoch"], ckpt["state"]["batch_in_epoch"]) == (1, 0)
    assert ckpt["state"]["global_step"] == STEPS_PER_EPOCH
    ev = read_events(ckpt["run_dir"])
    assert steps_of(ev, terms.EPOCH_TAG) == list(range(STEPS_PER_EPOCH))  # no step of epoch 2 was logged
    # The HParams session stays open: the run goes on with --resume (TensorBoard keeps a run's first end).
    assert terms.HPARAMS_SESSION_START_TAG in ev["other"] and terms.HPARAMS_SESSION_END_TAG not in ev["other"]


@pytest.mark.slow
def test_input_dependence_and_blur_metrics_are_logged_on_val_every_epoch(tiny_cfg):
    result = train(tiny_cfg.replace(epochs=2))
    ev = read_events(result.run_dir)
    new = [terms.tag("val", t) for t in ("psnr_trivial", "recon_spread", "grad_similarity")]
    for t in new:
        assert steps_of(ev, t) == [STEPS_PER_EPOCH - 1, 2 * STEPS_PER_EPOCH - 1], t
    sc = {t: [v for _, v, _ in ev["scalars"][t]] for t in new}
    # the baseline depends on the val set only, so it is the same number every epoch
    assert sc["val/psnr_trivial"][0] == sc["val/psnr_trivial"][1] > 10
    assert all(0 <= v < 5 for v in sc["val/recon_spread"])
    assert all(-1 <= v <= 1 for v in sc["val/grad_similarity"])
    assert result.val["psnr_trivial"] == pytest.approx(sc["val/psnr_trivial"][1], rel=1e-6)


def _strip_new_fields(ckpt_path, *names):
    """Rewrite a checkpoint, and its run's config.json, as written before ``names`` were config fields."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    for n in names:
        ckpt["config"].pop(n, None)
    torch.save(ckpt, ckpt_path)
    cfg_file = Path(ckpt["run_dir"]) / "config.json"
    data = json.loads(cfg_file.read_text())
    for n in names:
        data.pop(n, None)
    cfg_file.write_text(json.dumps(data))


@pytest.mark.slow
def test_a_flat_checkpoint_from_before_the_arch_field_resumes_as_flat(tmp_path, tiny_cfg, capsys):
    first = train(tiny_cfg.replace(arch="flat"))
    _strip_new_fields(first.checkpoint, "arch", "latent_channels")
    assert load_checkpoint(first.checkpoint)["config"]["arch"] == "flat"  # what every such checkpoint holds
    resumed = train(resume_config(first.checkpoint, epochs=2))
    assert resumed.config.arch == "flat" and resumed.global_step == 2 * STEPS_PER_EPOCH
    assert "arch" not in capsys.readouterr().out.split("overrides:")[-1]  # not an override: the same model
    with pytest.raises(ConfigError, match="cannot resume with arch = resnet: the checkpoint's model has arch = flat"):
        train(resume_config(first.checkpoint, arch="resnet", epochs=3))


@pytest.mark.slow
def test_weights_that_do_not_fit_the_config_are_refused_in_one_line(tmp_path, tiny_cfg):
    first = train(tiny_cfg.replace(arch="flat"))
    ckpt = torch.load(first.checkpoint, weights_only=True)
    ckpt["config"]["arch"] = "resnet"  # a config (the checkpoint's and its run's) that lies about its weights
    torch.save(ckpt, first.checkpoint)
    run_cfg = first.run_dir / "config.json"
    run_cfg.write_text(json.dumps({**json.loads(run_cfg.read_text()), "arch": "resnet"}))
    with pytest.raises(CheckpointError, match="does not fit the resnet model of its own config") as info:
        train(resume_config(first.checkpoint, epochs=2))
    assert "\n" not in info.value.message


@pytest.mark.slow
def test_perceptual_cadence_bookkeeping_over_epochs_and_a_resume(tmp_path, npy, capsys):
    """perceptual_every 3 over 3 epochs of 2 steps, interrupted after epoch 2: the term is computed, weighted
    3 x and logged exactly at global steps 0 and 3 (a resume keeps counting global steps), every other tag on
    every step; the cadence is printed and recorded with the backbone."""
    from train.loop import perceptual_factor

    assert [perceptual_factor(s, every=3) for s in range(7)] == [3, 0, 0, 3, 0, 0, 3]
    assert [perceptual_factor(s, every=1) for s in range(3)] == [1, 1, 1]
    assert train_main(tiny_argv(tmp_path, npy, perceptual_every=3, epochs=2)) == 0
    assert "computed on one step in 3 (global step % 3 == 0) at 3 x its weight" in capsys.readouterr().out
    ckpt = ckpt_of(tmp_path)
    assert train_main(["--resume", str(ckpt), "--epochs", "3"]) == 0
    ev = read_events(tmp_path / "logs" / "proj" / "run" / "version_0")
    assert steps_of(ev, "train/perceptual") == steps_of(ev, "train/perceptual_weighted") == [0, 3]
    assert steps_of(ev, "train/recon") == steps_of(ev, "train/loss") == list(range(6))
    sc = {t: dict((s, v) for s, v, _ in pts) for t, pts in ev["scalars"].items()}
    for s in (0, 3):
        assert sc["train/perceptual_weighted"][s] == pytest.approx(3 * 1.2 * sc["train/perceptual"][s], rel=1e-5)
    assert steps_of(ev, "val/perceptual") == [1, 3, 5]  # validation always measures it


@pytest.mark.slow
def test_a_checkpoint_from_before_the_cadence_resumes_with_the_term_on_every_step(tmp_path, tiny_cfg):
    first = train(tiny_cfg.replace(perceptual_every=1))
    _strip_new_fields(first.checkpoint, "perceptual_every")
    resumed = train(resume_config(first.checkpoint, epochs=2))
    assert resumed.config.perceptual_every == 1
    assert steps_of(read_events(resumed.run_dir), "train/perceptual") == list(range(2 * STEPS_PER_EPOCH))


def test_the_run_directory_line_shows_escapes_in_a_name_as_typed(tmp_path, capsys, monkeypatch):
    """A --name with a terminal escape (cursor up, erase line) reaches stdout as visible text, never as a
    control sequence that could hide the line above it."""
    from train.rundir import announce_run_dir

    monkeypatch.delenv(RUN_DIR_FILE_ENV, raising=False)
    announce_run_dir(tmp_path / "a\x1b[1A\x1b[2Kb" / "version_0")
    out = capsys.readouterr().out
    assert "\x1b" not in out and out.count("\n") == 1
    assert "a\\x1b[1A\\x1b[2Kb" in out
