# Over 450 lines on purpose: one job (metrics logs read as rows, whole or incrementally); one cursor serves the three formats, sharing offsets, rewrites and damage counts, and the docstring records each writer's format.
"""Metrics logs that are not event files: Lightning's ``metrics.csv``, HF Trainer's ``trainer_state.json``, and
plain CSV/JSONL exports (W&B's ``run.history()``/``scan_history()``, MLflow or a script's own table).

Each is read into the same long rows as an event file (tag, step, value, plus the order of logging), so the
tidy frame, the conventions (:mod:`vaediag.logs.conventions`), ``check``, ``report`` and ``watch --follow``
treat them like any run. What each format is, as its writer writes it:

* **Lightning ``CSVLogger``** (``lightning/fabric/loggers/csv_logs.py`` ``_ExperimentWriter``): one row per
  ``log_metrics`` call, a column per metric key ever logged (sorted), blank where a call did not log that
  key, and a ``step`` column (``metrics["step"] = step``). Lightning's logger connector adds ``epoch`` to
  each call, and forked metrics are named ``<name>_step``/``<name>_epoch`` (terms.py maps both). Rows are
  buffered and appended every ``flush_logs_every_n_steps`` (100); when a flush brings a new key, the
  whole file is rewritten with the wider header (``_rewrite_with_new_header``): the tail notices the header
  change and reads the file again from the top, delivering only the rows it had not delivered. Rows end in
  ``\\r\\n`` (``csv.DictWriter``); a float NaN is written ``nan``. ``hparams.yaml`` beside it is read as
  run metadata (``metadata.read_run_metadata``).
* **HF Trainer ``trainer_state.json``** (``transformers/trainer_callback.py`` ``TrainerState.save_to_json``:
  ``json.dumps(asdict(state), indent=2, sort_keys=True)``; ``trainer.py`` ``log``: ``output = {**logs,
  "step": global_step}; state.log_history.append(output)``): ``log_history`` holds one dict per log call:
  ``loss``/``grad_norm``/``learning_rate``/``epoch`` (fractional), ``eval_*`` after an evaluation, the
  ``train_*`` summary at the end. Keys are named as HF's own TensorBoard callback names them
  (``integrations/integration_utils.py`` ``rewrite_logs``: ``eval_loss`` -> ``eval/loss``, ``test_*`` ->
  ``test/*``, every other key -> ``train/<key>``), so a run reads the same from its event files and from its
  state file. The file is written whole at every checkpoint (``<output_dir>/checkpoint-<step>/``) and by
  ``save_state()`` (``<output_dir>/``): a ``checkpoint-N`` folder belongs to its parent, which reads its own
  file if it has one, else the latest checkpoint's. Its other top-level numbers (``num_train_epochs``,
  ``max_steps``, ``logging_steps``, ...) are run parameters (``RunInfo.log_params``). JSON may hold ``NaN``.
* **Plain exports**: one row per step, a column per metric (CSV) or one JSON object per line (JSONL), a step
  column (:data:`STEP_COLUMNS`, first match in that order, any case) and optionally a time column
  (:data:`TIME_COLUMNS`, seconds or milliseconds since 1970). Blank cells (pandas writes NaN as blank) are
  "not logged"; a column with no number in it (a run name, a media dict) is ignored and named in a note.
  Found in a tree when its header names a step column and at least one column a term names.

Damage is counted, never fatal: a row with the wrong number of fields, a cell that is not a number, a row
without a step, bytes that are not UTF-8 (replaced), and an unterminated last line (a file being written or
cut by a crash: never read as a row; :class:`SourceCursor` holds it back until its newline arrives). A file
that cannot be read at all (not a regular file, larger than :data:`MAX_SOURCE_BYTES`, no step column, not
JSON) raises :class:`~vaediag.errors.CorruptLogError` with one line.

Wall times: exports with a time column keep it; Lightning's CSV and HF's state record none, so their rows'
``wall_time`` is NaN and the order of logging (row index) stands in for it where the conventions need an
order (an epoch value logged in the same row as a metric belongs to it).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaediag.errors import CorruptLogError
from vaediag.logs.notes import Note
from vaediag.safeio import open_regular

__all__ = [
    "LIGHTNING_CSV",
    "HF_STATE",
    "MAX_SOURCE_BYTES",
    "STEP_COLUMNS",
    "TIME_COLUMNS",
    "SourceFile",
    "SourceRows",
    "SourceCursor",
    "candidates",
    "pick",
    "is_log_name",
    "kind_of_name",
    "hf_tag",
    "sniff",
]

LIGHTNING_CSV = "metrics.csv"
HF_STATE = "trainer_state.json"
#: A metrics log larger than this is refused (256 MiB: millions of logged steps); the tail reads it in
#: pieces of :data:`TAIL_CHUNK` bytes whatever its size.
MAX_SOURCE_BYTES = 256 << 20
TAIL_CHUNK = 16 << 20
#: Step columns of plain exports, in order of preference (matched case-insensitively): the trainer's own
#: step (Lightning's WandbLogger logs ``trainer/global_step``, HF's WandbCallback ``train/global_step``)
#: before W&B's per-call counter ``_step``.
STEP_COLUMNS = ("trainer/global_step", "train/global_step", "global_step", "step", "_step", "iteration", "iter")
#: Time columns of plain exports (seconds since 1970; values above 1e11 are milliseconds).
TIME_COLUMNS = ("_timestamp", "timestamp", "wall_time", "walltime")
# Bookkeeping columns of exports that are not metrics (W&B's seconds since start, pandas' index).
_NOT_METRICS = frozenset({"_runtime", "", "unnamed: 0"})
_SNIFF_BYTES = 64 << 10
_BATCH_ROWS = 65536  # CSV rows converted to numbers at a time
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
_NUMERIC_STRINGS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
                    "-infinity": -math.inf, "+inf": math.inf, "+infinity": math.inf}

KIND_LABELS = {"lightning_csv": "Lightning CSVLogger", "csv": "CSV export", "jsonl": "JSONL export",
               "hf_trainer_state": "HF Trainer state"}


@dataclass(frozen=True)
class SourceFile:
    """A metrics log file: ``kind`` is ``csv`` (``metrics.csv`` or an export), ``jsonl`` or ``hf_trainer_state``."""

    kind: str
    path: Path


@dataclass
class SourceRows:
    """Rows read from a metrics log: ``codes`` index ``names``; ``order`` is the row's place in the log (the
    stand-in for a wall time); ``walls`` the logged time (NaN where the log records none)."""

    names: list[str]
    codes: np.ndarray
    steps: np.ndarray
    values: np.ndarray
    order: np.ndarray
    walls: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)

    @classmethod
    def empty(cls, names: list[str] | None = None) -> "SourceRows":
        return cls(list(names or []), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.float64),
                   np.zeros(0, np.float64), np.zeros(0, np.float64))


def _concat(parts: list[SourceRows], names: list[str]) -> SourceRows:
    if not parts:
        return SourceRows.empty(names)
    if len(parts) == 1:
        return parts[0]
    return SourceRows(names, *(np.concatenate([getattr(p, c) for p in parts])
                               for c in ("codes", "steps", "values", "order", "walls")))


def hf_tag(key: str) -> str:
    """The tag HF's TensorBoard callback writes for a ``log_history`` key (``rewrite_logs``)."""
    if key.startswith("eval_"):
        return "eval/" + key[5:]
    if key.startswith("test_"):
        return "test/" + key[5:]
    return "train/" + key


