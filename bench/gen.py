"""Generate Lightning-style TensorBoard trees for the reader benchmark (never committed: bench/_data/).

    python -m bench gen            # both trees (skips a tree that already exists)
    python -m bench.gen --force    # rebuild

* ``bench/_data/big``: 5 runs x 12 tags x 100,000 steps = 6,000,000 scalars (~300 MB);
* ``bench/_data/small``: 4 runs x 12 tags x 2,500 steps = 120,000 scalars.

Each run is ``lightning_logs/version_N/`` with an event file written the way Lightning's TensorBoard
logger writes it (torch's SummaryWriter: one ``simple_value`` per Event; the ``file_version`` header and
the hparams plugin records first), plus ``hparams.yaml``. The scalar records are assembled with numpy
(all records of a run at once) and their CRCs computed with the ``crc32c`` C package, one call per
record, independently of the reader's vectorised CRC. A sample of every file is read back with
TensorBoard's own record reader and protobuf classes (which check the CRCs) before the tree is kept.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from vaediag.logs.crc import mask
from vaediag.logs.records import frame_record

__all__ = ["TAGS", "DATA", "write_scalar_records", "make_tree", "verify_sample", "main"]

DATA = Path(__file__).resolve().parent / "_data"
# The AntixK/Lightning tags of the shared real logs, plus some of ours: 12 tags, logged every step.
TAGS = (
    "loss",
    "Reconstruction_Loss",
    "KLD",
    "val_loss",
    "val_Reconstruction_Loss",
    "val_KLD",
    "lr-Adam",
    "epoch",
    "train/perceptual",
    "train/kl_weight",
    "val/psnr",
    "val/ssim",
)
STEPS_PER_EPOCH = 1000


def _varint(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varint bytes of non-negative int64 values: (n, 10) uint8 matrix and byte counts."""
    v = values.astype(np.uint64).copy()
    out = np.zeros((len(v), 10), dtype=np.uint8)
    nbytes = np.ones(len(v), dtype=np.int64)
    for i in range(10):
        byte = (v & np.uint64(0x7F)).astype(np.uint8)
        v >>= np.uint64(7)
        more = v > 0
        out[:, i] = byte | (more.astype(np.uint8) << 7)
        nbytes += more
        if not more.any():
            break
    return out, nbytes


def write_scalar_records(tags: list[str], steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> np.ndarray:
    """TFRecord bytes of one scalar Event per row (tags[i], steps[i], values[i], walls[i]), in row order."""
    n = len(steps)
    tag_bytes = [t.encode() for t in tags]
    uniq = sorted(set(tag_bytes))
    code = {t: i for i, t in enumerate(uniq)}
    codes = np.fromiter((code[t] for t in tag_bytes), dtype=np.int64, count=n)
    tl = np.asarray([len(t) for t in uniq], dtype=np.int64)[codes]
    if (tl > 120).any():
        raise ValueError("tags longer than 120 bytes are not supported by this writer")
    vbytes, vlen = _varint(steps)
    has_step = steps != 0
    step_field = np.where(has_step, 1 + vlen, 0)
    data_len = 9 + step_field + 6 + tl + 5
    rec_len = 12 + data_len + 4
    offs = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(rec_len, out=offs[1:])
    out = np.zeros(int(offs[-1]), dtype=np.uint8)
    s = offs[:-1] + 12  # data starts

    def put(pos: np.ndarray, byte_values) -> None:
        out[pos] = byte_values

    def put_bytes(pos: np.ndarray, mat: np.ndarray) -> None:
        for j in range(mat.shape[1]):
            out[pos + j] = mat[:, j]

    put_bytes(offs[:-1], data_len.astype("<u8").view(np.uint8).reshape(n, 8))
    put(s, 0x09)
    put_bytes(s + 1, walls.astype("<f8").view(np.uint8).reshape(n, 8))
    hs = np.flatnonzero(has_step)
    put(s[hs] + 9, 0x10)
    for j in range(int(vlen.max())):
        sel = hs[vlen[hs] > j]
        out[s[sel] + 10 + j] = vbytes[sel, j]
    q = s + 9 + step_field
    len2 = tl + 7
    put(q, 0x2A)
    put(q + 1, (len2 + 2).astype(np.uint8))
    put(q + 2, 0x0A)
    put(q + 3, len2.astype(np.uint8))
    put(q + 4, 0x0A)
    put(q + 5, tl.astype(np.uint8))
    for c, t in enumerate(uniq):
        sel = np.flatnonzero(codes == c)
        put_bytes(q[sel] + 6, np.broadcast_to(np.frombuffer(t, dtype=np.uint8), (len(sel), len(t))))
    e = s + data_len
    put(e - 5, 0x15)
    put_bytes(e - 4, values.astype("<f4").view(np.uint8).reshape(n, 4))
    # CRCs with the C package, one record at a time (independent of the reader's vectorised CRC).
    from crc32c import crc32c

    mv = memoryview(out)
    hcrc = np.empty(n, dtype=np.uint32)
    dcrc = np.empty(n, dtype=np.uint32)
    o_l, s_l, e_l = offs[:-1].tolist(), s.tolist(), e.tolist()
    for i in range(n):
        hcrc[i] = crc32c(mv[o_l[i] : o_l[i] + 8])
        dcrc[i] = crc32c(mv[s_l[i] : e_l[i]])
    put_bytes(offs[:-1] + 8, mask(hcrc).astype("<u4").view(np.uint8).reshape(n, 4))
    put_bytes(e, mask(dcrc).astype("<u4").view(np.uint8).reshape(n, 4))
    return out


def _header_records(wall: float) -> bytes:
    """file_version, hp_metric and the hparams plugin records, as Lightning writes them (protobuf)."""
    from google.protobuf import struct_pb2
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    evs = [event_pb2.Event(wall_time=wall, file_version="brain.Event:2")]
    evs.append(
        event_pb2.Event(
            wall_time=wall, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="hp_metric", simple_value=-1)])
        )
    )
    hp = {"lr": 0.005, "kld_weight": 0.00025, "latent_dim": 128, "model": "VanillaVAE"}
    start = plugin_data_pb2.SessionStartInfo()
    for k, v in hp.items():
        val = struct_pb2.Value()
        if isinstance(v, str):
            val.string_value = v
        else:
            val.number_value = float(v)
        start.hparams[k].CopyFrom(val)
    content = plugin_data_pb2.HParamsPluginData(version=0, session_start_info=start).SerializeToString()
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="hparams", content=content)
    )
    summ = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="_hparams_/session_start_info", metadata=meta)])
    evs.append(event_pb2.Event(wall_time=wall, summary=summ))
    return b"".join(frame_record(ev.SerializeToString()) for ev in evs)


