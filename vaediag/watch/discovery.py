"""Finding what the training process wrote: its run directory (by evidence, never a guess) and, for
``--restart``, the checkpoint it saved on the way out.

The run directory, two ways, checked at every poll of the supervisor:

* ``VAEDIAG_RUN_DIR_FILE``: the supervisor sets this environment variable to a fresh temporary file; a
  training script that knows the protocol (``python -m train`` does) writes its absolute run directory and
  a newline there right after creating it (:func:`read_run_dir_file`). Reliable and immediate.
* For foreign scripts (:func:`find_foreign_run_dir`): event files under ``--logdir`` (default: the current
  directory) that are the child's by evidence: held open by its process tree (``/proc/<pid>/fd`` of the
  child, its session and descendants), or new and named after one of those pids
  (``events.out.tfevents.<t>.<host>.<pid>``); where ``/proc`` is missing, new files named after the
  child's pid, else the one new run if there is exactly one and it has stayed so for ``_SOLE_SETTLE_S``
  (the settle rule). Another process's new run is never attached to: the caller is told once and keeps
  waiting. Their run directory (``tf/`` and ``add_hparams`` children belong to their parent) is the run.

The checkpoint (:func:`find_checkpoint`): the run's own ``checkpoints/`` folder first, then the older
mirrored layout, then anything new under the given roots.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from vaediag.errors import VaediagError
from vaediag.logs.discover import _ADD_HPARAMS_DIR, is_event_file
from vaediag.safeio import read_text
from vaediag.watch.control import RUN_CHECKPOINT_DIR, RUN_DIR_FILE_ENV

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.watch.child import _Child

__all__ = ["event_files", "walk_files", "read_run_dir_file", "find_foreign_run_dir", "find_checkpoint"]

_CKPT_SUFFIXES = (".pt", ".pth", ".ckpt")
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "wandb"})
#: Where the child's process tree and its open files are read from (Linux); tests point it elsewhere.
_PROC = Path("/proc")
# Without /proc, "the only new run" is attached to once it has stayed the only one this long while the child
# runs (a script that writes two runs in quick succession must not be guessed to own the first).
_SOLE_SETTLE_S = 1.0


def walk_files(root: Path, *, max_depth: int = 8):
    """Every file under ``root`` down to ``max_depth``, skipping hidden folders and known package caches."""
    root = Path(root)
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS] if depth < max_depth else []
        for f in filenames:
            yield Path(dirpath) / f


def event_files(root: Path) -> set[Path]:
    """The event files under ``root`` now (empty when it is not a directory)."""
    if not root.is_dir():
        return set()
    return {p for p in walk_files(root) if is_event_file(p.name)}


def _proc_available() -> bool:
    return (_PROC / str(os.getpid()) / "fd").is_dir()


def _process_tree(root: int) -> set[int]:
    """``root``, every process of its session (the child is a session leader) and their descendants."""
    parent: dict[int, int] = {}
    tree = {root}
    try:
        entries = list(os.scandir(_PROC))
    except OSError:
        return tree
    for e in entries:
        if not e.name.isdigit():
            continue
        try:
            with open(os.path.join(e.path, "stat"), "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
            pid, ppid, sid = int(e.name), int(fields[1]), int(fields[3])
        except (OSError, IndexError, ValueError):
            continue
        parent[pid] = ppid
        if sid == root:
            tree.add(pid)
    grew = True
    while grew:  # descendants that left the session (setsid) are still the child's
        grew = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def _open_event_files(pids: set[int], root: Path) -> set[Path]:
    """Event files under ``root`` (resolved) that the processes ``pids`` hold open right now."""
    out: set[Path] = set()
    for pid in pids:
        try:
            fds = list(os.scandir(_PROC / str(pid) / "fd"))
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if not target.startswith("/"):
                continue  # pipe:[...], socket:[...]
            p = Path(target)
            if is_event_file(p.name) and p.is_relative_to(root):
                out.add(p)
    return out


def _name_pid(name: str, host: str) -> int | None:
    """The pid in an event file's name, as TensorBoard's and TF2's writers name them:
    ``events.out.tfevents.<time>.<host>.<pid>.<n>...`` (None when the name carries none, or another host's)."""
    m = re.match(rf"events\.out\.tfevents\.\d+\.{re.escape(host)}\.(\d+)(\.|$)", name)
    return int(m.group(1)) if m else None


def _owner_dir(event_file: Path) -> Path:
    d = event_file.parent
    while d.name == "tf" or _ADD_HPARAMS_DIR.match(d.name):
        d = d.parent
    return d


def read_run_dir_file(path: Path) -> Path | None:
    """The run directory a protocol-aware script wrote to ``$VAEDIAG_RUN_DIR_FILE`` (``path``), once the write
    is complete (a trailing newline) and the directory exists; else None."""
    try:  # safeio: a FIFO or /dev/zero put in its place never blocks or floods the watchdog
        text = read_text(path, what="run-directory file", max_bytes=1 << 16, missing_ok=True) or ""
    except VaediagError:
        text = ""
    if text.endswith("\n") and text.strip():  # the newline says the write is complete
        p = Path(text.strip())
        if p.is_dir():
            return p
    return None


def _child_evidence(tree: set[int], root: Path, new: set[Path], *, proc: bool) -> dict[Path, str]:
    """Event files that are the child's, each with why: held open by its process tree (with ``/proc``), or new
    and named after one of its pids."""
    evidence: dict[Path, str] = {}
    if proc:
        evidence.update((f, "held open by the training process") for f in _open_event_files(tree, root))
    host = socket.gethostname()
    for f in new:
        if _name_pid(f.name, host) in tree:
            evidence.setdefault(f, "named after the training process's pid")
    return evidence


def _owners_by_first_seen(evidence: Mapping[Path, str]) -> list[Path]:
    """The run directories of the evidence's files, the one whose files were first written first."""
    def first_seen(d: Path) -> float:
        times = []
        for f in evidence:
            if _owner_dir(f) == d:
                try:
                    times.append(f.stat().st_mtime)
                except OSError:
                    pass
        return min(times, default=0.0)

    return sorted({_owner_dir(f) for f in evidence}, key=first_seen)


def find_foreign_run_dir(child: "_Child", *, logdir: Path, root: Path,
                         say: Callable[[str], None]) -> tuple[Path, str] | None:
    """The run of a script that does not name it: only event files under ``root`` (the resolved ``logdir``,
    which messages show as given) that are the child's by evidence. On Linux: files the child's process tree
    holds open (``/proc/<pid>/fd``), or new files named after a pid of that tree (TensorBoard's writer, which
    torch's SummaryWriter uses, opens the file for each write, and names it ``...<host>.<pid>...``). Without
    ``/proc``: new files named after the child's pid, else the new run if it is the only one (and has stayed
    so for ``_SOLE_SETTLE_S`` while the child runs, or the child has ended). Anything else is another
    process's run: ``say`` is told (it shows each text once), never attached to (no control.json is ever
    written there).

    Returns ``(run directory, how it was found)`` or None; updates ``child.tree`` (every pid of its process
    tree seen so far) and ``child.sole`` (the settle rule's clock)."""
    c = child
    if not root.is_dir():
        say(f"watch: --logdir {logdir} does not exist yet; waiting for the training script to create it")
        return None
    new = event_files(root) - c.before
    proc = _proc_available()
    c.tree |= _process_tree(c.proc.pid) if proc else {c.proc.pid}
    evidence = _child_evidence(c.tree, root, new, proc=proc)
    if evidence:
        owners = _owners_by_first_seen(evidence)
        if len(owners) > 1:  # all of them the child's: follow the first
            say(f"watch: the training process writes several runs under {logdir}; following {owners[0]}")
        why = next(evidence[f] for f in sorted(evidence) if _owner_dir(f) == owners[0])
        return owners[0], f"event files under {logdir} {why}"
    if not new:
        return None
    others = sorted({_owner_dir(f) for f in new})
    shown = ", ".join(str(d) for d in others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    if proc:
        say(f"watch: new event files under {logdir} ({shown}) are not the training process's "
            f"(none is held open by it or named after its pid); not attaching to another "
            f"process's run, still waiting for its own")
        return None
    if len(others) == 1:
        now = time.monotonic()
        if c.sole is None or c.sole[0] != others[0]:
            c.sole = (others[0], now)
        if c.proc.poll() is not None or now - c.sole[1] >= _SOLE_SETTLE_S:  # ended: the set is final
            return others[0], f"new event files under {logdir} (the only new run since the start)"
        return None
    c.sole = None
    say(f"watch: several new runs under {logdir} ({shown}) and no way to tell which is the "
        f"training process's; not guessing, still waiting (give --logdir the script's own log "
        f"directory, or have it name its run in ${RUN_DIR_FILE_ENV})")
    return None


def find_checkpoint(
    *, since: float, run_dir: Path | None, roots: Sequence[Path], explicit: str | None = None
) -> Path | None:
    """The checkpoint the stopped child wrote: ``explicit`` (a path or glob; newest match), else the newest
    ``*.pt``/``*.pth``/``*.ckpt`` modified at or after ``since``, looked for in this order:

    1. in the run's own ``<run_dir>/checkpoints/`` (where ``python -m train`` and Lightning keep them);
    2. under ``roots``, in a directory that mirrors the run directory's last three parts (the older layout
       ``checkpoints/<project>/<name>/version_N`` beside ``logs/<project>/<name>/version_N``);
    3. anywhere under ``roots``.

    Temporary files (dot-names, ``*.tmp``) never count."""
    if explicit:
        import glob

        matches = [Path(p) for p in glob.glob(explicit)] if glob.has_magic(explicit) else [Path(explicit)]
        matches = [p for p in matches if p.is_file()]
        return max(matches, key=lambda p: p.stat().st_mtime) if matches else None

    def newer(files: Any) -> dict[Path, float]:
        out: dict[Path, float] = {}
        for p in files:
            if p.suffix not in _CKPT_SUFFIXES or p.name.startswith("."):
                continue
            try:
                mtime = p.stat().st_mtime
            except OSError:
                continue
            if mtime >= since - 1.0:  # file-system timestamps can be coarse
                out[p.resolve()] = mtime
        return out

    if run_dir is not None:
        own = Path(run_dir).resolve() / RUN_CHECKPOINT_DIR
        beside = newer(walk_files(own, max_depth=2)) if own.is_dir() else {}
        if beside:
            return max(beside, key=beside.get)
    found: dict[Path, float] = {}
    for root in roots:
        if root.is_dir():
            found.update(newer(walk_files(root)))
    if not found:
        return None
    if run_dir is not None:
        tail = Path(run_dir).resolve().parts[-3:]  # whole names: "myproj" must not pass for "proj"
        mirrored = [p for p in found if p.parent.parts[-3:] == tail]
        if mirrored:
            return max(mirrored, key=found.get)
    return max(found, key=found.get)
