"""Command-line front of fakerun.train for the watchdog tests (knows the VAEDIAG_RUN_DIR_FILE protocol)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fakerun import train

p = argparse.ArgumentParser()
p.add_argument("--logdir", type=Path, required=True)
p.add_argument("--epochs", type=int, default=4)
p.add_argument("--kl-weight", type=float, default=1e-2)
p.add_argument("--resume")
p.add_argument("--checkpoint", type=Path)
p.add_argument("--steps-per-epoch", type=int, default=5)
p.add_argument("--epoch-seconds", type=float, default=0.3)
p.add_argument("--crash-at", type=int)
p.add_argument("--no-run-dir-file", action="store_true")
p.add_argument("--ignore-control", action="store_true")
p.add_argument("--omit", action="append", default=[], help="a term this run does not log (repeatable)")
p.add_argument("--wait-for", type=Path, help="print 'fake: waiting' and start only once this file exists")
a = p.parse_args()
if a.wait_for is not None:
    import time

    print("fake: waiting", flush=True)
    while not a.wait_for.exists():
        time.sleep(0.02)
sys.exit(train(logdir=a.logdir, epochs=a.epochs, kl_weight=a.kl_weight, resume=a.resume,
               ckpt_path=a.checkpoint or a.logdir.parent / "checkpoints" / "last.pt",
               steps_per_epoch=a.steps_per_epoch, epoch_seconds=a.epoch_seconds, crash_at=a.crash_at,
               write_run_dir_file=not a.no_run_dir_file, read_control_file=not a.ignore_control,
               omit=tuple(a.omit)))
