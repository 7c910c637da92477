"""End to end: the real training core (`python -m train`) under `vaediag watch`, started at a kl_weight the
policy finds too high. The journal must hold the decision, the loop must apply it at the first epoch start
after control.json was written (checked against the file's mtime and the wall times of the logged
control_seq, so the test does not depend on how fast epochs are), and the logs must show the new kl_weight
from that epoch on and the old one before."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import vaediag
from vaediag import terms
from vaediag.watch.control import reason_line
from vaediag.watch.journal import read_journal

pytestmark = pytest.mark.slow
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # 2 shared cores


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    subprocess.run([PY, "-m", "train.data", "build-demo", "--out", str(d), "--n-train", "96", "--n-val", "16",
                    "--size", "32"], check=True, capture_output=True, env=ENV, timeout=120)
    return d


def train_cmd(data, *extra: str) -> list[str]:
    return [PY, "-m", "train", "--train-npy", str(data / "train.npy"), "--val-npy", str(data / "val.npy"),
            "--latent-dim", "32", "--base-channels", "8", "--batch-size", "16", "--perceptual-weights", "none",
            "--warmup-steps", "0", "--logdir", "logs/e2e", "--quiet", *extra]


def test_real_trainer_under_watch_applies_decision(tmp_path, tiny_data):
    # KL of this tiny model (latent 32 = 8 x 2 x 2 at 32 px) is around 1 nat: a target of 0.01 makes 1e-2
    # "too high" after epoch 1 (with latent 8 it falls under 0.5 nats, and the collapse rule answers instead).
    r = subprocess.run(
        [PY, "-m", "vaediag.cli", "watch", "--no-live", "--poll", "0.1", "--param", "reduce_at=1",
         "--target-kl", "0.01", "--", *train_cmd(tiny_data, "--epochs", "4", "--kl-weight", "1e-2")],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = tmp_path / "logs" / "e2e" / "ear_vae" / "version_0"
    recs = read_journal(run_dir)
    assert recs[0]["event"] == "start" and recs[0]["found_by"] == "VAEDIAG_RUN_DIR_FILE"
    ds = [x for x in recs if x["event"] == "decision"]
    assert [d["epoch"] for d in ds] == [0, 1, 2, 3]
    d = ds[0]
    assert (d["action"], d["kl_weight"], d["applied"], d["via"], d["seq"]) == ("set_kl_weight", 1e-3, True, "control", 1)
    assert d["reason"].startswith("kl = ") and "> 0.01 after epoch 1: kl_weight 0.01 -> 0.001" in d["reason"]
    assert recs[-1]["event"] == "exit" and recs[-1]["code"] == 0
    # Our trainer's run is judged by the seed profile, decided as check decides it (its config.json), before the
    # first decision (the trainer names its run directory before it writes config.json).
    (judged,) = [x for x in recs if x["event"] == "profile"]
    assert judged["profile"] == "seed" and "vaediag's trainer" in judged["why"]
    assert recs.index(judged) < recs.index(ds[0]) and {x["profile"] for x in ds} == {"seed"}
    assert all(x["reason"].endswith("[seed profile]") for x in ds)

    runs = vaediag.load(run_dir)
    f = runs.frame
    # The decision reached TensorBoard too: as text, with the watchdog's reason, where it took effect.
    (info,) = runs.runs.values()
    last = [x for x in ds if x["applied"] and x["via"] == "control"][-1]
    text = info.texts[terms.DECISION_TEXT_TAG]
    assert text.startswith(f"control.json seq {last['seq']} applied at step ") and reason_line(last["reason"]) in text
    assert info.unmapped_tags == []

    def by_epoch(term):
        s = f[(f["term"] == term) & (f["split"] == "train")]
        return s.groupby("epoch").agg(min=("value", "min"), max=("value", "max"), t=("wall_time", "min"))
    seq, w = by_epoch("control_seq"), by_epoch("kl_weight")
    applied_at = int(seq.index[seq["max"] == 1].min())
    # Decided after the first epoch (index 0); the loop waits for the watchdog's decision at each epoch
    # start (VAEDIAG_WATCHDOG_PID), so the change applies from the very next epoch.
    assert applied_at == 1
    written = (run_dir / "control.json").stat().st_mtime
    # Applied at the first epoch start after the write: the previous epoch started before it.
    assert seq.loc[applied_at - 1, "t"] < written <= seq.loc[applied_at, "t"] + 0.01
    for epoch, row in w.iterrows():
        expected = 1e-3 if epoch >= applied_at else 1e-2
        assert row["min"] == pytest.approx(expected, rel=1e-6) and row["max"] == pytest.approx(expected, rel=1e-6)
    assert "control: applied seq 1" in (run_dir / "train_output.log").read_text()


def test_real_trainer_restart_mode_resumes_with_new_weight(tmp_path, tiny_data):
    r = subprocess.run(
        [PY, "-m", "vaediag.cli", "watch", "--restart", "--no-live", "--poll", "0.1", "--param", "reduce_at=1",
         "--target-kl", "0.01", "--", *train_cmd(tiny_data, "--epochs", "3", "--kl-weight", "1e-2")],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = tmp_path / "logs" / "e2e" / "ear_vae" / "version_0"
    recs = read_journal(run_dir)
    (restart,) = [x for x in recs if x["event"] == "restart"]
    ckpt = run_dir / "checkpoints" / "last.pt"  # found beside the run, where python -m train keeps it
    assert restart["checkpoint"] == str(ckpt.resolve()) and restart["old_code"] == 130
    assert not (tmp_path / "checkpoints").exists()  # nothing in the working directory
    cmd = restart["command"]
    assert cmd[cmd.index("--kl-weight") + 1] == "0.001" and cmd[cmd.index("--resume") + 1] == str(ckpt.resolve())
    out = (run_dir / "train_output.log").read_text()
    assert "overrides: kl_weight 0.01 -> 0.001" in out and "done: 3 epochs" in out
    f = vaediag.load(run_dir).frame
    w = f[(f["term"] == "kl_weight") & (f["split"] == "train")]
    assert w["value"].iloc[-1] == pytest.approx(1e-3)  # the resumed run trains at the new weight
    assert sorted(f[(f["term"] == "psnr") & (f["split"] == "val")]["epoch"].astype(int)) == [0, 1, 2]


def test_real_trainer_sigint_to_watchdog_saves_checkpoint(tmp_path, tiny_data):
    import signal
    import time

    p = subprocess.Popen([PY, "-m", "vaediag.cli", "watch", "--no-live", "--poll", "0.1", "--",
                          *train_cmd(tiny_data, "--epochs", "500", "--kl-weight", "1e-2")],
                         cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "logs" / "e2e" / "ear_vae" / "version_0"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((run_dir / "watchdog.jsonl").is_file() and any(
                r["event"] == "decision" for r in read_journal(run_dir))):
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130
    ckpt = run_dir / "checkpoints" / "last.pt"
    assert ckpt.is_file()
    recs = read_journal(run_dir)
    assert recs[-1]["event"] == "exit" and recs[-1]["code"] == 130
    assert "Interrupted: SIGINT" in (run_dir / "train_output.log").read_text()
