"""control.json, the journal the trainer waits on, and the run-directory handshake file: whatever sits at
those names (a FIFO, ``/dev/zero``, a huge or absurdly nested file), the reader answers at once, with
ControlFileError or "nothing yet", and never blocks or reads without bound.

The blocking cases run in a child process with a timeout, so a regression fails the test instead of
hanging the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vaediag.errors import ControlFileError
from vaediag.watch.control import CONTROL_MAX_BYTES, WATCHDOG_PID_ENV, WATCHDOG_WAIT_ENV, read_control


def _child(code: str, *, timeout: float = 20.0, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter; its stdout. A hang is a failure, not a stuck test run."""
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError("the reader blocked (no answer within the timeout)") from None
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


READ = """
    import sys
    from vaediag.errors import ControlFileError
    from vaediag.watch.control import read_control
    try:
        print("read", read_control(sys.argv[-1] if len(sys.argv) > 1 else {path!r}))
    except ControlFileError as exc:
        print("ControlFileError", exc.message)
"""


def test_a_fifo_control_file_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "control.json")
    out = _child(READ.format(path=str(tmp_path)))  # the run directory, as the trainer and watchdog pass it
    assert out.startswith("ControlFileError control file") and "FIFO" in out


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom"])
def test_a_control_file_linked_to_a_device_is_refused_unread(tmp_path: Path, target: str) -> None:
    (tmp_path / "control.json").symlink_to(target)
    out = _child(READ.format(path=str(tmp_path / "control.json")))
    assert out.startswith("ControlFileError") and "character device" in out


@pytest.mark.parametrize("content, match", [
    ("[" * 200_000 + "]" * 200_000, r"control file .* bytes; the limit is 65,536"),
    ("[" * 30_000 + "]" * 30_000, r"nested deeper than 64 levels"),
    ('{"seq": 1' + "0" * 5000 + ', "kl_weight": 1}', r"not valid JSON \(a value that cannot be converted"),
    ('{"seq": 1' + "0" * 30 + ', "kl_weight": 1}', r"control seq must be an integer from 0 to 2\*\*63 - 1"),
    ('{"seq": 1, "kl_weight": 1' + "0" * 400 + "}", r"control kl_weight must be finite and >= 0"),
    ('{"seq": 1, "kl_weight": -1' + "0" * 400 + "}", r"control kl_weight must be finite and >= 0"),
    ('{"seq": 1, "kl_weight": 1e999}', r"control kl_weight must be finite and >= 0, got inf"),
    ('{"seq": 1, "kl_weight": NaN}', r"control kl_weight must be finite and >= 0, got nan"),
    ('{"seq": 1, "kl_weight": 0.1, "mode": ["' + "x" * 10_000 + '"]}', r"control mode \['xxxx.*\.\.\..*is unknown"),
    (b"\xff\xfe{}", r"not UTF-8 text"),
])
def test_malformed_control_files_are_one_short_error(tmp_path: Path, content, match) -> None:
    f = tmp_path / "control.json"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ControlFileError, match=match) as exc:
        read_control(tmp_path)
    assert "\n" not in exc.value.message and len(exc.value.message) < 400


def test_control_file_cap_is_far_above_any_real_file(tmp_path: Path) -> None:
    from vaediag.watch.control import Control, write_control

    write_control(tmp_path, Control(seq=7, kl_weight=1e-7, mode="ae", reason="r" * 4000, issued_at="t"))
    assert (tmp_path / "control.json").stat().st_size < CONTROL_MAX_BYTES
    assert read_control(tmp_path).seq == 7


@pytest.mark.parametrize("make", ["fifo", "zero"])
def test_the_trainers_wait_on_the_journal_never_blocks(tmp_path: Path, make: str) -> None:
    """A FIFO (or /dev/zero) named watchdog.jsonl: wait_for_watchdog times out as if nothing was journalled."""
    j = tmp_path / "watchdog.jsonl"
    os.mkfifo(j) if make == "fifo" else j.symlink_to("/dev/zero")
    out = _child(f"""
        from vaediag.watch.control import wait_for_watchdog
        print(wait_for_watchdog({str(tmp_path)!r}, 0, poll_s=0.01))
    """, env={WATCHDOG_PID_ENV: str(os.getpid()), WATCHDOG_WAIT_ENV: "0.3"})
    assert out == "timeout"


def test_the_journal_is_still_read_in_bounded_chunks(tmp_path: Path, monkeypatch) -> None:
    from vaediag.watch import control

    monkeypatch.setattr(control, "_JOURNAL_CHUNK", 128)  # lines of ~80 bytes: one per read
    line = json.dumps({"event": "decision", "epoch": 0, "action": "keep", "pad": "x" * 20}) + "\n"
    (tmp_path / "watchdog.jsonl").write_text(line * 5 + json.dumps({"event": "decision", "epoch": 3}) + "\n")
    state: dict[str, int] = {}
    seen = [control._journal_has_decision(tmp_path / "watchdog.jsonl", 3, state) for _ in range(20)]
    assert seen[-1] and not seen[0]


@pytest.mark.slow
@pytest.mark.parametrize("make", ["fifo", "zero"])
def test_the_watchdog_never_blocks_on_the_run_dir_handshake_file(tmp_path: Path, make: str) -> None:
    """The child may leave anything at $VAEDIAG_RUN_DIR_FILE; the watchdog's look at it never blocks."""
    out = _child(f"""
        import os, subprocess, sys
        from pathlib import Path
        from vaediag.watch.supervisor import Supervisor, _Child
        tmp = Path({str(tmp_path)!r})
        f = tmp / "run_dir.0"
        os.mkfifo(f) if {make!r} == "fifo" else f.symlink_to("/dev/zero")
        s = Supervisor.__new__(Supervisor)
        s.logdir = tmp / "logs"
        s.logdir.mkdir()  # as Supervisor() required before --logdir could be waited for (no display here to say so)
        s._logdir_abs = s.logdir.resolve()
        s._said = set()
        s.child = _Child(["true"], subprocess.Popen(["true"]), f, 0.0, set())
        s.child.proc.wait()
        print(s._find_run_dir())
    """)
    assert out == "None"
