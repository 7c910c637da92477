"""What :func:`vaediag.load` returns: a :class:`RunSet` (the tidy frame, per-run metadata, load warnings), its
:class:`RunInfo` per run and the :class:`FileStats` of each file read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import pandas as pd

from vaediag.logs.notes import Note

if TYPE_CHECKING:
    from vaediag.logs.images import LoggedImage

__all__ = ["FileStats", "RunInfo", "RunSet"]


@dataclass
class FileStats:
    """What reading one event file found."""

    path: Path
    size: int = 0
    records: int = 0
    scalars: int = 0
    bad_crc: int = 0
    undecodable: int = 0
    resyncs: int = 0
    skipped_bytes: int = 0
    truncated_bytes: int = 0
    overruns: int = 0  # records whose length ran past the end of the file, with valid records after them
    overrun_at: int | None = None  # byte offset of the first
    overrun_claimed: int = 0  # the length it claimed
    overrun_skipped: int = 0  # bytes skipped to the next valid record, in all


@dataclass
class RunInfo:
    """Run-level metadata, kept beside the frame (ARCHITECTURE)."""

    run: str
    path: Path
    event_files: list[Path] = field(default_factory=list)
    n_scalars: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)  # from the hparams plugin in the event files
    hparams_yaml: dict[str, Any] = field(default_factory=dict)  # hparams.yaml in the run dir (Lightning)
    config: dict[str, Any] = field(default_factory=dict)  # config.json in the run dir (our trainer)
    project_config: dict[str, Any] = field(default_factory=dict)  # latent-diffusion's configs/*-project.yaml
    texts: dict[str, str] = field(default_factory=dict)  # text summaries, tag -> latest text
    image_tags: dict[str, tuple[int, int]] = field(default_factory=dict)  # image tag -> (count, latest step)
    facts: list[Note] = field(default_factory=list)  # facts about the data (e.g. a KL sign flip): kind, tag, count
    warnings: list[str] = field(default_factory=list)  # damage found while reading, files that overlap
    unmapped_tags: list[str] = field(default_factory=list)  # scalar tags no canonical term names, sorted
    files: list[FileStats] = field(default_factory=list)
    # Past the reader's limits on distinct tags (decode.MAX_UNMAPPED_TAGS, MAX_TAGS): counted, not read.
    unmapped_not_read: int = 0  # distinct tags no term names
    tags_not_read: int = 0  # distinct tags a term names (a warning says so)
    scalars_not_read: int = 0  # their records
    # What the run was read from: "tensorboard" (its event files) or a metrics log's kind (sources.py:
    # "csv", "jsonl", "hf_trainer_state"), a label for people, and the files.
    source: str = "tensorboard"
    source_label: str = "TensorBoard event files"
    source_files: list[Path] = field(default_factory=list)
    source_mtime: float | None = None  # a metrics log's modification time (it records no wall times)
    log_params: dict[str, Any] = field(default_factory=dict)  # parameters the log itself records (trainer_state.json)
    not_read: list[Path] = field(default_factory=list)  # metrics logs in the run directory that were not read

    @property
    def notes(self) -> list[str]:
        """The facts' text, for people (a renderer's view of :attr:`facts`)."""
        return [f.message for f in self.facts]

    @property
    def source_line(self) -> str:
        """One line saying which files the run was read from, where that is not its event files alone ("" then)."""
        skipped = ", ".join(_rel(f, self.path) for f in self.not_read)
        if self.source == "tensorboard":
            return f"not read: {skipped} (the run's event files are read)" if skipped else ""
        files = ", ".join(_rel(f, self.path) for f in self.source_files)
        return f"read from {files} ({self.source_label})" + (f"; not read: {skipped}" if skipped else "")

    @property
    def params(self) -> dict[str, Any]:
        """All known parameters, flattened to dotted keys; config.json wins over hparams.yaml over plugin over
        a project config found above the run directory over what the metrics log itself records."""
        out: dict[str, Any] = {}
        for source in (self.log_params, self.project_config, self.hparams, self.hparams_yaml, self.config):
            out.update(_flatten(source))
        return out

    def images(self, tags: Iterable[str] | None = None) -> "list[LoggedImage]":
        """The run's logged images (:mod:`vaediag.logs.images`), read now: the scalar read never decodes them."""
        from vaediag.logs.images import read_images

        return read_images(self.event_files, tags=tags)

    def param(self, *names: str) -> Any:
        """The first parameter found under any of ``names`` (full dotted key, or last component)."""
        flat = self.params
        for name in names:
            if name in flat:
                return flat[name]
        for name in names:
            for key, value in flat.items():
                if key.rsplit(".", 1)[-1] == name:
                    return value
        return None


@dataclass
class RunSet:
    """The result of :func:`load`: the tidy frame, per-run metadata and load warnings."""

    root: Path
    frame: pd.DataFrame
    runs: dict[str, RunInfo]
    warnings: list[str] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)  # dirs with run metadata but no event file

    def __iter__(self) -> Iterator[RunInfo]:
        return iter(self.runs.values())

    def __len__(self) -> int:
        return len(self.runs)

    def run_frame(self, run: str) -> pd.DataFrame:
        """Rows of one run."""
        return self.frame[self.frame["run"] == run]


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (``../trainer_state.json`` for a file above it)."""
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:
        return str(path)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out.update(_flatten(v, key))
            else:
                out[key] = v
    return out
