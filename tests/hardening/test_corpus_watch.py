"""Corpus rows: the watchdog's doors (`vaediag watch`: options, run directories, lock, journal, control file).

Each row runs `vaediag watch` (or `report` on a watched run) in a child process; see corpus.py for what a
row asserts. Rows that start a training script are marked slow. Cases that need a signal sent at the
right moment (a child that ignores SIGINT, a second Ctrl-C, a decoy run appearing mid-watch), and the
stale lock (taken over, then removed on exit: a change this table would flag) live in
tests/watch/test_watch_hardening.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import Case, params, run_case
from fakerun import RESTART_TRAINER
from tbwrite import epoch_map, epoch_series, write_run

PY = sys.executable
HOLDERS: list[subprocess.Popen] = []  # processes a row started to hold a lock; killed after each row


@pytest.fixture(autouse=True)
def _kill_holders():
    yield
    while HOLDERS:
        p = HOLDERS.pop()
        p.kill()
        p.wait()


def _run(tmp: Path, kls=(30.0, 30.0, 30.0)) -> Path:
    d = tmp / "run"
    n = len(kls)
    write_run(d, {"val/kl": epoch_series(list(kls)), "val/psnr": epoch_series([20.0] * n),
                  "train/kl_weight": [(s, 1e-2) for s in range(n * 10)]}, epochs=epoch_map(n))
    return d


APPLY = ["--apply", "--cooldown", "0", "--policy", "controlvae", "--target-kl", "20", "--param", "ki=1e-3"]
MARK = "open('child-started', 'w').close()"  # a child that leaves a trace if it ever starts


def _watch(*opts: str) -> list[str]:
    return ["watch", "--no-live", *opts, "--", PY, "-c", MARK]


def _follow(tmp: Path, *opts: str) -> list[str]:
    return ["watch", "--no-live", "--poll", "0.05", "--follow", str(_run(tmp)), *opts]


def _a_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x\n")
    return tmp / "afile"


def _fifo_control(tmp: Path) -> list[str]:
    argv = _follow(tmp, "--idle", "0.5", *APPLY)
    os.mkfifo(tmp / "run" / "control.json")
    return argv


def _locked(tmp: Path) -> list[str]:
    argv = _follow(tmp, "--idle", "0.5", *APPLY)
    hold = ("import sys, time; from vaediag.watch.lock import RunLock; lock = RunLock.acquire(sys.argv[1]); "
            "print('held', flush=True); time.sleep(300)")
    p = subprocess.Popen([PY, "-c", hold, str(tmp / "run")], stdout=subprocess.PIPE, text=True)
    HOLDERS.append(p)
    assert p.stdout.readline().strip() == "held"
    return argv


def _lock_fifo(tmp: Path) -> list[str]:
    argv = _follow(tmp, "--idle", "0.5")
    os.mkfifo(tmp / "run" / "watchdog.lock")
    return argv


def _journal_link(tmp: Path) -> list[str]:
    argv = _follow(tmp, "--idle", "0.5")
    (tmp / "notes.txt").write_text("someone else's file\n")
    (tmp / "run" / "watchdog.jsonl").symlink_to(tmp / "notes.txt")
    return argv


def _report_torn_journal(tmp: Path) -> list[str]:
    from vaediag.watch.journal import Journal, decision_record
    from vaediag.watch.policies import LadderPolicy

    run = _run(tmp)
    p = LadderPolicy(kl_weight=1e-2, reduce_at=1, target_kl=20.0)
    with Journal(run) as j:
        j.append(decision_record(p.update(0, {"kl": 30.0, "recon": 0.1}), metrics={"kl": 30.0}, policy=p,
                                 applied=True, seq=1, via="control"))
    with open(run / "watchdog.jsonl", "ab") as fh:
        fh.write(b'{"time": "2026-01-01T00:00:00+00:00", "event": "decis')  # a watchdog killed mid-write
    with Journal(run) as j:  # the next one
        j.event("start")
    return ["report", str(run), "-o", str(tmp / "r.md")]


def _restart_without_checkpoint(tmp: Path) -> list[str]:
    (tmp / "logs").mkdir()
    return ["watch", "--no-live", "--poll", "0.1", "--param", "reduce_at=1", "--target-kl", "20", "--restart",
            "--logdir", "logs", "--", PY, str(RESTART_TRAINER), "--kl-weight", "0.01"]


# A training process that sets its SIGINT/SIGTERM handler, then sends SIGTERM to its watchdog (its parent).
_SIGNAL_CHILD = ("import os, signal, sys, time; signal.signal(signal.SIGINT, {handler}); "
                 "signal.signal(signal.SIGTERM, {handler}); os.kill(os.getppid(), signal.SIGTERM); time.sleep(60)")

_POLL = r"^Error: vaediag watch: argument --poll: --poll must be a finite number of seconds > 0 and <= 3600, got "
CASES = [
    # Option values are checked before the training command starts (no 'child-started' trace may appear).
    *[Case(f"watch-poll-{v}", lambda t, v=v: _watch("--poll", v), 2, _POLL + f"'{v}'")
      for v in ("nan", "inf", "1e308", "0", "-1", "x")],
    Case("watch-grace-negative", lambda t: _watch("--grace", "-1"), 2, r"--grace must be a finite number of seconds >= 0"),
    Case("watch-grace-nan", lambda t: _watch("--grace", "nan"), 2, r"--grace must be a finite number of seconds >= 0"),
    Case("watch-idle-nan", lambda t: _follow(t, "--idle", "nan"), 2, r"--idle must be a finite number of seconds > 0"),
    Case("watch-idle-inf", lambda t: _follow(t, "--idle", "inf"), 2, r"--idle must be a finite number of seconds > 0"),
    Case("watch-grace-with-follow", lambda t: _follow(t, "--grace", "1"), 2, r"^Error: --grace is for a started command"),
    Case("watch-logdir-is-a-file", lambda t: _watch("--logdir", str(_a_file(t))), 2,
         r"^Error: --logdir '.*afile' is not a directory$"),
    # A --logdir that does not exist yet is the script's to create: the watchdog starts it and waits.
    Case("watch-logdir-not-yet-created", lambda t: ["watch", "--no-live", "--poll", "0.05", "--logdir", str(t / "nope"),
         "--", PY, "-c", MARK], 0, "", stdout=r"--logdir .*nope does not exist yet; waiting for the training script "
         r"to create it(.|\n)*--logdir .*nope never appeared: is it the directory the script logs to\?", may_create=("child-started",), env={"TMPDIR": "."}),
    Case("watch-follow-a-file", lambda t: ["watch", "--follow", str(_a_file(t))], 2, r"^Error: --follow '.*afile' is not a directory"),
    Case("watch-command-not-found", lambda t: ["watch", "--no-live", "--", "vaediag-no-such-command-xyz"], 2,
         r"^Error: cannot start 'vaediag-no-such-command-xyz': command not found"),
    # Without a run directory nothing is left behind: not in the case dir, not in $TMPDIR (= the case dir).
    Case("watch-no-run-dir-leaves-no-temp-folder", lambda t: ["watch", "--no-live", "--poll", "0.05", "--", PY, "-c",
         "print('hello')"], 0, "", stdout=r"hello", env={"TMPDIR": "."}),
    Case("watch-child-exit-code", lambda t: ["watch", "--no-live", "--poll", "0.05", "--", PY, "-c",
         "raise SystemExit(7)"], 7, "", env={"TMPDIR": "."}),
    # Signals (the child signals its watchdog, so the row needs no timing): SIGTERM is forwarded and the child
    # exits as it chooses; a child that ignores it is SIGKILLed with its process group after --grace.
    Case("watch-sigterm-forwarded-to-child", lambda t: ["watch", "--no-live", "--poll", "0.05", "--", PY, "-c",
         _SIGNAL_CHILD.format(handler="lambda *a: sys.exit(130)")], 130, "", env={"TMPDIR": "."},
         stdout=r"SIGTERM forwarded to the training process(?s:.*)exit code 130", timeout=30),
    Case("watch-child-ignores-sigterm-killed-after-grace", lambda t: ["watch", "--no-live", "--poll", "0.05",
         "--grace", "1", "--", PY, "-c", _SIGNAL_CHILD.format(handler="signal.SIG_IGN")], 137, "",
         env={"TMPDIR": "."}, stdout=r"did not exit within 1 s of SIGTERM \(--grace\); sent SIGKILL to its process "
         r"group(?s:.*)exit code 137", timeout=30),
    # The run directory's files.
    Case("watch-follow-apply-fifo-control", _fifo_control, 0, "", stdout=r"is a FIFO \(named pipe\), not a regular "
         r"file; it is left as it is and the decision is not applied", may_create=("run/watchdog.jsonl",)),
    Case("watch-second-watchdog-refused", _locked, 2,
         r"^Error: .*run is already watched by another watchdog \(pid \d+ on host .*\); one watchdog per run"),
    Case("watch-lock-is-a-fifo", _lock_fifo, 2, r"^Error: .*watchdog\.lock is a FIFO \(named pipe\), not a watchdog lock"),
    Case("watch-journal-is-a-link", _journal_link, 2, r"^Error: the watchdog journal .* is a symbolic link"),
    Case("report-torn-journal-keeps-decisions", _report_torn_journal, 0, "", may_create=("r.md", "r_files*")),
]

SLOW_CASES = [
    Case("watch-restart-without-checkpoint", _restart_without_checkpoint, 0, "",
         stdout=r"restart refused: the training script has written no checkpoint yet", may_create=("logs*",),
         env={"FAKE_LOGDIR": "logs", "FAKE_EPOCHS": "3", "FAKE_NO_CHECKPOINT": "1", "TMPDIR": "."}, timeout=120),
]


@pytest.mark.parametrize("case", params(CASES))
def test_corpus_watch(case: Case, tmp_path: Path) -> None:
    proc = run_case(case, tmp_path)
    if case.id == "report-torn-journal-keeps-decisions":
        text = (tmp_path / "r.md").read_text(encoding="utf-8")
        assert "| D1 | 1 | set_kl_weight |" in text  # the decision before the torn line is still reported
        assert "1 line(s) of the journal were not complete JSON records" in text
    assert proc is not None


@pytest.mark.slow
@pytest.mark.parametrize("case", params(SLOW_CASES))
def test_corpus_watch_slow(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)
