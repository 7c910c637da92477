"""A small but real training-script stand-in for the watchdog tests (no torch).

It does what a training loop under ``vaediag watch`` does, with a closed-form "model" instead of a network:
creates ``<logdir>/version_N``, writes its path to ``$VAEDIAG_RUN_DIR_FILE`` (unless told not to), reads
``control.json`` with :func:`vaediag.watch.control.read_control` at each epoch start and applies a new seq
once, logs the trainer's tags (train per step, val per epoch, kl_weight, control_seq, ae_mode, epoch) with
TensorBoard's own EventFileWriter, flushes at each epoch end, saves a checkpoint and exits 130 on
SIGINT/SIGTERM, resumes from one, and can crash on purpose.

KL and PSNR rise as kl_weight falls, so decisions show in the logs:
``kl = 100 * (1e-3 / w) ** 0.5`` and ``psnr = 20 + 2 * log10(1e-2 / w)`` (w = kl_weight).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tbwrite import scalar_event
from vaediag.errors import ControlFileError
from vaediag.terms import EPOCH_TAG, tag
from vaediag.watch.control import read_control  # noqa: E402

# The training scripts built on train(), for the tests that start them as child processes.
FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")
RESTART_TRAINER = Path(__file__).with_name("restart_trainer.py")

_stop: list[int] = []


def _on_signal(signum, frame):
    _stop.append(signum)


def curves(w: float, ae: bool) -> dict[str, float]:
    if ae:
        return {"kl": 0.0, "psnr": 32.0, "recon": 0.02, "sharpness": 0.97}
    w = max(w, 1e-12)
    kl = 100.0 * (1e-3 / w) ** 0.5
    psnr = 20.0 + 2.0 * math.log10(1e-2 / w)
    return {"kl": kl, "psnr": psnr, "recon": 10 ** (-psnr / 20.0), "sharpness": min(0.5 + psnr / 100, 1.0)}


def next_version(logdir: Path) -> Path:
    n = 0
    while (logdir / f"version_{n}").exists():
        n += 1
    return logdir / f"version_{n}"


def train(*, logdir: Path, epochs: int, kl_weight: float, resume: str | None, ckpt_path: Path,
          steps_per_epoch: int = 5, epoch_seconds: float = 0.3, crash_at: int | None = None,
          write_run_dir_file: bool = True, read_control_file: bool = True, ae: bool = False,
          omit: tuple[str, ...] = (), save_checkpoints: bool = True) -> int:
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    start_epoch, step, last_seq = 0, 0, 0
    if resume:
        state = json.loads(Path(resume).read_text())
        run_dir = Path(state["run_dir"])
        start_epoch, step, last_seq = state["epoch"], state["step"], state["last_seq"]
        ae = ae or state.get("ae", False)
    else:
        run_dir = next_version(logdir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"kl_weight": kl_weight, "epochs": epochs}))
    env_file = os.environ.get("VAEDIAG_RUN_DIR_FILE")
    if env_file and write_run_dir_file:
        Path(env_file).write_text(str(run_dir.resolve()) + "\n")
    writer = EventFileWriter(str(run_dir), flush_secs=3600)
    print(f"fake: run dir {run_dir}, kl_weight {kl_weight}, epochs {start_epoch}..{epochs - 1}", flush=True)

    def log(name: str, value: float) -> None:
        if name.split("/")[-1] in omit:  # a run that does not log this term
            return
        writer.add_event(scalar_event(name, step, float(value), time.time()))

    def save(epoch: int) -> None:
        if not save_checkpoints:  # a script that never checkpoints
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_name("." + ckpt_path.name + ".tmp")
        tmp.write_text(json.dumps({"run_dir": str(run_dir), "epoch": epoch, "step": step, "last_seq": last_seq,
                                   "kl_weight": kl_weight, "ae": ae}))
        os.replace(tmp, ckpt_path)

    for epoch in range(start_epoch, epochs):
        if _stop:
            save(epoch)
            writer.close()
            print(f"fake: interrupted before epoch {epoch}; checkpoint {ckpt_path}", flush=True)
            return 130
        if read_control_file:
            try:
                ctl = read_control(run_dir)
            except ControlFileError as exc:
                print(f"fake: {exc.message}", flush=True)
                ctl = None
            if ctl is not None and ctl.seq > last_seq:
                kl_weight, ae, last_seq = ctl.kl_weight, ctl.mode == "ae", ctl.seq
                print(f"fake: epoch {epoch}: applied control seq {ctl.seq}: kl_weight {kl_weight}", flush=True)
        if crash_at is not None and epoch == crash_at:
            writer.close()
            print("fake: crashing on purpose", flush=True)
            return 3
        c = curves(kl_weight, ae)
        log(tag("train", "control_seq"), last_seq)
        log(tag("train", "ae_mode"), float(ae))
        for _ in range(steps_per_epoch):
            log(EPOCH_TAG, epoch)
            log(tag("train", "kl"), c["kl"] * 1.05)
            log(tag("train", "recon"), c["recon"] * 1.05)
            log(tag("train", "kl_weight"), 0.0 if ae else kl_weight)
            step += 1
            time.sleep(epoch_seconds / steps_per_epoch)
        step -= 1  # val at the epoch's last step, like Lightning
        log(EPOCH_TAG, epoch)
        for name in ("kl", "psnr", "recon", "sharpness"):
            log(tag("val", name), c[name])
        step += 1
        writer.flush()
        save(epoch + 1)
    writer.close()
    (run_dir / "DONE").write_text(str(epochs))
    print("fake: done", flush=True)
    return 0
