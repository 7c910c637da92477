"""`vaediag watch` against real child processes: control mode, dry run, crash, signals, SIGKILL, restart, follow.

The children are tests/helpers/fake_trainer.py and restart_trainer.py: real scripts writing real event files,
reading control.json with the shared reader and checkpointing on SIGINT (see fakerun.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vaediag
from fakerun import FAKE_TRAINER, RESTART_TRAINER
from vaediag.watch.journal import read_journal

PY = sys.executable
FAKE = [PY, str(FAKE_TRAINER)]
RESTART = [PY, str(RESTART_TRAINER)]
WATCH = [PY, "-m", "vaediag.cli", "watch", "--no-live", "--poll", "0.1"]

pytestmark = pytest.mark.slow


def watch(args: list[str], *, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(WATCH + args, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(cond, *, timeout: float = 30.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def decisions(run_dir: Path) -> list[dict]:
    return [r for r in read_journal(run_dir) if r["event"] == "decision"]


def per_epoch(run_dir: Path, term: str, split: str = "train") -> dict[int, float]:
    f = vaediag.load(run_dir).frame
    f = f[(f["term"] == term) & (f["split"] == split)]
    return {int(e): float(v) for e, v in f.groupby("epoch")["value"].last().items()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# Fake KL at 1e-2 is 31.6: reduce after epoch 1. These tests are about the supervisor's mechanics, so the
# ladder cuts by a plain 10x (the penalty-share escalation has its own rows in the policy table).
REDUCE_AT_1 = ["--param", "reduce_at=1", "--target-kl", "20", "--param", "max_factor=10"]


def test_control_mode_decision_reaches_the_loop(tmp_path):
    r = watch(REDUCE_AT_1 + ["--", *FAKE, "--logdir", str(tmp_path / "logs"), "--epochs", "5"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    run_dir = tmp_path / "logs" / "version_0"
    ds = decisions(run_dir)
    assert [d["epoch"] for d in ds] == [0, 1, 2, 3, 4]  # every epoch decided once, in order
    changed = [d for d in ds if d["action"] != "keep"]
    assert len(changed) == 1
    d = changed[0]
    assert (d["epoch"], d["action"], d["kl_weight"], d["applied"], d["via"], d["seq"]) == \
        (0, "set_kl_weight", 1e-3, True, "control", 1)
    # A script that is not vaediag's trainer is judged by the generic profile; the KL limit it was given
    # explicitly (--target-kl 20) applies under any profile.
    assert d["reason"] == ("kl = 31.62 > 20; penalty 0.01 x 31.62 = 316.2% of recon 0.1 > 10% after epoch 1: "
                           "kl_weight 0.01 -> 0.001 [generic profile]")
    assert d["profile"] == "generic"
    assert d["metrics"]["kl"] == pytest.approx(31.62, abs=0.01) and d["state"]["rung"] == 1
    ctl = json.loads((run_dir / "control.json").read_text())
    assert (ctl["seq"], ctl["kl_weight"], ctl["mode"]) == (1, 1e-3, "vae")
    # The loop applied seq 1 at an epoch start after the decision, and logged the new weight from then on.
    seq = per_epoch(run_dir, "control_seq")
    w = per_epoch(run_dir, "kl_weight")
    first = min(e for e, s in seq.items() if s == 1)
    assert first >= 1
    assert all(w[e] == pytest.approx(1e-2) for e in w if e < first)
    assert all(w[e] == pytest.approx(1e-3) for e in w if e >= first)
    assert "set_kl_weight [applied: control seq 1]" in r.stdout
    assert (run_dir / "train_output.log").read_text().count("fake: done") == 1
    assert read_journal(run_dir)[-1] == {**read_journal(run_dir)[-1], "event": "exit", "code": 0}


def test_dry_run_writes_no_control_file(tmp_path):
    r = watch(REDUCE_AT_1 + ["--dry-run", "--", *FAKE, "--logdir", str(tmp_path / "logs"), "--epochs", "3"],
              cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "logs" / "version_0"
    assert not (run_dir / "control.json").exists()
    ds = decisions(run_dir)
    assert ds[0]["action"] == "set_kl_weight" and ds[0]["applied"] is False and ds[0]["note"] == "dry run"
    assert list(per_epoch(run_dir, "kl_weight").values()) == pytest.approx([1e-2] * 3)


def test_child_crash_exit_code_and_complete_journal(tmp_path):
    r = watch(["--", *FAKE, "--logdir", str(tmp_path / "logs"), "--epochs", "6", "--crash-at", "3"], cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    run_dir = tmp_path / "logs" / "version_0"
    recs = read_journal(run_dir)
    assert [d["epoch"] for d in recs if d["event"] == "decision"] == [0, 1, 2]
    assert recs[-1]["event"] == "exit" and recs[-1]["code"] == 3
    assert "crashing on purpose" in (run_dir / "train_output.log").read_text()


def test_sigint_is_forwarded_and_child_checkpoints(tmp_path):
    ckpt = tmp_path / "ckpt" / "last.pt"
    p = subprocess.Popen(WATCH + ["--", *FAKE, "--logdir", str(tmp_path / "logs"), "--epochs", "200",
                                  "--checkpoint", str(ckpt)], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "logs" / "version_0"
    try:
        wait_for(lambda: (run_dir / "watchdog.jsonl").exists() and decisions(run_dir), what="a first decision")
        child = read_journal(run_dir)[0]["pid"]
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert not alive(child)
    state = json.loads(ckpt.read_text())  # the child saved its checkpoint on the forwarded SIGINT
    assert 1 <= state["epoch"] < 200
    recs = read_journal(run_dir)
    assert recs[-1]["event"] == "exit" and recs[-1]["code"] == 130 and recs[-1]["signals"] == ["SIGINT"]
    assert "interrupted before epoch" in (run_dir / "train_output.log").read_text()


def test_sigterm_is_forwarded(tmp_path):
    p = subprocess.Popen(WATCH + ["--", *FAKE, "--logdir", str(tmp_path / "logs"), "--epochs", "200"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "logs" / "version_0"
    try:
        wait_for(lambda: (run_dir / "watchdog.jsonl").exists() and decisions(run_dir), what="a first decision")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_sigkill_of_the_watchdog_leaves_training_running(tmp_path):
    p = subprocess.Popen(WATCH + ["--", *FAKE, "--logdir", str(tmp_path / "logs"), "--epochs", "8",
                                  "--epoch-seconds", "0.25"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         # A SIGKILLed watchdog cannot remove its vaediag-watch-* output folder: keep it in
                         # tmp_path, not in the machine's /tmp (one was left there per run of this test).
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    run_dir = tmp_path / "logs" / "version_0"
    try:
        wait_for(lambda: (run_dir / "watchdog.jsonl").exists() and decisions(run_dir), what="a first decision")
        child = read_journal(run_dir)[0]["pid"]
        p.kill()  # SIGKILL: no handler, no forwarding, nothing
        p.wait(timeout=10)
        assert alive(child)
        wait_for(lambda: (run_dir / "DONE").exists(), timeout=60, what="the orphaned run to finish")
    finally:
        p.kill()
    assert (run_dir / "DONE").read_text() == "8"  # every epoch trained
    assert sorted(per_epoch(run_dir, "psnr", "val")) == list(range(8))
    # The killed watchdog's output folder is all that is left of it (the output so far, never lost).
    left = list(tmp_path.glob("vaediag-watch-*"))
    assert len(left) == 1 and (left[0] / "train_output.log").exists()


def test_restart_mode_relaunches_with_kl_weight_and_resume(tmp_path):
    env = {"FAKE_LOGDIR": str(tmp_path / "logs"), "FAKE_EPOCHS": "5"}
    (tmp_path / "logs").mkdir()
    r = watch(REDUCE_AT_1 + ["--restart", "--logdir", "logs", "--", *RESTART, "--kl-weight", "0.01"],
              cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    run_dir = tmp_path / "logs" / "version_0"
    recs = read_journal(run_dir)
    assert recs[0]["found_by"].startswith("event files under logs")
    restarts = [x for x in recs if x["event"] == "restart"]
    assert len(restarts) == 1
    cmd = restarts[0]["command"]
    assert cmd[:2] == RESTART and cmd[cmd.index("--kl-weight") + 1] == "0.001"
    assert Path(cmd[cmd.index("--resume") + 1]) == (tmp_path / "checkpoints" / "last.pt").resolve()
    assert cmd.count("--kl-weight") == 1
    ds = decisions(run_dir)
    assert ds[0]["action"] == "set_kl_weight" and ds[0]["via"] == "restart" and ds[0]["applied"]
    w = per_epoch(run_dir, "kl_weight")
    assert sorted(w) == [0, 1, 2, 3, 4]  # the resumed run went on in the same directory, no epoch lost
    assert w[0] == pytest.approx(1e-2) and w[4] == pytest.approx(1e-3)
    assert (run_dir / "DONE").exists()
    assert recs[-1]["event"] == "exit" and recs[-1]["code"] == 0


def test_foreign_script_found_by_new_event_files(tmp_path):
    (tmp_path / "logs").mkdir()
    old = tmp_path / "logs" / "old_run"
    from tbwrite import write_run

    write_run(old, {"val/kl": [(0, 1.0)]})  # an earlier run under the same logdir is not the new one
    r = watch(["--logdir", "logs", "--", *FAKE, "--logdir", str(tmp_path / "logs"), "--epochs", "2",
               "--no-run-dir-file"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    recs = read_journal(tmp_path / "logs" / "version_0")
    assert recs[0]["found_by"] == "event files under logs named after the training process's pid"
    assert not (old / "watchdog.jsonl").exists()


def _static_run(run_dir: Path, kls: list[float], w: float = 1e-2) -> None:
    from tbwrite import epoch_map, epoch_series, write_run

    n = len(kls)
    write_run(run_dir, {"val/kl": epoch_series(kls), "val/psnr": epoch_series([20.0] * n),
                        "train/kl_weight": [(s, w) for s in range(n * 10)]}, epochs=epoch_map(n))


def test_follow_recommends_without_apply(tmp_path):
    run_dir = tmp_path / "run"
    _static_run(run_dir, [10.0, 30.0, 40.0])
    r = watch(["--follow", str(run_dir), "--idle", "0.5", *REDUCE_AT_1], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ds = decisions(run_dir)
    assert [d["epoch"] for d in ds] == [0, 1, 2]
    assert ds[0]["replayed"] and ds[1]["replayed"] and "replayed" not in ds[2]
    assert ds[1]["action"] == "set_kl_weight" and ds[1]["applied"] is False
    assert not (run_dir / "control.json").exists()
    assert "no new logs for 0.5 s" in r.stdout


def test_follow_apply_writes_control_for_the_live_epoch_only(tmp_path):
    run_dir = tmp_path / "run"
    _static_run(run_dir, [30.0, 30.0, 30.0])
    r = watch(["--follow", str(run_dir), "--idle", "0.5", "--apply", "--cooldown", "0", "--policy", "controlvae",
               "--target-kl", "20", "--param", "ki=1e-3"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ds = decisions(run_dir)
    live = [d for d in ds if not d.get("replayed")]
    assert len(live) == 1 and live[0]["epoch"] == 2 and live[0]["applied"] and live[0]["seq"] == 1
    ctl = json.loads((run_dir / "control.json").read_text())
    assert ctl["seq"] == 1 and ctl["kl_weight"] == pytest.approx(live[0]["kl_weight"])


def test_follow_a_live_run_and_ctrl_c(tmp_path):
    trainer = subprocess.Popen([*FAKE, "--logdir", str(tmp_path / "logs"), "--epochs", "200"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL)
    run_dir = tmp_path / "logs" / "version_0"
    try:
        wait_for(lambda: list(run_dir.glob("events.out.tfevents.*")), what="the run's event file")
        p = subprocess.Popen(WATCH + ["--follow", str(run_dir), "--idle", "30"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: (run_dir / "watchdog.jsonl").exists() and len(decisions(run_dir)) >= 2,
                 what="two decisions")
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=20)
        assert p.returncode == 130
        assert trainer.poll() is None  # following never touches the run
    finally:
        trainer.send_signal(signal.SIGINT)
        trainer.wait(timeout=20)


def test_resumed_run_replays_its_history_without_acting_on_it(tmp_path):
    logs = tmp_path / "logs"
    ckpt = tmp_path / "c.pt"
    first = subprocess.run([*FAKE, "--logdir", str(logs), "--epochs", "3", "--epoch-seconds", "0",
                            "--checkpoint", str(ckpt)], cwd=tmp_path, capture_output=True, timeout=60)
    assert first.returncode == 0
    run_dir = logs / "version_0"
    time.sleep(0.6)  # the earlier session's files are older than the watched child
    r = watch(REDUCE_AT_1 + ["--", *FAKE, "--logdir", str(logs), "--epochs", "5", "--resume", str(ckpt),
                             "--checkpoint", str(ckpt)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ds = decisions(run_dir)
    assert [d["epoch"] for d in ds] == [0, 1, 2, 3, 4]
    assert [bool(d.get("replayed")) for d in ds] == [True, True, False, False, False]
    assert ds[0]["action"] == "set_kl_weight" and not ds[0]["applied"]  # history: recorded, never applied
    # ... so the policy knows the run is still at 1e-2, and the first live epoch gets the reduction.
    assert (ds[2]["action"], ds[2]["kl_weight"], ds[2]["applied"], ds[2]["seq"]) == ("set_kl_weight", 1e-3, True, 1)


def test_restart_mode_ctrl_c_while_the_checkpoint_is_looked_for_relaunches_nothing(tmp_path, monkeypatch):
    # Ctrl-C between the stopped child's exit and the relaunch has no child to reach; the watchdog must
    # not then start a fresh one that trains on as if nothing had been asked.
    from vaediag.watch import supervisor as sup
    from vaediag.watch.policies import make_policy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_LOGDIR", str(tmp_path / "logs"))
    monkeypatch.setenv("FAKE_EPOCHS", "5")
    (tmp_path / "logs").mkdir()
    real_find = sup.find_checkpoint

    def find_after_ctrl_c(**kw):
        os.kill(os.getpid(), signal.SIGINT)  # handled by the supervisor's handler, in this thread
        return real_find(**kw)

    monkeypatch.setattr(sup, "find_checkpoint", find_after_ctrl_c)
    policy = make_policy("ladder", kl_weight=1e-2, reduce_at=1, target_kl=20.0, max_factor=10.0)
    w = sup.Supervisor([*RESTART, "--kl-weight", "0.01"], policy, logdir="logs", restart=True, poll=0.1)
    code = w.run()
    recs = read_journal(tmp_path / "logs" / "version_0")
    assert [r for r in recs if r["event"] == "restart"] == []
    assert recs[-1]["event"] == "exit" and recs[-1]["signals"] == ["SIGINT"]
    assert code == 130


def test_follow_apply_a_control_file_that_cannot_be_written_is_journalled_and_forgotten(tmp_path, monkeypatch):
    from vaediag.watch import session
    from vaediag.watch import supervisor as sup
    from vaediag.watch.policies import make_policy

    def refuse(run_dir, control):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(session, "write_control", refuse)
    run_dir = tmp_path / "run"
    _static_run(run_dir, [30.0, 30.0, 30.0])
    policy = make_policy("controlvae", target_kl=20.0, ki=1e-3)
    assert sup.Follower(run_dir, policy, apply=True, idle=0.3, poll=0.05).run() == 0
    live = [d for d in decisions(run_dir) if not d.get("replayed")]
    assert len(live) == 1 and live[0]["action"] == "set_kl_weight"
    assert (live[0]["applied"], live[0]["seq"], live[0]["via"]) == (False, None, None)
    assert live[0]["note"] == "control.json could not be written"
    notes = [r["text"] for r in read_journal(run_dir) if r["event"] == "note"]
    assert any(n.startswith("cannot write control.json") and "Read-only file system" in n for n in notes)
    assert policy.n_changes == 0  # not_applied(): the policy does not believe the change happened


def test_a_metric_the_run_never_logs_does_not_abandon_the_training(tmp_path):
    """The ladder needs the KL; a run that does not log it trains to the end under a watchdog that keeps
    every epoch, says why in the journal, and exits with the training's code."""
    r = watch(["--", *FAKE, "--logdir", str(tmp_path / "logs"), "--epochs", "3", "--omit", "kl"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    run_dir = tmp_path / "logs" / "version_0"
    assert (run_dir / "DONE").read_text() == "3"
    ds = decisions(run_dir)
    assert [d["action"] for d in ds] == ["keep"] * 3
    assert all("needs metric(s) kl" in d["reason"] for d in ds)
    assert not (run_dir / "control.json").exists()
    assert read_journal(run_dir)[-1]["event"] == "exit"
