"""Real processes: SIGINT/SIGTERM to a training process, a 2-process gloo run, `vaediag train`, `vaediag demo`."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.loop import RUN_DIR_FILE_ENV, load_checkpoint
from trainhelp import ROOT, ckpt_of, read_events, run_python, steps_of, tiny_argv
from vaediag import terms
from vaediag.cli import main as vaediag_main


def _wait_for_step(run_dir: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Block until the run has logged a train step: a train/loss scalar (not the file's size, nor its bytes:
    the start of a run writes kilobytes of text, layout and HParams session, which name train/loss too,
    before the loop takes over the signals)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early with {proc.returncode}: {proc.stderr.read()}")
        if terms.tag("train", "loss") in read_events(run_dir)["scalars"]:
            return
        time.sleep(0.1)
    raise AssertionError("no training step logged in time")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_loadable_checkpoint_and_exits_130(tmp_path, npy, sig):
    handshake = tmp_path / "run_dir.txt"
    argv = tiny_argv(tmp_path, npy, epochs=500)
    proc = subprocess.Popen([sys.executable, "-m", "train", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, RUN_DIR_FILE_ENV: str(handshake), "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 90
        while not handshake.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        run_dir = Path(handshake.read_text().strip())
        _wait_for_step(run_dir, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"Interrupted: {sig.name}: stopped after step" in err and "--resume" in err
    ckpt = load_checkpoint(ckpt_of(tmp_path))  # weights_only=True
    step = ckpt["state"]["global_step"]
    assert step >= 1 and ckpt["state"]["epoch"] < 500
    # Every logged step is in the checkpoint: a resume continues right after it.
    assert max(steps_of(read_events(run_dir), "train/loss")) == step - 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path, npy):
    argv = tiny_argv(tmp_path, npy, epochs=2, device="cpu")
    proc = run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                       "--master_port", str(_free_port()), "-m", "train", *argv],
                      env={"OMP_NUM_THREADS": "1"}, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((tmp_path / "logs" / "proj" / "run").iterdir())
    assert [p.name for p in runs] == ["version_0"]  # rank 0 alone made a run directory
    assert len(list(runs[0].glob("events.out.tfevents.*"))) == 1  # and alone logs
    assert proc.stdout.count("run directory:") == 1
    ev = read_events(runs[0])
    # 16 images over 2 ranks = 8 per rank = one batch of 8 per step: 1 step per epoch.
    assert steps_of(ev, "train/loss") == [0, 1]
    assert steps_of(ev, "val/psnr") == [0, 1]
    # (the KL's gradient cosine is undefined at step 0, this run's one --grad-share-every step: test_train_grad_share)
    assert not set(terms.TRAINER_SCALAR_TAGS) - set(ev["scalars"]) - {terms.grad_tag("grad_cos", "kl")}
    assert steps_of(ev, "train/grad_share/kl") == [0]  # rank 0 measures, on its own batch
    assert load_checkpoint(ckpt_of(tmp_path))["state"]["global_step"] == 2


@pytest.mark.slow
def test_vaediag_train_forwards_to_the_training_cli(tmp_path, npy, capsys):
    assert vaediag_main(["train", *tiny_argv(tmp_path, npy)]) == 0
    assert "run directory:" in capsys.readouterr().out
    assert vaediag_main(["train", "--train-npy", str(tmp_path / "missing.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: train data") and "does not exist" in err[0]
    with pytest.raises(SystemExit) as exc:
        vaediag_main(["train", "--help"])
    assert exc.value.code == 0 and "usage: vaediag train" in capsys.readouterr().out


def test_vaediag_train_without_torch_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert vaediag_main(["train", "--epochs", "1"]) == 2
    assert capsys.readouterr().err.strip() == "Error: the training core needs torch: pip install 'vaediag[train]'"


@pytest.mark.slow
def test_vaediag_demo_builds_data_and_trains(tmp_path, monkeypatch, capsys):
    import vaediag.commands.demo as demo

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "DEMO_N_TRAIN", 16)
    monkeypatch.setattr(demo, "DEMO_N_VAL", 8)
    real_config = demo.demo_config
    monkeypatch.setattr(demo, "demo_config", lambda **kw: real_config(**kw).replace(
        perceptual_layers="relu1_2", latent_dim=8, base_channels=8))
    assert vaediag_main(["demo", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "built from scikit-image photos" in out and "logs:" in out and "tensorboard --logdir logs/demo" in out
    run_dir = tmp_path / "logs" / "demo" / "demo" / "version_0"
    assert "checkpoint: logs/demo/demo/version_0/checkpoints/last.pt\n" in out  # beside the run
    assert not (tmp_path / "checkpoints").exists()  # nothing in the working directory
    # (the KL's gradient cosine is undefined at step 0, this run's one --grad-share-every step: test_train_grad_share)
    assert not set(terms.TRAINER_SCALAR_TAGS) - set(read_events(run_dir)["scalars"]) - {terms.grad_tag("grad_cos", "kl")}
    assert vaediag_main(["demo", "--epochs", "1"]) == 0  # data reused, a new version
    assert "reused" in capsys.readouterr().out and (run_dir.parent / "version_1").is_dir()
    assert re.search(r"result:  final val PSNR \d+\.\d dB \(each image's own mean colour: \d+\.\d dB\)", out)
    # Everything the demo wrote is git-ignored in this repository: `make demo` leaves a clone's tracked files alone.
    written = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file())
    assert any(w.startswith("reports/demo/") for w in written) and any(w.startswith("data/demo/") for w in written)
    if (ROOT / ".git").exists():  # a clone (CI's, a user's); a source tarball has no .gitignore rules to ask
        check = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"],
                               input="\n".join(written), capture_output=True, text=True)
        assert sorted(check.stdout.split()) == written, set(written) - set(check.stdout.split())


def test_torch_stays_out_of_vaediag_cli():
    proc = run_python(["-c", "import sys, vaediag.cli; import vaediag.commands.train, vaediag.commands.demo; "
                             "print('torch' in sys.modules)"])
    assert proc.stdout.strip() == "False", proc.stderr


@pytest.mark.slow
def test_two_process_run_that_diverges_stops_every_rank_with_one_line_each(tmp_path, npy):
    # Rank 0 alone validates; its divergence must stop rank 1 too (agreed in one all_reduce), not leave it
    # waiting in a collective; both say so in one line and exit 3 (torchrun then reports the failure).
    argv = tiny_argv(tmp_path, npy, epochs=2, device="cpu", lr=1e30)
    proc = run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                       "--master_port", str(_free_port()), "-m", "train", *argv],
                      env={"OMP_NUM_THREADS": "1"}, timeout=240)
    assert proc.returncode != 0
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error: ")]
    # rank 0 says why; rank 1 says it stopped (unless torchrun's SIGTERM, sent once rank 0 exited, beats it)
    assert sum(ln.startswith("Error: training diverged at step 0: val loss nan") for ln in ours) == 1, ours
    assert all(ln.startswith(("Error: training diverged", "Error: stopped: another process")) for ln in ours), ours
    assert "exitcode  : 3" in proc.stderr  # torchrun's report of the ranks' exit code
    assert "The histogram is empty" not in proc.stderr and "terminate called" not in proc.stderr
    assert not any(tmp_path.rglob("*.pt"))
