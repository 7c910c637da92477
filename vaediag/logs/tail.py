"""Tail a run's event files: each :meth:`Tail.poll` returns only the rows from newly appended bytes.

The watchdog polls a run while it trains. Each poll stats the run's event files (noticing new ones), reads
from each file's last offset to its end, keeps an incomplete last record for the next poll, and returns
the decoded rows as a tidy frame. The cost is proportional to the new bytes (plus one directory listing
and one stat per file). Epochs are aligned with the run's ``epoch`` tag as seen so far.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vaediag.logs.discover import _ADD_HPARAMS_DIR, is_event_file
from vaediag.logs.events import EventMeta, ScalarRows, decode_records
from vaediag.logs.frame import RunRows, build_frame, empty_frame
from vaediag.logs.records import scan
from vaediag.terms import TagMap, resolve

__all__ = ["Tail"]


@dataclass
class _FileState:
    path: Path
    offset: int = 0  # bytes consumed (complete records or damage)
    pending: bytes = b""  # an incomplete record kept for the next poll
    bad_crc: int = 0


@dataclass
class Tail:
    """Incremental reader of one run directory (its own event files, ``tf/`` and add_hparams children).

    Args:
        run_dir: the run directory to follow.
        run: the run id for the ``run`` column (default: the directory name).
        tags: extra tag mappings.
    """

    run_dir: Path
    run: str | None = None
    tags: TagMap | None = None
    meta: EventMeta = field(default_factory=EventMeta)
    _files: dict[Path, _FileState] = field(default_factory=dict)
    _epoch_steps: list[int] = field(default_factory=list)
    _epoch_values: list[float] = field(default_factory=list)
    bytes_read: int = 0  # total new bytes read so far (for tests and benchmarks)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        if self.run is None:
            self.run = self.run_dir.name

    def event_files(self) -> list[Path]:
        """The run's event files right now."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.run_dir):
            rel = Path(dirpath).relative_to(self.run_dir)
            # Only the run dir itself, tf/ and add_hparams children belong to this run.
            if rel != Path(".") and not all(p == "tf" or _ADD_HPARAMS_DIR.match(p) for p in rel.parts):
                dirnames[:] = []
                continue
            out.extend(Path(dirpath) / f for f in filenames if is_event_file(f))
        return sorted(out)

    def poll(self) -> pd.DataFrame:
        """Rows decoded from bytes appended since the last poll (a tidy frame, maybe empty)."""
        rows = ScalarRows()
        for path in self.event_files():
            st = self._files.get(path)
            if st is None:
                st = self._files[path] = _FileState(path)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= st.offset:
                continue
            try:
                with open(path, "rb") as fh:
                    fh.seek(st.offset)
                    new = fh.read(size - st.offset)
            except OSError:
                continue
            self.bytes_read += len(new)
            buf = st.pending + new
            result = scan(buf)
            decode_records(buf, result.records, rows, self.meta)
            st.bad_crc += result.bad_crc
            st.pending = bytes(buf[result.consumed :])
            st.offset += len(new)
        if not len(rows):
            return empty_frame()
        rr = RunRows.from_lists(str(self.run), rows.tags, rows.steps, rows.values, rows.wall_times)
        self._remember_epochs(rr)
        frame = build_frame([rr], tag_map=self.tags)
        if len(self._epoch_steps):
            # Align against every epoch point seen so far, not only those in this poll.
            es = np.asarray(self._epoch_steps, dtype=np.int64)
            ev = np.asarray(self._epoch_values, dtype=np.float64)
            idx = np.searchsorted(es, frame["step"].to_numpy(), side="right") - 1
            idx[idx < 0] = 0
            frame["epoch"] = ev[idx]
        return frame

    def _remember_epochs(self, rr: RunRows) -> None:
        epoch_codes = [c for c, t in enumerate(rr.tag_names) if resolve(t, self.tags)[0] == "epoch"]
        if not epoch_codes:
            return
        sel = np.isin(rr.tag_codes, epoch_codes)
        merged = dict(zip(self._epoch_steps, self._epoch_values))
        merged.update(zip(rr.steps[sel].tolist(), rr.values[sel].tolist()))
        keys = sorted(merged)
        self._epoch_steps = keys
        self._epoch_values = [merged[k] for k in keys]
