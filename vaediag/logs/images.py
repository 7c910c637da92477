"""Image summaries in event files, read as data without torch (lazily: only when someone asks).

Two encodings are in use:

* ``Summary.Value.image`` (torch's ``SummaryWriter.add_image``/``add_images``, Lightning's
  ``logger.experiment.add_image``, TF1): ``height``, ``width``, ``colorspace`` and
  ``encoded_image_string`` (PNG from torch; JPEG or GIF from some writers);
* a ``tensor`` with plugin ``images`` (TF2's ``tf.summary.image``): a string tensor of
  ``[width, height, encoded image 1, encoded image 2, ...]``; each image becomes one entry, the k-th
  tagged ``tag/k`` when there are several.

The scalar reader never decodes these records (they are skipped by length before any protobuf parsing),
so a ``check`` that needs no picture pays nothing. :func:`read_images` scans the run's event files
itself, parses only records long enough to hold an image, and returns the encoded bytes as they were
logged: a report writes them to files as they are, no pixel decoding needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from vaediag.errors import VaediagError
from vaediag.logs.records import scan
from vaediag.safeio import read_bytes

__all__ = ["LoggedImage", "read_images", "iter_images", "image_format", "picture_tag", "StepEpochs",
           "MIN_IMAGE_RECORD"]

#: Records shorter than this cannot hold an encoded image (a PNG header alone is 57 bytes) and are skipped.
MIN_IMAGE_RECORD = 96

MAX_EVENT_FILE = 1 << 32  # 4 GiB: an event file larger than this is not read for pictures

_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"))


def image_format(data: bytes) -> str | None:
    """``png``, ``jpeg`` or ``gif`` by the file signature; None for anything else."""
    for sig, name in _SIGNATURES:
        if data.startswith(sig):
            return name
    return None


@dataclass(frozen=True)
class LoggedImage:
    """One logged image: where it was logged and its encoded bytes."""

    tag: str
    step: int
    wall_time: float
    width: int
    height: int
    data: bytes
    file: Path

    @property
    def format(self) -> str | None:
        return image_format(self.data)

    @property
    def suffix(self) -> str:
        return {"jpeg": ".jpg", "gif": ".gif"}.get(self.format or "", ".png")


def _images_of(ev, path: Path) -> Iterable[LoggedImage]:
    for v in ev.summary.value:
        kind = v.WhichOneof("value")
        if kind == "image" and image_format(v.image.encoded_image_string):
            yield LoggedImage(v.tag, int(ev.step), float(ev.wall_time), int(v.image.width), int(v.image.height),
                              bytes(v.image.encoded_image_string), path)
        elif kind == "tensor" and v.metadata.plugin_data.plugin_name == "images":
            vals = list(v.tensor.string_val)
            if len(vals) < 3:
                continue
            try:
                w, h = int(vals[0]), int(vals[1])
            except ValueError:
                w = h = 0
            encoded = [b for b in vals[2:] if image_format(b)]
            for k, b in enumerate(encoded):
                yield LoggedImage(v.tag if len(encoded) == 1 else f"{v.tag}/{k}", int(ev.step), float(ev.wall_time),
                                  w, h, bytes(b), path)


def read_images(files: Sequence[str | os.PathLike[str]], *, tags: Iterable[str] | None = None) -> list[LoggedImage]:
    """Every image summary in ``files`` (a run's event files), by (step, wall time); ``tags`` filters.

    Damaged records are skipped as the scalar reader skips them; a file that cannot be read is skipped
    (the scalar reader has already said so). Files are read whole, one at a time.
    """
    return sorted(iter_images(files, tags=tags), key=lambda i: (i.step, i.wall_time))


def iter_images(files: Sequence[str | os.PathLike[str]], *, tags: Iterable[str] | None = None) -> Iterator[LoggedImage]:
    """:func:`read_images` one image at a time, in file order (not sorted): a caller that keeps only a few
    (the report keeps the grids it shows) holds one file's bytes and those few images, never them all."""
    from tensorboard.compat.proto import event_pb2

    wanted = set(tags) if tags is not None else None
    for f in files:
        path = Path(f)
        try:  # regular files only, never blocking on a FIFO
            buf = read_bytes(path, what="event file", max_bytes=MAX_EVENT_FILE)
        except VaediagError:
            continue
        mv = memoryview(buf)
        for start, end in scan(buf).records:
            if end - start < MIN_IMAGE_RECORD:
                continue
            ev = event_pb2.Event()
            try:
                ev.ParseFromString(mv[start:end])
            except Exception:  # a CRC-valid record that is not an Event: the scalar reader counts these
                continue
            if not ev.HasField("summary"):
                continue
            for img in _images_of(ev, path):
                if wanted is None or img.tag in wanted or img.tag.rsplit("/", 1)[0] in wanted:
                    yield img
        del buf, mv


def picture_tag(tags: Iterable[str]) -> str | None:
    """The image tag that shows a run's reconstructions, by one rule for ``check`` and ``report``.

    Our trainer's grid (:data:`vaediag.terms.RECON_GRID_TAG`, inputs over reconstructions) first; then a
    tag whose name says reconstructions (``val/reconstructions``, latent-diffusion's
    ``train/reconstruction``, ``recon``, a last component starting ``rec``); then any image tag, so a run
    that logs pictures always has one shown. Ties go to the first tag in sort order. None: no image tags.
    """
    from vaediag.terms import RECON_GRID_TAG

    def rank(t: str) -> tuple[int, str]:
        low = t.lower()
        return (0 if t == RECON_GRID_TAG else 1 if ("recon" in low or "rec" in low.split("/")[-1]) else 2, t)

    tags = list(tags)
    return min(tags, key=rank) if tags else None


class StepEpochs:
    """A run's step -> epoch index (0-based, as the tidy frame has it), for pictures logged at a step.

    The epoch of a step is the largest epoch of the run's scalar rows at that step; a step with no
    scalar row takes the epoch of the nearest step before it that has one (an image logged between
    scalars belongs to the epoch in progress). None before the first such step, or for a run whose
    frame gives no epoch. Negative epochs (an evaluation before training) count as none.
    """

    def __init__(self, frame) -> None:
        import numpy as np

        steps = np.asarray([], dtype=np.int64)
        epochs = np.asarray([], dtype=np.float64)
        if frame is not None and len(frame) and "step" in frame.columns and "epoch" in frame.columns:
            f = frame[["step", "epoch"]]
            f = f[np.isfinite(f["epoch"].to_numpy(dtype=np.float64)) & (f["epoch"] >= 0)]
            if len(f):
                g = f.groupby("step", sort=True)["epoch"].max()
                steps = g.index.to_numpy(dtype=np.int64)
                epochs = g.to_numpy(dtype=np.float64)
        self._steps, self._epochs = steps, epochs

    def __bool__(self) -> bool:
        return bool(len(self._steps))

    def __call__(self, step: int) -> int | None:
        import numpy as np

        i = int(np.searchsorted(self._steps, step, side="right")) - 1
        return int(self._epochs[i]) if i >= 0 else None
