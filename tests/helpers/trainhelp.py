"""Helpers shared by the training core's tests (their fixtures live in tests/train/conftest.py) and the
hardening corpus's training cases (tests/hardening/test_corpus_train.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tiny_overrides(tmp_path: Path, npy: tuple[Path, Path]) -> dict:
    """TrainConfig fields for a run that takes about a second per epoch (checkpoints at the default place,
    beside the run: see :func:`ckpt_of`)."""
    return dict(train_npy=str(npy[0]), val_npy=str(npy[1]), logdir=str(tmp_path / "logs" / "proj"),
                name="run", epochs=1, batch_size=8, latent_dim=8,
                base_channels=8, perceptual_layers="relu1_2", warmup_steps=0, quiet=True, grid_images=4)


def run_of(tmp_path: Path, version: int = 0) -> Path:
    """The run directory of a tiny_overrides run: tmp_path/logs/proj/run/version_N."""
    return tmp_path / "logs" / "proj" / "run" / f"version_{version}"


def ckpt_of(tmp_path: Path, version: int = 0) -> Path:
    """Where a tiny_overrides run keeps its checkpoint by default: beside the run, in its checkpoints/."""
    return run_of(tmp_path, version) / "checkpoints" / "last.pt"


def tiny_argv(tmp_path: Path, npy: tuple[Path, Path], **extra) -> list[str]:
    """The same run as command-line flags."""
    from train.config import TrainConfig

    fields = {**tiny_overrides(tmp_path, npy), **extra}
    return TrainConfig(**fields).to_argv()


def read_events(run_dir: Path) -> dict:
    """Everything in the event files of run_dir: {"scalars": {tag: [(step, value, file)]}, "other": {tag: kind}}."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    scalars: dict[str, list] = defaultdict(list)
    other: dict[str, str] = {}
    for f in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for record in RawEventFileLoader(str(f)).Load():  # raw: no migration of simple_value to tensors
            ev = event_pb2.Event.FromString(record)
            if not ev.HasField("summary"):
                continue
            for v in ev.summary.value:
                kind = v.WhichOneof("value")
                if kind == "simple_value":
                    scalars[v.tag].append((ev.step, v.simple_value, f.name))
                else:
                    other[v.tag] = v.metadata.plugin_data.plugin_name or kind
    return {"scalars": dict(scalars), "other": other}


def plugin_values(run_dir: Path) -> list[tuple[int, object]]:
    """Every summary value that is not a simple scalar (text, images, the plugins' metadata), as
    ``(step, Summary.Value)`` in file order, read with TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    out = []
    for f in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for record in RawEventFileLoader(str(f)).Load():
            ev = event_pb2.Event.FromString(record)
            out += [(ev.step, v) for v in ev.summary.value if v.WhichOneof("value") != "simple_value"]
    return out


def steps_of(events: dict, tag: str) -> list[int]:
    return [s for s, _, _ in events["scalars"][tag]]


def run_python(args: list[str], *, env: dict | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` from the repository root with the test interpreter."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=kw.pop("cwd", ROOT), env=full_env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def tiny_data(d: Path, *, n_train: int = 16, n_val: int = 8, size: int = 32) -> tuple[Path, Path]:
    """Small random RGB uint8 images as d/train.npy and d/val.npy (for tests about doors, not learning)."""
    import numpy as np

    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "train.npy", rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8))
    np.save(d / "val.npy", rng.integers(0, 256, (n_val, size, size, 3), dtype=np.uint8))
    return d / "train.npy", d / "val.npy"


def make_run_and_checkpoint(tmp: Path, *, old_layout: bool = False, **fields) -> tuple[Path, Path, dict]:
    """A run directory and a last.pt exactly as the trainer lays them out, built without training.

    Returns (run_dir, checkpoint path, payload); tests damage the payload and save it elsewhere.
    The config is the tiny one on 32 px random data (tiny_data under tmp/data). The checkpoint is beside
    the run (``version_0/checkpoints/last.pt``), or with ``old_layout`` where trainers before the move put
    it, ``tmp/checkpoints/proj/run/version_0/last.pt`` (CHECKPOINT_DIR/<project>/NAME/version_N), its config
    holding the old default ``checkpoint_dir = "checkpoints"``.
    """
    import torch

    from train.config import TrainConfig, save_run_config
    from train.checkpoint import CKPT_FORMAT, LoopState
    from train.model import ConvVAE

    npy = tiny_data(tmp / "data")
    old = {"checkpoint_dir": "checkpoints"} if old_layout else {}  # the old default, relative to the cwd
    cfg = TrainConfig(**{**tiny_overrides(tmp, npy), "image_size": 32, "channels": 3,
                         "perceptual_weights": "none", "perceptual_backbone": "none", **old, **fields})
    run_dir = run_of(tmp).resolve()
    ckpt_dir = (tmp / "checkpoints" / "proj" / "run" / "version_0").resolve() if old_layout else run_dir / "checkpoints"
    run_dir.mkdir(parents=True)
    ckpt_dir.mkdir(parents=True)
    save_run_config(cfg, run_dir)
    (run_dir / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"")
    model = ConvVAE(channels=3, image_size=32, latent_dim=cfg.latent_dim, base_channels=cfg.base_channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = LoopState(global_step=2, epoch=1, kl_weight=cfg.kl_weight)
    payload = {"format": CKPT_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
               "optimizer": optimizer.state_dict(), "state": state.to_dict(), "run_dir": str(run_dir),
               "rng_cpu": torch.get_rng_state(), "torch_version": str(torch.__version__)}
    ckpt = ckpt_dir / "last.pt"
    torch.save(payload, ckpt)
    return run_dir, ckpt, payload
