"""`vaediag demo`: the whole loop on real images in under three minutes on two idle CPU cores.

1. Build the demo data when absent: deterministic grey and colour crops of scikit-image's bundled
   photographs (``train.data.build_demo``) in ``data/demo/``: 96 to train on, 32 to validate.
2. Train a residual VAE with the seed's loss recipe under ``vaediag watch``, started at a kl_weight that is
   far too high (1e-2). The ladder policy acts early in this short run (milestones after epochs 1 / 3 /
   the last, instead of 10 / 30 / 60): after epoch 1 the reconstructions are one blur for every input and
   the KL penalty is most of the reconstruction loss, so it cuts kl_weight (100x); after epoch 3, still
   blurry, it switches to the seed's Option B, a plain autoencoder (z = mu, kl_weight 0), and the
   reconstructions turn sharp. The run goes to ``logs/demo/demo/version_N`` (a new N each time; nothing is
   overwritten), its checkpoint beside it in ``version_N/checkpoints/last.pt``.
3. ``vaediag check`` on the run.
4. ``vaediag report`` on the run, written to ``reports/demo/report.md`` with its plots and pictures (the
   grids before and after each decision; the demo's own output, git-ignored and rewritten by every demo;
   pass ``--report`` to write elsewhere). The committed example of this report is ``docs/example/demo.md``:
   a demo never touches a tracked file.

Sizing (measured on this project's 2-core machine): 64 px crops, latent 2048 (8 x 16 x 16, the seed's
"latent dim 2048"), 16 base channels, batch 8, lr 1e-3, channels_last; the perceptual term on one step in 4
with the VGG trunk cut after relu3_3 (``python -m bench perceptual_cost``: 42 % cheaper, rank agreement 0.97 with the
full trunk); the val targets' perceptual features computed once. 40 epochs of 12 steps reach 28.0 dB val PSNR,
where each image's own mean colour scores 21.8 dB; the whole demo took 113 s (data built, trained under a
watchdog polling every 0.25 s, checked, reported), and a fresh clone's ``make demo`` 158 s with the venv.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vaediag.errors import UsageError

__all__ = ["add_parser", "run", "demo_config", "demo_watch_args", "DEMO_DATA", "DEMO_LOGDIR", "DEMO_REPORT"]

DEMO_DATA = "data/demo"
DEMO_LOGDIR = "logs/demo"
DEMO_REPORT = "reports/demo/report.md"  # git-ignored: a demo never touches a tracked file
DEMO_START_KL_WEIGHT = 1e-2  # far too high: the penalty takes most of the signal
# Sized for about two minutes of training on 2 idle CPU cores: 96 train crops / batch 8 = 12 steps per epoch.
DEMO_N_TRAIN, DEMO_N_VAL, DEMO_SIZE, DEMO_EPOCHS, DEMO_BATCH = 96, 32, 64, 40, 8


def add_parser(sub: argparse._SubParsersAction, *, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--data-dir", default=DEMO_DATA, help=f"demo data directory (default: {DEMO_DATA})")
    p.add_argument("--logdir", default=DEMO_LOGDIR, help=f"project log directory (default: {DEMO_LOGDIR})")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"epochs to train (default: {DEMO_EPOCHS})")
    p.add_argument("--report", default=DEMO_REPORT, help=f"where the report goes (default: {DEMO_REPORT}; "
                                                         "rewritten by every demo)")
    p.add_argument("--no-live", action="store_true", help="one line per epoch instead of the live panel")
    p.set_defaults(handler=run)
    return p


def demo_config(*, data_dir: str = DEMO_DATA, logdir: str = DEMO_LOGDIR, epochs: int = DEMO_EPOCHS):
    """The demo's :class:`train.config.TrainConfig` (the seed's loss recipe on a small, fast model)."""
    from train.config import TrainConfig

    d = Path(data_dir)
    return TrainConfig(train_npy=str(d / "train.npy"), val_npy=str(d / "val.npy"), logdir=logdir, name="demo",
                       epochs=epochs, batch_size=DEMO_BATCH, latent_dim=2048, base_channels=16, lr=1e-3,
                       warmup_steps=5, min_lr=1e-4, grid_images=8, quiet=True, kl_weight=DEMO_START_KL_WEIGHT,
                       perceptual_layers="relu1_2,relu2_2,relu3_3", channels_last=True)


def demo_watch_args(epochs: int) -> list[str]:
    """The ladder's milestones for the demo's short run: act after epoch 1, Option B after epoch 3 if still
    blurry, stop judged at the last epoch (the seed's 10 / 30 / 60 of ~100 would leave a 40-epoch run
    blurry for most of its budget). The trainer waits at each epoch's end for the watchdog's decision, so
    the poll is 0.25 s, not the default 1 s: with 2-3 s epochs the default wait was a fifth of the run."""
    reduce_at = 1
    ae_at = min(3, epochs)
    stop_at = max(ae_at + 1, epochs)
    return ["--policy", "ladder", "--param", f"reduce_at={reduce_at}", "--param", f"ae_at={ae_at}",
            "--param", f"stop_at={stop_at}", "--poll", "0.25"]


def _versions(project: Path) -> set[Path]:
    return set((project / "demo").glob("version_*")) if (project / "demo").is_dir() else set()


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    import importlib.util

    if importlib.util.find_spec("torch") is None:  # found, not imported: only the trainer's process needs it
        raise UsageError("the demo trains a model and needs torch: pip install 'vaediag[train]'")
    from train.data import ensure_demo
    from vaediag.cli import main as cli
    from vaediag.watch.control import RUN_CHECKPOINT_DIR

    t0 = time.perf_counter()
    existed = (Path(args.data_dir) / "train.npy").is_file() and (Path(args.data_dir) / "val.npy").is_file()
    train_npy, val_npy = ensure_demo(args.data_dir, n_train=DEMO_N_TRAIN, n_val=DEMO_N_VAL, size=DEMO_SIZE)
    print(f"demo data: {train_npy}, {val_npy} ({'reused' if existed else 'built from scikit-image photos'})")

    cfg = demo_config(data_dir=args.data_dir, logdir=args.logdir, epochs=args.epochs)
    project = Path(args.logdir)
    project.mkdir(parents=True, exist_ok=True)
    before = _versions(project)
    train_cmd = [sys.executable, "-m", "train", *cfg.to_argv()]
    watch = ["watch", *demo_watch_args(args.epochs), "--logdir", str(project),
             *(["--no-live"] if args.no_live else []), "--", *train_cmd]
    _step(f"1/3  train under the watchdog, starting at kl_weight {cfg.kl_weight:g}:  vaediag {' '.join(watch[:-len(train_cmd)])} "
          "python -m train ...")
    rc = cli(watch)
    new = sorted(_versions(project) - before, key=lambda p: int(p.name.split("_")[-1]))
    if rc != 0 or not new:
        print(f"demo: training under the watchdog ended with exit code {rc}", file=sys.stderr)
        return rc or 1
    run_dir = new[-1]

    _step(f"2/3  vaediag check {run_dir}")
    check_rc = cli(["check", str(run_dir)])

    _step(f"3/3  vaediag report {run_dir} -o {args.report}")
    report_rc = cli(["report", str(run_dir), "-o", args.report, "--force",
                     "--title", "vaediag demo: a VAE started at kl_weight 1e-2, steered by the watchdog"])
    if report_rc != 0:
        return report_rc

    print()
    print(f"demo done in {time.perf_counter() - t0:.0f} s")
    quality = _final_quality(run_dir)
    if quality:
        print(f"  result:  {quality}")
    print(f"  logs:       {run_dir}  (tensorboard --logdir {args.logdir})")
    ckpt = run_dir / RUN_CHECKPOINT_DIR / "last.pt"  # beside the run
    print(f"  checkpoint: {ckpt if ckpt.is_file() else 'none saved'}")
    print(f"  journal:    {run_dir / 'watchdog.jsonl'}")
    print(f"  report:     {args.report}")
    print(f"  check:      exit code {check_rc} ({'all checks pass or pending' if check_rc == 0 else 'some checks fail: see above'})")
    return 0


def _final_quality(run_dir: Path) -> str:
    """The last epoch's val PSNR beside the mean-colour baseline, from the run's logs ('' if not logged)."""
    import vaediag

    try:
        f = vaediag.load(run_dir).frame
    except Exception:  # the report and check above already said what is wrong with the logs
        return ""
    val = f[f["split"] == "val"]

    def last(term: str) -> float | None:
        s = val[val["term"] == term].sort_values("step")["value"]
        return float(s.iloc[-1]) if len(s) else None

    psnr, trivial = last("psnr"), last("psnr_trivial")
    if psnr is None:
        return ""
    base = f" (each image's own mean colour: {trivial:.1f} dB)" if trivial is not None else ""
    return f"final val PSNR {psnr:.1f} dB{base}"


def _step(text: str) -> None:
    print()
    print(f"== {text}", flush=True)
