"""A foreign training script for the restart test: it accepts only --kl-weight and --resume.

It knows neither control.json nor $VAEDIAG_RUN_DIR_FILE. Its other settings come from the environment
(FAKE_LOGDIR, FAKE_EPOCHS); it checkpoints to ./checkpoints/last.pt at each epoch end and on SIGINT, or
never with FAKE_NO_CHECKPOINT=1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fakerun import train

p = argparse.ArgumentParser()
p.add_argument("--kl-weight", type=float, default=1e-2)
p.add_argument("--resume")
p.add_argument("--ae", action="store_true")
a = p.parse_args()
sys.exit(train(logdir=Path(os.environ["FAKE_LOGDIR"]), epochs=int(os.environ.get("FAKE_EPOCHS", "4")),
               kl_weight=a.kl_weight, resume=a.resume, ckpt_path=Path("checkpoints/last.pt"),
               epoch_seconds=float(os.environ.get("FAKE_EPOCH_SECONDS", "0.3")), write_run_dir_file=False,
               read_control_file=False, ae=a.ae, save_checkpoints=not os.environ.get("FAKE_NO_CHECKPOINT")))
