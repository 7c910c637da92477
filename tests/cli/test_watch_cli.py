"""`vaediag watch` at the command line: usage errors (exit 2, one line), no torch, the exit code of the
training process (128 + N for a signal)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vaediag.cli import main
from vaediag.watch.supervisor import exit_code

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
    (["watch", "--policy", "geco", "--profile", "seed", "--", "true"],
     r"--profile does not apply to policy 'geco' \(its target is the one you give\)"),
    (["watch", "--profile", "seeds", "--", "true"], r"argument --profile: invalid choice: 'seeds'"),
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


@pytest.mark.slow
def test_watch_cli_does_not_import_torch(tmp_path):
    code = ("import sys; from vaediag.cli import main; "
            "rc = main(['watch', '--no-live', '--poll', '0.05', '--', sys.executable, '-c', 'raise SystemExit(7)']); "
            "assert 'torch' not in sys.modules, 'torch imported'; raise SystemExit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 7, r.stderr  # and the child's exit code is the watchdog's
    assert "exited before it created a run directory" in r.stdout


@pytest.mark.slow
def test_child_killed_by_signal_gives_128_plus_n(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vaediag.cli", "watch", "--no-live", "--poll", "0.05", "--",
                        sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 137


@pytest.mark.parametrize("rc,code", [(0, 0), (3, 3), (130, 130), (-2, 130), (-9, 137), (-15, 143)])
def test_exit_code(rc, code):
    assert exit_code(rc) == code
