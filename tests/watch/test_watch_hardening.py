"""The watchdog's doors (issue 10): a torn journal, one watchdog per run, children that ignore signals,
--restart without a checkpoint, foreign runs under --logdir, FIFOs where files should be.

Real files, real child processes and real signals; the corpus rows (tests/hardening/test_corpus_watch.py)
run the command-line cases end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaediag.errors import InputError
from vaediag.watch.journal import Journal, decision_record, load_journal, read_journal
from vaediag.watch.policies import LadderPolicy

HERE = Path(__file__).resolve().parent
PY = sys.executable


# ---- the journal survives a torn line -------------------------------------------------------------


def _decision(epoch: int, kl: float = 30.0) -> dict:
    p = LadderPolicy(kl_weight=1e-2, reduce_at=1, target_kl=20.0)
    d = p.update(epoch, {"kl": kl, "recon": 0.1})
    return decision_record(d, metrics={"kl": kl}, policy=p, applied=False)


def test_a_writer_after_a_torn_line_starts_a_new_line_and_nothing_is_lost(tmp_path):
    j = tmp_path / "watchdog.jsonl"
    with Journal(tmp_path) as w:
        w.event("start")
        w.append(_decision(0))
    before = j.read_bytes()
    with open(j, "ab") as fh:  # the watchdog was killed in the middle of its next line
        fh.write(b'{"time": "2026-01-01T00:00:00+00:00", "event": "decision", "epo')
    with Journal(tmp_path) as w:  # the next watchdog on this run
        w.event("start")
        w.append(_decision(1))
    data = j.read_bytes()
    assert data.startswith(before)  # never truncated, never rewritten
    lines = data.split(b"\n")
    assert lines[2] == b'{"time": "2026-01-01T00:00:00+00:00", "event": "decision", "epo'  # left as it was
    assert json.loads(lines[3])["event"] == "start"  # ... and the new line starts on its own line
    records, skipped = load_journal(tmp_path)
    assert [r["event"] for r in records] == ["start", "decision", "start", "decision"]
    assert [r.get("epoch") for r in records if r["event"] == "decision"] == [0, 1]
    assert skipped == 1


def test_reader_keeps_every_good_line_around_damage(tmp_path):
    good = [json.dumps({"event": "decision", "epoch": e}) for e in range(4)]
    lines = [good[0], "{torn", good[1], "[1, 2]", "", good[2], "not json", good[3]]
    data = "\n".join(lines).encode("utf-8") + b"\n\xff\xfe\n" + b'{"event": "decision", "ep'
    (tmp_path / "watchdog.jsonl").write_bytes(data)
    records, skipped = load_journal(tmp_path)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert skipped == 5  # '{torn', a JSON list, a non-JSON line, the torn line, and the non-UTF-8 tail


def test_journal_refuses_a_fifo_a_link_and_a_directory(tmp_path):
    os.mkfifo(tmp_path / "watchdog.jsonl")
    with pytest.raises(InputError, match=r"is a FIFO \(named pipe\), not a regular file"):
        Journal(tmp_path / "watchdog.jsonl")  # and never blocks in the open
    other = tmp_path / "elsewhere.txt"
    other.write_text("someone's file\n")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "watchdog.jsonl").symlink_to(other)
    with pytest.raises(InputError, match=r"is a symbolic link"):
        Journal(tmp_path / "link")
    assert other.read_text() == "someone's file\n"
    with pytest.raises(InputError, match=r"watchdog journal .* is a FIFO"):
        read_journal(tmp_path / "watchdog.jsonl")  # the reader never blocks on one either
