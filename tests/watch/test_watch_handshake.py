"""The loop <-> watchdog handshake: wait_for_watchdog ends on the journalled decision, never hangs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vaediag.watch.control import WATCHDOG_PID_ENV, WATCHDOG_WAIT_ENV, wait_for_watchdog


def _decision(epoch: int) -> str:
    return json.dumps({"event": "decision", "epoch": epoch, "action": "keep"}) + "\n"


@pytest.fixture
def supervised(monkeypatch):
    monkeypatch.setenv(WATCHDOG_PID_ENV, str(os.getpid()))
    monkeypatch.setenv(WATCHDOG_WAIT_ENV, "0.3")


def test_unsupervised_returns_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv(WATCHDOG_PID_ENV, raising=False)
    assert wait_for_watchdog(tmp_path, 5) == "unsupervised"


@pytest.mark.parametrize(
    "journal, epoch, expected",
    [
        (_decision(0) + _decision(1), 1, "decided"),
        (_decision(3), 1, "decided"),  # a later decision covers earlier epochs (resumed run)
        (_decision(0), 1, "timeout"),
        ('{"event": "start"}\n' + json.dumps({"event": "note", "epoch": 4}) + "\n", 1, "timeout"),
        (_decision(0) + '{"event": "decision", "epoch": 1', 1, "timeout"),  # torn last line: not yet
        ("not json\n" + _decision(2), 2, "decided"),
        ("", 0, "timeout"),
    ],
)
def test_journal_cases(tmp_path, supervised, journal, epoch, expected):
    (tmp_path / "watchdog.jsonl").write_text(journal)
    assert wait_for_watchdog(tmp_path, epoch) == expected


def test_incremental_state_sees_lines_appended_later(tmp_path, supervised):
    j = tmp_path / "watchdog.jsonl"
    j.write_text(_decision(0))
    state: dict[str, int] = {}
    assert wait_for_watchdog(tmp_path, 0, _state=state) == "decided"
    assert wait_for_watchdog(tmp_path, 1, _state=state) == "timeout"
    with open(j, "a") as fh:
        fh.write(_decision(1))
    assert wait_for_watchdog(tmp_path, 1, _state=state) == "decided"


def test_dead_watchdog_and_stop_request_end_the_wait(tmp_path, monkeypatch):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    monkeypatch.setenv(WATCHDOG_PID_ENV, gone.stdout.strip())
    monkeypatch.setenv(WATCHDOG_WAIT_ENV, "30")
    assert wait_for_watchdog(tmp_path, 0) == "watchdog gone"
    monkeypatch.setenv(WATCHDOG_PID_ENV, str(os.getpid()))
    assert wait_for_watchdog(tmp_path, 0, should_stop=lambda: True) == "stop requested"
