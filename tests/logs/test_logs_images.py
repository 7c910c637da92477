"""Image summaries read as data without torch: torch-style Summary.Image and TF2 image tensors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import vaediag
from logs_helpers import scalar_event, write_raw
from vaediag.logs.images import image_format, read_images


def _png(h: int, w: int, seed: int = 0) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    rgb = np.random.default_rng(seed).random((h, w, 3))
    buf = io.BytesIO()
    mpimg.imsave(buf, rgb, format="png")
    return buf.getvalue()


def _image_event(tag: str, step: int, png: bytes, w: int, h: int, wall: float):
    from tensorboard.compat.proto import event_pb2, summary_pb2

    img = summary_pb2.Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=png)
    return event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, image=img)]))


def _tf2_image_event(tag: str, step: int, pngs: list[bytes], w: int, h: int, wall: float):
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[str(w).encode(), str(h).encode(), *pngs],
                               tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[
                                   tensor_shape_pb2.TensorShapeProto.Dim(size=2 + len(pngs))]))
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"))
    return event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, tensor=t, metadata=meta)]))


def test_images_beside_scalars_lazily(tmp_path: Path) -> None:
    a, b = _png(8, 16, 0), _png(8, 16, 1)
    events = [scalar_event("train/loss", 0, 1.0, 1.0), _image_event("val/recon_grid", 1, a, 16, 8, 2.0),
              scalar_event("val/loss", 1, 0.5, 3.0), _image_event("val/recon_grid", 3, b, 16, 8, 4.0),
              _tf2_image_event("samples", 3, [a, b], 16, 8, 5.0)]
    write_raw(tmp_path / "r", events, name="events.out.tfevents.1.h")
    rs = vaediag.load(tmp_path)
    assert set(rs.frame["tag"].astype(str)) == {"train/loss", "val/loss"}  # no image rows in the frame
    info = rs.runs["r"]
    imgs = info.images()
    assert [(i.tag, i.step) for i in imgs] == [("val/recon_grid", 1), ("val/recon_grid", 3), ("samples/0", 3),
                                               ("samples/1", 3)]
    assert imgs[1].data == b and imgs[1].format == "png" and (imgs[1].width, imgs[1].height) == (16, 8)
    assert [i.step for i in info.images(tags=["val/recon_grid"])] == [1, 3]
    assert [i.tag for i in info.images(tags=["samples"])] == ["samples/0", "samples/1"]


def test_damaged_and_unreadable_files_are_skipped(tmp_path: Path) -> None:
    import os

    write_raw(tmp_path / "r", [_image_event("g", 0, _png(4, 4), 4, 4, 1.0)], name="events.out.tfevents.1.h")
    f = next((tmp_path / "r").iterdir())
    data = f.read_bytes()
    f.write_bytes(data[:-5])  # torn last record
    fifo = tmp_path / "r" / "events.out.tfevents.2.h"
    os.mkfifo(fifo)
    assert read_images([f, fifo]) == []


@pytest.mark.parametrize("data,fmt", [(b"\x89PNG\r\n\x1a\nxxx", "png"), (b"\xff\xd8\xff\xe0", "jpeg"),
                                      (b"GIF89a..", "gif"), (b"<svg", None)])
def test_image_format(data: bytes, fmt: str | None) -> None:
    assert image_format(data) == fmt


@pytest.mark.parametrize("engine", ["numpy", "python"])
def test_the_scalar_read_counts_image_tags_without_keeping_pictures(tmp_path: Path, engine: str) -> None:
    a = _png(4, 4)
    write_raw(tmp_path / "r", [_image_event("val/recon_grid", s, a, 4, 4, 1.0 + s) for s in (1, 5, 3)]
              + [_tf2_image_event("samples", 2, [a], 4, 4, 9.0), scalar_event("val/loss", 5, 0.5, 10.0)],
              name="events.out.tfevents.1.h")
    info = vaediag.load(tmp_path, engine=engine).runs["r"]
    assert info.image_tags == {"val/recon_grid": (3, 5), "samples": (1, 2)}


def test_check_names_the_latest_grid(tmp_path: Path) -> None:
    from vaediag.diagnose import diagnose

    a = _png(4, 4)
    events = []
    for e in range(3):
        events += [scalar_event("epoch", 10 * e + 9, float(e), 1.0 + e), scalar_event("val/recon", 10 * e + 9, 0.1, 1.0 + e),
                   _image_event("val/recon_grid", 10 * e + 9, a, 4, 4, 1.5 + e), _image_event("samples", 10 * e + 9, a, 4, 4, 1.6 + e)]
    write_raw(tmp_path / "r", events, name="events.out.tfevents.1.h")
    (d,) = diagnose(vaediag.load(tmp_path))
    f = d.finding("pictures")
    assert f.key == "val/recon_grid" and f.value == 3
    assert f.message == ("3 images logged as 'val/recon_grid', the latest at epoch 3 (step 29), in "
                         "events.out.tfevents.1.h; also samples: `vaediag report` shows inputs beside reconstructions")
