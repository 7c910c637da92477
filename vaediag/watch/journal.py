"""The watchdog's journal: ``watchdog.jsonl`` in the run directory, one JSON object per decision.

Append-only: every decision, applied or not, is one line, written with a single ``write`` on a file
opened in append mode, flushed and fsynced before the next one, so a crash or SIGKILL of the watchdog
loses at most the line being written and never damages earlier ones. A writer that finds the file ending
in a torn line (a watchdog killed mid-write) starts its own on a new line: it never appends onto the torn
one and never truncates. :func:`read_journal` keeps every complete line and skips (and
:func:`load_journal` counts) each line that is not a JSON object: torn, damaged or foreign. The journal
must be a regular file: a FIFO, a device or a symbolic link named ``watchdog.jsonl`` is refused.
:func:`run_decisions` is the report's reader: a run's decisions, never an exception for a damaged journal.

A line (keys in this order)::

    {"time": "2026-11-24T02:00:00+00:00", "event": "decision", "epoch": 9, "action": "set_kl_weight",
     "kl_weight": 1e-06, "mode": "vae", "reason": "kl = 1535 > 500 after epoch 10: ...",
     "declined": null, "proposed_action": null, "proposed_kl_weight": null,
     "applied": true, "seq": 1, "via": "control", "metrics": {"kl": 1535.0, ...},
     "policy": "ladder", "params": {...}, "state": {...}}

``epoch`` is 0-based (the tidy frame's convention; "after epoch 10" is 9). ``applied`` is true when the
decision reached the training process: ``via`` says how (``control`` for control.json with its ``seq``,
``restart`` for a relaunch, ``in_process`` for :class:`KLWatchdog`). Other events share the file:
``start`` (command, policy, options), ``restart`` (old and new command line), ``exit`` (the child's exit
code), ``note`` (anything else worth keeping, e.g. a control file that could not be written).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from vaediag.errors import InputError
from vaediag.safeio import kind_of, read_bytes
from vaediag.watch.control import JOURNAL_FILENAME, now_iso
from vaediag.watch.policies import Decision

__all__ = ["JOURNAL_FILENAME", "JOURNAL_MAX_BYTES", "Journal", "JournalContents", "read_journal", "load_journal",
           "RunDecisions", "run_decisions", "decision_record"]

#: A journal larger than this is not read (a decision line is ~1-2 KB: this is ~100,000 epochs).
JOURNAL_MAX_BYTES = 256 << 20


def _clean(x: Any) -> Any:
    """JSON has no NaN or inf: write them as strings so the line stays strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def decision_record(
    decision: Decision,
    *,
    metrics: Mapping[str, float],
    policy: Any,
    applied: bool,
    seq: int | None = None,
    via: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The journal line for one decision (see the module docstring for the keys)."""
    rec: dict[str, Any] = {"time": now_iso(), "event": "decision"}
    rec.update(decision.to_dict())
    rec.update(applied=applied, seq=seq, via=via, metrics=dict(metrics), policy=policy.name,
               params=policy.params(), state=policy.state_dict())
    rec.update(extra)
    return rec


class Journal:
    """Append-only JSON-lines file; each :meth:`append` is durable when it returns."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if p.is_dir():
            p = p / JOURNAL_FILENAME
        self.path = p
        self._fd = -1
        # O_NONBLOCK: a FIFO never blocks the open; O_NOFOLLOW: a link never sends our lines elsewhere.
        flags = (os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            fd = os.open(p, flags, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise InputError(f"the watchdog journal {p} is a symbolic link; not appending through it "
                                 f"(move it away to watch this run)") from None
            if exc.errno == errno.ENXIO:
                raise InputError(f"the watchdog journal {p} is not a regular file; move it away to watch this run") from None
            raise InputError(f"cannot write the watchdog journal {p}: {exc.strerror}") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise InputError(f"the watchdog journal {p} is {kind_of(mode)}, not a regular file; move it away "
                             f"to watch this run")
        os.set_blocking(fd, True)
        self._fd = fd

    def _ends_torn(self) -> bool:
        """True when the file's last byte is not a newline: a line cut by a crash mid-write."""
        size = os.fstat(self._fd).st_size
        return size > 0 and os.pread(self._fd, 1, size - 1) != b"\n"

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(_clean(record), allow_nan=False) + "\n"
        data = line.encode("utf-8")
        if self._ends_torn():  # never continue someone's torn line: ours starts on a line of its own
            data = b"\n" + data
        # One write per line on an O_APPEND descriptor: lines never interleave or split across calls.
        n = os.write(self._fd, data)
        while n < len(data):  # pragma: no cover - short writes only on full disks / signals
            n += os.write(self._fd, data[n:])
        os.fsync(self._fd)

    def event(self, event: str, **fields: Any) -> None:
        """Append a non-decision event (start, restart, exit, note)."""
        self.append({"time": now_iso(), "event": event, **fields})

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class JournalContents(NamedTuple):
    """What :func:`load_journal` found: the records, and how many lines it skipped as not JSON objects."""

    records: list[dict[str, Any]]
    skipped: int


def load_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Every complete record of a journal (a run directory or the file), and the count of lines skipped.

    A line that is not a JSON object (torn by a crash mid-write, damaged, not UTF-8) is skipped and
    counted; every other line is kept, before and after it. Blank lines are not counted.

    Raises:
        InputError: the journal does not exist, is not a regular file, or is larger than
            :data:`JOURNAL_MAX_BYTES`.
    """
    p = Path(path)
    if p.is_dir():
        p = p / JOURNAL_FILENAME
    if not os.path.lexists(p):
        raise InputError(f"no watchdog journal at {p}")
    data = read_bytes(p, what="watchdog journal", max_bytes=JOURNAL_MAX_BYTES)
    assert data is not None
    out: list[dict[str, Any]] = []
    skipped = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            skipped += 1
            continue
        if isinstance(rec, dict):
            out.append(rec)
        else:
            skipped += 1
    return JournalContents(out, skipped)


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a journal (a run directory or the file); lines that are not JSON objects
    (a torn last line, a damaged one anywhere) are skipped. :func:`load_journal` also counts them.

    Raises:
        InputError: the journal does not exist or cannot be read (see :func:`load_journal`).
    """
    return load_journal(path).records


class RunDecisions(NamedTuple):
    """A run's journal as :func:`run_decisions` finds it: the decision records (``event == "decision"``, in
    order), how many lines were skipped as not JSON objects, and why it could not be read (else None)."""

    decisions: tuple[dict[str, Any], ...]
    skipped: int = 0
    error: str | None = None


def run_decisions(run_dir: str | os.PathLike[str] | None) -> RunDecisions | None:
    """The watchdog's decisions beside a run, for a reader that must not fail on a damaged journal (the
    report's comparison): None when ``run_dir`` is None or holds no journal (no regular file named
    ``watchdog.jsonl``); a journal that :func:`load_journal` refuses (too large, unreadable) gives its
    message as ``error`` and no decisions instead of raising."""
    if run_dir is None:
        return None
    p = Path(run_dir) / JOURNAL_FILENAME
    if not p.is_file():
        return None
    try:
        records, skipped = load_journal(p)
    except InputError as exc:
        return RunDecisions((), 0, exc.message)
    return RunDecisions(tuple(r for r in records if r.get("event") == "decision"), skipped)
