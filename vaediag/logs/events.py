"""Decode Event records into scalar rows and run metadata.

Scalars come in two encodings: ``Summary.Value.simple_value`` (TF1, torch's SummaryWriter, Lightning) and
a scalar tensor (TF2 ``tf.summary.scalar``: a float or double tensor of shape ``[]``). Both become rows.
Everything else (images, histograms, graphs) is skipped, except two kinds of metadata: the hparams plugin's
session-start info (Lightning's ``log_hyperparams``, torch's ``add_hparams``) and text summaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ScalarRows", "EventMeta", "NotRead", "decode_records"]

# TensorFlow DataType enum values that hold a real scalar.
_DT_FLOAT, _DT_DOUBLE, _DT_HALF, _DT_BFLOAT16 = 1, 2, 19, 14
_DT_STRING = 7
_TENSOR_DTYPES = {_DT_FLOAT: "<f4", _DT_DOUBLE: "<f8", _DT_HALF: "<f2"}


@dataclass
class ScalarRows:
    """Column lists of decoded scalars, in record order."""

    tags: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)

    def extend(self, other: "ScalarRows") -> None:
        self.tags.extend(other.tags)
        self.steps.extend(other.steps)
        self.values.extend(other.values)
        self.wall_times.extend(other.wall_times)


class NotRead:
    """Scalars of tags past the tag registry's limits (``decode.MAX_TAGS``...): counted, not read.

    ``scalars``: records; ``tags``: distinct tags (by a 64-bit hash of each tag; the hashes are kept
    compacted, so memory stays at about 8 bytes per distinct tag, never per record).
    """

    def __init__(self) -> None:
        self.scalars = 0
        self._parts: list[np.ndarray] = []
        self._pending = 0
        self._unique = 0

    def add(self, hashes: np.ndarray, scalars: int) -> None:
        self.scalars += scalars
        self._parts.append(np.asarray(hashes, dtype=np.uint64))
        self._pending += len(hashes)
        if self._pending > 2 * self._unique + 65536:
            self._compact()

    def _compact(self) -> None:
        if len(self._parts) > 1 or self._pending:
            u = np.unique(np.concatenate(self._parts)) if self._parts else np.zeros(0, np.uint64)
            self._parts = [u]
            self._unique = len(u)
            self._pending = 0

    @property
    def tags(self) -> int:
        self._compact()
        return self._unique

    def __bool__(self) -> bool:
        return self.scalars > 0


@dataclass
class EventMeta:
    """Run metadata found inside event files."""

    hparams: dict[str, Any] = field(default_factory=dict)  # hparams plugin session-start values
    texts: dict[str, str] = field(default_factory=dict)  # text summaries: tag -> latest text
    images: dict[str, tuple[int, int]] = field(default_factory=dict)  # image tag -> (count, latest step)
    undecodable: int = 0  # records whose CRC verified but whose protobuf did not parse
    not_read_unmapped: NotRead = field(default_factory=NotRead)  # tags no term names, past the limit
    not_read_mapped: NotRead = field(default_factory=NotRead)  # tags a term names, past the limit on all tags

    def not_read_of(self, mapped: bool) -> NotRead:
        return self.not_read_mapped if mapped else self.not_read_unmapped


def _event_cls():
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event


def _tensor_scalar(t) -> float | None:
    if len(t.tensor_shape.dim) != 0:
        return None
    if t.dtype == _DT_FLOAT and len(t.float_val) == 1:
        return float(t.float_val[0])
    if t.dtype == _DT_DOUBLE and len(t.double_val) == 1:
        return float(t.double_val[0])
    if t.dtype == _DT_HALF and len(t.half_val) == 1:
        return float(np.array([t.half_val[0]], dtype=np.uint16).view(np.float16)[0])
    fmt = _TENSOR_DTYPES.get(t.dtype)
    if fmt is not None and len(t.tensor_content) == np.dtype(fmt).itemsize:
        return float(np.frombuffer(t.tensor_content, dtype=fmt)[0])
    return None


def _hparams(content: bytes) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    if not data.HasField("session_start_info"):
        return {}
    out: dict[str, Any] = {}
    for key, value in data.session_start_info.hparams.items():
        out[key] = MessageToDict(value)
    return out


def decode_records(
    buf: bytes | memoryview,
    records: list[tuple[int, int]],
    rows: ScalarRows,
    meta: EventMeta,
    *,
    row_records: list[int] | None = None,
) -> None:
    """Decode ``buf[start:end]`` for each record into ``rows`` (scalars) and ``meta`` (metadata).

    ``row_records``, when given, receives for every row the index in ``records`` of its record (the
    fast reader merges these rows with its own in file order).
    """
    mv = memoryview(buf)
    steps = rows.steps
    Event = DecodeError = None
    for k, (start, end) in enumerate(records):
        if _is_file_version(mv, start, end):
            continue  # the header every file starts with: nothing to decode (and no protobuf import)
        if Event is None:
            from google.protobuf.message import DecodeError

            Event = _event_cls()
        try:
            ev = Event.FromString(mv[start:end])
        except (DecodeError, ValueError, RuntimeError):
            meta.undecodable += 1
            continue
        if not ev.HasField("summary"):
            continue
        n_before = len(steps)
        _decode_values(ev, rows, meta)
        if row_records is not None:
            row_records.extend([k] * (len(steps) - n_before))


_FILE_VERSION = b"brain.Event:"


def _is_file_version(mv: memoryview, start: int, end: int) -> bool:
    """True for an Event holding only wall_time and file_version ("brain.Event:2"), decoded by hand."""
    n = end - start
    if n < 11 + len(_FILE_VERSION) or n > 11 + 127:
        return False
    head = mv[start : start + 11 + len(_FILE_VERSION)]
    return head[0] == 0x09 and head[9] == 0x1A and head[10] == n - 11 and head[11:] == _FILE_VERSION and all(
        32 <= c < 127 for c in mv[start + 11 : end]
    )


def _decode_values(ev, rows: ScalarRows, meta: EventMeta) -> None:
    from google.protobuf.message import DecodeError

    tags, steps, values, walls = rows.tags, rows.steps, rows.values, rows.wall_times
    for v in ev.summary.value:
        kind = v.WhichOneof("value")
        if kind == "simple_value":
            tags.append(v.tag)
            steps.append(ev.step)
            values.append(v.simple_value)
            walls.append(ev.wall_time)
        elif kind == "tensor":
            plugin = v.metadata.plugin_data.plugin_name
            if plugin in ("scalars", ""):
                x = _tensor_scalar(v.tensor)
                if x is not None:
                    tags.append(v.tag)
                    steps.append(ev.step)
                    values.append(x)
                    walls.append(ev.wall_time)
            elif plugin == "text" and v.tensor.dtype == _DT_STRING and v.tensor.string_val:
                meta.texts[v.tag] = b"\n".join(v.tensor.string_val).decode("utf-8", "replace")
            elif plugin == "images":
                n, last = meta.images.get(v.tag, (0, ev.step))
                meta.images[v.tag] = (n + 1, max(last, ev.step))
            elif plugin == "hparams":
                try:
                    meta.hparams.update(_hparams(v.metadata.plugin_data.content))
                except (DecodeError, ValueError):
                    meta.undecodable += 1
        elif kind == "image":  # counted only: the pictures are read on demand (vaediag.logs.images)
            n, last = meta.images.get(v.tag, (0, ev.step))
            meta.images[v.tag] = (n + 1, max(last, ev.step))
        elif kind is None and v.metadata.plugin_data.plugin_name == "hparams":
            # torch and Lightning write hparams as a value with metadata only.
            try:
                meta.hparams.update(_hparams(v.metadata.plugin_data.content))
            except (DecodeError, ValueError):
                meta.undecodable += 1