def is_log_name(name: str) -> bool:
    """True for a file name vaediag reads as a metrics log when it is given by name."""
    low = name.lower()
    return name in (LIGHTNING_CSV, HF_STATE) or low.endswith((".csv", ".jsonl"))


def kind_of_name(name: str) -> str:
    """The kind of a metrics log by its file name: ``hf_trainer_state``, ``jsonl`` or ``csv``."""
    if name == HF_STATE:
        return "hf_trainer_state"
    return "jsonl" if name.lower().endswith(".jsonl") else "csv"


def _pick_step(columns: list[str]) -> int | None:
    low = [c.strip().lower() for c in columns]
    for want in STEP_COLUMNS:
        if want in low:
            return low.index(want)
    return None


def _pick_time(columns: list[str]) -> int | None:
    low = [c.strip().lower() for c in columns]
    for want in TIME_COLUMNS:
        if want in low:
            return low.index(want)
    return None


def _is_metric_column(name: str) -> bool:
    low = name.strip().lower()
    return low not in _NOT_METRICS and low not in STEP_COLUMNS and low not in TIME_COLUMNS


def sniff(path: Path) -> bool:
    """Whether ``path`` (a ``.csv``/``.jsonl`` found in a tree) looks like a metrics export: its first line names
    a step column and at least one column a term names. Never blocks (a FIFO is not opened for reading), reads
    at most 64 KiB, never raises."""
    from vaediag.terms import resolve

    try:
        with open_regular(path) as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError:
        return False
    line = head.split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
    if path.name.lower().endswith(".jsonl"):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            return False
        if not isinstance(row, dict):
            return False
        cols = [str(k) for k in row]
    else:
        try:
            cols = next(csv.reader([line]), [])
        except csv.Error:
            return False
    if _pick_step(cols) is None:
        return False
    return any(_is_metric_column(c) and resolve(c)[0] not in (None, "epoch") for c in cols)


