"""Damaged event files: truncated tails, bad CRCs, lost framing, empty and header-only files, garbage;
and a seeded mutation loop over real files in which both engines must agree and never raise."""

from __future__ import annotations

import random
import shutil
import struct

import pandas as pd
import pytest

import vaediag
from logs_helpers import event_bytes, file_version_event, record_offsets, scalar_event, write_raw
from vaediag.errors import VaediagError

EVENTS = [scalar_event("train/kl", s, float(100 + s), 1.7e9 + s) for s in range(20)]


def both(path):
    a = vaediag.load(path, engine="numpy")
    b = vaediag.load(path, engine="python")
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.warnings == b.warnings
    for run in a.runs:
        x, y = a.runs[run], b.runs[run]
        assert [vars(f) for f in x.files] == [vars(f) for f in y.files]
    return a


@pytest.fixture
def good(tmp_path):
    p = write_raw(tmp_path / "r", EVENTS)
    return p, p.read_bytes()


@pytest.mark.parametrize("cut", [1, 3, 4, 10, 15, 20])
def test_truncated_tail_keeps_complete_records_and_warns(good, cut):
    p, data = good
    p.write_bytes(data[:-cut])
    last_len = record_offsets(data)[-1][1] - record_offsets(data)[-1][0]
    rs = both(p.parent.parent)
    assert len(rs.frame) == 19
    assert rs.warnings == [
        f"r: {p.name}: last record incomplete, {last_len - cut} bytes ignored (a file still being written, or a crash)"
    ]
    assert rs.runs["r"].files[0].truncated_bytes == last_len - cut


def test_bad_data_crc_mid_file_is_skipped_and_counted(good):
    p, data = good
    offs = record_offsets(data)
    b = bytearray(data)
    start, end = offs[5]
    b[end - 6] ^= 0x40  # inside the value of the 5th scalar (record 0 is the header)
    p.write_bytes(bytes(b))
    rs = both(p.parent.parent)
    assert rs.frame["step"].tolist() == [s for s in range(20) if s != 4]
    assert rs.warnings == [f"r: {p.name}: 1 record(s) with a bad CRC skipped"]
    assert rs.runs["r"].files[0].bad_crc == 1


def test_bad_length_crc_loses_framing_then_resyncs(good):
    p, data = good
    offs = record_offsets(data)
    b = bytearray(data)
    b[offs[7][0] + 1] ^= 0x01  # the length of one record: its CRC fails, framing is lost
    p.write_bytes(bytes(b))
    rs = both(p.parent.parent)
    assert rs.frame["step"].tolist() == [s for s in range(20) if s != 6]
    skipped = offs[8][0] - offs[7][0]
    assert rs.warnings == [f"r: {p.name}: framing lost 1 time(s), {skipped} damaged bytes skipped"]


@pytest.mark.parametrize("content", [b"", event_bytes([file_version_event()])], ids=["empty", "header-only"])
def test_empty_and_header_only_files(tmp_path, content):
    d = tmp_path / "r"
    d.mkdir()
    (d / "events.out.tfevents.1.h").write_bytes(content)
    rs = both(tmp_path)
    assert list(rs.runs) == ["r"] and rs.runs["r"].n_scalars == 0 and rs.frame.empty and not rs.warnings


def test_garbage_appended_is_reported(good):
    p, data = good
    p.write_bytes(data + bytes(range(256)) * 4)
    rs = both(p.parent.parent)
    assert len(rs.frame) == 20
    assert rs.warnings == [f"r: {p.name}: last record incomplete, 1024 bytes ignored (a file still being written, or a crash)"]


def test_garbage_between_records_is_skipped(good):
    p, data = good
    offs = record_offsets(data)
    junk = bytes(random.Random(1).randrange(256) for _ in range(777))
    p.write_bytes(data[: offs[10][0]] + junk + data[offs[10][0] :])
    rs = both(p.parent.parent)
    assert len(rs.frame) == 20
    assert rs.warnings == [f"r: {p.name}: framing lost 1 time(s), 777 damaged bytes skipped"]


def test_huge_length_field_with_valid_crc_does_not_allocate(tmp_path):
    from logs_helpers import _masked

    head = struct.pack("<Q", 2**62)
    record = head + struct.pack("<I", _masked(head)) + b"\x09" + b"\0" * 50
    d = tmp_path / "r"
    p = write_raw(d, EVENTS[:3])
    p.write_bytes(p.read_bytes() + record)
    rs = both(tmp_path)  # would need 4 EiB if the length were trusted
    assert len(rs.frame) == 3
    assert "last record incomplete, 63 bytes ignored" in rs.warnings[0]


def test_undecodable_record_with_valid_crc(tmp_path):
    from logs_helpers import frame_record

    d = tmp_path / "r"
    p = write_raw(d, EVENTS[:2])
    p.write_bytes(p.read_bytes() + frame_record(b"\xff\xff\xff\xff") + event_bytes(EVENTS[2:3]))
    rs = both(tmp_path)
    assert len(rs.frame) == 3
    assert rs.warnings == [f"r: {p.name}: 1 record(s) not decodable as events, skipped"]


def test_tag_that_is_not_utf8(tmp_path):
    from logs_helpers import frame_record

    good_rec = scalar_event("abc", 1, 1.0, 1.7e9).SerializeToString()
    bad = good_rec.replace(b"abc", b"a\xffc")
    d = tmp_path / "r"
    p = write_raw(d, EVENTS[:1])
    p.write_bytes(p.read_bytes() + frame_record(bad) + frame_record(good_rec))
    rs = both(tmp_path)
    assert rs.frame["tag"].astype(str).tolist() == ["abc", "train/kl"]
    assert "1 record(s) not decodable" in rs.warnings[0]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del b[rng.randrange(len(b)) :]
    elif kind == 2:  # inserted bytes
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == 3:  # deleted bytes
        i = rng.randrange(len(b))
        del b[i : i + rng.randint(1, 64)]
    elif kind == 4:  # a huge or random length field at a record boundary, CRC fixed up or not
        from logs_helpers import _masked

        offs = record_offsets(data)
        start = rng.choice(offs)[0]
        n = rng.choice([2**63 - 1, 2**40, 2**32 + 7, len(data), rng.randrange(2**31)])
        head = struct.pack("<Q", n)
        b[start : start + 8] = head
        if rng.random() < 0.5:
            b[start + 8 : start + 12] = struct.pack("<I", _masked(head))
    else:  # a block of bytes copied from elsewhere (duplicated records, shifted framing)
        i, j = rng.randrange(len(b)), rng.randrange(len(b))
        b[i:i] = b[j : j + rng.randint(1, 300)]
    return bytes(b)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_real_files_never_raise_and_engines_agree(realworld, tmp_path, seed):
    """A few hundred mutations of real files (the bench fuzz run does 10,000+)."""
    src = realworld / "carmesaure+constellationProject/logs/BetaVAE/version_0"
    (event_file,) = src.glob("events.out.tfevents.*")
    data = event_file.read_bytes()
    rng = random.Random(seed)
    d = tmp_path / "run"
    d.mkdir()
    target = d / event_file.name
    for _ in range(75):
        target.write_bytes(_mutate(data, rng))
        try:
            rs = both(tmp_path)
        except VaediagError:
            continue
        assert len(rs.frame) <= 66 + 10
    shutil.rmtree(d)
