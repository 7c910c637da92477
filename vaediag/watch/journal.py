"""The watchdog's journal: ``watchdog.jsonl`` in the run directory, one JSON object per decision.

Append-only: every decision, applied or not, is one line, written with a single ``write`` on a file
opened in append mode, flushed and fsynced before the next one, so a crash or SIGKILL of the watchdog
loses at most the line being written and never damages earlier ones. :func:`read_journal` skips a torn
last line.

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

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from vaediag.errors import InputError
from vaediag.watch.control import JOURNAL_FILENAME, now_iso
from vaediag.watch.policies import Decision

__all__ = ["JOURNAL_FILENAME", "Journal", "read_journal", "decision_record"]


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
        try:
            self._fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot write the watchdog journal {p}: {exc.strerror}") from None

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(_clean(record), allow_nan=False) + "\n"
        data = line.encode("utf-8")
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


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a journal (a run directory or the file). A torn last line is skipped.

    Raises:
        InputError: the journal does not exist or a line other than the last is not JSON.
    """
    p = Path(path)
    if p.is_dir():
        p = p / JOURNAL_FILENAME
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no watchdog journal at {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read watchdog journal {p}: {exc}") from None
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline yet: a line cut by a crash mid-write
                break
            raise InputError(f"{p}: line {i + 1} is not JSON; the journal is damaged") from None
    return out
