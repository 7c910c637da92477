"""The adversarial corpus: one table row per bad input, run the way a user runs it.

Each :class:`Case` builds its input under a fresh directory, runs one command (``vaediag ...`` or
``python -m train ...``) in a child process with a timeout, and asserts what the README's reliability
table promises:

- the documented exit code;
- stderr is one line (library warnings and tracebacks are failures) matching ``message``;
- the command ends within ``timeout`` seconds (a hang is a failure, never a skip);
- nothing that existed before the command was replaced, deleted or changed (type, mode, size, content
  hash, symlink target of every path under the case's directory, plus ``watch`` paths outside it).

Rows live in ``test_corpus_*.py`` files, grouped by the door they open (input files, outputs, watchdog,
trainer). A row that fails before a fix and passes after is the fix's test; rows that already passed
stay so that they cannot come back.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["Case", "params", "run_case", "snapshot", "ROOT"]


@dataclass(frozen=True)
class Case:
    """One row: ``build(tmp)`` makes the input and returns the command's argv after the program name."""

    id: str
    build: Callable[[Path], Sequence[str]]
    exit_code: int
    message: str  # a regular expression searched in the single stderr line ("" = stderr must be empty)
    program: str = "vaediag"  # or "train" (python -m train)
    timeout: float = 60.0
    stdout: str | None = None  # a regular expression searched in stdout, when it matters
    may_create: tuple[str, ...] = ()  # globs (relative to tmp) of new paths the command may create
    watch: Callable[[Path], Sequence[Path]] = field(default=lambda tmp: ())  # extra paths that must not change
    env: dict[str, str] = field(default_factory=dict)
    known_bug: str = ""  # an open door not yet closed: the row runs as a strict xfail until its fix lands


def params(cases: Sequence[Case]) -> list:
    """pytest parameters for a table: rows with ``known_bug`` are strict xfails (a fix turns them red)."""
    import pytest

    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "corpus ids must be unique"
    # Every row starts a child process (~1 s): slow, so `pytest -m "not slow"` stays a fast subset.
    return [pytest.param(c, id=c.id, marks=[pytest.mark.slow, pytest.mark.xfail(strict=True, reason=c.known_bug)])
            if c.known_bug else pytest.param(c, id=c.id, marks=pytest.mark.slow) for c in cases]


def _fingerprint(p: Path) -> tuple:
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(p))
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return ("file", stat.S_IMODE(st.st_mode), st.st_size, h.hexdigest())
    if stat.S_ISDIR(st.st_mode):
        return ("dir", stat.S_IMODE(st.st_mode))
    return ("special", stat.S_IFMT(st.st_mode), st.st_rdev)


def snapshot(root: Path, extra: Sequence[Path] = ()) -> dict[str, tuple]:
    """Fingerprint of every path under ``root`` (not following links) and of each extra path."""
    out: dict[str, tuple] = {}
    stack = [root]
    while stack:  # iterative: the corpus holds trees deeper than Python's recursion limit
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            p = Path(os.fsdecode(e.path))
            out[os.fsdecode(os.path.relpath(e.path, root))] = _fingerprint(p)
            if e.is_dir(follow_symlinks=False):
                stack.append(p)
    for p in extra:
        out[f"@{p}"] = _fingerprint(p) if os.path.lexists(p) else ("absent",)
    return out


def run_case(case: Case, tmp: Path) -> subprocess.CompletedProcess:
    """Build, snapshot, run, and assert the row's promises; returns the finished process."""
    argv = [os.fspath(a) for a in case.build(tmp)]
    before = snapshot(tmp, case.watch(tmp))
    if case.program == "vaediag":
        cmd = [sys.executable, "-m", "vaediag.cli", *argv]
    elif case.program == "train":
        cmd = [sys.executable, "-m", "train", *argv]
    else:  # pragma: no cover - a table typo
        raise ValueError(f"unknown program {case.program!r}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120", **case.env}
    try:
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, timeout=case.timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{case.id}: no answer within {case.timeout} s (a hang)") from exc
    err = proc.stderr.decode("utf-8", "replace")
    out = proc.stdout.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == case.exit_code, f"{case.id}: exit {proc.returncode}, want {case.exit_code}\n{err[-2000:]}"
    if case.message:
        assert len(lines) == 1, f"{case.id}: stderr must be one line, got {len(lines)}:\n{err[-2000:]}"
        assert re.search(case.message, lines[0]), f"{case.id}: {lines[0]!r} does not match {case.message!r}"
    else:
        assert not lines, f"{case.id}: stderr must be empty, got:\n{err[-2000:]}"
    if case.stdout is not None:
        assert re.search(case.stdout, out), f"{case.id}: stdout does not match {case.stdout!r}:\n{out[-2000:]}"
    after = snapshot(tmp, case.watch(tmp))
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"{case.id}: changed or removed: {changed}"
    import fnmatch

    new = sorted(k for k in after if k not in before and not any(fnmatch.fnmatch(k, g) for g in case.may_create))
    assert not new, f"{case.id}: created unexpected paths: {new}"
    return proc


def unix_socket(path: Path) -> Path:
    """A Unix socket node at ``path`` (the socket object is closed, the node stays).

    It is bound by its bare name from inside its folder: an AF_UNIX address holds at most 107
    bytes, and pytest's tmp paths (longer still under xdist's per-worker folders) can pass that.
    """
    import socket

    here = os.getcwd()
    s = socket.socket(socket.AF_UNIX)
    try:
        os.chdir(path.parent)
        s.bind(path.name)
    finally:
        os.chdir(here)
        s.close()
    return path

