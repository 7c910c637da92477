"""Helpers for the log-ingestion tests: raw TFRecord framing, hparams records, tbparse as reference.

Event files here are real: protobuf Events from TensorBoard's own classes, framed with the TFRecord
format (length, masked CRC-32C of the length, data, masked CRC-32C of the data).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from tensorboard.compat.proto import event_pb2, summary_pb2

from tbwrite import scalar_event, tensor_scalar_event

__all__ = [
    "frame_record",
    "event_bytes",
    "write_raw",
    "hparams_event",
    "text_event",
    "file_version_event",
    "tbparse_rows",
    "frame_rows",
    "record_offsets",
    "scalar_event",
    "tensor_scalar_event",
]


def _masked(data: bytes) -> int:
    from crc32c import crc32c

    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord: the framing TensorBoard's writer produces."""
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", _masked(head)) + data + struct.pack("<I", _masked(data))


def file_version_event(wall: float = 1.7e9) -> event_pb2.Event:
    return event_pb2.Event(wall_time=wall, file_version="brain.Event:2")


def event_bytes(events: Iterable[event_pb2.Event]) -> bytes:
    return b"".join(frame_record(ev.SerializeToString()) for ev in events)


def write_raw(run_dir: Path, events: Iterable[event_pb2.Event], *, name: str = "events.out.tfevents.1700000000.host.1.0",
              header: bool = True) -> Path:
    """Write an event file (file_version header first, like every writer) and return its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    evs = list(events)
    if header:
        evs.insert(0, file_version_event())
    p = run_dir / name
    p.write_bytes(event_bytes(evs))
    return p


def hparams_event(hp: dict, wall: float = 1.7e9) -> event_pb2.Event:
    """The hparams plugin's session-start record, as torch's add_hparams and Lightning write it."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo()
    for k, v in hp.items():
        val = struct_pb2.Value()
        if isinstance(v, str):
            val.string_value = v
        elif isinstance(v, bool):
            val.bool_value = v
        else:
            val.number_value = float(v)
        start.hparams[k].CopyFrom(val)
    content = plugin_data_pb2.HParamsPluginData(version=0, session_start_info=start).SerializeToString()
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="hparams", content=content)
    )
    value = summary_pb2.Summary.Value(tag="_hparams_/session_start_info", metadata=meta)
    return event_pb2.Event(wall_time=wall, summary=summary_pb2.Summary(value=[value]))


def text_event(tag: str, text: str, step: int = 0, wall: float = 1.7e9) -> event_pb2.Event:
    from tensorboard.compat.proto import tensor_pb2, types_pb2

    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()])
    value = summary_pb2.Summary.Value(tag=tag, tensor=t, metadata=meta)
    return event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=[value]))


def record_offsets(data: bytes) -> list[tuple[int, int]]:
    """(record start, record end) of every record of an undamaged file."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, pos + 16 + n))
        pos += 16 + n
    return out


def tbparse_rows(path: Path) -> pd.DataFrame:
    """tbparse's scalars under ``path`` as (dir_name, tag, step, value, wall_time), deduplicated our way."""
    from tbparse import SummaryReader

    df = SummaryReader(str(path), pivot=False, extra_columns={"dir_name", "wall_time"}).scalars
    if len(df) == 0:
        return pd.DataFrame(columns=["dir_name", "tag", "step", "value", "wall_time"])
    df = df.sort_values("wall_time", kind="stable").drop_duplicates(["dir_name", "tag", "step"], keep="last")
    df = df[["dir_name", "tag", "step", "value", "wall_time"]].astype({"step": np.int64, "value": np.float64})
    return df.sort_values(["dir_name", "tag", "step"], ignore_index=True)


def frame_rows(frame: pd.DataFrame, *, raw_values: pd.Series | None = None) -> pd.DataFrame:
    """Our frame as plain (run, tag, step, value, wall_time) columns for comparison."""
    out = pd.DataFrame(
        {
            "run": frame["run"].astype(str),
            "tag": frame["tag"].astype(str),
            "step": frame["step"].to_numpy(),
            "value": frame["value"].to_numpy() if raw_values is None else raw_values.to_numpy(),
            "wall_time": frame["wall_time"].to_numpy(),
        }
    )
    return out.sort_values(["run", "tag", "step"], ignore_index=True)
