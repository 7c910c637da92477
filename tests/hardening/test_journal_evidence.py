"""`check` and `report` read a run's watchdog.jsonl to learn whether training has ended (run_finished). That
file lies in a log tree anyone can write: it is read as every file read by name is (vaediag.safeio: regular
files only, never a blocking open) and never without bound. A 2 GB journal used to be read whole, as text:
4.3 GB of memory and 22 s for `check` on one run (and the same again for `report`)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from vaediag.diagnose.engine import JOURNAL_SCAN_MAX, run_finished

EXIT = b'{"time": "2026-01-01T00:00:00+00:00", "event": "exit", "code": 0}\n'


def _finished(run: Path) -> tuple[bool, str]:
    frame = pd.DataFrame({"wall_time": [1000.0]})  # the last event 1 s ago: not finished by idleness
    info = SimpleNamespace(path=run, source_mtime=None, source_files=[])
    return run_finished(frame, info=info, params={}, epochs=3, idle_seconds=3600.0, now=1001.0)


def test_a_journal_that_records_the_exit_ends_the_run(tmp_path: Path) -> None:
    (tmp_path / "watchdog.jsonl").write_bytes(b'{"event": "start"}\n' * 50_000 + EXIT)  # past the first chunk
    done, why = _finished(tmp_path)
    assert done and "its watchdog journal records the training process's exit" in why


def test_a_journal_without_the_exit_does_not(tmp_path: Path) -> None:
    (tmp_path / "watchdog.jsonl").write_bytes(b'{"event": "start"}\n')
    assert _finished(tmp_path) == (False, "the run may still be training")


def test_a_journal_larger_than_the_cap_is_not_read(tmp_path: Path) -> None:
    # Sparse: JOURNAL_SCAN_MAX bytes of nothing, then an exit record. It is not what a watchdog writes, and
    # reading it would cost its size in memory; it is not evidence (report says the journal is too large).
    with open(tmp_path / "watchdog.jsonl", "wb") as fh:
        fh.truncate(JOURNAL_SCAN_MAX)
        fh.seek(JOURNAL_SCAN_MAX)
        fh.write(EXIT)
    assert _finished(tmp_path) == (False, "the run may still be training")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "dangling"])
def test_a_journal_that_is_not_a_regular_file_is_never_read(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "watchdog.jsonl"
    {"fifo": lambda: os.mkfifo(p), "dev-zero": lambda: p.symlink_to("/dev/zero"), "directory": p.mkdir,
     "dangling": lambda: p.symlink_to(tmp_path / "gone")}[kind]()
    assert _finished(tmp_path) == (False, "the run may still be training")


def test_the_cap_is_the_journal_readers() -> None:
    from vaediag.watch.journal import JOURNAL_MAX_BYTES

    assert JOURNAL_SCAN_MAX == JOURNAL_MAX_BYTES
