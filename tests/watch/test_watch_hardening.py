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

from fakerun import FAKE_TRAINER, RESTART_TRAINER
from vaediag.errors import InputError
from vaediag.watch.journal import Journal, decision_record, load_journal, read_journal
from vaediag.watch.policies import LadderPolicy

HELPERS = FAKE_TRAINER.parent  # tests/helpers: tbwrite for the scripts run with python -c
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


# ---- helpers for real watchdog processes ------------------------------------------------------------

import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

WATCH = [PY, "-m", "vaediag.cli", "watch", "--no-live", "--poll", "0.1"]
FAKE = [PY, str(FAKE_TRAINER)]


class Proc:
    """A process whose stdout is collected line by line in a thread, so a test can wait for a line."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict | None = None) -> None:
        self.p = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, needle: str, timeout: float = 60.0) -> str:
        """The first line that contains ``needle`` (a line that starts with it, for a leading '^')."""
        deadline = time.time() + timeout
        match = (lambda ln: ln.startswith(needle[1:])) if needle.startswith("^") else (lambda ln: needle in ln)
        while time.time() < deadline:
            hit = next((ln for ln in self.lines if match(ln)), None)
            if hit is not None:
                return hit
            if self.p.poll() is not None and not self._t.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {needle!r} (exit {self.p.poll()}):\n" + "\n".join(self.lines[-30:]))

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        """Exit code and stderr; a process that does not end within ``timeout`` is a hang (killed, failed)."""
        try:
            err = self.p.stderr.read() if self.p.wait(timeout=timeout) is not None else ""
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError("the watchdog did not exit (a hang):\n" + "\n".join(self.lines[-30:])) from None
        self._t.join(timeout=10)
        return self.p.returncode, err

    def kill(self) -> None:
        """Clean up after a failed test: SIGTERM first, which the watchdog forwards to its child (in its own
        session, out of our reach) and escalates to SIGKILL after its grace; then SIGKILL the watchdog."""
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
            self.p.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(cond, *, timeout: float = 30.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def static_run(run_dir: Path, kls: list[float], w: float = 1e-2) -> None:
    from tbwrite import epoch_map, epoch_series, write_run

    n = len(kls)
    write_run(run_dir, {"val/kl": epoch_series(kls), "val/psnr": epoch_series([20.0] * n),
                        "train/kl_weight": [(s, w) for s in range(n * 10)]}, epochs=epoch_map(n))


# A foreign "training script" that ignores SIGINT and SIGTERM, and so does the worker it starts.
STUBBORN = r"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                           "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print(f"stubborn ready {os.getpid()} {worker.pid}", flush=True)
time.sleep(600)
"""


# ---- one watchdog per run ---------------------------------------------------------------------------

from vaediag.watch.lock import LOCK_FILENAME, RunLock, RunLockedError  # noqa: E402

