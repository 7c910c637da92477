"""The control file: how the watchdog tells a running training loop to change kl_weight or mode.

``control.json`` in the run directory (ARCHITECTURE)::

    {"seq": 3, "kl_weight": 1e-07, "mode": "vae", "reason": "...", "issued_at": "2026-11-24T02:00:00+00:00"}

The writer writes a temporary file in the same directory, fsyncs it and renames it over the target, so a
reader sees either the old file or the new one, never half of one. The reader validates every field and
raises :class:`ControlFileError` for anything malformed; the training loop reports that and carries on
with its current settings. A loop applies each ``seq`` once (it remembers the last seq it applied).
``reason`` and ``issued_at`` are optional (a file without them is valid); the training loop prints the
reason and logs it as text (``terms.DECISION_TEXT_TAG``) through :func:`reason_line`: one line, at most
:data:`REASON_MAX_CHARS` characters, whatever the file holds.

Handshake: a supervisor that starts the training process sets ``VAEDIAG_RUN_DIR_FILE`` to a fresh file, where
a loop that knows the protocol writes its absolute run directory and a newline (atomically) as soon as it has
one, and ``VAEDIAG_WATCHDOG_PID`` to its own pid. At
each epoch start (after the first) such a loop calls :func:`wait_for_watchdog`, which waits until the
watchdog has journalled its decision about the epoch that just ended (a ``decision`` line in
``watchdog.jsonl`` with that epoch), so a change decided after epoch ``e`` applies from epoch ``e + 1``.
The wait ends early when the watchdog process is gone, and after ``VAEDIAG_WATCHDOG_WAIT`` seconds (20) at
most, so a dead or stuck watchdog never stalls training for long.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from vaediag.atomic import atomic_write
from vaediag.errors import ControlFileError
from vaediag.safeio import read_text
from vaediag.structured import loads_json, short_repr

__all__ = [
    "CONTROL_FILENAME",
    "RUN_CHECKPOINT_DIR",
    "MODES",
    "RUN_DIR_FILE_ENV",
    "WATCHDOG_PID_ENV",
    "WATCHDOG_WAIT_ENV",
    "Control",
    "read_control",
    "write_control",
    "now_iso",
    "reason_line",
    "REASON_MAX_CHARS",
    "wait_for_watchdog",
]

CONTROL_FILENAME = "control.json"
JOURNAL_FILENAME = "watchdog.jsonl"  # written by vaediag.watch.journal
RUN_DIR_FILE_ENV = "VAEDIAG_RUN_DIR_FILE"
#: The folder of a run directory that holds its checkpoints (the trainer's default layout, Lightning's name),
#: where ``watch --restart`` looks first.
RUN_CHECKPOINT_DIR = "checkpoints"
WATCHDOG_PID_ENV = "VAEDIAG_WATCHDOG_PID"
WATCHDOG_WAIT_ENV = "VAEDIAG_WATCHDOG_WAIT"
_DEFAULT_WAIT_S = 20.0
MODES = ("vae", "ae")
_FIELDS = ("seq", "kl_weight", "mode", "reason", "issued_at")
#: A control file is a few hundred bytes; anything past 64 KiB is not one of ours.
CONTROL_MAX_BYTES = 64 << 10


#: The longest reason a reader shows: a policy's reason is one line with its numbers, far shorter.
REASON_MAX_CHARS = 300


def reason_line(reason: str, *, limit: int = REASON_MAX_CHARS) -> str:
    """``reason`` as one line of at most ``limit`` characters: whitespace runs (newlines too) become one
    space, other control characters are dropped, and a longer text is cut with an ellipsis.

    >>> reason_line("kl = 1535 > 500\\n  at epoch 10")
    'kl = 1535 > 500 at epoch 10'
    >>> len(reason_line("x" * 1000))
    300
    """
    text = " ".join("".join(c for c in part if c.isprintable()) for part in str(reason).split())
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def now_iso() -> str:
    """Current UTC time as ISO 8601 with offset, seconds precision."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Control:
    """One control decision. ``kl_weight`` is the weight to use from the next epoch on."""

    seq: int
    kl_weight: float
    mode: str = "vae"
    reason: str = ""
    issued_at: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or not 0 <= self.seq < 2**63:
            raise ControlFileError(f"control seq must be an integer from 0 to 2**63 - 1, got {short_repr(self.seq)}")
        if isinstance(self.kl_weight, bool) or not isinstance(self.kl_weight, (int, float)):
            raise ControlFileError(f"control kl_weight must be a number, got {short_repr(self.kl_weight)}")
        # (an int beyond float range would overflow math.isfinite; compare it first)
        if (isinstance(self.kl_weight, int) and abs(self.kl_weight) > 1e308) or not math.isfinite(self.kl_weight) \
                or self.kl_weight < 0:
            raise ControlFileError(f"control kl_weight must be finite and >= 0, got {short_repr(self.kl_weight)}")
        if self.mode not in MODES:
            raise ControlFileError(f"control mode {short_repr(self.mode)} is unknown (choose {', '.join(MODES)})")
        if not isinstance(self.reason, str) or not isinstance(self.issued_at, str):
            raise ControlFileError("control reason and issued_at must be strings")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)


