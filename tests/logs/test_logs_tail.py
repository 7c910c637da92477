"""Tailing: a real subprocess appends records (and half records) to event files while we poll.

The writer is driven over a pipe (one command, one acknowledgement after fsync), so the test knows
exactly which bytes are on disk at each poll without sleeping or timing anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import logs_helpers
import vaediag
from logs_helpers import event_bytes, file_version_event, scalar_event, write_raw
from vaediag.logs import Tail

WRITER = textwrap.dedent(
    """
    import os, sys
    from logs_helpers import event_bytes, file_version_event, scalar_event
    run_dir = sys.argv[1]
    fh = None
    pending = b""
    step = 0
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "open":  # a new event file (a new writer session)
            if fh: fh.close()
            fh = open(os.path.join(run_dir, args[0]), "ab")
            fh.write(event_bytes([file_version_event()]))
        elif cmd == "write":  # n complete records, then (optionally) the first k bytes of one more
            n, k = int(args[0]), int(args[1])
            out = pending
            pending = b""
            for _ in range(n):
                out += event_bytes([scalar_event("train/kl", step, -1.0 - step, 1.7e9 + step),
                                    scalar_event("epoch", step, float(step // 10), 1.7e9 + step)])
                step += 1
            if k:
                rec = event_bytes([scalar_event("train/kl", step, -1.0 - step, 1.7e9 + step),
                                   scalar_event("epoch", step, float(step // 10), 1.7e9 + step)])
                step += 1
                out, pending = out + rec[:k], rec[k:]
            fh.write(out)
        elif cmd == "garbage":
            fh.write(bytes((i * 7 + 3) % 256 for i in range(int(args[0]))))
        fh.flush(); os.fsync(fh.fileno())
        print("ok", os.path.getsize(fh.name), flush=True)
    """
)


class Writer:
    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(Path(logs_helpers.__file__).parent))  # tests/helpers
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def __call__(self, cmd: str) -> int:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        ack = self.proc.stdout.readline().split()
        assert ack and ack[0] == "ok", ack
        return int(ack[1])

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def writer(tmp_path):
    w = Writer(tmp_path / "run")
    yield w
    w.close()


@pytest.mark.slow
def test_tail_follows_an_appending_process(tmp_path, writer):
    tail = Tail(tmp_path / "run")
    assert tail.poll().empty  # no file yet
    writer("open events.out.tfevents.1.host.1.0")
    size = writer("write 10 0")
    f = tail.poll()
    assert f.query("tag == 'train/kl'")["step"].tolist() == list(range(10))
    assert tail.bytes_read == size
    # One complete step, then 30 bytes of the next record: only the complete one comes back.
    size = writer("write 1 30")
    f = tail.poll()
    assert f.query("tag == 'train/kl'")["step"].tolist() == [10]
    assert 0 < tail.pending_bytes <= 30 + 60
    # The rest of the cut record arrives: it is decoded, and no byte was read twice.
    size = writer("write 2 0")
    f = tail.poll()
    assert f.query("tag == 'train/kl'")["step"].tolist() == [11, 12, 13]
    assert tail.bytes_read == size and tail.pending_bytes == 0
    assert tail.poll().empty and tail.bytes_read == size


@pytest.mark.slow
def test_tail_rows_equal_a_load_of_the_finished_file(tmp_path, writer):
    tail = Tail(tmp_path / "run", run="run")
    writer("open events.out.tfevents.1.host.1.0")
    polls = []
    for cmd in ["write 7 13", "write 0 5", "write 25 1", "write 3 0", "write 40 77", "write 1 0"]:
        writer(cmd)
        polls.append(tail.poll())
    got = pd.concat(polls, ignore_index=True)
    ref = vaediag.load(tmp_path / "run").frame
    cols = ["tag", "step", "epoch", "value", "wall_time"]
    pd.testing.assert_frame_equal(
        got[cols].astype({"tag": str}).sort_values(["tag", "step"], ignore_index=True),
        ref[cols].astype({"tag": str}).reset_index(drop=True),
    )
    assert tail.notes == ["'train/kl' is <= 0 (7 values so far): logged as -KL, sign flipped"]


@pytest.mark.slow
def test_new_event_files_are_noticed(tmp_path, writer):
    tail = Tail(tmp_path / "run")
    writer("open events.out.tfevents.1.host.1.0")
    writer("write 3 0")
    assert len(tail.poll()) == 6
    writer("open events.out.tfevents.2.host.1.0")  # the run resumed in a new file
    writer("write 2 0")
    f = tail.poll()
    assert f.query("tag == 'train/kl'")["step"].tolist() == [3, 4]
    (tmp_path / "run" / "tf").mkdir()
    write_raw(tmp_path / "run" / "tf", [scalar_event("val/psnr", 4, 20.0, 1.8e9)])
    (tmp_path / "run" / "other_run").mkdir()
    write_raw(tmp_path / "run" / "other_run", [scalar_event("val/psnr", 4, 99.0, 1.8e9)])
    f = tail.poll()
    assert f["tag"].astype(str).tolist() == ["val/psnr"] and f["value"].tolist() == [20.0]


@pytest.mark.slow
def test_poll_cost_is_the_new_bytes(tmp_path, writer):
    tail = Tail(tmp_path / "run")
    writer("open events.out.tfevents.1.host.1.0")
    size0 = writer("write 3000 0")
    tail.poll()
    assert tail.bytes_read == size0
    size1 = writer("write 10 0")
    f = tail.poll()
    assert len(f) == 20
    assert tail.bytes_read - size0 == size1 - size0  # only the appended bytes were read


@pytest.mark.slow
def test_garbage_keeps_pending_bytes_bounded(tmp_path, writer):
    tail = Tail(tmp_path / "run")
    writer("open events.out.tfevents.1.host.1.0")
    writer("write 2 0")
    tail.poll()
    for _ in range(20):
        writer("garbage 50000")
        assert tail.poll().empty
        assert tail.pending_bytes <= 11
    writer("write 2 0")  # valid records after the damage are found again
    f = tail.poll()
    assert f.query("tag == 'train/kl'")["step"].tolist() == [2, 3]
    assert tail.bytes_read == (tmp_path / "run" / "events.out.tfevents.1.host.1.0").stat().st_size


def _kl_poll(tail: Tail, path: Path, values: list[float], start: int) -> list[float]:
    with open(path, "ab") as fh:
        fh.write(event_bytes([scalar_event("kl", start + i, v, 1.7e9 + start + i) for i, v in enumerate(values)]))
    return tail.poll()["value"].tolist()


def test_kl_sign_decision_is_stable_across_polls(tmp_path):
    run = tmp_path / "r"
    p = write_raw(run, [])
    tail = Tail(run)
    assert _kl_poll(tail, p, [0.0, 0.0], 0) == [0.0, 0.0]  # nothing to decide on: kept
    assert _kl_poll(tail, p, [-5.0, -4.0], 2) == [5.0, 4.0]  # decided: flipped
    assert _kl_poll(tail, p, [-3.0], 4) == [3.0]
    assert _kl_poll(tail, p, [0.0], 5) == [-0.0]  # a lone zero does not undo the decision
    assert _kl_poll(tail, p, [2.0, -1.0], 6) == [-2.0, 1.0]  # contradicting value: noted, decision kept
    assert tail.notes == [
        "'kl' is <= 0 (2 values so far): logged as -KL, sign flipped",
        "'kl' was read as -KL but now has positive values; sign kept flipped",
    ]
    # A tail that sees everything in one poll decides like load: not <= 0 throughout, kept as logged.
    whole = Tail(run).poll()["value"].tolist()
    assert whole == vaediag.load(run).frame["value"].tolist() == [0.0, 0.0, -5.0, -4.0, -3.0, 0.0, 2.0, -1.0]


def test_positive_kl_is_never_flipped_later(tmp_path):
    p = write_raw(tmp_path / "r", [])
    tail = Tail(tmp_path / "r")
    assert _kl_poll(tail, p, [5.0], 0) == [5.0]
    assert _kl_poll(tail, p, [-1.0, -2.0], 1) == [-1.0, -2.0]
    assert tail.notes == []


def test_val_rank_epochs_continue_across_polls(tmp_path):
    p = write_raw(tmp_path / "r", [])
    tail = Tail(tmp_path / "r")
    got = []
    for k in range(3):
        with open(p, "ab") as fh:
            fh.write(event_bytes([scalar_event("val/psnr", 100 * k + 99, 20.0 + k, 1.7e9 + k)]))
        got += tail.poll()["epoch"].tolist()
    assert got == [0.0, 1.0, 2.0]


def test_steps_per_epoch_and_epoch_tag_memory(tmp_path):
    p = write_raw(tmp_path / "r", [scalar_event("loss", 5, 1.0, 1.7e9)])
    tail = Tail(tmp_path / "r", steps_per_epoch=4)
    assert tail.poll()["epoch"].tolist() == [1.0]
    with open(p, "ab") as fh:
        fh.write(event_bytes([scalar_event("epoch", 10, 7.0, 1.7e9 + 1)]))
    tail.poll()
    with open(p, "ab") as fh:
        fh.write(event_bytes([scalar_event("loss", 12, 1.0, 1.7e9 + 2)]))
    assert tail.poll()["epoch"].tolist() == [7.0]  # the epoch point from an earlier poll


def test_tail_survives_a_deleted_file(tmp_path):
    p = write_raw(tmp_path / "r", [scalar_event("loss", 1, 1.0, 1.7e9)])
    tail = Tail(tmp_path / "r")
    assert len(tail.poll()) == 1
    p.unlink()
    assert tail.poll().empty
    p2 = write_raw(tmp_path / "r", [scalar_event("loss", 2, 1.0, 1.7e9)], name="events.out.tfevents.2.h")
    assert tail.poll()["step"].tolist() == [2]
    assert p2.exists() and np.isfinite(tail.bytes_read)
