"""The numpy engine's parts against their references: vectorised CRC-32C against the C package,
the vectorised scanner against ``records.scan``, chunked reading against whole-file reading, the pure
Python CRC fallback, and the import cost of ``vaediag.logs``."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
from crc32c import crc32c as c_crc32c

from logs_helpers import event_bytes, frame_record, scalar_event, tensor_scalar_event
from vaediag.logs import crc as vcrc
from vaediag.logs.decode import TagRegistry
from vaediag.logs.events import EventMeta
from vaediag.logs.records import _crc32c_pure, masked_crc, scan
from vaediag.logs.scanner import PAD, Scanner
from vaediag.logs.stream import FileCursor


def test_crc32c_u64_matches_c():
    rng = np.random.default_rng(0)
    w = np.r_[rng.integers(0, 2**64, 5000, dtype=np.uint64, endpoint=False), np.arange(300, dtype=np.uint64)]
    exp = np.array([c_crc32c(int(x).to_bytes(8, "little")) for x in w], dtype=np.uint32)
    np.testing.assert_array_equal(vcrc.crc32c_u64(w), exp)
    exp_m = np.array([masked_crc(int(x).to_bytes(8, "little")) for x in w], dtype=np.uint32)
    np.testing.assert_array_equal(vcrc.masked_crc32c_u64(w), exp_m)


@pytest.mark.parametrize("length", [0, 1, 2, 5, 8, 31, 44, 97])
def test_crc32c_rows_matches_c(length):
    rows = np.random.default_rng(length).integers(0, 256, (500, length), dtype=np.uint8)
    exp = np.array([c_crc32c(r.tobytes()) for r in rows], dtype=np.uint32)
    np.testing.assert_array_equal(vcrc.crc32c_rows(rows), exp)


def test_pure_python_fallback_matches_c():
    rng = random.Random(3)
    for n in (0, 1, 7, 8, 100, 1000):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert _crc32c_pure(data) == c_crc32c(data)


def _records(rng: random.Random, n: int) -> bytes:
    evs = []
    for i in range(n):
        tag = rng.choice(["loss", "val_KLD", "t" * rng.randint(0, 40), "ü/κ"])
        step = rng.choice([0, i, 2**30 + i, 2**50])
        if rng.random() < 0.2:
            evs.append(tensor_scalar_event(tag, step, rng.random(), 1.7e9 + i, double=rng.random() < 0.5))
        else:
            evs.append(scalar_event(tag, step, rng.random(), 1.7e9 + i))
    return event_bytes(evs)


def _scan_fast(data: bytes):
    buf = np.zeros(len(data) + PAD, dtype=np.uint8)
    buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    sc = Scanner()
    fr = sc.scan(buf, 0, len(data))
    return fr, sc


@pytest.mark.parametrize("seed", range(40))
def test_scanner_equals_reference_scan(seed):
    rng = random.Random(seed)
    data = bytearray(_records(rng, rng.randint(0, 60)))
    for _ in range(rng.randint(0, 4)):  # damage of every kind
        if not data:
            break
        i = rng.randrange(len(data))
        op = rng.randrange(3)
        if op == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        else:
            del data[i : i + rng.randint(1, 40)]
    data = bytes(data)
    ref = scan(data)
    fr, sc = _scan_fast(data)
    # The reference returns data-CRC-verified records; the scanner frames them and leaves data CRCs to the decoder.
    framed = [(int(s), int(s + n)) for s, n in zip(fr.starts, fr.lengths)]
    verified = [(a, b) for a, b in framed if masked_crc(data[a:b]) == int.from_bytes(data[b : b + 4], "little")]
    assert verified == ref.records
    assert len(framed) - len(verified) == ref.bad_crc
    assert (sc.resyncs, sc.skipped_bytes) == (ref.resyncs, ref.skipped_bytes)
    assert sc.tail_bytes(fr.consumed, len(data)) == ref.tail_bytes


@pytest.mark.parametrize("chunk", [1, 7, 16, 50, 333, 4096])
def test_chunked_reading_equals_whole_file(tmp_path, chunk):
    rng = random.Random(chunk)
    data = bytearray(_records(rng, 300))
    data[1000:1000] = b"\x01" * 123  # some damage to resync across chunk boundaries
    data[5000] ^= 0x10
    p = tmp_path / "events.out.tfevents.1.h"
    p.write_bytes(bytes(data) + b"\x09\x00\x00")
    whole, pieces = FileCursor(p), FileCursor(p)
    reg1, reg2 = TagRegistry(), TagRegistry()
    a = whole.read(reg1, EventMeta())
    b = pieces.read(reg2, EventMeta(), chunk=chunk)
    assert [reg1.names[c] for c in a.codes] == [reg2.names[c] for c in b.codes]
    for x, y in [(a.steps, b.steps), (a.values, b.values), (a.wall_times, b.wall_times)]:
        np.testing.assert_array_equal(x, y)
    assert (whole.records, whole.bad_crc, whole.resyncs, whole.skipped_bytes, whole.truncated_bytes()) == (
        pieces.records, pieces.bad_crc, pieces.resyncs, pieces.skipped_bytes, pieces.truncated_bytes()
    )
    assert whole.truncated_bytes() == 3 and whole.resyncs >= 1


def test_fast_path_takes_the_common_layout(tmp_path):
    p = tmp_path / "events.out.tfevents.1.h"
    p.write_bytes(event_bytes([scalar_event("loss", s, 1.0, 1.7e9) for s in range(100)]) + frame_record(b""))
    cur = FileCursor(p)
    rows = cur.read(TagRegistry(), EventMeta())
    assert len(rows) == 100 and cur.fast == 100 and cur.records == 101


def test_tag_hash_collisions_fall_back_exactly(tmp_path):
    # Many tags whose hash slots collide in a small table still decode to their own names.
    tags = [f"tag_{i:05d}" for i in range(3000)]
    p = tmp_path / "events.out.tfevents.1.h"
    p.write_bytes(event_bytes([scalar_event(t, i, float(i), 1.7e9) for i, t in enumerate(tags)]))
    reg = TagRegistry()
    rows = FileCursor(p).read(reg, EventMeta())
    assert [reg.names[c] for c in rows.codes] == tags
    np.testing.assert_array_equal(rows.values, np.arange(3000, dtype=float))


@pytest.mark.slow
def test_import_is_light():
    code = (
        "import sys, vaediag.logs; bad = [m for m in ('torch', 'matplotlib', 'tensorboard', 'google.protobuf', "
        "'tbparse') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("dense", [True, False])
def test_epoch_lookup_equals_searchsorted(dense):
    from vaediag.logs.conventions import _last_at_or_before

    rng = np.random.default_rng(int(dense))
    hi = 10_000 if dense else 10**12
    es = np.unique(rng.integers(0, hi, 500))
    steps = np.sort(rng.integers(-50, hi + 50, 5000))
    ref = np.maximum(np.searchsorted(es, steps, side="right") - 1, 0)
    np.testing.assert_array_equal(_last_at_or_before(es, steps), ref)


def test_tags_sharing_head_and_tail_bytes(tmp_path):
    # Same length, same first 8 and last 8 bytes, different middles: told apart by the middle words.
    tags = ["val/psnr_" + m + "_grey_colour" for m in ("aaaaaaaa", "aaaabaaa", "zzzzzzzz")] + ["val/psnr_grey", "val/ssim_grey"]
    p = tmp_path / "events.out.tfevents.1.h"
    p.write_bytes(event_bytes([scalar_event(t, i, float(i), 1.7e9) for i, t in enumerate(tags * 20)]))
    reg = TagRegistry()
    cur = FileCursor(p)
    rows = cur.read(reg, EventMeta())
    assert [reg.names[c] for c in rows.codes] == tags * 20 and cur.fast == 100
