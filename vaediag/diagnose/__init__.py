"""Diagnosis: rules over the tidy frame -> findings -> recommendations (what an expert would say).

Public API (stable; the report and the watchdog build on it)::

    from vaediag.diagnose import diagnose, diagnose_run, epoch_table, penalty_table, load_rules
    diags = diagnose(vaediag.load("logs/ear_teacher"), rules=None, kl_weight=None, baseline=None)
    d = diags[0]
    d.run, d.epochs, d.metrics              # latest value per canonical term
    d.penalty.arithmetic                    # ["Effective KL penalty = 0.00001 × 1,535 = 0.015", ...]
    d.penalty.table                         # per-epoch penalty (penalty_table)
    [f.id for f in d.findings]              # "kl_too_high", "milestone_10.kl", ...
    [r.action for r in d.recommendations]   # "reduce_kl_weight", ...
    d.to_dict()                             # one entry of `vaediag check --json`

Families, one module each, every rule a pure function ``check_x(table_or_frame, *, run, <thresholds>)``
with its thresholds from ``vaediag/rules/default.toml``: :mod:`.penalty` (``penalty_share``,
``kl_too_high``), :mod:`.collapse` (``kl_collapse``), :mod:`.health` (``no_scalars``, ``nonfinite``,
``too_short``, ``lr_vanished``, ``val_recon_divergence``, ``converged``, ``blurry``,
``kl_sign_convention``, ``log_warning``, ``missing_terms``), :mod:`.checklist` (``milestone_<N>``,
``success``). The recommendation ladder lives in :mod:`vaediag.diagnose.recommend`. Comparing runs (order,
ranking, verdicts, targets: what ``vaediag report`` says) is :func:`compare_runs` in :mod:`.compare`, over
the targets of :mod:`.targets`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.diagnose.compare import Comparison, compare_runs
    from vaediag.diagnose.engine import diagnose, diagnose_run, find_run
    from vaediag.diagnose.model import (
        ACTION_IDS,
        RULE_IDS,
        SEVERITIES,
        STATUSES,
        Finding,
        Penalty,
        Recommendation,
        RunDiagnosis,
        jsonable,
        worst_severity,
    )
    from vaediag.diagnose.arithmetic import KLConvention, LossFit, fit_total, read_kl_convention
    from vaediag.diagnose.penalty import compute_penalty, penalty_table
    from vaediag.diagnose.rulesfile import DEFAULT_RULES_PATH, Criterion, Milestone, Rules, load_rules
    from vaediag.diagnose.tables import completed_epochs, epoch_table, latest_metrics
    from vaediag.diagnose.targets import Target, load_targets

# Submodules load on first use, so importing one light module (numbers, say) does not pull in
# pandas and every rule family.
_LAZY = {
    "ACTION_IDS": "vaediag.diagnose.model",
    "Comparison": "vaediag.diagnose.compare",
    "Criterion": "vaediag.diagnose.rulesfile",
    "DEFAULT_RULES_PATH": "vaediag.diagnose.rulesfile",
    "Finding": "vaediag.diagnose.model",
    "Milestone": "vaediag.diagnose.rulesfile",
    "Penalty": "vaediag.diagnose.model",
    "RULE_IDS": "vaediag.diagnose.model",
    "Recommendation": "vaediag.diagnose.model",
    "Rules": "vaediag.diagnose.rulesfile",
    "RunDiagnosis": "vaediag.diagnose.model",
    "SEVERITIES": "vaediag.diagnose.model",
    "STATUSES": "vaediag.diagnose.model",
    "Target": "vaediag.diagnose.targets",
    "compare_runs": "vaediag.diagnose.compare",
    "completed_epochs": "vaediag.diagnose.tables",
    "compute_penalty": "vaediag.diagnose.penalty",
    "diagnose": "vaediag.diagnose.engine",
    "diagnose_run": "vaediag.diagnose.engine",
    "epoch_table": "vaediag.diagnose.tables",
    "find_run": "vaediag.diagnose.engine",
    "jsonable": "vaediag.diagnose.model",
    "latest_metrics": "vaediag.diagnose.tables",
    "load_rules": "vaediag.diagnose.rulesfile",
    "load_targets": "vaediag.diagnose.targets",
    "penalty_table": "vaediag.diagnose.penalty",
    "read_kl_convention": "vaediag.diagnose.arithmetic",
    "fit_total": "vaediag.diagnose.arithmetic",
    "KLConvention": "vaediag.diagnose.arithmetic",
    "LossFit": "vaediag.diagnose.arithmetic",
    "worst_severity": "vaediag.diagnose.model",
}


__all__ = [
    "diagnose",
    "diagnose_run",
    "find_run",
    "compare_runs",
    "Comparison",
    "load_targets",
    "Target",
    "epoch_table",
    "completed_epochs",
    "latest_metrics",
    "penalty_table",
    "compute_penalty",
    "read_kl_convention",
    "fit_total",
    "KLConvention",
    "LossFit",
    "load_rules",
    "Rules",
    "Milestone",
    "Criterion",
    "DEFAULT_RULES_PATH",
    "Finding",
    "Recommendation",
    "Penalty",
    "RunDiagnosis",
    "RULE_IDS",
    "ACTION_IDS",
    "SEVERITIES",
    "STATUSES",
    "jsonable",
    "worst_severity",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vaediag.diagnose' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
