"""What --restart needs from the supervisor: the training command rewritten (set_option, option_value)
and the checkpoint found (find_checkpoint: beside the run, mirrored, --checkpoint-dir)."""

from __future__ import annotations

import os

import pytest

from vaediag.watch.policies import LadderPolicy
from vaediag.watch.supervisor import Supervisor, find_checkpoint, option_value, set_option


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
