"""Helpers shared by the training core's tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tiny_overrides(tmp_path: Path, npy: tuple[Path, Path]) -> dict:
    """TrainConfig fields for a run that takes about a second per epoch."""
    return dict(train_npy=str(npy[0]), val_npy=str(npy[1]), logdir=str(tmp_path / "logs" / "proj"),
                checkpoint_dir=str(tmp_path / "ckpt"), name="run", epochs=1, batch_size=8, latent_dim=8,
                base_channels=8, perceptual_layers="relu1_2", warmup_steps=0, quiet=True, grid_images=4)


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


def steps_of(events: dict, tag: str) -> list[int]:
    return [s for s, _, _ in events["scalars"][tag]]


def run_python(args: list[str], *, env: dict | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` from the repository root with the test interpreter."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=kw.pop("cwd", ROOT), env=full_env, capture_output=True,
                          text=True, timeout=timeout, **kw)