def _run_rows(run: int, n_steps: int, rng: np.random.Generator):
    steps = np.repeat(np.arange(n_steps, dtype=np.int64), len(TAGS))
    tag_idx = np.tile(np.arange(len(TAGS)), n_steps)
    t = steps / max(n_steps - 1, 1)
    base = {
        "loss": 0.1 + 0.9 * np.exp(-5 * t),
        "Reconstruction_Loss": 0.05 + 0.5 * np.exp(-4 * t),
        "KLD": -(150 + 1400 * np.exp(-3 * t)) * (1 if run % 2 == 0 else -1),  # VanillaVAE logs -KL
        "val_loss": 1.0 + 0.3 * t,
        "val_Reconstruction_Loss": 0.06 + 0.5 * np.exp(-4 * t),
        "val_KLD": -(160 + 1300 * np.exp(-3 * t)) * (1 if run % 2 == 0 else -1),
        "lr-Adam": 0.005 * 0.95 ** (steps // STEPS_PER_EPOCH),
        "epoch": (steps // STEPS_PER_EPOCH).astype(np.float64),
        "train/perceptual": 0.2 + 0.5 * np.exp(-3 * t),
        "train/kl_weight": np.full(len(steps), 1e-5),
        "val/psnr": 18 + 12 * (1 - np.exp(-3 * t)),
        "val/ssim": 0.5 + 0.4 * (1 - np.exp(-3 * t)),
    }
    vals = np.empty(len(steps))
    for i, tag in enumerate(TAGS):
        sel = tag_idx == i
        vals[sel] = base[tag][sel]
    vals *= 1 + 0.01 * rng.standard_normal(len(vals)) * (tag_idx != TAGS.index("epoch"))
    t0 = 1.7e9 + run * 1e5
    walls = t0 + steps * 0.05 + tag_idx * 1e-4
    return [TAGS[i] for i in tag_idx.tolist()], steps, vals, walls


def make_tree(root: Path, *, runs: int, steps: int, seed: int = 0) -> int:
    """Write ``runs`` runs of ``len(TAGS) x steps`` scalars under ``root``; returns the scalar count."""
    rng = np.random.default_rng(seed)
    total = 0
    for r in range(runs):
        d = root / "lightning_logs" / f"version_{r}"
        d.mkdir(parents=True, exist_ok=True)
        tags, st, vals, walls = _run_rows(r, steps, rng)
        body = write_scalar_records(tags, st, vals, walls)
        host = f"events.out.tfevents.{1700000000 + r}.benchhost.{1000 + r}.0"
        with open(d / host, "wb") as fh:
            fh.write(_header_records(float(walls[0]) - 1.0))
            fh.write(body.tobytes())
        (d / "hparams.yaml").write_text(f"lr: 0.005\nkld_weight: 0.00025\nlatent_dim: 128\nrun: {r}\n")
        total += len(st)
    return total


def verify_sample(root: Path, *, n: int = 2000) -> int:
    """Read the first ``n`` records of every event file with TensorBoard's reader (CRC-checked)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    checked = 0
    for f in sorted(root.rglob("events.out.tfevents.*")):
        reader = PyRecordReader_New(str(f).encode(), 0, b"", None)
        for _ in range(n):
            try:
                reader.GetNext()
            except errors.OutOfRangeError:
                break
            event_pb2.Event.FromString(reader.record())
            checked += 1
    return checked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench gen", description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild existing trees")
    ap.add_argument("--only", choices=["big", "small"], help="build one tree")
    args = ap.parse_args(argv)
    specs = {"big": (5, 100_000), "small": (4, 2_500)}
    for name, (runs, steps) in specs.items():
        if args.only and name != args.only:
            continue
        root = DATA / name
        if root.exists() and (root / ".complete").exists() and not args.force:
            print(f"{root}: exists (use --force to rebuild)")
            continue
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        total = make_tree(root, runs=runs, steps=steps)
        checked = verify_sample(root)
        size = sum(f.stat().st_size for f in root.rglob("events.out.tfevents.*"))
        (root / ".complete").write_text(f"{total}\n")
        print(
            f"{root}: {runs} runs, {total:,} scalars, {size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s; "
            f"{checked} records verified with TensorBoard's reader"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