HOLD = ("import sys, time; from vaediag.watch.lock import RunLock; lock = RunLock.acquire(sys.argv[1]); "
        "print('held', flush=True); time.sleep(600)")


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    holder = subprocess.Popen([PY, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"already watched by another watchdog \(pid {holder.pid} on host "):
            RunLock.acquire(tmp_path)
        assert json.loads((tmp_path / LOCK_FILENAME).read_text())["pid"] == holder.pid  # untouched
        holder.kill()  # SIGKILL: no clean-up, the lock file stays behind
        holder.wait()
    finally:
        holder.kill()
    assert (tmp_path / LOCK_FILENAME).exists()
    with RunLock.acquire(tmp_path) as lock:
        assert lock.stale_note is not None and f"pid {holder.pid}" in lock.stale_note
        assert "no longer running" in lock.stale_note
        assert json.loads((tmp_path / LOCK_FILENAME).read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockedError):  # a second open of it, even in this process, is refused
            RunLock.acquire(tmp_path)
    assert not (tmp_path / LOCK_FILENAME).exists()  # a clean release removes it
    with RunLock.acquire(tmp_path) as lock:
        assert lock.stale_note is None


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dir"])
def test_a_lock_path_that_is_not_a_file_is_refused_never_replaced(tmp_path, kind):
    p = tmp_path / LOCK_FILENAME
    target = tmp_path / "target.txt"
    target.write_text("keep me\n")
    {"fifo": lambda: os.mkfifo(p), "symlink": lambda: p.symlink_to(target), "dir": lambda: p.mkdir()}[kind]()
    with pytest.raises(InputError, match=r"not a watchdog lock|is a symbolic link|not a regular file"):
        RunLock.acquire(tmp_path)
    assert target.read_text() == "keep me\n"
    assert {"fifo": p.is_fifo, "symlink": p.is_symlink, "dir": p.is_dir}[kind]()


@pytest.mark.slow
def test_a_second_follower_with_apply_is_refused_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    static_run(run_dir, [30.0, 30.0, 30.0])
    opts = ["--apply", "--cooldown", "0", "--policy", "controlvae", "--target-kl", "20", "--param", "ki=1e-3"]
    first = Proc(WATCH + ["--follow", str(run_dir), "--idle", "120", *opts], cwd=tmp_path)
    try:
        first.wait_line("applied: control seq 1")
        journal = (run_dir / "watchdog.jsonl").read_bytes()
        control = (run_dir / "control.json").read_bytes()
        second = subprocess.run(WATCH + ["--follow", str(run_dir), "--idle", "0.5", *opts], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ")
        assert f"already watched by another watchdog (pid {first.p.pid} on host" in lines[0]
        assert (run_dir / "watchdog.jsonl").read_bytes() == journal  # not one line more
        assert (run_dir / "control.json").read_bytes() == control  # same seq, same weight, same bytes
        first.p.send_signal(signal.SIGINT)
        code, _ = first.finish()
        assert code == 130
    finally:
        first.kill()
    assert not (run_dir / LOCK_FILENAME).exists()
    recs = read_journal(run_dir)
    assert sum(r["event"] == "start" for r in recs) == 1


@pytest.mark.slow
def test_a_supervised_child_resuming_into_a_watched_run_is_stopped_and_nothing_is_written(tmp_path):
    run_dir = tmp_path / "logs" / "version_0"
    static_run(run_dir, [30.0, 30.0])
    ckpt = tmp_path / "c.pt"
    ckpt.write_text(json.dumps({"run_dir": str(run_dir), "epoch": 2, "step": 20, "last_seq": 0}))
    holder = subprocess.Popen([PY, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = (run_dir / LOCK_FILENAME).read_bytes()
        before = sorted(p.name for p in run_dir.iterdir())
        r = subprocess.run(WATCH + ["--grace", "20", "--", *FAKE, "--logdir", str(tmp_path / "logs"), "--epochs",
                                    "200", "--resume", str(ckpt), "--checkpoint", str(tmp_path / "c2.pt")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=90)
        assert r.returncode == 2, r.stderr + r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "already watched by another watchdog" in lines[0], r.stderr
        assert "stopping the training process it started" in r.stdout
        assert "fake: interrupted before epoch" in r.stdout  # our child was stopped, gently
        new = sorted(p.name for p in run_dir.iterdir() if p.name not in before)
        # The child itself wrote its event file; the refused watchdog wrote nothing at all.
        assert all(n.startswith("events.out.tfevents.") for n in new), new
        assert (run_dir / LOCK_FILENAME).read_bytes() == lock
        assert holder.poll() is None  # and the other watchdog was left alone
    finally:
        holder.kill()
        holder.wait()


# ---- a child that ignores SIGINT/SIGTERM ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_child_that_ignores_the_signal_is_killed_after_the_grace_period(tmp_path, sig):
    w = Proc(WATCH + ["--grace", "1", "--", PY, "-c", STUBBORN], cwd=tmp_path, env={"TMPDIR": str(tmp_path)})
    try:
        pid, worker = map(int, w.wait_line("^stubborn ready").split()[-2:])
        w.p.send_signal(sig)
        code, err = w.finish(timeout=60)
    finally:
        w.kill()
    name = signal.Signals(sig).name
    assert code == 128 + signal.SIGKILL, err  # the training process's own status: killed
    assert err == ""
    out = "\n".join(w.lines)
    assert f"{name} forwarded to the training process (pid {pid}); it is killed (SIGKILL) if it has not exited in 1 s" in out
    assert f"the training process did not exit within 1 s of {name} (--grace); sent SIGKILL to its process group" in out
    wait_for(lambda: not alive(pid) and not alive(worker), timeout=10, what="the child and its worker to die")
    assert not list(tmp_path.iterdir())  # no run directory: nothing written, and no temporary folder left here


@pytest.mark.slow
def test_a_second_signal_kills_the_stubborn_child_at_once(tmp_path):
    w = Proc(WATCH + ["--grace", "600", "--", PY, "-c", STUBBORN], cwd=tmp_path)
    try:
        pid, worker = map(int, w.wait_line("^stubborn ready").split()[-2:])
        w.p.send_signal(signal.SIGINT)
        w.wait_line("SIGINT again kills it now")
        w.p.send_signal(signal.SIGINT)
        code, err = w.finish(timeout=60)  # long before the 600 s grace period
    finally:
        w.kill()
    assert code == 137, err
    assert "the training process was killed on a second signal (SIGINT); sent SIGKILL" in "\n".join(w.lines)
    wait_for(lambda: not alive(pid) and not alive(worker), timeout=10, what="the child and its worker to die")


# ---- --restart on a script that has written no checkpoint -------------------------------------------

RESTART = [PY, str(RESTART_TRAINER)]
REDUCE_AT_1 = ["--param", "reduce_at=1", "--target-kl", "20", "--param", "max_factor=10"]


@pytest.mark.slow
def test_restart_refuses_to_stop_a_script_that_has_written_no_checkpoint(tmp_path):
    (tmp_path / "logs").mkdir()
    # Epochs of 1 s: on a loaded machine the watchdog still decides while the script runs (a decision made
    # after it ended is "training had already ended", also not applied, but not what this test is about).
    env = {**os.environ, "FAKE_LOGDIR": str(tmp_path / "logs"), "FAKE_EPOCHS": "6", "FAKE_NO_CHECKPOINT": "1",
           "FAKE_EPOCH_SECONDS": "1.0"}
    r = subprocess.run(WATCH + REDUCE_AT_1 + ["--restart", "--logdir", "logs", "--", *RESTART, "--kl-weight", "0.01"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr + r.stdout  # the training's own exit code: it was never stopped
    assert r.stderr == ""
    run_dir = tmp_path / "logs" / "version_0"
    assert (run_dir / "DONE").read_text() == "6"  # every epoch trained, in one process
    recs = read_journal(run_dir)
    assert [x for x in recs if x["event"] == "restart"] == []
    changes = [x for x in recs if x["event"] == "decision" and x["action"] != "keep"]
    assert changes, "the policy did want a change"
    assert all(d["applied"] is False and d["via"] is None for d in changes)
    refused = [d for d in changes if d["note"].startswith("restart refused: the training script has written no "
                                                          "checkpoint yet")]
    assert refused, [d["note"] for d in changes]
    assert all(d["note"].endswith("the run goes on unchanged") for d in refused)
    assert all(d in refused or d["note"] == "training had already ended" for d in changes)
    assert recs[-1]["event"] == "exit" and recs[-1]["code"] == 0 and recs[-1]["signals"] == []
    assert "restart refused" in r.stdout


# ---- a foreign script's run: only the child's own event files ---------------------------------------


def _decoy_run(d: Path) -> Path:
    """Another process's run appearing under the same --logdir (written by this test process)."""
    from tbwrite import scalar_event, write_events

    return write_events(d, [scalar_event("val/kl", 0, 30.0, time.time())])


@pytest.mark.slow
def test_a_foreign_script_is_not_confused_with_another_process_s_run_named_by_pid(tmp_path):
    """The child (TensorBoard's own writer: files named after its pid, opened per write) starts writing
    only after another process's run appeared under the same --logdir: the watchdog follows the child's."""
    logs = tmp_path / "logs"
    logs.mkdir()
    go = tmp_path / "go"
    w = Proc(WATCH + REDUCE_AT_1 + ["--logdir", "logs", "--", *FAKE, "--logdir", str(logs / "mine"), "--epochs", "3",
                                    "--no-run-dir-file", "--wait-for", str(go)], cwd=tmp_path)
    try:
        w.wait_line("^fake: waiting")
        decoy = _decoy_run(logs / "other" / "run")
        w.wait_line("are not the training process's")  # seen, said, not attached to
        go.touch()
        code, err = w.finish(timeout=120)
    finally:
        w.kill()
    assert code == 0, err + "\n".join(w.lines)
    mine = logs / "mine" / "version_0"
    recs = read_journal(mine)
    assert recs[0]["found_by"] == "event files under logs named after the training process's pid"
    ds = [r for r in recs if r["event"] == "decision"]
    assert ds[0]["applied"] and ds[0]["via"] == "control"
    assert json.loads((mine / "control.json").read_text())["seq"] == 1  # the decision went to the child's run
    assert sorted(p.name for p in decoy.parent.iterdir()) == [decoy.name]  # nothing written into the other run


HOLDER = r"""
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tbwrite import scalar_event, write_events
print("started", flush=True)
while not Path("go").exists():
    time.sleep(0.02)
p = write_events(Path("logs/held"), [scalar_event("val/kl", 0, 30.0, time.time())])
held = p.with_name("events.out.tfevents.1700000000.elsewhere")  # a name that carries no pid
os.rename(p, held)
fh = open(held, "ab")  # held open for the run's life, as TF's own writer and tensorboardX do
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.slow
def test_a_foreign_script_is_found_by_the_event_file_it_holds_open(tmp_path):
    (tmp_path / "logs").mkdir()
    w = Proc(WATCH + ["--logdir", "logs", "--", PY, "-c", HOLDER, str(HELPERS), "3"], cwd=tmp_path)
    try:
        w.wait_line("^started")
        decoy = _decoy_run(tmp_path / "logs" / "decoy")
        w.wait_line("are not the training process's")
        (tmp_path / "go").touch()
        w.wait_line("run directory")
        code, err = w.finish(timeout=120)
    finally:
        w.kill()
    assert code == 0, err
    recs = read_journal(tmp_path / "logs" / "held")
    assert recs[0]["found_by"] == "event files under logs held open by the training process"
    assert sorted(p.name for p in decoy.parent.iterdir()) == [decoy.name]


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def update(self, status) -> None:
        pass

    def decision(self, status) -> None:
        pass

    def message(self, text: str) -> None:
        self.messages.append(text)


TWO_RUNS = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tbwrite import scalar_event, write_events
for name in sys.argv[3:]:  # written outside logs/, then moved in back to back: the runs appear together
    p = write_events(Path("stage") / name, [scalar_event("val/kl", 0, 30.0, time.time())])
    p.rename(p.with_name("events.out.tfevents.1700000000.elsewhere." + name))  # no pid to go by
for name in sys.argv[3:]:
    (Path("stage") / name).rename(Path("logs") / name)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.slow
def test_without_proc_two_new_runs_are_ambiguous_and_never_guessed(tmp_path, monkeypatch):
    from vaediag.watch import discovery
    from vaediag.watch import supervisor as sup
    from vaediag.watch.policies import make_policy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(discovery, "_PROC", tmp_path / "no-proc-here")
    (tmp_path / "logs").mkdir()
    rec = Recorder()
    w = sup.Supervisor([PY, "-c", TWO_RUNS, str(HELPERS), "1", "a", "b"], make_policy("ladder", kl_weight=1e-2),
                       logdir="logs", poll=0.05, display=rec)
    assert w.run() == 0
    assert w.run_dir is None
    said = [m for m in rec.messages if "several new runs under logs" in m]
    assert len(said) == 1 and "not guessing, still waiting" in said[0]  # said once, not at every poll
    for name in ("a", "b"):
        assert [p.name for p in (tmp_path / "logs" / name).iterdir()] == [f"events.out.tfevents.1700000000.elsewhere.{name}"]

    rec = Recorder()  # exactly one new run: that one is the child's
    w = sup.Supervisor([PY, "-c", TWO_RUNS, str(HELPERS), "1", "c"], make_policy("ladder", kl_weight=1e-2),
                       logdir="logs", poll=0.05, display=rec)
    assert w.run() == 0
    assert w.run_dir == (tmp_path / "logs" / "c").resolve()
    assert read_journal(w.run_dir)[0]["found_by"] == "new event files under logs (the only new run since the start)"


# ---- control.json that is not a regular file; signals end every wait --------------------------------


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dir"])
def test_write_control_never_replaces_a_non_regular_file(tmp_path, kind):
    from vaediag.errors import ControlFileError
    from vaediag.watch.control import Control, write_control

    p = tmp_path / "control.json"
    target = tmp_path / "target.json"
    target.write_text("{}\n")
    {"fifo": lambda: os.mkfifo(p), "symlink": lambda: p.symlink_to(target), "dir": lambda: p.mkdir()}[kind]()
    with pytest.raises(ControlFileError, match=r"not a regular file; it is not replaced"):
        write_control(tmp_path, Control(seq=1, kl_weight=1e-3))
    assert {"fifo": p.is_fifo, "symlink": p.is_symlink, "dir": p.is_dir}[kind]()
    assert target.read_text() == "{}\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["control.json", "target.json"]  # no temp file left


@pytest.mark.slow
def test_follow_apply_with_a_fifo_control_file_neither_blocks_nor_replaces_it(tmp_path):
    run_dir = tmp_path / "run"
    static_run(run_dir, [30.0, 30.0, 30.0])
    os.mkfifo(run_dir / "control.json")
    r = subprocess.run(WATCH + ["--follow", str(run_dir), "--idle", "0.5", "--apply", "--cooldown", "0", "--policy",
                                "controlvae", "--target-kl", "20", "--param", "ki=1e-3"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (run_dir / "control.json").is_fifo()
    live = [d for d in read_journal(run_dir) if d["event"] == "decision" and not d.get("replayed")]
    assert len(live) == 1 and live[0]["applied"] is False and live[0]["note"] == "control.json could not be written"
    assert "is a FIFO (named pipe), not a regular file; it is left as it is" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_a_follower_in_the_middle_of_a_long_poll(tmp_path, sig):
    run_dir = tmp_path / "run"
    static_run(run_dir, [10.0, 10.0])
    w = Proc(WATCH + ["--follow", str(run_dir), "--idle", "7200", "--poll", "3600"], cwd=tmp_path)
    try:
        wait_for(lambda: (run_dir / "watchdog.jsonl").exists() and len(read_journal(run_dir)) >= 3,
                 what="the follower to replay the run")
        time.sleep(0.3)  # well inside its hour-long nap
        w.p.send_signal(sig)
        code, err = w.finish(timeout=30)  # an hour-long sleep that ignored the signal would be a hang
    finally:
        w.kill()
    assert code == 130, err
    assert read_journal(run_dir)[-1] == {**read_journal(run_dir)[-1], "event": "exit", "code": 130}
    assert not (run_dir / "watchdog.lock").exists()


@pytest.mark.slow
def test_a_stale_lock_left_by_a_killed_watchdog_is_taken_over_with_a_note(tmp_path):
    run_dir = tmp_path / "run"
    static_run(run_dir, [10.0, 10.0])
    first = Proc(WATCH + ["--follow", str(run_dir), "--idle", "600"], cwd=tmp_path)
    try:
        wait_for(lambda: (run_dir / "watchdog.jsonl").exists() and len(read_journal(run_dir)) >= 3,
                 what="the first watchdog to start")
        first.p.kill()  # SIGKILL: its lock file stays, its flock goes with it
        first.p.wait()
    finally:
        first.kill()
    assert json.loads((run_dir / LOCK_FILENAME).read_text())["pid"] == first.p.pid
    r = subprocess.run(WATCH + ["--follow", str(run_dir), "--idle", "0.3"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    note = f"took over a stale watchdog lock in {run_dir} (left by pid {first.p.pid} on host "
    assert note in r.stdout and "no longer running)" in r.stdout
    assert any(x["event"] == "note" and x["text"].startswith(note) for x in read_journal(run_dir))
    assert not (run_dir / LOCK_FILENAME).exists()


def test_a_child_flooding_its_output_is_echoed_in_bounded_chunks_and_to_the_end(tmp_path, monkeypatch):
    from vaediag.watch import supervisor as sup
    from vaediag.watch.policies import make_policy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(sup.tempfile, "tempdir", None)
    rec = Recorder()
    flood = "import sys; sys.stdout.write(('x' * 99 + '\\n') * 100000); sys.stdout.write('y' * 200000 + '\\rlast')"
    w = sup.Supervisor([PY, "-c", flood], make_policy("ladder", kl_weight=1e-2), poll=0.05, display=rec)
    assert w.run() == 0
    out = [m for m in rec.messages if not m.startswith("watch:")]
    assert len(out) == 100001 and out[0] == "x" * 99 and out[-1] == "last"  # 10 MB, every line, in 4 MiB reads
    assert list(tmp_path.iterdir()) == []  # and no temporary folder left behind


def test_without_proc_the_only_new_run_waits_to_stay_the_only_one(tmp_path, monkeypatch):
    """A script that writes two runs a moment apart: the first alone must not be taken for the child's
    while the child runs; it is once it has stayed the only new run for the settle time, or once the child ends."""
    from tbwrite import scalar_event, write_events
    from vaediag.watch import discovery
    from vaediag.watch import supervisor as sup
    from vaediag.watch.policies import make_policy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(discovery, "_PROC", tmp_path / "no-proc-here")
    (tmp_path / "logs").mkdir()
    clock = [1000.0]
    monkeypatch.setattr(sup.time, "monotonic", lambda: clock[0])

    class Running:
        pid, returncode = 999_999, None

        def poll(self):
            return self.returncode

    w = sup.Supervisor([PY, "-c", "pass"], make_policy("ladder", kl_weight=1e-2), logdir="logs", poll=0.05,
                       display=Recorder())
    w.child = sup._Child(cmd=[PY], proc=Running(), run_dir_file=tmp_path / "none", started=0.0)
    write_events(tmp_path / "logs" / "a", [scalar_event("val/kl", 0, 30.0, 1.0)])
    assert w._find_foreign_run_dir() is None  # just appeared: not yet
    clock[0] += discovery._SOLE_SETTLE_S / 2
    write_events(tmp_path / "logs" / "b", [scalar_event("val/kl", 0, 30.0, 1.0)])
    clock[0] += discovery._SOLE_SETTLE_S
    assert w._find_foreign_run_dir() is None  # two runs: never guessed
    import shutil
    shutil.rmtree(tmp_path / "logs" / "b")
    assert w._find_foreign_run_dir() is None  # the only one again: the settle time starts over
    clock[0] += discovery._SOLE_SETTLE_S
    assert w._find_foreign_run_dir()[0] == (tmp_path / "logs" / "a").resolve()

    w.child = sup._Child(cmd=[PY], proc=Running(), run_dir_file=tmp_path / "none", started=0.0)
    w.child.proc.returncode = 0  # the child has ended: its runs are all there, no wait
    assert w._find_foreign_run_dir()[0] == (tmp_path / "logs" / "a").resolve()


@pytest.mark.slow
def test_a_logdir_that_does_not_exist_yet_is_waited_for(tmp_path):
    """``--logdir logs`` before the script has created ``logs``: the watchdog starts the script, says it waits,
    and attaches to the run the script then writes there (found by its event files, no handshake)."""
    w = Proc(WATCH + REDUCE_AT_1 + ["--logdir", "logs", "--", *FAKE, "--logdir", str(tmp_path / "logs" / "mine"),
                                    "--epochs", "3", "--no-run-dir-file"], cwd=tmp_path)
    try:
        code, err = w.finish(timeout=120)
    finally:
        w.kill()
    assert code == 0, err + "\n".join(w.lines)
    text = "\n".join(w.lines)
    assert "--logdir logs does not exist yet; waiting for the training script to create it" in text
    recs = read_journal(tmp_path / "logs" / "mine" / "version_0")
    assert recs[0]["found_by"].startswith("event files under logs")
