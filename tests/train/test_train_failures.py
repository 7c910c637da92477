"""How a run ends when it cannot go on: divergence to NaN/inf, a full disk, a damaged checkpoint.

Each ends with one line and its own exit code (3 diverged, 4 a write failed, 2 bad input), and never
replaces a good checkpoint with a bad one or writes anything before the input is known to be good.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re

import pytest
import torch

from train.__main__ import main as train_main
from train.errors import DIVERGED_EXIT, OutputError, TrainingDiverged
from train.loop import load_checkpoint, resume_config, train
from trainhelp import ckpt_of, read_events, tiny_argv
from vaediag.cli import main as vaediag_main
from vaediag.watch.control import Control, write_control

STEPS_PER_EPOCH = 2  # 16 train images, batch 8


def _sha(p) -> str:
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


def _values(run_dir, tag):
    return [(s, v) for s, v, _ in read_events(run_dir)["scalars"].get(tag, [])]


# --- divergence -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lr_1e30_stops_at_the_first_nan_step_logs_it_and_saves_nothing(tmp_path, npy, capsys):
    assert train_main(tiny_argv(tmp_path, npy, lr=1e30, epochs=3)) == DIVERGED_EXIT
    line = _one_error_line(capsys)
    assert line.startswith("Error: training diverged at step 1: loss nan (every term nan; kl_weight 1e-07, lr ")
    assert "no checkpoint was saved (the run diverged in its first epoch)" in line
    assert line.endswith("try a lower --lr or --kl-weight")
    run_dir = tmp_path / "logs" / "proj" / "run" / "version_0"
    loss = _values(run_dir, "train/loss")
    assert [s for s, _ in loss] == [0, 1] and math.isfinite(loss[0][1]) and math.isnan(loss[1][1])
    assert not any(tmp_path.rglob("*.pt"))  # no NaN weights were saved, and no temporary file is left
    assert not any(tmp_path.rglob(".*tmp"))


@pytest.mark.slow
def test_vaediag_check_reports_the_logged_divergence(tmp_path, npy, capsys):
    assert train_main(tiny_argv(tmp_path, npy, lr=1e30)) == DIVERGED_EXIT
    capsys.readouterr()
    run_dir = tmp_path / "logs" / "proj" / "run" / "version_0"
    assert vaediag_main(["check", str(run_dir), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    nonfinite = [f for f in report["runs"][0]["findings"] if f["rule"] == "nonfinite"]
    assert {f["term"] for f in nonfinite} >= {"loss", "kl", "recon"}
    assert all(f["severity"] == "fail" for f in nonfinite)


@pytest.mark.slow
def test_kl_weight_1e308_diverges_at_step_0(tmp_path, npy, capsys):
    assert train_main(tiny_argv(tmp_path, npy, kl_weight=1e308)) == DIVERGED_EXIT
    line = _one_error_line(capsys)
    assert line.startswith("Error: training diverged at step 0: loss inf (kl_weighted inf; kl_weight 1e+308")
    run_dir = tmp_path / "logs" / "proj" / "run" / "version_0"
    assert [s for s, _ in _values(run_dir, "train/kl_weighted")] == [0]


@pytest.mark.slow
def test_a_non_finite_step_is_logged_even_between_log_every_steps(tmp_path, tiny_cfg):
    with pytest.raises(TrainingDiverged, match="at step 1: loss nan"):
        train(tiny_cfg.replace(lr=1e30, log_every=50))
    run_dir = tmp_path / "logs" / "proj" / "run" / "version_0"
    assert [s for s, _ in _values(run_dir, "train/loss")] == [0, 1]


@pytest.mark.slow
def test_a_non_finite_validation_stops_before_the_checkpoint(tmp_path, tiny_cfg):
    # one step per epoch: the step is finite (its weights were), the weights it leaves are not usable
    with pytest.raises(TrainingDiverged, match=r"at step 0: val loss nan \(every term nan;") as exc:
        train(tiny_cfg.replace(lr=1e30, batch_size=16, epochs=2))
    assert "no checkpoint was saved" in exc.value.message
    run_dir = tmp_path / "logs" / "proj" / "run" / "version_0"
    assert math.isnan(_values(run_dir, "val/loss")[0][1])  # logged for the nonfinite rule
    ev = read_events(run_dir)
    assert "val/kl_per_dim" not in ev["other"] and "val/recon_grid" not in ev["other"]  # no histogram of NaN
    assert not any(tmp_path.rglob("*.pt"))


@pytest.mark.slow
def test_control_file_kl_weight_1e308_keeps_the_last_good_checkpoint(tmp_path, tiny_cfg):
    seen = {}

    def steer(end):
        if end.epoch == 0:
            seen["sha"] = _sha(end.checkpoint)
            write_control(end.run_dir, Control(seq=1, kl_weight=1e308, reason="test"))

    with pytest.raises(TrainingDiverged) as exc:
        train(tiny_cfg.replace(epochs=3), on_epoch_end=steer)
    ckpt = ckpt_of(tmp_path)
    msg = exc.value.message
    assert msg.startswith(f"training diverged at step {STEPS_PER_EPOCH}: loss inf (kl_weighted inf; kl_weight 1e+308 "
                          "from control.json seq 1, lr ")
    assert f"last good checkpoint {ckpt.resolve()} (step {STEPS_PER_EPOCH})" in msg
    assert _sha(ckpt) == seen["sha"]  # the epoch-1 checkpoint, untouched
    good = load_checkpoint(ckpt)
    assert good["state"]["global_step"] == STEPS_PER_EPOCH
    assert all(torch.isfinite(t).all() for t in good["model"].values() if t.is_floating_point())
    # and it resumes, once the control that broke it is gone
    (tmp_path / "logs" / "proj" / "run" / "version_0" / "control.json").unlink()
    result = train(resume_config(ckpt, epochs=2))
    assert result.global_step == 2 * STEPS_PER_EPOCH


# --- a checkpoint given to --resume: refused with one line before anything is written ------------------


def _tree(root):
    """{relative path: sha256 or 'dir'} of everything under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[p.relative_to(root).as_posix()] = "dir" if p.is_dir() else _sha(p)
    return out


