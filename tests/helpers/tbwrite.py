"""Write real TensorBoard event files for tests, with TensorBoard's own writer (no torch).

    write_run(tmp_path / "ear_vae/version_0", {"train/kl": [(0, 1500.0), (50, 1535.0)]}, epochs={0: 0, 50: 0})

Each scalar goes in as a ``simple_value`` Summary, the way torch's SummaryWriter and Lightning write
them; ``tensor_scalars=True`` writes TF2-style scalar tensor summaries instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

__all__ = ["scalar_event", "tensor_scalar_event", "image_event", "png_bytes", "write_events", "write_run",
           "epoch_series"]

Series = Iterable[tuple[int, float]]


def scalar_event(tag: str, step: int, value: float, wall_time: float) -> event_pb2.Event:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)


def tensor_scalar_event(tag: str, step: int, value: float, wall_time: float, *, double: bool = False):
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    if double:
        t = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                   double_val=[value])
    else:
        t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                   float_val=[value])
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, tensor=t, metadata=meta)])
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)


def image_event(tag: str, step: int, data: bytes, wall_time: float, *, width: int = 0, height: int = 0):
    """An image summary as torch's ``SummaryWriter.add_image`` writes it (encoded bytes, PNG from torch)."""
    img = summary_pb2.Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, image=img)]))


def png_bytes(height: int, width: int, seed: int = 0) -> bytes:
    """A small RGB PNG of seeded noise, encoded here (zlib, no image library): distinct bytes per seed."""
    import struct
    import zlib

    rgb = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\0" + rgb[y].tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_events(run_dir: Path, events: Iterable[event_pb2.Event], *, suffix: str = "") -> Path:
    """Write events (after the file_version header) to a new event file in run_dir; return its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    before = set(run_dir.glob("events.out.tfevents.*"))
    w = EventFileWriter(str(run_dir), filename_suffix=suffix)
    for ev in events:
        w.add_event(ev)
    w.close()
    (path,) = set(run_dir.glob("events.out.tfevents.*")) - before
    return path


def write_run(
    run_dir: Path,
    series: Mapping[str, Series],
    *,
    epochs: Mapping[int, float] | None = None,
    t0: float = 1.7e9,
    tensor_scalars: bool = False,
    hparams_yaml: Mapping | None = None,
    config: Mapping | None = None,
    suffix: str = "",
    images: Iterable[tuple[str, int, bytes]] = (),
) -> Path:
    """Write one event file with the given scalar series, and optional epoch tag and metadata files.

    ``epochs`` maps step -> epoch index and is logged as the ``epoch`` tag at those steps. ``images``
    are (tag, step, encoded bytes), written as image summaries after the scalars of their step.
    """
    make = tensor_scalar_event if tensor_scalars else scalar_event
    events = []
    rows = [(step, tag, float(v)) for tag, pts in series.items() for step, v in pts]
    if epochs:
        rows += [(step, "epoch", float(e)) for step, e in epochs.items()]
    rows.sort(key=lambda r: r[0])
    pics = sorted(images, key=lambda r: r[1])
    for i, (step, tag, v) in enumerate(rows):
        while pics and pics[0][1] < step:
            t, s, data = pics.pop(0)
            events.append(image_event(t, int(s), data, t0 + i * 0.01 - 0.005))
        events.append(make(tag, int(step), v, t0 + i * 0.01))
    for t, s, data in pics:
        events.append(image_event(t, int(s), data, t0 + len(rows) * 0.01))
    path = write_events(run_dir, events, suffix=suffix)
    if hparams_yaml is not None:
        import yaml

        (run_dir / "hparams.yaml").write_text(yaml.safe_dump(dict(hparams_yaml)))
    if config is not None:
        (run_dir / "config.json").write_text(json.dumps(dict(config), indent=2))
    return path


def epoch_series(values: Iterable[float], *, steps_per_epoch: int = 10) -> list[tuple[int, float]]:
    """Per-epoch values at the last step of each epoch: [(9, v0), (19, v1), ...]."""
    return [((i + 1) * steps_per_epoch - 1, float(v)) for i, v in enumerate(values)]


def epoch_map(n_epochs: int, *, steps_per_epoch: int = 10) -> dict[int, float]:
    """The epoch tag at every step of n epochs."""
    return {s: float(s // steps_per_epoch) for s in range(n_epochs * steps_per_epoch)}


if __name__ == "__main__":  # pragma: no cover - manual smoke test
    p = write_run(Path("/tmp/tbwrite_demo"), {"KLD": [(0, -1.0), (1, -2.0)]}, epochs={0: 0, 1: 0})
    print(p, time.time())