def candidates(dirpath: Path, filenames: list[str]) -> list[SourceFile]:
    """The metrics logs of one directory, in order of preference: ``metrics.csv``, ``trainer_state.json`` (both
    by name: a FIFO of that name is found, and refused when read), then sniffed ``*.csv``/``*.jsonl`` by name."""
    out = []
    for name in (LIGHTNING_CSV, HF_STATE):
        if name in filenames:
            out.append(SourceFile(kind_of_name(name), dirpath / name))
    for name in sorted(filenames):
        if name in (LIGHTNING_CSV, HF_STATE) or not name.lower().endswith((".csv", ".jsonl")):
            continue
        if sniff(dirpath / name):
            out.append(SourceFile(kind_of_name(name), dirpath / name))
    return out


def checkpoint_number(dirname: str) -> int | None:
    """N for HF's ``checkpoint-N`` folder name, else None."""
    m = _CHECKPOINT_DIR.match(dirname)
    return int(m.group(1)) if m else None


def pick(own: list[SourceFile], checkpoints: list[tuple[int, SourceFile]]) -> tuple[SourceFile | None, list[SourceFile]]:
    """The log a run directory is read from, and the ones it also holds that are not read.

    ``own``: the directory's candidates (:func:`candidates`); ``checkpoints``: ``trainer_state.json`` of its
    ``checkpoint-N`` children. The directory's own file wins; else the latest checkpoint's state (each holds
    the whole history up to its step)."""
    if own:
        return own[0], own[1:]
    if checkpoints:
        return max(checkpoints, key=lambda t: t[0])[1], []
    return None, []


# ----------------------------------------------------------------------------------------------------
# Reading


def _shown(path: Path) -> str:
    return os.fsdecode(os.fspath(path)).encode("utf-8", "backslashreplace").decode("utf-8")


def _cannot(path: Path, why: str) -> CorruptLogError:
    return CorruptLogError(f"cannot read metrics log {_shown(path)}: {why}")


def _parse_numbers(cells: tuple[str, ...] | list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, present, bad) for CSV cells: blank cells are absent; a cell that is not a number is bad."""
    n = len(cells)
    values = np.zeros(n, np.float64)
    if n and max(map(len, cells)) <= 64:
        arr = np.asarray(cells)
        present = arr != ""
        try:
            values[present] = arr[present].astype(np.float64)
            return values, present, np.zeros(n, bool)
        except ValueError:
            pass
    present = np.zeros(n, bool)
    bad = np.zeros(n, bool)
    for i, c in enumerate(cells):
        s = c.strip()
        if not s:
            continue
        try:
            values[i] = float(s)
            present[i] = True
        except ValueError:
            v = _NUMERIC_STRINGS.get(s.lower())
            if v is None:
                bad[i] = True
            else:
                values[i] = v
                present[i] = True
    return values, present, bad


def _number(v) -> float | None:
    """A JSON value as a float: numbers (not booleans) and the strings of NaN and the infinities."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    if isinstance(v, str):
        return _NUMERIC_STRINGS.get(v.strip().lower())
    return None


