"""The training core: a convolutional VAE trained with the seed's loss recipe, logging every term.

``python -m train --train-npy data/train.npy --val-npy data/val.npy --epochs 100`` from the shell, or::

    from train import TrainConfig, train
    result = train(TrainConfig(train_npy="data/train.npy", val_npy="data/val.npy", epochs=5))

Modules: config (the one dataclass), data (.npy loading, validation, demo data), model (ConvVAE),
losses, perceptual (VGG16 / ST-LPIPS), metrics, loop (the run, read top to bottom) and its parts (prepare,
schedule, distributed, device, rundir, checkpoint, writer, control, events, step, evaluate, stopping, output;
docs/ARCHITECTURE.md says what each owns). Names are imported lazily so that ``python -m train.data`` and
``from train.config import TrainConfig`` stay cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrainConfig", "train", "TrainResult", "resume_config", "load_checkpoint"]

_WHERE = {"TrainConfig": "train.config", "train": "train.loop", "TrainResult": "train.loop",
          "resume_config": "train.loop", "load_checkpoint": "train.loop"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'train' has no attribute {name!r}")
