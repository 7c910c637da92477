"""Damaged event files: truncated tails, bad CRCs, lost framing, empty and header-only files, garbage;
and a seeded mutation loop over real files in which both engines must agree and never raise."""

from __future__ import annotations

import os
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
        f"r: {p.name}: last record incomplete, {last_len - cut} bytes ignored from byte {len(data) - last_len:,} "
        "(a file still being written, or a crash)"
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
    assert rs.warnings == [f"r: {p.name}: last record incomplete, 1,024 bytes ignored from byte {len(data):,} "
                           "(a file still being written, or a crash)"]


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
    assert "last record incomplete, 63 bytes ignored from byte " in rs.warnings[0]


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


@pytest.mark.slow
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


# ---- event files that cannot be read at all (issue 10) -------------------------------------------


def _tree_with_unreadable_runs(tmp_path):
    import os

    write_raw(tmp_path / "a", EVENTS[:3])
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b" / "events.out.tfevents.1.h")  # would block an open() without O_NONBLOCK
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "events.out.tfevents.1.h").write_bytes(bytes(range(256)) * 3)  # no record at all
    write_raw(tmp_path / "d", EVENTS[3:5])
    (tmp_path / "d" / "events.out.tfevents.9.h").symlink_to("/dev/zero")  # would never end
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "events.out.tfevents.1.h").symlink_to(tmp_path / "gone")


def test_unreadable_event_files_are_named_and_their_runs_skipped(tmp_path):
    _tree_with_unreadable_runs(tmp_path)
    rs = both(tmp_path)
    assert list(rs.runs) == ["a", "d"]  # d keeps its readable file
    assert sorted(rs.frame["run"].astype(str).unique()) == ["a", "d"] and len(rs.frame) == 5
    w = rs.warnings
    assert w[0] == f"b: cannot read event file {tmp_path}/b/events.out.tfevents.1.h: a FIFO (named pipe), not a " \
                   "regular file; no readable event file, run skipped"
    assert w[1] == f"c: cannot read event file {tmp_path}/c/events.out.tfevents.1.h: not a TensorBoard event file " \
                   "(no valid record in its 768 bytes); no readable event file, run skipped"
    assert w[2] == f"d: cannot read event file {tmp_path}/d/events.out.tfevents.9.h: a character device, not a " \
                   "regular file"
    assert w[3].startswith("e: cannot read event file ") and w[3].endswith(": No such file or directory; no "
                                                                           "readable event file, run skipped")
    assert len(w) == 4 and [f.path.name for f in rs.runs["d"].files] == ["events.out.tfevents.1700000000.host.1.0"]


@pytest.mark.parametrize("engine", ["numpy", "python"])
@pytest.mark.parametrize("run, message", [
    ("b", r"^cannot read event file .*b/events.out.tfevents.1.h: a FIFO \(named pipe\), not a regular file$"),
    ("c", r"^cannot read event file .*: not a TensorBoard event file \(no valid record in its 768 bytes\)$"),
    ("e", r"^cannot read event file .*: No such file or directory$"),
])
def test_an_unreadable_only_input_is_an_error(tmp_path, engine, run, message):
    from vaediag.errors import CorruptLogError

    _tree_with_unreadable_runs(tmp_path)
    with pytest.raises(CorruptLogError, match=message) as exc:
        vaediag.load(tmp_path / run, engine=engine)
    assert exc.value.exit_code == 2