@dataclass
class _Damage:
    bad_rows: int = 0
    bad_row_line: int | None = None
    no_step: int = 0
    no_step_line: int | None = None
    bad_cells: int = 0
    bad_cell_at: tuple[str, int] | None = None
    not_utf8_at: int | None = None
    truncated_bytes: int = 0
    long_lines: int = 0


@dataclass
class SourceCursor:
    """Where reading one metrics log stopped, and what reading it found so far.

    :meth:`read` returns the rows logged since the last call (all of them on the first): a CSV or JSONL file
    is read from where it stopped, only complete lines (the last line is held back until its newline
    arrives); a rewritten CSV (Lightning widens its header by rewriting the file) is read again from the top,
    skipping the rows already returned; ``trainer_state.json`` is parsed whole when it changed and only its
    new ``log_history`` entries are returned.
    """

    source: SourceFile
    offset: int = 0
    size: int = 0
    mtime: float | None = None
    rows: int = 0  # rows (log calls) returned so far
    label: str = ""
    header: list[str] | None = None
    text_columns: set[str] = field(default_factory=set)
    log_params: dict = field(default_factory=dict)
    damage: _Damage = field(default_factory=_Damage)
    _header_raw: bytes = b""
    _step_col: int | None = None
    _time_col: int | None = None
    _time_scale: float | None = None
    _metric_cols: list[tuple[int, int]] = field(default_factory=list)  # (column, code)
    _codes: dict[str, int] = field(default_factory=dict)
    _names: list[str] = field(default_factory=list)
    _line: int = 0  # physical lines consumed
    _skip: int = 0  # rows to skip after a rewrite (already returned)
    _json_step: str | None = None
    _state_key: tuple | None = None
    _in_long_line: bool = False

    def __post_init__(self) -> None:
        if not self.label:
            self.label = KIND_LABELS["hf_trainer_state" if self.source.kind == "hf_trainer_state" else self.source.kind]

    @property
    def path(self) -> Path:
        return self.source.path

    @property
    def names(self) -> list[str]:
        return self._names

    def _code(self, name: str) -> int:
        c = self._codes.get(name)
        if c is None:
            c = self._codes[name] = len(self._names)
            self._names.append(name)
        return c

    # -- reading -------------------------------------------------------------------------------------

    def read(self, *, final: bool = False) -> SourceRows:
        """Rows logged since the last call. ``final``: a whole-file load (the size cap applies; an unterminated
        last line is counted as incomplete instead of held back).

        Raises:
            CorruptLogError: the file cannot be read as a metrics log (one line naming it and why).
        """
        try:
            with open_regular(self.path) as fh:
                st = os.fstat(fh.fileno())
                self.size = st.st_size
                self.mtime = st.st_mtime
                if final and st.st_size > MAX_SOURCE_BYTES:
                    raise _cannot(self.path, f"{st.st_size:,} bytes; vaediag reads metrics logs of at most "
                                             f"{MAX_SOURCE_BYTES:,} bytes")
                if self.source.kind == "hf_trainer_state":
                    return self._read_state(fh.fileno(), st, final=final)
                return self._read_lines(fh.fileno(), st.st_size, final=final)
        except OSError as exc:
            raise _cannot(self.path, exc.strerror or str(exc)) from None

    def _pread(self, fd: int, n: int, at: int) -> bytes:
        parts = []
        while n > 0:
            b = os.pread(fd, min(n, 1 << 24), at)
            if not b:
                break
            parts.append(b)
            n -= len(b)
            at += len(b)
        return b"".join(parts)

    def _restart(self) -> None:
        """The file was rewritten or truncated: read it again from the top, skipping returned rows."""
        self._skip = self.rows
        self.rows = 0
        self.offset = 0
        self._line = 0
        self.header = None
        self._header_raw = b""

    def _read_lines(self, fd: int, size: int, *, final: bool) -> SourceRows:
        """CSV/JSONL: the complete lines from ``offset`` to ``size``, read and parsed a piece of
        :data:`TAIL_CHUNK` bytes at a time (memory stays at a piece and its rows, whatever the file's size). An
        unterminated last line is held back (tail) or counted as incomplete (``final``)."""
        if self._header_raw and (size < self.offset or self._pread(fd, len(self._header_raw), 0) != self._header_raw):
            self._restart()
        elif self.offset and size < self.offset:
            self._restart()
        parts: list[SourceRows] = []
        while self.offset < size:
            start = self.offset
            data = self._pread(fd, min(size - start, TAIL_CHUNK), start)
            if not data:
                break
            if self._in_long_line:  # the rest of a line longer than a piece: skipped up to its newline
                nl = data.find(b"\n")
                if nl < 0:
                    self.offset = start + len(data)
                    continue
                self._in_long_line = False
                self.offset = start = start + nl + 1
                data = data[nl + 1:]
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if start + len(data) >= size:  # the last line, not terminated (yet)
                    if final:
                        self.damage.truncated_bytes += len(data)
                        self.offset = size
                    break
                if not data:
                    continue
                self.damage.long_lines += 1  # a line longer than a piece: not a metrics row
                self._in_long_line = True
                self.offset = start + len(data)
                continue
            self.offset = start + cut
            data = data[:cut]
            if self.source.kind == "csv" and self.header is None:
                nl = data.find(b"\n")
                self._header_raw = data[: nl + 1]
            text = self._decode(data, start)
            del data
            part = self._parse_csv(text) if self.source.kind == "csv" else self._parse_jsonl(text)
            if len(part):
                parts.append(part)
        return _concat(parts, self._names)

    def _decode(self, data: bytes, base: int) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if self.damage.not_utf8_at is None:
                self.damage.not_utf8_at = base + exc.start
            return data.decode("utf-8", "replace")

    def _take_header(self, text: str) -> str | None:
        """Split off the header line on the first read; None when there is no complete header yet."""
        if self.header is not None:
            return text
        nl = text.find("\n")
        if nl < 0:
            return None
        first = text[: nl + 1]
        try:
            cols = next(csv.reader([first.lstrip("\ufeff").rstrip("\r\n")]), [])
        except csv.Error as exc:
            raise _cannot(self.path, f"its first line is not a CSV header ({exc})") from None
        self._line += 1
        step = _pick_step(cols)
        if step is None:
            shown = ", ".join(repr(c) for c in cols[:6]) + (" ..." if len(cols) > 6 else "")
            raise _cannot(self.path, f"no step column in its header ({shown or 'empty'}; vaediag looks for "
                                     f"{', '.join(STEP_COLUMNS)})")
        self.header = cols
        self._step_col = step
        self._time_col = _pick_time(cols)
        self._metric_cols = [(j, self._code(c)) for j, c in enumerate(cols)
                             if j != step and j != self._time_col and _is_metric_column(c)]
        if self.path.name == LIGHTNING_CSV and cols[step] == "step":
            self.label = KIND_LABELS["lightning_csv"]
        return text[nl + 1:]

    def _parse_csv(self, text: str) -> SourceRows:
        body = self._take_header(text)
        if body is None:
            return SourceRows.empty(self._names)
        ncols = len(self.header)
        good: list[list[str]] = []
        good_idx: list[int] = []
        parts: list[SourceRows] = []
        reader = csv.reader(io.StringIO(body))
        d = self.damage
        while True:
            line_before = reader.line_num
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:  # a field past csv's size limit, a stray quote: the row is damaged
                d.bad_rows += 1
                if d.bad_row_line is None:
                    d.bad_row_line = self._line + line_before + 1
                continue
            if not row:
                continue  # a blank line
            idx = self.rows
            self.rows += 1
            if self._skip:
                self._skip -= 1
                continue
            if len(row) != ncols:
                d.bad_rows += 1
                if d.bad_row_line is None:
                    d.bad_row_line = self._line + reader.line_num
                continue
            good.append(row)
            good_idx.append(idx)
            if len(good) >= _BATCH_ROWS:  # converted a batch at a time: the strings never pile up
                parts.append(self._convert(good, good_idx))
                good, good_idx = [], []
        self._line += reader.line_num
        if good:
            parts.append(self._convert(good, good_idx))
        return _concat(parts, self._names)

    def _convert(self, good: list[list[str]], good_idx: list[int]) -> SourceRows:
        """Rows of the right width as columns of numbers: steps, the time column, each metric column."""
        d = self.damage
        cols = list(zip(*good))
        order = np.asarray(good_idx, dtype=np.float64)
        steps_f, has_step, _ = _parse_numbers(cols[self._step_col])
        ok_step = has_step & np.isfinite(steps_f) & (np.floor(steps_f) == steps_f)
        if not ok_step.all():
            miss = np.flatnonzero(~ok_step)
            d.no_step += len(miss)
            if d.no_step_line is None:
                d.no_step_line = int(order[miss[0]]) + 2
        steps = np.where(ok_step, steps_f, 0).astype(np.int64)
        walls = self._walls(cols[self._time_col] if self._time_col is not None else None, len(good))
        parts = []
        for j, code in self._metric_cols:
            values, present, bad = _parse_numbers(cols[j])
            name = self.header[j]
            if bad.any():
                if not present.any():
                    self.text_columns.add(name)  # no number at all: a text column, ignored
                    continue
                if name not in self.text_columns:
                    d.bad_cells += int(bad.sum())
                    if d.bad_cell_at is None:
                        d.bad_cell_at = (name, int(order[np.flatnonzero(bad)[0]]) + 2)
            keep = present & ok_step
            if keep.any():
                parts.append((code, np.flatnonzero(keep), values))
        return self._assemble(parts, steps, order, walls)

    def _walls(self, cells, n: int) -> np.ndarray:
        if cells is None:
            return np.full(n, np.nan)
        values, present, _ = _parse_numbers(cells)
        values[~present] = np.nan
        if self._time_scale is None and present.any():
            self._time_scale = 1e-3 if float(np.nanmedian(values[present])) > 1e11 else 1.0
        return values * (self._time_scale or 1.0)

    def _assemble(self, parts, steps, order, walls) -> SourceRows:
        if not parts:
            return SourceRows.empty(self._names)
        codes = np.concatenate([np.full(len(ix), c, np.int32) for c, ix, _ in parts])
        sel = np.concatenate([ix for _, ix, _ in parts])
        vals = np.concatenate([v[ix] for _, ix, v in parts])
        return SourceRows(self._names, codes, steps[sel], vals, order[sel], walls[sel])

    def _parse_jsonl(self, text: str) -> SourceRows:
        d = self.damage
        codes: list[int] = []
        steps: list[int] = []
        values: list[float] = []
        order: list[float] = []
        walls: list[float] = []
        for line in text.split("\n"):
            if not line:
                continue  # the end of the last line (or a blank line)
            self._line += 1
            if not line.strip():
                continue
            idx = self.rows
            self.rows += 1
            if self._skip:
                self._skip -= 1
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            if not isinstance(row, dict):
                d.bad_rows += 1
                if d.bad_row_line is None:
                    d.bad_row_line = self._line
                continue
            self._row(row, idx, codes, steps, values, order, walls, line=self._line)
        return SourceRows(self._names, np.asarray(codes, np.int32), np.asarray(steps, np.int64),
                          np.asarray(values, np.float64), np.asarray(order, np.float64), np.asarray(walls, np.float64))

    def _row(self, row: dict, idx: int, codes, steps, values, order, walls, *, line: int, rename=None) -> None:
        """One log call as a dict: its step, time and numeric values."""
        d = self.damage
        if self._json_step is None:
            keys = [str(k) for k in row]
            j = _pick_step(keys)
            if j is not None:
                self._json_step = keys[j]
        if self._json_step is None or self._json_step not in row:
            d.no_step += 1
            if d.no_step_line is None:
                d.no_step_line = line
            return
        s = _number(row[self._json_step])
        if s is None or not math.isfinite(s) or s != math.floor(s):
            d.no_step += 1
            if d.no_step_line is None:
                d.no_step_line = line
            return
        wall = math.nan
        for k in row:
            if str(k).strip().lower() in TIME_COLUMNS:
                t = _number(row[k])
                if t is not None:
                    if self._time_scale is None:
                        self._time_scale = 1e-3 if t > 1e11 else 1.0
                    wall = t * self._time_scale
                break
        for k, v in row.items():
            k = str(k)
            if k == self._json_step or not _is_metric_column(k):
                continue
            x = _number(v)
            name = rename(k) if rename is not None else k
            if x is None:
                if isinstance(v, (dict, list, bool)) or v is None or (isinstance(v, str) and name not in self._codes):
                    self.text_columns.add(name)
                else:
                    d.bad_cells += 1
                    if d.bad_cell_at is None:
                        d.bad_cell_at = (name, line)
                continue
            codes.append(self._code(name))
            steps.append(int(s))
            values.append(x)
            order.append(float(idx))
            walls.append(wall)

    def _read_state(self, fd: int, st: os.stat_result, *, final: bool) -> SourceRows:
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        if key == self._state_key:
            return SourceRows.empty(self._names)
        if st.st_size > MAX_SOURCE_BYTES:  # read whole or not at all, tailed or not
            raise _cannot(self.path, f"{st.st_size:,} bytes; vaediag reads metrics logs of at most "
                                     f"{MAX_SOURCE_BYTES:,} bytes")
        data = self._pread(fd, st.st_size, 0)
        try:
            doc = json.loads(self._decode(data, 0))
        except (ValueError, RecursionError) as exc:
            if not final:
                return SourceRows.empty(self._names)  # a save in progress: whole on a later poll
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise _cannot(self.path, f"not valid JSON ({why}); a save cut short?") from None
        history = doc.get("log_history") if isinstance(doc, dict) else None
        if not isinstance(history, list):
            if not final:
                return SourceRows.empty(self._names)
            raise _cannot(self.path, "no log_history list in it (not a transformers TrainerState)")
        self._state_key = key
        self.log_params = {k: v for k, v in doc.items()
                           if k != "log_history" and isinstance(v, (int, float, str, bool)) and not isinstance(v, bool)}
        self._json_step = "step"
        codes: list[int] = []
        steps: list[int] = []
        values: list[float] = []
        order: list[float] = []
        walls: list[float] = []
        if len(history) < self.rows:  # a new training wrote over the file: start again
            self.rows = 0
        for i in range(self.rows, len(history)):
            entry = history[i]
            self.rows += 1
            if not isinstance(entry, dict):
                self.damage.bad_rows += 1
                if self.damage.bad_row_line is None:
                    self.damage.bad_row_line = i
                continue
            self._row(entry, i, codes, steps, values, order, walls, line=i, rename=hf_tag)
        return SourceRows(self._names, np.asarray(codes, np.int32), np.asarray(steps, np.int64),
                          np.asarray(values, np.float64), np.asarray(order, np.float64), np.asarray(walls, np.float64))

    # -- what reading found ----------------------------------------------------------------------------

    def warnings(self) -> list[str]:
        """Damage found so far, one line each (the file's name first)."""
        d = self.damage
        name = self.path.name
        where = "entry" if self.source.kind == "hf_trainer_state" else "line"
        out = []
        if d.not_utf8_at is not None:
            out.append(f"{name}: not UTF-8 text from byte {d.not_utf8_at:,}; undecodable bytes replaced (cells that "
                       "are no longer numbers are skipped)")
        if d.bad_rows:
            one = d.bad_rows == 1
            what = ((("row" if one else "rows") + " with the wrong number of fields") if self.source.kind == "csv" else
                    ("line that is not a JSON object" if one else "lines that are not a JSON object")
                    if self.source.kind == "jsonl" else
                    ("log_history entry that is not an object" if one else "log_history entries that are not objects"))
            out.append(f"{name}: {d.bad_rows} {what} skipped (first at {where} {d.bad_row_line})")
        if d.no_step:
            out.append(f"{name}: {d.no_step} row{'s' if d.no_step != 1 else ''} without a whole-number step skipped "
                       f"(first at {where} {d.no_step_line})")
        if d.bad_cells:
            col, line = d.bad_cell_at or ("?", 0)
            what = "value that is not a number" if d.bad_cells == 1 else "values that are not numbers"
            out.append(f"{name}: {d.bad_cells} {what} skipped (first in {col!r} at {where} {line})")
        if d.truncated_bytes:
            out.append(f"{name}: last line incomplete, {d.truncated_bytes:,} bytes ignored (a file still being "
                       "written, or a crash)")
        if d.long_lines:
            out.append(f"{name}: {d.long_lines} line(s) longer than {TAIL_CHUNK:,} bytes skipped")
        return out

    def notes(self) -> list[Note]:
        """Facts about the file that are not damage: columns ignored because they hold no number."""
        if not self.text_columns:
            return []
        return [Note.text_columns(self.path.name, sorted(self.text_columns))]
