"""The markdown run-comparison report (``vaediag report``): one document a team reads instead of TensorBoard.

Sections, in order: reconstructions (each run's logged pictures, inputs over reconstructions, at its final
epoch, watchdog decisions and milestones, runs side by side: :mod:`vaediag.render.pictures`; only for runs
that log images), summary (the best run, by how much, why, what next), runs (configuration and final
metrics), evolution across runs (the seed's "Run 1 ... Run 2 ... Run 3"), curves (PNG plots), milestones
(pass / fail / pending), expected vs actual (targets from a TOML file, improvement over a baseline),
findings and recommendations (the same rules as ``vaediag check``), watchdog decisions (runs with a
``watchdog.jsonl``), notes.

Rendering computes nothing: the run order, ranking, verdicts, configuration differences, targets,
milestones and numbered watchdog decisions are :func:`vaediag.diagnose.compare.compare_runs`'s
:class:`~vaediag.diagnose.compare.Comparison` (every number from :func:`vaediag.diagnose.diagnose`, one
source of math); this package only formats and escapes it. Runs are numbered R1, R2 ... in the order they
started (first logged wall time), which is the order a person ran them in.

Modules, one job each: :mod:`.document` (:func:`build_report`: the document in memory), :mod:`.sections`
(the markdown sections), :mod:`.format` (numbers, changes, verdicts as text), :mod:`.figures` (plots and
pictures wired from the comparison), :mod:`.files` (:func:`check_destination`, :func:`write_report`: the
report and its ``NAME_files/`` on disk). Targets and the run comparison live in :mod:`vaediag.diagnose`;
they are re-exported here for the imports that found them in this module.

Determinism: the same logs give the same markdown bytes, apart from the one line that starts with
:data:`GENERATED_PREFIX`, and the same PNG bytes (no metadata, fixed style; see :mod:`vaediag.render.plots`).

    >>> from vaediag.render.report import write_report                  # doctest: +SKIP
    >>> write_report(runset, diagnoses, "reports/demo.md", title="Demo") # doctest: +SKIP
"""

from __future__ import annotations

from vaediag.diagnose.compare import diagnose_runs
from vaediag.diagnose.engine import run_order
from vaediag.diagnose.targets import DEFAULT_TARGETS_PATH, DIRECTIONS, Target, load_targets
from vaediag.render.report.document import GENERATED_PREFIX, Report, build_report
from vaediag.render.report.files import check_destination, files_dir_for, write_report

__all__ = [
    "GENERATED_PREFIX",
    "DEFAULT_TARGETS_PATH",
    "DIRECTIONS",
    "Target",
    "load_targets",
    "Report",
    "build_report",
    "write_report",
    "check_destination",
    "files_dir_for",
    "run_order",
    "diagnose_runs",
]
