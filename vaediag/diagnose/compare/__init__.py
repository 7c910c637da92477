"""The run comparison behind ``vaediag report``, as one frozen :class:`Comparison` built by :func:`compare_runs`.

What it holds: the runs in the order they started (R1, R2 ...: the order a person ran them in), the
baseline, the best run by the first criterion the runs log (final validation PSNR, else validation, else
training reconstruction loss) with the runner-up and the runs that cannot be ranked, what sets the best
run apart from the runner-up (configuration differences and a caveat when the data may differ), each
run's verdict, its results against the targets (:mod:`vaediag.diagnose.targets`), its milestone statuses,
and the watchdog's decisions numbered D1, D2 ... across the report.

Analysis only, no formatting: every number comes from the runs' diagnoses (:func:`vaediag.diagnose.diagnose`,
the same call ``vaediag check`` makes); this package picks, orders, ranks and judges, and
:mod:`vaediag.render.report` turns the result into markdown, plots and files. Its one read is each run's
watchdog journal, through :func:`vaediag.watch.journal.run_decisions` (``journals=`` hands them over).

Modules: :mod:`.views` (the frozen data: :class:`Comparison`, :class:`RunView` and their parts) and
:mod:`.build` (:func:`compare_runs`, the verdicts, the ranking).

    >>> c = compare_runs(runset, diagnose(runset), targets=load_targets())   # doctest: +SKIP
    >>> c.best.label, c.ranking.label, c.best.verdict.label                    # doctest: +SKIP
    ('R3', 'final validation PSNR', 'meets the success criteria')
"""

from __future__ import annotations

from vaediag.diagnose.compare.build import compare_runs, diagnose_runs, verdict_of
from vaediag.diagnose.compare.views import (LATE_WINDOW, LOSS_WEIGHT_ORDER, Comparison, ConfigDifference, Contrast,
                                            DataCaveat, NumberedDecision, Ranking, RunConfig, RunView, TargetResult,
                                            Verdict)

__all__ = [
    "LATE_WINDOW",
    "LOSS_WEIGHT_ORDER",
    "Comparison",
    "ConfigDifference",
    "Contrast",
    "DataCaveat",
    "NumberedDecision",
    "Ranking",
    "RunConfig",
    "RunView",
    "TargetResult",
    "Verdict",
    "compare_runs",
    "diagnose_runs",
    "verdict_of",
]
