"""Trees and event files at scale: the one builder for `make bench`'s scale entry and the scale tests and corpus rows.

* :func:`deep_tree`: a run ``depth`` directories down, built through directory fds so that depths past
  Python's recursion limit (``Path.mkdir(parents=True)`` recurses) and past ``PATH_MAX`` can be made;
* :func:`empty_runs`: ``n`` run directories whose event file holds only the ``file_version`` header
  (``kind="header"``, what a SummaryWriter leaves when the run dies before its first scalar), nothing
  (``"zero"``, a writer killed before its first flush), or Lightning's start records (``"lightning"``:
  header, ``hp_metric`` and the hparams plugin, plus ``hparams.yaml``);
* :func:`many_tags_run`: one run with a few epochs of real tags and ``n`` more distinct tags.

Records are framed by hand (:func:`scalar_record`): one ``simple_value`` Event each, the byte layout of
torch's SummaryWriter.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2

from vaediag.logs.records import frame_record

__all__ = ["scalar_record", "header_record", "deep_tree", "empty_runs", "many_tags_run", "EPOCH_TAGS"]


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def scalar_record(tag: str, step: int, value: float, wall: float) -> bytes:
    """One framed Event with one ``simple_value`` (tags up to 118 bytes)."""
    t = tag.encode("utf-8")
    val = b"\x0a" + bytes([len(t)]) + t + b"\x15" + struct.pack("<f", value)
    summ = b"\x0a" + bytes([len(val)]) + val
    ev = (b"\x09" + struct.pack("<d", wall) + (b"\x10" + _varint(step) if step else b"")
          + b"\x2a" + bytes([len(summ)]) + summ)
    return frame_record(ev)


def header_record(wall: float = 1.7e9) -> bytes:
    return frame_record(event_pb2.Event(wall_time=wall, file_version="brain.Event:2").SerializeToString())


def _lightning_start(wall: float) -> bytes:
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo()
    start.hparams["lr"].CopyFrom(struct_pb2.Value(number_value=0.005))
    content = plugin_data_pb2.HParamsPluginData(version=0, session_start_info=start).SerializeToString()
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="hparams",
                                                                                          content=content))
    hp = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="_hparams_/session_start_info", metadata=meta)])
    return (header_record(wall) + scalar_record("hp_metric", 0, -1.0, wall)
            + frame_record(event_pb2.Event(wall_time=wall, summary=hp).SerializeToString()))


# A few epochs of tags the rules read: a run that is judged, whatever else it logs.
EPOCH_TAGS = ("train/loss", "val/loss", "epoch")


def _epochs(epochs: int = 5, steps: int = 10, wall: float = 1.7e9) -> bytes:
    parts = []
    for e in range(epochs):
        for s in range(steps):
            step = e * steps + s
            parts.append(scalar_record("train/loss", step, 1.0 / (step + 1), wall + step))
            parts.append(scalar_record("epoch", step, float(e), wall + step))
        last = e * steps + steps - 1
        parts.append(scalar_record("val/loss", last, 1.0 / (e + 1), wall + last))
    return b"".join(parts)


def deep_tree(root: Path, depth: int, *, name: str = "d") -> str:
    """A run ``depth`` directories below ``root`` (plus a run ``root/shallow``); returns the deep run's id."""
    root.mkdir(parents=True, exist_ok=True)
    data = header_record() + _epochs()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        out = os.open("events.out.tfevents.1700000000.host.1.0", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                      dir_fd=fd)
        with os.fdopen(out, "wb") as fh:
            fh.write(data)
    finally:
        os.close(fd)
    shallow = root / "shallow"
    shallow.mkdir()
    (shallow / "events.out.tfevents.1700000000.host.2.0").write_bytes(data)
    return "/".join([name] * depth)


def empty_runs(root: Path, n: int, *, kind: str = "header") -> list[str]:
    """``n`` runs ``run_00000`` ... under ``root`` whose event files hold no scalar (see the module doc)."""
    if kind not in ("header", "zero", "lightning"):
        raise ValueError(kind)
    ids = []
    for i in range(n):
        d = root / f"run_{i:05d}"
        d.mkdir(parents=True)
        data = {"header": header_record, "zero": lambda w: b"", "lightning": _lightning_start}[kind](1.7e9 + i)
        (d / f"events.out.tfevents.{1700000000 + i}.host.{i}.0").write_bytes(data)
        if kind == "lightning":
            (d / "hparams.yaml").write_text(f"lr: 0.005\nrun: {i}\n")
        ids.append(d.name)
    return ids


def many_tags_run(run_dir: Path, n: int, *, fmt: str = "hist/{:07d}", steps: int = 1, after: bool = True) -> Path:
    """A run with 5 epochs of :data:`EPOCH_TAGS` and ``n`` more distinct tags ``fmt.format(i)``, each
    logged at ``steps`` steps; ``after``: the extra tags come after the epochs in the file, else before."""
    run_dir.mkdir(parents=True, exist_ok=True)
    extra = b"".join(scalar_record(fmt.format(i), 49 + s, float(i), 1.7e9 + 50 + s)
                     for s in range(steps) for i in range(n))
    body = _epochs() + extra if after else extra + _epochs()
    path = run_dir / "events.out.tfevents.1700000000.host.1.0"
    path.write_bytes(header_record() + body)
    return path


def remove_tree(path: Path) -> None:
    """Delete ``path`` and everything under it without recursion and through directory fds, so trees
    deeper than the recursion limit or PATH_MAX go too (``shutil.rmtree`` recurses: pytest's clean-up of
    old temporary directories would die on them, in every later session on the machine)."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    parent = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    stack = [(parent, os.path.basename(os.path.abspath(path)), None)]  # (parent fd, name, own fd)
    try:
        while stack:
            pfd, name, fd = stack[-1]
            if fd is None:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
                stack[-1] = (pfd, name, fd)
            sub = None
            with os.scandir(fd) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        sub = e.name
                        break
                    os.unlink(e.name, dir_fd=fd)
            if sub is not None:
                stack.append((fd, sub, None))
                continue
            os.close(fd)
            stack.pop()
            os.rmdir(name, dir_fd=pfd)
    finally:
        for _, _, fd in stack:
            if fd is not None:
                os.close(fd)
        os.close(parent)
