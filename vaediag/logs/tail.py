"""Tail a run's event files: each :meth:`Tail.poll` returns only the rows from newly appended bytes.

The watchdog polls a run while it trains. Each poll lists the run's event files (noticing new ones),
reads each from where it stopped to its current end (:class:`stream.FileCursor`: a record cut short
at poll time is completed on a later poll and never read twice; damage is skipped and counted, and the
bytes held back stay bounded), and returns the decoded rows as a tidy frame. The cost is proportional to
the new bytes, plus one directory listing and one ``fstat`` per file (``bytes_read`` counts the bytes).

Each poll's rows go through the same rules as a whole-run read, by one
:class:`~vaediag.logs.aligner.EpochAligner` kept across polls (``live``), so that consecutive polls agree
with each other:

* the KL sign decision per tag: made on the first poll where the tag has a non-zero finite value
  (negated when its values are <= 0), then applied to every later poll; a later value that
  contradicts it adds a note instead of flipping the decision;
* the epoch points seen so far (with their wall times, and whether the series is fractional), the
  number of val points per tag for runs without an epoch tag, and the evidence of the cadence and
  post-fit split rules (:class:`~vaediag.logs.conventions.RunHistory`). A decision made on a later poll
  (a tag read as val from its cadence) does not relabel rows already returned.

Rows are deduplicated within a poll (a resumed run re-logging a step in a new file yields that row
again in a later poll; callers that keep history keep the latest).

A run directory without event files is tailed through its metrics log (:mod:`vaediag.logs.sources`, chosen
by :func:`~vaediag.logs.discover.run_logs`, the reader's rule): a CSV or JSONL file is read from where it
stopped, complete lines only (a half-written last line waits for its newline), and read again from the top
when Lightning rewrote it with a wider header (rows already returned are not returned again);
``trainer_state.json`` (rewritten whole at each checkpoint) returns its new ``log_history`` entries. The
kind of log is decided at the first poll that finds one (event files win) and kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vaediag.errors import CorruptLogError
from vaediag.logs.decode import TagRegistry
from vaediag.logs.discover import run_logs
from vaediag.logs.events import EventMeta
from vaediag.logs.aligner import EpochAligner
from vaediag.logs.notes import Note
from vaediag.logs.frame import FrameBuilder, empty_frame
from vaediag.logs.sources import SourceCursor
from vaediag.logs.stream import FileCursor, Rows
from vaediag.terms import TagMap, resolve

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
    facts: list[Note] = field(default_factory=list)  # sign decisions and their contradictions, split rules
    unmapped_tags: list[str] = field(default_factory=list)  # scalar tags no canonical term names, sorted
    warnings: list[str] = field(default_factory=list)  # files that could not be read
    _files: dict[Path, FileCursor] = field(default_factory=dict, repr=False)
    _reg: TagRegistry = field(default_factory=TagRegistry, repr=False)
    _aligner: EpochAligner = field(init=False, repr=False)  # the frame's rules, with their state across polls
    _source: SourceCursor | None = field(default=None, repr=False)  # the metrics log, for a run without event files
    _kind: str | None = field(default=None, repr=False)  # "events" or "source", once a poll found a log

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        if self.run is None:
            self.run = self.run_dir.name
        # The reader's limits on distinct tags (decode.MAX_UNMAPPED_TAGS, MAX_TAGS): a run logging a
        # million per-sample tags is tailed in bounded memory; what is past them is counted in ``meta``.
        self._reg = TagRegistry.limited(lambda name: resolve(name, self.tags)[0])
        self._aligner = EpochAligner(steps_per_epoch=self.steps_per_epoch, live=True)

    @property
    def notes(self) -> list[str]:
        """The facts' text, for people."""
        return [f.message for f in self.facts]

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
        if not self.run_dir.is_dir():
            return []
        return run_logs(self.run_dir)[0]

    def files(self) -> list[Path]:
        """The files the run is read from right now: its event files, or its metrics log."""
        if not self.run_dir.is_dir():
            return []
        events, source = run_logs(self.run_dir)
        if events and self._kind != "source":
            return events
        if self._kind == "source" and self._source is not None:
            return [self._source.path] if source is None else [source.path]
        return [source.path] if source is not None else []

    @property
    def source_label(self) -> str | None:
        """What the run is read from, for people, once known ("TensorBoard event files", "Lightning CSVLogger")."""
        if self._kind == "events":
            return "TensorBoard event files"
        return self._source.label if self._source is not None else None

    def poll(self) -> pd.DataFrame:
        """Rows decoded from bytes appended since the last poll (a tidy frame, maybe empty)."""
        if not self.run_dir.is_dir():
            return empty_frame()
        events, source = run_logs(self.run_dir)
        if self._kind is None:
            self._kind = "events" if events else "source" if source is not None else None
        if self._kind == "source":
            return self._poll_source(source)
        parts: list[Rows] = []
        for path in events:
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
        return self._frame(rows.codes, rows.steps, rows.values, rows.wall_times)

    def _poll_source(self, source) -> pd.DataFrame:
        if source is not None and (self._source is None or self._source.path != source.path):
            if self._source is None:
                self._source = SourceCursor(source)
            else:  # HF: a newer checkpoint's trainer_state.json holds the same history and more
                self._source.source = source
                self._source._state_key = None
        if self._source is None:
            return empty_frame()
        try:
            sr = self._source.read()
        except CorruptLogError as exc:  # not a metrics log, gone, unreadable: said once, tried again next poll
            msg = exc.message
            if msg not in self.warnings:
                self.warnings.append(msg)
            return empty_frame()
        for w in self._source.warnings():
            if w not in self.warnings:
                self.warnings.append(w)
        if not len(sr):
            return empty_frame()
        lut = np.asarray([self._reg.admit(n) for n in sr.names], dtype=np.int64)
        codes = lut[sr.codes]
        keep = codes >= 0
        return self._frame(codes[keep].astype(np.int32), sr.steps[keep], sr.values[keep], sr.order[keep],
                           shown_walls=sr.walls[keep])

    def _frame(self, codes: np.ndarray, steps: np.ndarray, values: np.ndarray, wall_times: np.ndarray, *,
               shown_walls: np.ndarray | None = None) -> pd.DataFrame:
        """One poll's rows as a tidy frame, through the aligner kept across polls; records its notes."""
        builder = FrameBuilder(self._reg.names, tag_map=self.tags)
        result = builder.add(str(self.run), codes, steps, values, wall_times, aligner=self._aligner,
                             shown_walls=shown_walls)
        self.facts.extend(result.facts)
        self.unmapped_tags = sorted(set(self.unmapped_tags) | set(result.unmapped))
        return builder.finish()
