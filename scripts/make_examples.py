"""Regenerate the example logs shipped inside the package (``vaediag/examples/``; ``vaediag examples``).

Two real runs of the training core on the demo data (``train.data.build_demo``: 96 train / 32 val crops of
scikit-image's photographs, 64 px) with the demo's model and loss recipe
(``vaediag.commands.demo.demo_config``), each showing only the first ``GRID_IMAGES`` val crops in its
reconstruction grid (crops of astronaut, astronaut, chelsea: public domain and CC0, as scikit-image's docs say),
so the logs stay small (under 1 MB) and carry no picture of unclear licence:

* ``fixed_kl/version_0``: kl_weight 1e-2, held for ``FIXED_EPOCHS`` epochs, no watchdog: the failure
  vaediag is for (the posterior collapses, every reconstruction is the same blur).
* ``watched/version_0``: the same start under ``vaediag watch`` with the demo's ladder
  (``demo_watch_args``): kl_weight cut 100x after epoch 1, the autoencoder (Option B) after epoch 3,
  ``WATCH_EPOCHS`` epochs in all.

What goes into the package is each run directory as the trainer and the watchdog left it (event file,
config.json, hparams.yaml, control.json, watchdog.jsonl, train_output.log), without its checkpoints.
The runs are trained in a temporary directory with relative paths, so the configs name ``data/demo`` and
``logs``, not this machine's folders. Needs the [train] extra; about 4 minutes on 2 CPU cores.

    python scripts/make_examples.py                    # into vaediag/examples/ (refuses to overwrite a run)
    python scripts/make_examples.py --out /tmp/ex      # somewhere else, to look before replacing

The tests (tests/cli/test_examples.py, tests/test_wheel.py) assert numbers read from these logs: after
regenerating, update them and the README's example output.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vaediag.commands.demo import DEMO_N_TRAIN, DEMO_N_VAL, DEMO_SIZE, demo_config, demo_watch_args  # noqa: E402

GRID_IMAGES = 3
FIXED_EPOCHS = 6
WATCH_EPOCHS = 16
RUNS = ("fixed_kl", "watched")


def _copy_run(run_dir: Path, dest: Path) -> None:
    """The run directory's files (not its checkpoints/ folder) into ``dest``."""
    dest.mkdir(parents=True)
    for f in sorted(run_dir.iterdir()):
        if f.is_file() and f.name != "watchdog.lock":
            shutil.copy2(f, dest / f.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "vaediag" / "examples",
                    help="where the runs go (default: vaediag/examples)")
    args = ap.parse_args(argv)
    taken = [str(args.out / name) for name in RUNS if (args.out / name).exists()]
    if taken:
        print(f"make_examples: {', '.join(taken)} already exist(s); remove them first (nothing was written)",
              file=sys.stderr)
        return 2
    from train.data import ensure_demo

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vaediag-examples-") as tmp:
        work = Path(tmp)
        ensure_demo(work / "data" / "demo", n_train=DEMO_N_TRAIN, n_val=DEMO_N_VAL, size=DEMO_SIZE)

        fixed = dataclasses.replace(demo_config(data_dir="data/demo", logdir="logs", epochs=FIXED_EPOCHS),
                                    name="fixed_kl", grid_images=GRID_IMAGES)
        subprocess.run([sys.executable, "-m", "train", *fixed.to_argv()], cwd=work, check=True)

        watched = dataclasses.replace(demo_config(data_dir="data/demo", logdir="logs", epochs=WATCH_EPOCHS),
                                      name="watched", grid_images=GRID_IMAGES)
        subprocess.run([sys.executable, "-m", "vaediag", "watch", *demo_watch_args(WATCH_EPOCHS), "--logdir", "logs",
                        "--no-live", "--", sys.executable, "-m", "train", *watched.to_argv()], cwd=work, check=True)

        for name in RUNS:
            _copy_run(work / "logs" / name / "version_0", args.out / name / "version_0")
    size = sum(f.stat().st_size for name in RUNS for f in (args.out / name).rglob("*") if f.is_file())
    print(f"make_examples: {', '.join(RUNS)} in {args.out} ({size / 1e6:.2f} MB) after {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