def test_several_unreadable_files_are_one_line(tmp_path):
    from vaediag.errors import CorruptLogError

    _tree_with_unreadable_runs(tmp_path)
    for keep in ("a", "d"):
        shutil.rmtree(tmp_path / keep)
    with pytest.raises(CorruptLogError, match=r"^none of the 3 event files under .* can be read \(first: .*b/ev"):
        vaediag.load(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_an_event_file_without_read_permission(tmp_path):
    from vaediag.errors import CorruptLogError

    p = write_raw(tmp_path / "r", EVENTS[:3])
    p.chmod(0)
    try:
        with pytest.raises(CorruptLogError, match=r"cannot read event file .*: Permission denied$"):
            both(tmp_path)
        write_raw(tmp_path / "s", EVENTS[:3])
        assert list(both(tmp_path).runs) == ["s"]
    finally:
        p.chmod(0o644)


def test_a_short_file_or_a_first_record_being_written_is_not_unreadable(tmp_path):
    """Fewer bytes than a header, or a verified header whose record is incomplete: a run still being
    written (no scalars yet), never 'not an event file'."""
    data = event_bytes(EVENTS[:1])
    for name, content in (("short", b"\x01\x02\x03"), ("first", data[: len(data) - 3])):
        d = tmp_path / name
        d.mkdir()
        (d / "events.out.tfevents.1.h").write_bytes(content)
    rs = both(tmp_path)
    assert list(rs.runs) == ["first", "short"] and rs.frame.empty


def test_tail_never_blocks_on_a_fifo(tmp_path):
    import threading

    from vaediag.logs import Tail

    write_raw(tmp_path, EVENTS[:2])
    os.mkfifo(tmp_path / "events.out.tfevents.2.h")
    out: list = []
    t = threading.Thread(target=lambda: out.append(Tail(tmp_path).poll()), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "Tail.poll blocked on a FIFO"
    assert len(out[0]) == 2


# ---- a valid CRC over a wrong length mid-file (issue 10: 2 GB claimed, 8 of 12 epochs hidden) ------------


def _claim(data: bytes, start: int, length: int) -> bytes:
    """``data`` with the record at ``start`` claiming ``length`` bytes, its length CRC made to match."""
    from logs_helpers import _masked

    head = struct.pack("<Q", length)
    return data[:start] + head + struct.pack("<I", _masked(head)) + data[start + 12 :]


@pytest.mark.parametrize("claim", [2**31, 2**62, 10_000])
def test_a_length_running_past_the_end_mid_file_is_said_and_skipped(good, claim):
    p, data = good
    offs = record_offsets(data)
    start = offs[5][0]  # the 5th scalar (record 0 is the header)
    p.write_bytes(_claim(data, start, claim))
    rs = both(p.parent.parent)
    assert rs.frame["step"].tolist() == [s for s in range(20) if s != 4]  # only the damaged record is lost
    skipped = offs[6][0] - start
    assert rs.warnings == [
        f"r: {p.name}: the record at byte {start:,} claims {claim:,} bytes, past the end of the file "
        f"({len(data):,} bytes): a damaged length; reading resumed at the next valid record ({skipped} bytes skipped)"
    ]
    st = rs.runs["r"].files[0]
    assert (st.overruns, st.overrun_at, st.overrun_claimed, st.overrun_skipped) == (1, start, claim, skipped)


def test_the_issue_case_twelve_epochs_one_damaged_length(tmp_path):
    """The issue's reproduction: a valid-CRC 2 GB length a third into a 12-epoch run hid epochs 5-12."""
    from tbwrite import epoch_map, epoch_series, write_run

    p = write_run(tmp_path / "run", {"train/loss": epoch_series(range(12, 0, -1)),
                                     "val/loss": epoch_series(range(13, 1, -1))}, epochs=epoch_map(12))
    data = p.read_bytes()
    start = record_offsets(data)[len(record_offsets(data)) // 3][0]
    p.write_bytes(_claim(data, start, 2**31))
    rs = both(tmp_path)
    epochs = rs.frame.loc[rs.frame["tag"] == "val/loss", "epoch"]
    assert sorted(epochs.astype(int)) == list(range(12))
    assert f"the record at byte {start:,} claims 2,147,483,648 bytes" in rs.warnings[0]


def test_several_damaged_lengths_and_one_at_the_end(good):
    p, data = good
    offs = record_offsets(data)
    b = data
    for i in (3, 9):
        b = _claim(b, offs[i][0], 2**40)
    b = _claim(b, offs[-1][0], 2**40)  # the last record: nothing valid after it -> an incomplete tail
    p.write_bytes(b)
    rs = both(p.parent.parent)
    assert len(rs.frame) == 17
    skipped = (offs[4][0] - offs[3][0]) + (offs[10][0] - offs[9][0])
    assert rs.warnings[0].endswith(f"(2 such records, {skipped} bytes skipped in all)")
    tail = len(data) - offs[-1][0]
    assert rs.warnings[1] == (f"r: {p.name}: last record incomplete, {tail} bytes ignored from byte {offs[-1][0]:,} "
                              "(a file still being written, or a crash)")


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_damaged_lengths_across_chunks_read_as_one_file(tmp_path, chunk):
    from vaediag.logs.decode import TagRegistry
    from vaediag.logs.events import EventMeta
    from vaediag.logs.stream import FileCursor

    p = write_raw(tmp_path / "r", EVENTS)
    data = p.read_bytes()
    offs = record_offsets(data)
    p.write_bytes(_claim(_claim(data, offs[2][0], 2**33), offs[12][0], len(data)))
    whole, pieces = FileCursor(p), FileCursor(p)
    a = whole.read(TagRegistry(), EventMeta(), final=True)
    b = pieces.read(TagRegistry(), EventMeta(), chunk=chunk, final=True)
    assert a.steps.tolist() == b.steps.tolist() == [s for s in range(20) if s not in (1, 11)]
    assert (whole.overruns, whole.overrun_skipped, whole.truncated_bytes()) == \
        (pieces.overruns, pieces.overrun_skipped, pieces.truncated_bytes()) == (2, offs[3][0] - offs[2][0] +
                                                                                offs[13][0] - offs[12][0], 0)


def test_a_tail_keeps_waiting_for_a_long_record(good):
    """Tailing (not final), a record longer than the file so far may still be being written: no skip."""
    from vaediag.logs.decode import TagRegistry
    from vaediag.logs.events import EventMeta
    from vaediag.logs.stream import FileCursor

    p, data = good
    offs = record_offsets(data)
    p.write_bytes(_claim(data, offs[5][0], 2**31))
    cur = FileCursor(p)
    assert cur.read(TagRegistry(), EventMeta()).steps.tolist() == [0, 1, 2, 3]
    assert cur.overruns == 0 and cur.truncated_bytes() == len(data) - offs[5][0]
