"""`vaediag demo`: build the demo data (when absent) and train a short run, then say where the logs are.

The data are deterministic crops of scikit-image's bundled photographs (``train.data.build_demo``),
written to ``data/demo/``; the run goes to ``logs/demo/demo/version_N`` with checkpoints under
``checkpoints/demo/``. The run is sized to finish in about a minute on two idle CPU cores: 64 px
images, a small model (16 base channels, 64-dim latent), eight epochs of 12 steps of 8 images, and the
seed's full loss recipe including the ST-LPIPS perceptual term over all five VGG16 layers (which costs
~95 % of a step on CPU). A minute of CPU training gives blurry reconstructions, which is what the
diagnosis should then say. Later steps (check, report, watch) build on :func:`demo_config`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vaediag.errors import UsageError

__all__ = ["add_parser", "run", "demo_config", "DEMO_DATA", "DEMO_LOGDIR"]

DEMO_DATA = "data/demo"
DEMO_LOGDIR = "logs/demo"
# Sized for ~1 minute on 2 idle CPU cores: 96 train crops / batch 8 = 12 steps per epoch.
DEMO_N_TRAIN, DEMO_N_VAL, DEMO_SIZE, DEMO_EPOCHS, DEMO_BATCH = 96, 32, 64, 8, 8


def add_parser(sub: argparse._SubParsersAction, *, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--data-dir", default=DEMO_DATA, help=f"demo data directory (default: {DEMO_DATA})")
    p.add_argument("--logdir", default=DEMO_LOGDIR, help=f"project log directory (default: {DEMO_LOGDIR})")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"epochs to train (default: {DEMO_EPOCHS})")
    p.set_defaults(handler=run)
    return p


def demo_config(*, data_dir: str = DEMO_DATA, logdir: str = DEMO_LOGDIR, epochs: int = DEMO_EPOCHS,
                checkpoint_dir: str = "checkpoints"):
    """The demo's :class:`train.config.TrainConfig` (the seed's loss recipe on a small, fast model)."""
    from train.config import TrainConfig

    d = Path(data_dir)
    return TrainConfig(train_npy=str(d / "train.npy"), val_npy=str(d / "val.npy"), logdir=logdir, name="demo",
                       checkpoint_dir=checkpoint_dir, epochs=epochs, batch_size=DEMO_BATCH, latent_dim=64,
                       base_channels=16, lr=1e-3, warmup_steps=5, min_lr=1e-4, grid_images=8, quiet=True)


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    try:
        import torch  # noqa: F401 - the demo trains, so it needs the [train] extra
    except ImportError:
        raise UsageError("the demo trains a model and needs torch: pip install 'vaediag[train]'") from None
    from train.data import ensure_demo
    from train.loop import train

    t0 = time.perf_counter()
    existed = (Path(args.data_dir) / "train.npy").is_file() and (Path(args.data_dir) / "val.npy").is_file()
    train_npy, val_npy = ensure_demo(args.data_dir, n_train=DEMO_N_TRAIN, n_val=DEMO_N_VAL, size=DEMO_SIZE)
    print(f"demo data: {train_npy}, {val_npy} ({'reused' if existed else 'built from scikit-image photos'})")
    result = train(demo_config(data_dir=args.data_dir, logdir=args.logdir, epochs=args.epochs))
    print(f"demo done in {time.perf_counter() - t0:.0f} s: {result.epochs_done} epochs, {result.global_step} steps")
    print(f"logs:       {result.run_dir}")
    print(f"checkpoint: {result.checkpoint}")
    print(f"view them:  tensorboard --logdir {args.logdir}")
    return 0