def _damage_del(key):
    return lambda pl, tmp: pl.pop(key)


def _elsewhere(pl, tmp):
    victim = tmp / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    pl["run_dir"] = str(victim)


def _foreign_version_dir(pl, tmp):  # the right shape of path, but not this run's directory
    other = tmp / "elsewhere" / "run" / "version_0"
    other.mkdir(parents=True)
    (other / "config.json").write_text('{"name": "run", "latent_dim": 999}')
    (other / "events.out.tfevents.1.h.1.0").write_bytes(b"")
    pl["run_dir"] = str(other)


def _weights_shape(pl, tmp):
    k = next(iter(pl["model"]))
    pl["model"][k] = torch.zeros(3)


def _nan_weights(pl, tmp):
    k = next(k for k, v in pl["model"].items() if v.is_floating_point())
    pl["model"][k] = torch.full_like(pl["model"][k], float("nan"))


@pytest.mark.parametrize("damage, match", [
    (_damage_del("state"), r"is incomplete: the loop's counters \('state'\) is missing"),
    (_damage_del("model"), r"is incomplete: the model's weights \('model'\) is missing"),
    (_damage_del("run_dir"), r"is incomplete: the run directory \('run_dir'\) is missing"),
    (lambda pl, tmp: pl.__setitem__("config", "x"), r"is damaged: the run's config \('config'\) is a str"),
    (lambda pl, tmp: pl["state"].__setitem__("global_step", -5), r"the loop's global_step is '-5'"),
    (lambda pl, tmp: pl["state"].pop("epoch"), r"the loop's counters lack epoch"),
    (lambda pl, tmp: pl["state"].__setitem__("kl_weight", float("inf")), r"the loop's kl_weight is 'inf'"),
    (lambda pl, tmp: pl["config"].__setitem__("latent_dim", "x"), r"latent_dim must be an integer"),
    (_weights_shape, r"does not fit the resnet model of its own config: Error\(s\) in loading state_dict"),
    (_nan_weights, r"holds non-finite \(NaN or inf\) weights"),
    (lambda pl, tmp: pl["optimizer"].__setitem__("param_groups", []), r"optimizer state that does not fit"),
    (lambda pl, tmp: pl["optimizer"]["param_groups"][0].__setitem__("lr", "fast"), r"damaged optimizer setting"),
    (lambda pl, tmp: pl.__setitem__("rng_cpu", torch.zeros(3)), r"its random state cannot be restored"),
    (lambda pl, tmp: pl.__setitem__("run_dir", "logs/proj/run/version_0"), r"which is not an absolute path"),
    (lambda pl, tmp: pl.__setitem__("run_dir", str(tmp / "gone")), r"which no longer exists"),
    (_elsewhere, r"names run directory '.*victim', which is not a run directory of this trainer"),
    (_foreign_version_dir, r"which holds no config.json of this run"),
])
def test_a_damaged_checkpoint_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, damage, match):
    from trainhelp import make_run_and_checkpoint

    _, _, payload = make_run_and_checkpoint(tmp_path)
    damage(payload, tmp_path)
    bad = tmp_path / "damaged.pt"
    torch.save(payload, bad)
    handshake = tmp_path / "handshake.txt"
    monkeypatch.setenv("VAEDIAG_RUN_DIR_FILE", str(handshake))
    before = _tree(tmp_path)
    assert train_main(["--resume", str(bad), "--epochs", "3"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"Error: checkpoint {bad}"), line
    assert re.search(match, line), line
    assert _tree(tmp_path) == before  # no config rotated, no event file, no handshake, nothing else
    assert not handshake.exists()


@pytest.mark.slow
def test_the_checkpoint_builder_makes_a_resumable_checkpoint(tmp_path, capsys):
    # the refusals above are about their damage only: the undamaged checkpoint trains on
    from trainhelp import make_run_and_checkpoint

    run_dir, ckpt, _ = make_run_and_checkpoint(tmp_path)
    assert train_main(["--resume", str(ckpt), "--epochs", "2"]) == 0
    assert load_checkpoint(ckpt)["state"]["global_step"] == 4
    assert (run_dir / "config.before_resume_1.json").is_file()  # the resume changed the config (epochs)


@pytest.mark.parametrize("make, match", [
    (lambda p: os.mkfifo(p), "is not a regular file"),
    (lambda p: p.mkdir(), "is not a regular file"),
    (lambda p: None, "does not exist"),
])
def test_resume_from_something_that_is_not_a_checkpoint_file(tmp_path, capsys, make, match):
    make(tmp_path / "last.pt")
    assert train_main(["--resume", str(tmp_path / "last.pt")]) == 2
    assert match in _one_error_line(capsys)


# --- a write the machine refuses: disk full, file-size limit ---------------------------------------------


class _FullAfter:
    """A file whose writes fail with ENOSPC once ``budget`` bytes went through (a disk that fills up)."""

    def __init__(self, fh, budget: int) -> None:
        self.fh, self.budget = fh, budget

    def write(self, data):
        self.budget -= len(data)
        if self.budget < 0:
            raise OSError(28, "No space left on device")
        return self.fh.write(data)

    def flush(self):
        self.fh.flush()


@pytest.mark.slow
def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_cfg, monkeypatch):
    import train.checkpoint as checkpoint

    real = checkpoint.atomic_write
    saves = []

    def atomic_write(path, content):
        saves.append(path)
        if len(saves) == 2:  # the second epoch's checkpoint: the disk fills half way through
            return real(path, lambda fh: content(_FullAfter(fh, 100_000)))
        return real(path, content)

    seen = {}
    monkeypatch.setattr(checkpoint, "atomic_write", atomic_write)
    with pytest.raises(OutputError) as exc:
        train(tiny_cfg.replace(epochs=3), on_epoch_end=lambda e: seen.setdefault("sha", _sha(e.checkpoint)))
    ckpt = ckpt_of(tmp_path).resolve()
    assert exc.value.exit_code == 4
    assert exc.value.message == (
        f"cannot save checkpoint {ckpt}: No space left on device; training stopped at step {2 * STEPS_PER_EPOCH}; "
        f"the checkpoint {ckpt} (step {STEPS_PER_EPOCH}) is intact; free disk space, then continue with "
        f"--resume {ckpt}")
    assert _sha(ckpt) == seen["sha"] and sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]


