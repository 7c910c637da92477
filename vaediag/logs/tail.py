"""Tail a run's event files: each :meth:`Tail.poll` returns only the rows from newly appended bytes.

The watchdog polls a run while it trains. Each poll lists the run's event files (noticing new ones),
reads each from where it stopped to its current end (:class:`stream.FileCursor`: a record cut short
at poll time is completed on a later poll and never read twice; damage is skipped and counted, and the
bytes held back stay bounded), and returns the decoded rows as a tidy frame. The cost is proportional to
the new bytes, plus one directory listing and one ``fstat`` per file (``bytes_read`` counts the bytes).

State kept across polls, so that consecutive polls agree with each other:

* the KL sign decision per tag: made on the first poll where the tag has a non-zero finite value
  (negated when its values are <= 0), then applied to every later poll; a later value that
  contradicts it adds a note instead of flipping the decision;
* the epoch points seen so far (the run's ``epoch`` tag), and, for runs without one, the number of val
  points per tag (the n-th val point is epoch n), then ``steps_per_epoch``.

Rows are deduplicated within a poll (a resumed run re-logging a step in a new file yields that row
again in a later poll; callers that keep history keep the latest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vaediag.logs.decode import TagRegistry
from vaediag.logs.discover import _owner, is_event_file
from vaediag.logs.events import EventMeta
from vaediag.logs.frame import FrameBuilder, empty_frame
from vaediag.logs.stream import FileCursor, Rows
from vaediag.terms import TagMap

__all__ = ["Tail"]


@dataclass
class Tail:
    """Incremental reader of one run directory (its own event files, ``tf/`` and add_hparams children).

    Args:
        run_dir: the run directory to follow (it may not exist yet).
        run: the run id for the ``run`` column (default: the directory name).
        tags: extra tag mappings.
        steps_per_epoch: last-resort epoch alignment, as in :func:`vaediag.load`.
    """

    run_dir: Path
    run: str | None = None
    tags: TagMap | None = None
    steps_per_epoch: int | None = None
    meta: EventMeta = field(default_factory=EventMeta)
    notes: list[str] = field(default_factory=list)  # sign decisions and their contradictions
    warnings: list[str] = field(default_factory=list)  # files that could not be read
    _files: dict[Path, FileCursor] = field(default_factory=dict, repr=False)
    _reg: TagRegistry = field(default_factory=TagRegistry, repr=False)
    _sign: dict[str, bool] = field(default_factory=dict, repr=False)
    _contradicted: set = field(default_factory=set, repr=False)
    _epoch_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _epoch_values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64), repr=False)
    _val_seen: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        if self.run is None:
            self.run = self.run_dir.name

    @property
    def bytes_read(self) -> int:
        """Bytes read from all event files so far."""
        return sum(c.bytes_read for c in self._files.values())

    @property
    def pending_bytes(self) -> int:
        """Bytes held back for the next poll (incomplete records; at most 11 per file in damage)."""
        return sum(c.pending_bytes for c in self._files.values())

    @property
    def bad_crc(self) -> int:
        return sum(c.bad_crc for c in self._files.values())

    def event_files(self) -> list[Path]:
        """The run's event files right now."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.run_dir):
            # Only the run dir itself, tf/ and add_hparams children belong to this run (discover's rule).
            if _owner(Path(dirpath).relative_to(self.run_dir)) != Path("."):
                dirnames[:] = []
                continue
            out.extend(Path(dirpath) / f for f in filenames if is_event_file(f))
        return sorted(out, key=lambda f: (f.name, str(f)))

    def poll(self) -> pd.DataFrame:
        """Rows decoded from bytes appended since the last poll (a tidy frame, maybe empty)."""
        parts: list[Rows] = []
        for path in self.event_files():
            cur = self._files.get(path)
            if cur is None:
                cur = self._files[path] = FileCursor(path)
            try:
                rows = cur.read(self._reg, self.meta)
            except OSError as exc:  # deleted or unreadable between listing and reading: try next poll
                msg = f"{path.name}: cannot read ({exc.strerror or exc})"
                if msg not in self.warnings:
                    self.warnings.append(msg)
                continue
            if len(rows):
                parts.append(rows)
        if not parts:
            return empty_frame()
        rows = Rows.concat(parts)
        builder = FrameBuilder(self._reg.names, tag_map=self.tags, steps_per_epoch=self.steps_per_epoch)
        self.notes.extend(
            builder.add(
                str(self.run), rows.codes, rows.steps, rows.values, rows.wall_times, sign=self._sign_rule, epochs=self._align
            )
        )
        return builder.finish()

    def _sign_rule(self, values: np.ndarray, bounds: list[tuple[int, int, str]]) -> list[str]:
        notes = []
        for a, b, name in bounds:
            v = values[a:b]
            fin = v[np.isfinite(v)]
            decided = self._sign.get(name)
            if decided is None:
                if not (fin != 0).any():
                    continue  # nothing to decide on yet
                decided = self._sign[name] = bool((fin <= 0).all())
                if decided:
                    n = f"{len(fin)} value{'s' if len(fin) != 1 else ''}"
                    notes.append(f"{name!r} is <= 0 ({n} so far): logged as -KL, sign flipped")
            elif decided and (fin > 0).any() and name not in self._contradicted:
                self._contradicted.add(name)
                notes.append(f"{name!r} was read as -KL but now has positive values; sign kept flipped")
            if decided:
                np.negative(v, out=v)
        return notes

    def _align(self, steps, splits, codes, names, es, ev) -> np.ndarray:
        if len(es):
            merged = dict(zip(self._epoch_steps.tolist(), self._epoch_values.tolist()))
            merged.update(zip(es.tolist(), ev.tolist()))
            keys = sorted(merged)
            self._epoch_steps = np.asarray(keys, dtype=np.int64)
            self._epoch_values = np.asarray([merged[k] for k in keys], dtype=np.float64)
        out = np.full(len(steps), np.nan)
        if len(self._epoch_steps):
            idx = np.searchsorted(self._epoch_steps, steps, side="right") - 1
            idx[idx < 0] = 0
            return self._epoch_values[idx]
        is_val = splits == "val"
        if is_val.any():
            # The n-th val point of a tag (counting earlier polls) is epoch n; rows are sorted by tag, step.
            vcodes = codes[is_val]
            starts = np.r_[0, np.flatnonzero(vcodes[1:] != vcodes[:-1]) + 1]
            counts = np.diff(np.r_[starts, len(vcodes)])
            offset = np.zeros(len(starts), dtype=np.int64)
            for i, st in enumerate(starts.tolist()):
                name = names[int(vcodes[st])]
                offset[i] = self._val_seen.get(name, 0)
                self._val_seen[name] = int(offset[i] + counts[i])
            rank = np.arange(len(vcodes)) - np.repeat(starts, counts) + np.repeat(offset, counts)
            out[is_val] = rank
        if self.steps_per_epoch:
            rest = ~is_val
            out[rest] = steps[rest] // self.steps_per_epoch
        return out