def read_control(path: str | os.PathLike[str]) -> Control | None:
    """Read ``control.json`` (or the file at ``path``); None when there is none.

    Raises:
        ControlFileError: the file exists but is not a complete, valid control object.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CONTROL_FILENAME
    # safeio: a FIFO never blocks the reader (the trainer, the watchdog), /dev/zero or a runaway file is
    # refused by size before it is read; structured: nesting or numbers the parser chokes on are errors too.
    text = read_text(p, what="control file", max_bytes=CONTROL_MAX_BYTES, error=ControlFileError, missing_ok=True)
    if text is None:
        return None
    data = loads_json(text, where=str(p), error=ControlFileError)
    if not isinstance(data, dict):
        raise ControlFileError(f"{p} must hold a JSON object, got {type(data).__name__}; ignored")
    unknown = sorted(set(data) - set(_FIELDS))
    missing = [k for k in ("seq", "kl_weight") if k not in data]
    if unknown:
        raise ControlFileError(f"{p}: unknown key(s) {short_repr(unknown)} (allowed: {', '.join(_FIELDS)}); ignored")
    if missing:
        raise ControlFileError(f"{p}: missing key(s) {missing}; ignored")
    return Control(**data)


def write_control(run_dir: str | os.PathLike[str], control: Control) -> Path:
    """Atomically write ``control`` to ``run_dir/control.json``: temp file, fsync, rename, fsync the directory.

    Raises:
        ControlFileError: ``control.json`` exists and is not a regular file (a FIFO, a device, a link, a
            directory): it is never replaced.
    """
    target = Path(run_dir) / CONTROL_FILENAME
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        from vaediag.safeio import kind_of

        raise ControlFileError(f"{target} is {kind_of(mode)}, not a regular file; it is not replaced")
    return atomic_write(target, control.to_json() + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


_JOURNAL_CHUNK = 4 << 20


def _read_new(path: Path, offset: int) -> bytes:
    """Up to 4 MiB of a regular file from ``offset``; a FIFO or device in its place is an OSError, never a
    blocked open (O_NONBLOCK) or an endless read (``/dev/zero``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return os.pread(fd, _JOURNAL_CHUNK, offset)
    finally:
        os.close(fd)


def _journal_has_decision(path: Path, epoch: int, state: dict[str, int]) -> bool:
    """True once ``path`` holds a decision line for ``epoch`` or later; reads only new complete lines."""
    try:
        chunk = _read_new(path, state.get("offset", 0))
    except OSError:
        return False
    end = chunk.rfind(b"\n") + 1  # a torn last line waits for its newline
    state["offset"] = state.get("offset", 0) + end
    for line in chunk[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == "decision":
            e = rec.get("epoch")
            if isinstance(e, int) and not isinstance(e, bool):
                state["latest"] = max(state.get("latest", -1), e)
    return state.get("latest", -1) >= epoch


def wait_for_watchdog(
    run_dir: str | os.PathLike[str],
    epoch: int,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    poll_s: float = 0.05,
    _state: dict[str, int] | None = None,
) -> str:
    """Wait until a supervising watchdog has journalled its decision about ``epoch`` (0-based).

    Does nothing unless ``VAEDIAG_WATCHDOG_PID`` is set. Returns why the wait ended: ``"unsupervised"``,
    ``"decided"``, ``"watchdog gone"``, ``"stop requested"`` or ``"timeout"``. Pass the same ``_state``
    dict on every call to read the journal incrementally.
    """
    raw = os.environ.get(WATCHDOG_PID_ENV)
    if not raw:
        return "unsupervised"
    try:
        pid = int(raw)
        limit = float(os.environ.get(WATCHDOG_WAIT_ENV, _DEFAULT_WAIT_S))
    except ValueError:
        return "unsupervised"
    state = _state if _state is not None else {}
    path = Path(run_dir) / JOURNAL_FILENAME
    deadline = time.monotonic() + max(0.0, limit)
    while True:
        if _journal_has_decision(path, epoch, state):
            return "decided"
        if should_stop():
            return "stop requested"
        if not _pid_alive(pid):
            return "watchdog gone"
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(poll_s)
