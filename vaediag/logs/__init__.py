"""Log ingestion: discover runs, read event files (CRC-checked) and metrics logs (Lightning's metrics.csv, HF's
trainer_state.json, CSV/JSONL exports: :mod:`vaediag.logs.sources`), build the tidy frame, tail live runs.

    >>> import vaediag
    >>> rs = vaediag.load("logs/ear_teacher")            # doctest: +SKIP
    >>> rs.frame.query("term == 'kl' and split == 'val'")  # doctest: +SKIP

Public surface: :func:`load` -> :class:`RunSet` (``frame``, ``runs``: run id -> :class:`RunInfo`,
``warnings``), :func:`load_paths` for several PATHs at once, :class:`Tail` for the watchdog,
:func:`discover`, :class:`Note` (``RunInfo.facts``: what the reader found about a run's data, as data: a
:class:`NoteKind`, the tag, a count; ``RunInfo.notes`` is their text). The epoch and split conventions of foreign trainers (Lightning's
``_step``/``_epoch`` pairs and post-fit validate, HF's fractional epochs, pre-training step -1, val tags
without a split marker) are one rule set for all engines: :mod:`vaediag.logs.conventions`.

Engines (``load(..., engine=...)``), equal in output:

* ``"numpy"`` (default, and what :class:`Tail` uses): files are read in 4 MiB chunks; record framing,
  both CRCs of every record and the common scalar layout (torch/Lightning ``simple_value`` Events) are
  handled by vectorised numpy code (``scanner``, ``crc``, ``decode``); every other record (TF2 tensor
  scalars, hparams, text, images, damaged or unusual records) goes to TensorBoard's protobuf classes,
  one record at a time. Columns are built in place (``frame.FrameBuilder``).
* ``"python"``: the reference reader, one record at a time in Python (``records.scan`` + protobuf for
  every record); kept for differential tests and the fuzzer.

Limits (numpy engine and tail): at most ``decode.MAX_UNMAPPED_TAGS`` (50,000) distinct tags that no term
names and ``decode.MAX_TAGS`` (100,000) distinct tags in all are read per load; the scalars of later
tags are counted (``RunInfo.unmapped_not_read``, ``tags_not_read``, ``scalars_not_read``; the
``unmapped_tags`` finding or a warning says so), so a run with a million per-sample tags reads in
seconds and bounded memory. The directory walk is iterative (any depth the OS allows; a directory it
cannot list, e.g. past ``PATH_MAX``, is one warning).

Modules: ``discover`` (runs and run ids), ``sources`` (metrics logs that are not event files), ``records`` (TFRecord framing, reference scanner), ``crc``
(CRC-32C, vectorised), ``scanner`` (vectorised streaming framing), ``decode`` (vectorised Event
decoding), ``events`` (protobuf decoding, metadata), ``stream`` (incremental file reading),
``aligner`` (the frame's rules for a run: deduplication, the KL sign rule, and through ``conventions``
epoch alignment and split rules, in :class:`EpochAligner`: fresh per run for :func:`load`, kept across
polls by :class:`Tail`), ``notes`` (:class:`Note`, :class:`NoteKind`), ``frame`` (tidy frame), ``reader``
(:func:`load`), ``runfiles`` (one run directory's files read whole), ``metadata`` (hparams.yaml, config.json,
a project config), ``runset`` (:class:`RunSet`, :class:`RunInfo`),
``merge`` (several PATHs as one RunSet: :func:`load_paths`, :func:`merge_runsets`), ``tail`` (:class:`Tail`),
``inprocess`` (:func:`frame_from_epochs`: the frame of metrics a training loop hands over in memory, epoch by
epoch, read as a log with the trainer's tags).
"""

from vaediag.logs.aligner import EpochAligner
from vaediag.logs.conventions import RunHistory
from vaediag.logs.notes import Note, NoteKind
from vaediag.logs.discover import discover
from vaediag.logs.inprocess import frame_from_epochs
from vaediag.logs.merge import load_paths, merge_runsets, select_runs
from vaediag.logs.reader import RunInfo, RunSet, load
from vaediag.logs.tail import Tail

__all__ = ["load", "load_paths", "merge_runsets", "select_runs", "RunSet", "RunInfo", "Tail", "discover", "Note",
           "NoteKind", "RunHistory", "EpochAligner", "frame_from_epochs"]
