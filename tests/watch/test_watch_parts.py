"""The watchdog's parts: CLI usage errors, epoch tracker, journal, control-file integrity, panel, helpers."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rich.console import Console

from tbwrite import epoch_map, epoch_series, scalar_event, write_events, write_run
from vaediag.cli import main
from vaediag.errors import ControlFileError, InputError
from vaediag.logs import Tail
from vaediag.watch.control import REASON_MAX_CHARS, Control, read_control, reason_line, write_control
from vaediag.watch.journal import Journal, decision_record, read_journal
from vaediag.watch.panel import WatchStatus, penalty_share, render_panel, status_line
from vaediag.watch.policies import Decision, LadderPolicy
from vaediag.watch.supervisor import Supervisor, exit_code, find_checkpoint, option_value, set_option
from vaediag.watch.tracker import EpochTracker

# ---- CLI usage errors: exit 2, one line ----------------------------------------------------------

USAGE_CASES = [
    (["watch"], r"no training command: put it after '--'"),
    (["watch", "--policy", "pid", "--", "true"], r"unknown policy 'pid' \(choose ladder, controlvae, geco\)"),
    (["watch", "--cooldown", "x", "--", "true"], r"--cooldown must be an integer, got 'x'"),
    (["watch", "--cooldown", "-1", "--", "true"], r"cooldown must be an integer >= 0, got -1"),
    (["watch", "--min-kl-weight", "1e-2", "--max-kl-weight", "1e-3", "--", "true"], r"max_kl_weight must be > min"),
    (["watch", "--policy", "geco", "--target-kl", "5", "--", "true"],
     r"--target-kl does not apply to policy 'geco' \(it steers PSNR; use --target-psnr\)"),
    (["watch", "--policy", "controlvae", "--target-psnr", "30", "--", "true"], r"--target-psnr does not apply"),
    (["watch", "--param", "reduce_at", "--", "true"], r"must look like KEY=VALUE"),
    (["watch", "--param", "kp=1", "--", "true"], r"policy 'ladder' has no parameter 'kp'"),
    (["watch", "--apply", "--", "true"], r"--apply only goes with --follow"),
    (["watch", "--follow", "/nonexistent/run"], r"--follow '/nonexistent/run' is not a directory"),
    (["watch", "--follow", ".", "--", "true"], r"either --follow RUN_DIR or a training command"),
    (["watch", "--follow", ".", "--restart"], r"--follow cannot --restart or --dry-run"),
    (["watch", "--checkpoint", "x.pt", "--", "true"], r"--checkpoint and --ae-flag only go with --restart"),
    (["watch", "--logdir", "/dev/null", "--", "true"], r"--logdir '/dev/null' is not a directory"),
    (["watch", "--", "vaediag-no-such-command-xyz"], r"cannot start 'vaediag-no-such-command-xyz': command not found"),
]


@pytest.mark.parametrize("argv,match", USAGE_CASES, ids=[" ".join(a) for a, _ in USAGE_CASES])
def test_usage_errors_exit_2_one_line(argv, match, capsys, tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse-level errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("Error: ") and re.search(match, err), err


def test_watch_cli_does_not_import_torch(tmp_path):
    code = ("import sys; from vaediag.cli import main; "
            "rc = main(['watch', '--no-live', '--poll', '0.05', '--', sys.executable, '-c', 'raise SystemExit(7)']); "
            "assert 'torch' not in sys.modules, 'torch imported'; raise SystemExit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 7, r.stderr  # and the child's exit code is the watchdog's
    assert "exited before it created a run directory" in r.stdout


def test_child_killed_by_signal_gives_128_plus_n(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vaediag.cli", "watch", "--no-live", "--poll", "0.05", "--",
                        sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 137


# ---- tracker --------------------------------------------------------------------------------------


def _append(run_dir: Path, rows: list[tuple[str, int, float]]) -> None:
    write_events(run_dir, [scalar_event(t, s, v, 1.7e9 + s) for t, s, v in rows])


def test_tracker_completes_epochs_by_later_rows_and_quiet_polls(tmp_path):
    run = tmp_path / "run"
    tail, tr = Tail(run), EpochTracker()
    _append(run, [("epoch", s, 0) for s in range(3)] + [("train/kl", s, 10.0 + s) for s in range(3)])
    tr.feed(tail.poll())
    assert tr.ready() == []  # train rows only: the epoch may still be running
    _append(run, [("epoch", 2, 0), ("val/kl", 2, 7.0), ("val/psnr", 2, 21.0)])
    tr.feed(tail.poll())
    assert tr.ready() == []  # the val point just arrived: wait one quiet poll
    tr.feed(tail.poll())
    (em,) = tr.ready()
    assert em.epoch == 0 and em.metrics["kl"] == 7.0 and em.metrics["psnr"] == 21.0
    # epoch 1: train only, completed by epoch 2's rows
    _append(run, [("epoch", 3, 1), ("train/kl", 3, 5.0), ("train/kl", 4, 7.0), ("train/kl_weight", 4, 1e-3),
                  ("epoch", 4, 1), ("epoch", 5, 2), ("train/kl", 5, 1.0)])
    tr.feed(tail.poll())
    (em,) = tr.ready()
    assert em.epoch == 1 and em.metrics["kl"] == pytest.approx(6.0) and em.metrics["kl_weight"] == 1e-3
    assert tr.ready(final=True) == []  # epoch 2 has train rows only, in a run that logs val: cut short


def test_tracker_needs_no_quiet_poll_once_it_knows_the_val_terms(tmp_path):
    run = tmp_path / "run"
    tail, tr = Tail(run), EpochTracker()
    _append(run, [("epoch", 9, 0), ("val/kl", 9, 7.0), ("val/psnr", 9, 21.0)])
    tr.feed(tail.poll())
    assert tr.ready() == []  # first val point: is it whole? wait one poll
    tr.feed(tail.poll())
    assert [e.epoch for e in tr.ready()] == [0]
    _append(run, [("epoch", 19, 1), ("val/kl", 19, 6.0)])
    tr.feed(tail.poll())
    assert tr.ready() == []  # val/psnr of epoch 1 still missing
    _append(run, [("epoch", 19, 1), ("val/psnr", 19, 22.0)])
    tr.feed(tail.poll())
    (em,) = tr.ready()  # whole now: decided without a quiet poll
    assert em.epoch == 1 and em.metrics["psnr"] == 22.0


def test_tracker_counts_val_points_without_epoch_tag(tmp_path):
    run = tmp_path / "run"
    tail, tr = Tail(run), EpochTracker()
    for i in range(3):  # one val point per poll: the tail alone would call each of them epoch 0
        _append(run, [("val_loss", 10 * i + 9, 1.0 / (i + 1)), ("val_KLD", 10 * i + 9, -5.0 * (i + 1))])
        tr.feed(tail.poll())
    tr.feed(tail.poll())
    got = tr.ready()
    assert [e.epoch for e in got] == [0, 1, 2]
    assert [e.metrics["kl"] for e in got] == [5.0, 10.0, 15.0]  # AntixK's -KL, sign-normalised


def test_tracker_skips_rows_of_decided_epochs_and_nonfinite_epochs(tmp_path):
    run = tmp_path / "run"
    write_run(run, {"val/kl": epoch_series([3.0, 4.0])}, epochs=epoch_map(2))
    tail, tr = Tail(run), EpochTracker()
    tr.feed(tail.poll())
    tr.feed(None)
    assert [e.epoch for e in tr.ready()] == [0, 1]
    _append(run, [("epoch", 19, 1), ("val/kl", 19, 99.0)])  # a resumed run re-logs epoch 1
    tr.feed(tail.poll())
    assert tr.ready(final=True) == []


# ---- journal --------------------------------------------------------------------------------------


def test_journal_lines_are_complete_json_and_durable(tmp_path):
    p = LadderPolicy(kl_weight=1e-5)
    d = p.update(9, {"kl": 1535.0, "recon": 0.111})
    with Journal(tmp_path) as j:
        j.append(decision_record(d, metrics={"kl": 1535.0, "psnr": math.nan}, policy=p, applied=True, seq=1,
                                 via="control"))
        j.event("exit", code=0)
    lines = (tmp_path / "watchdog.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]  # strict JSON: NaN written as a string
    assert recs[0]["metrics"]["psnr"] == "nan"
    assert recs[0]["reason"] == ("kl = 1535 > 500; penalty 1e-05 x 1535 = 13.8% of recon 0.111 > 10% after epoch 10: "
                                 "kl_weight 1e-05 -> 1e-07 (100x: the penalty to <= 1% of recon)")
    assert recs[0]["state"]["rung"] == 1 and recs[0]["params"]["target_kl"] == 500.0
    assert recs[1]["event"] == "exit"


def test_journal_appends_and_skips_a_torn_last_line(tmp_path):
    with Journal(tmp_path) as j:
        j.event("start")
    with Journal(tmp_path) as j:  # a second session appends, never truncates
        j.event("note", text="again")
    with open(tmp_path / "watchdog.jsonl", "a") as fh:
        fh.write('{"event": "decision", "epo')  # killed mid-write
    assert [r["event"] for r in read_journal(tmp_path)] == ["start", "note"]


def test_journal_damaged_middle_and_missing(tmp_path):
    (tmp_path / "watchdog.jsonl").write_text('{"event": "start"}\nnot json\n[1]\n{"event": "exit"}\n')
    assert [r["event"] for r in read_journal(tmp_path)] == ["start", "exit"]  # the good lines around it stay
    with pytest.raises(InputError, match=r"no watchdog journal at"):
        read_journal(tmp_path / "nothing")
    with pytest.raises(InputError, match=r"cannot write the watchdog journal"):
        Journal(tmp_path / "missing_dir" / "watchdog.jsonl")


def test_concurrent_journal_writers_never_interleave(tmp_path):
    def writer(k):
        with Journal(tmp_path) as j:
            for i in range(100):
                j.event("note", text=f"{k}-{i}-" + "x" * 500)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_journal(tmp_path)) == 400


# ---- control file: a half-written or malformed file is never applied --------------------------------


def test_every_prefix_of_a_control_file_is_rejected(tmp_path):
    text = Control(seq=3, kl_weight=1e-7, mode="vae", reason="kl = 1535 > 500", issued_at="t").to_json() + "\n"
    f = tmp_path / "control.json"
    for n in range(len(text.rstrip())):
        f.write_text(text[:n])
        with pytest.raises(ControlFileError):
            read_control(f)
    f.write_text(text)
    assert read_control(f).seq == 3


@pytest.mark.parametrize("content,match", [
    ('{"seq": 1}', r"missing key\(s\) \['kl_weight'\]"),
    ('{"seq": 1, "kl_weight": -1}', r"finite and >= 0"),
    ('{"seq": 1, "kl_weight": 1e-3, "mode": "gan"}', r"mode 'gan' is unknown"),
    ('{"seq": 1, "kl_weight": 1e-3, "stop": true}', r"unknown key"),
    ('[1, 2]', r"must hold a JSON object"),
])
def test_malformed_control_files(tmp_path, content, match):
    (tmp_path / "control.json").write_text(content)
    with pytest.raises(ControlFileError, match=match):
        read_control(tmp_path)


@pytest.mark.parametrize("reason, shown", [
    ("kl = 1535 > 500 at epoch 10", "kl = 1535 > 500 at epoch 10"),
    ("two\nlines,\ttabs  and\x00 a NUL", "two lines, tabs and a NUL"),
    ("", ""),
    ("r" * 5000, "r" * (REASON_MAX_CHARS - 1) + "\u2026"),
])
def test_control_reason_is_optional_and_shown_as_one_bounded_line(tmp_path, reason, shown):
    write_control(tmp_path, Control(seq=1, kl_weight=1e-3, reason=reason))
    assert reason_line(read_control(tmp_path).reason) == shown
    (tmp_path / "control.json").write_text('{"seq": 2, "kl_weight": 0.001}')  # a file from before the field
    assert read_control(tmp_path).reason == "" and reason_line("") == ""


def test_control_module_doctests():
    import doctest

    import vaediag.watch.control

    assert doctest.testmod(vaediag.watch.control).failed == 0


def test_reader_never_sees_a_partial_control_file(tmp_path):
    stop, seen, bad = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                c = read_control(tmp_path)
            except ControlFileError as exc:
                bad.append(exc.message)
            else:
                if c is not None:
                    seen.append(c.seq)

    t = threading.Thread(target=reader)
    t.start()
    for seq in range(1, 201):
        write_control(tmp_path, Control(seq=seq, kl_weight=10.0 ** -(seq % 8), reason="r" * 2000))
    stop.set()
    t.join()
    assert bad == [] and seen == sorted(seen)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_fake_loop_ignores_half_written_control(tmp_path):
    """The loop side of the contract, with the shared reader: a torn file changes nothing, a whole one does."""
    import fakerun

    run = tmp_path / "logs"
    (run / "version_0").mkdir(parents=True)
    (run / "version_0" / "control.json").write_text('{"seq": 1, "kl_weight": 1e-')  # torn
    ckpt = tmp_path / "c.pt"
    ckpt.write_text(json.dumps({"run_dir": str(run / "version_0"), "epoch": 0, "step": 0, "last_seq": 0}))
    fakerun.train(logdir=run, epochs=1, kl_weight=1e-2, resume=str(ckpt), ckpt_path=ckpt, epoch_seconds=0.0)
    assert json.loads(ckpt.read_text())["kl_weight"] == 1e-2


# ---- panel ----------------------------------------------------------------------------------------


def test_panel_shows_the_numbers():
    s = WatchStatus(policy="ladder", run_dir="logs/ear_teacher/ear_vae/version_2", pid=42, child_state="running",
                    epoch=9, kl=1535.0, recon=0.111, psnr=23.9, kl_weight=1e-5, last_action="set_kl_weight",
                    last_reason="kl = 1535 > 500 after epoch 10: kl_weight 1e-05 -> 1e-06",
                    last_applied="applied: control seq 1", decisions=10, changes=1)
    con = Console(file=io.StringIO(), width=100)
    con.print(render_panel(s))
    out = con.file.getvalue()
    for text in ("version_2", "pid 42", "10 completed", "1535", "13.83%", "23.90 dB", "1e-05", "set_kl_weight",
                 "applied: control seq 1", "kl = 1535 > 500 after epoch 10"):
        assert text in out
    assert status_line(s).startswith("watch: epoch 10  kl 1535  share 13.83%  psnr 23.90  kl_weight 1e-05  -> set_kl_weight")


@pytest.mark.parametrize("w,kl,recon,expected", [(1e-5, 1500.0, 0.111, 0.1351), (None, 1.0, 1.0, None),
                                                 (1e-5, 1500.0, 0.0, None), (1e-7, 300.0, 0.111, 2.7e-4)])
def test_penalty_share(w, kl, recon, expected):
    got = penalty_share(w, kl, recon)
    assert got == (pytest.approx(expected, rel=1e-2) if expected is not None else None)


# ---- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd,flag,value,expected", [
    (["t.py", "--kl-weight", "0.01"], "--kl-weight", "0.001", ["t.py", "--kl-weight", "0.001"]),
    (["t.py", "--kl-weight=0.01", "--x"], "--kl-weight", "0.001", ["t.py", "--kl-weight=0.001", "--x"]),
    (["t.py"], "--kl-weight", "1e-07", ["t.py", "--kl-weight", "1e-07"]),
    (["t.py", "--resume", "a.pt", "--resume", "b.pt"], "--resume", "c.pt", ["t.py", "--resume", "c.pt", "--resume", "c.pt"]),
    (["t.py", "--ae"], "--ae", None, ["t.py", "--ae"]),
    (["t.py"], "--ae", None, ["t.py", "--ae"]),
    (["t.py", "--kl-weight-decay", "3"], "--kl-weight", "1", ["t.py", "--kl-weight-decay", "3", "--kl-weight", "1"]),
])
def test_set_option(cmd, flag, value, expected):
    assert set_option(cmd, flag, value) == expected


def test_find_checkpoint_prefers_the_mirrored_run_directory(tmp_path):
    import time

    run_dir = tmp_path / "logs" / "proj" / "vae" / "version_3"
    run_dir.mkdir(parents=True)
    since = time.time()
    other = tmp_path / "checkpoints" / "proj" / "vae" / "version_2" / "last.pt"
    mine = tmp_path / "checkpoints" / "proj" / "vae" / "version_3" / "last.pt"
    for p in (mine, other):
        p.parent.mkdir(parents=True)
        p.write_text("x")
    (mine.parent / ".last.pt.tmp").write_text("partial")
    assert find_checkpoint(since=since, run_dir=run_dir, roots=[tmp_path]) == mine.resolve()
    assert find_checkpoint(since=since + 3600, run_dir=run_dir, roots=[tmp_path]) is None  # nothing newer
    assert find_checkpoint(since=since, run_dir=None, roots=[tmp_path], explicit=str(other)) == other
    assert find_checkpoint(since=since, run_dir=None, roots=[tmp_path], explicit=str(tmp_path / "*/*/*/*/last.pt")) in (mine, other)


def test_find_checkpoint_looks_beside_the_run_first(tmp_path):
    # python -m train keeps last.pt in <run_dir>/checkpoints/; a newer checkpoint of the older layout
    # (checkpoints/<project>/<name>/version_N, mirrored) or anywhere else under the roots must not win.
    import time

    run_dir = tmp_path / "logs" / "proj" / "vae" / "version_3"
    since = time.time()
    mine = run_dir / "checkpoints" / "last.pt"
    mirrored = tmp_path / "checkpoints" / "proj" / "vae" / "version_3" / "last.pt"
    stray = tmp_path / "elsewhere" / "model.ckpt"
    for i, p in enumerate((mine, mirrored, stray)):
        p.parent.mkdir(parents=True)
        p.write_text("x")
        os.utime(p, (since + i, since + i))
    (mine.parent / ".last.pt.tmp").write_text("partial")
    assert find_checkpoint(since=since, run_dir=run_dir, roots=[tmp_path]) == mine.resolve()
    assert find_checkpoint(since=since, run_dir=run_dir, roots=[]) == mine.resolve()  # whatever the roots
    mine.unlink()  # no checkpoint beside the run: the older layout is still found
    assert find_checkpoint(since=since, run_dir=run_dir, roots=[tmp_path]) == mirrored.resolve()
    os.utime(mine.parent / ".last.pt.tmp", (since + 9, since + 9))
    assert find_checkpoint(since=since, run_dir=run_dir, roots=[]) is None  # a temporary file never counts


def test_restart_also_looks_in_the_commands_checkpoint_dir(tmp_path, monkeypatch):
    # checkpoints on another disk: `--checkpoint-dir DIR` in the training command is searched too
    import time

    assert option_value(["python", "-m", "train", "--checkpoint-dir", "/big"], "--checkpoint-dir") == "/big"
    assert option_value(["t.py", "--checkpoint-dir=a", "--checkpoint-dir=b"], "--checkpoint-dir") == "b"
    assert option_value(["t.py", "--checkpoint-dir"], "--checkpoint-dir") is None
    run_dir = tmp_path / "logs" / "proj" / "vae" / "version_0"
    run_dir.mkdir(parents=True)
    since = time.time()
    other_disk = tmp_path / "disk2"
    ckpt = other_disk / "proj" / "vae" / "version_0" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text("x")
    sup = Supervisor(["python", "-m", "train", "--checkpoint-dir", str(other_disk)], LadderPolicy(), restart=True)
    sup.run_dir = run_dir.resolve()
    monkeypatch.chdir(run_dir)  # the disk is not under the current directory
    assert sup._find_ckpt(since) == ckpt.resolve()


@pytest.mark.parametrize("rc,code", [(0, 0), (3, 3), (130, 130), (-2, 130), (-9, 137), (-15, 143)])
def test_exit_code(rc, code):
    assert exit_code(rc) == code


# ---- in-process KLWatchdog: the README example runs as written --------------------------------------


def test_klwatchdog_readme_example_runs(tmp_path):
    import textwrap

    from vaediag.watch import KLWatchdog

    doc = KLWatchdog.__doc__
    start = doc.rfind("\n", 0, doc.index("import torch")) + 1
    end = doc.index("    ``decision.action``")
    example = textwrap.dedent(doc[start:end]).replace("run_dir=None", f"run_dir={str(tmp_path)!r}")
    r = subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + example],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("0 set_kl_weight psnr = ")
    recs = read_journal(tmp_path)
    assert [x["epoch"] for x in recs] == [0, 1, 2, 3, 4] and all(x["via"] == "in_process" for x in recs)


def test_klwatchdog_state_and_ae_mode(tmp_path):
    from vaediag.watch import KLWatchdog

    wd = KLWatchdog("ladder", kl_weight=1e-3, reduce_at=1, ae_at=2, stop_at=3, run_dir=tmp_path)
    assert wd.step(0, {"kl": 900.0}).kl_weight == pytest.approx(1e-4)
    assert wd.kl_weight == pytest.approx(1e-4)
    d = wd.step(1, {"kl": 900.0})
    assert d.action == "switch_to_ae" and wd.mode == "ae" and wd.kl_weight == 0.0
    again = KLWatchdog("ladder", kl_weight=1e-3, reduce_at=1, ae_at=2, stop_at=3)
    again.load_state_dict(json.loads(json.dumps(wd.state_dict())))
    assert again.mode == "ae" and again.policy.rung == 2
    with pytest.raises(ValueError, match="does not know the kl_weight yet"):
        KLWatchdog("controlvae").kl_weight
    wd.close()


def test_find_checkpoint_mirror_matches_whole_directory_names(tmp_path):
    import os
    import time

    run_dir = tmp_path / "logs" / "proj" / "vae" / "version_3"
    run_dir.mkdir(parents=True)
    since = time.time()
    mine = tmp_path / "checkpoints" / "proj" / "vae" / "version_3" / "last.pt"
    lookalike = tmp_path / "checkpoints" / "myproj" / "vae" / "version_3" / "last.pt"  # another project, newer
    for i, p in enumerate((mine, lookalike)):
        p.parent.mkdir(parents=True)
        p.write_text("x")
        os.utime(p, (since + i, since + i))
    assert find_checkpoint(since=since, run_dir=run_dir, roots=[tmp_path]) == mine.resolve()