@pytest.mark.slow
def test_disk_full_while_writing_events_is_one_line(tmp_path, tiny_cfg, monkeypatch):
    from tensorboard.compat.tensorflow_stub.io import gfile

    real = gfile.LocalFileSystem.append
    ckpt = ckpt_of(tmp_path)

    def append(self, filename, content, binary_mode=False):
        if ckpt.exists():  # the disk fills up once the first epoch is saved
            raise OSError(28, "No space left on device")
        return real(self, filename, content, binary_mode)

    monkeypatch.setattr(gfile.LocalFileSystem, "append", append)
    with pytest.raises(OutputError, match=r"^cannot write the event log in .*version_0: No space left on device; "
                                          r"training stopped at step \d+; the checkpoint .*last\.pt \(step 2\) is "
                                          r"intact; free disk space, then continue with --resume .*last\.pt$"):
        train(tiny_cfg.replace(epochs=3))
    assert load_checkpoint(ckpt)["state"]["global_step"] == STEPS_PER_EPOCH


_LIMIT_SCRIPT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["python -m train", *sys.argv[2:]]
from train.__main__ import main
sys.exit(main())
"""


def _run_limited(limit: int, argv, tmp_path):
    from trainhelp import run_python

    return run_python(["-c", _LIMIT_SCRIPT, str(limit), *argv], cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_file_size_limit_on_the_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, npy):
    # A real EFBIG from the kernel: the resumed run's checkpoint cannot be written.
    from trainhelp import run_python

    assert run_python(["-m", "train", *tiny_argv(tmp_path, npy)], cwd=tmp_path).returncode == 0
    ckpt = ckpt_of(tmp_path)
    before = _sha(ckpt)
    proc = _run_limited(ckpt.stat().st_size // 2, ["--resume", str(ckpt), "--epochs", "2"], tmp_path)
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 4, proc.stderr
    assert len(err) == 1 and err[0] == (
        f"Error: cannot save checkpoint {ckpt}: File too large; training stopped at step {2 * STEPS_PER_EPOCH}; "
        f"the checkpoint {ckpt} (step {STEPS_PER_EPOCH}) is intact; raise the file-size limit (ulimit -f) or "
        f"write to another disk, then continue with --resume {ckpt}"), err
    assert _sha(ckpt) == before and sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]


@pytest.mark.slow
def test_file_size_limit_on_the_event_file_is_one_line(tmp_path):
    # 32 px, the tiny flat model: its checkpoint (~240 kB) fits under the limit, the event file (~36 kB an epoch)
    # outgrows it (the residual model's checkpoint, ~1.2 MB, would hit the limit first).
    from trainhelp import tiny_data

    npy = tiny_data(tmp_path / "data")
    argv = tiny_argv(tmp_path, npy, epochs=40, base_channels=4, image_size=32, grid_images=8, arch="flat")
    proc = _run_limited(300_000, argv, tmp_path)
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 4, proc.stderr
    assert len(err) == 1 and re.match(
        r"Error: cannot write the event log in .*version_0: File too large; training stopped at step \d+; the "
        r"checkpoint .*last\.pt \(step \d+\) is intact; raise the file-size limit", err[0]), err
    ckpt = load_checkpoint(ckpt_of(tmp_path))
    assert 0 < ckpt["state"]["epoch"] < 40


# --- the GPU path: steps buffered and checked at each 20-step flush --------------------------------------


class _Writer:
    def __init__(self):
        self.rows = []

    def add_scalar(self, tag, value, step):
        self.rows.append((tag, step, value))


def test_a_buffered_logger_finds_the_first_bad_step_and_writes_nothing_after_it():
    from train.loop import StepLogger

    w = _Writer()
    logger = StepLogger(w, ["recon", "kl"], flush_every=20)
    for step in range(12):
        bad = float("inf") if step >= 5 else 1.0
        raw = {"recon": torch.tensor(0.5), "kl": torch.tensor(bad)}
        weighted = {k: v * 2 for k, v in raw.items()}
        total = sum(weighted.values())
        logger.log(step, 0, total, raw, weighted, kl_weight=2.0, lr=1e-3, write=step % 4 == 0)
    assert w.rows == []  # nothing before the flush: no host transfer per step
    logger.flush()
    assert logger.bad is not None and logger.bad.step == 5 and logger.bad.values["kl"] == float("inf")
    assert sorted({s for _, s, _ in w.rows}) == [0, 4, 5]  # the --log-every steps, and the bad one
    n = len(w.rows)
    logger.log(12, 0, torch.tensor(1.0), {"recon": torch.tensor(0.5), "kl": torch.tensor(0.5)},
               {"recon": torch.tensor(0.5), "kl": torch.tensor(0.5)}, kl_weight=1.0, lr=1e-3)
    logger.flush()
    assert len(w.rows) == n  # nothing is logged after the divergence


@pytest.mark.slow
def test_divergence_found_at_the_epoch_end_flush_stops_before_validation(tmp_path, tiny_cfg):
    # On a GPU the loop checks every 20 steps (--sync-every): a NaN inside an epoch is found at the epoch's
    # last flush, and the epoch must then be neither validated nor checkpointed.
    with pytest.raises(TrainingDiverged, match="at step 1: loss nan"):
        train(tiny_cfg.replace(lr=1e30, sync_every=20))
    run_dir = tmp_path / "logs" / "proj" / "run" / "version_0"
    assert [s for s, _ in _values(run_dir, "train/loss")] == [0, 1]
    assert "val/loss" not in read_events(run_dir)["scalars"]
    assert not any(tmp_path.rglob("*.pt"))


def test_a_control_file_the_reader_refuses_is_a_warning_not_a_stop(tmp_path, monkeypatch):
    # safeio refuses a FIFO or device named control.json with an InputError; training must go on.
    import train.control as control
    from train.checkpoint import LoopState
    from vaediag.errors import InputError

    def refuse(path):
        raise InputError(f"control file {str(path)!r} is a FIFO (named pipe), not a regular file; pass a file")

    monkeypatch.setattr(control, "read_control", refuse)
    reader = control.ControlReader(tmp_path)
    state = LoopState(kl_weight=1e-3)
    assert reader.poll(state).startswith("warning: control file: control file")
    assert reader.poll(state) is None  # reported once
    assert state.kl_weight == 1e-3 and state.control_seq == -1
