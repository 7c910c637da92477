"""What a run comparison holds (:class:`Comparison` and its parts), frozen data; :mod:`.build` makes it.

Each :class:`RunView` carries one run's diagnosis with what the comparison found about it. Its accessors
(:meth:`RunView.final`, :meth:`RunView.metric`, :meth:`RunView.late_range` ...) pick values from the
diagnosis's epoch and penalty tables and compute nothing new.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from vaediag.diagnose.targets import Target

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from vaediag.diagnose.model import RunDiagnosis

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
]

#: The training core's reconstruction terms, in the order their weights are shown and compared.
LOSS_WEIGHT_ORDER = ("recon", "perceptual", "ssim_loss", "edge")
#: How many trailing epochs :meth:`RunView.late_range` spans (the seed's "KL: 160-180").
LATE_WINDOW = 10


# --------------------------------------------------------------------------------------------------
# The pieces


@dataclass(frozen=True)
class RunConfig:
    """A run's configuration as the comparison sees it (from its diagnosis and its config)."""

    kl_weight: float | None  # the weight the diagnosis resolved (penalty.kl_weight)
    kl_weight_logged: tuple[float, float] | None  # first and last logged kl_weight, when they differ
    kl_weight_source: str  # logged, config, config (AE), --kl-weight, loss arithmetic or unknown
    latent_dim: int | None
    model: str  # vae, ae, vq, no_kl (RunDiagnosis.model)
    loss_weights: Mapping[str, float]  # the trainer's reconstruction-term weights (empty when not known)


@dataclass(frozen=True)
class Verdict:
    """A run's verdict: ``label`` (meets the success criteria, failing, needs attention, on track so far
    (later milestones pending), no problems found) and the reason (finding messages, plain text), if any."""

    label: str
    reason: str | None


@dataclass(frozen=True)
class TargetResult:
    """One run against one target: its final value and :meth:`RunView.judge`'s verdict (``met``, ``low``,
    ``high``, ``nonfinite``, ``missing`` or ``n/a``)."""

    target: Target
    value: float | None
    verdict: str

    @property
    def judged(self) -> bool:
        """Whether the run's logs allow a judgement (the term is logged and applies)."""
        return self.verdict not in ("missing", "n/a")


@dataclass(frozen=True)
class ConfigDifference:
    """One setting in which two runs differ: ``key`` is ``kl_weight``, ``mode`` (values: models),
    ``latent_dim`` or a loss term of :data:`LOSS_WEIGHT_ORDER` (its weight); ``ours`` is the first run's."""

    key: str
    ours: Any
    theirs: Any


@dataclass(frozen=True)
class DataCaveat:
    """Why two runs may not compare on equal terms: ``data`` (their configs name different training data:
    the values) or ``folders`` (configs silent; their ids start in different top-level folders of a deep
    tree, the way separate projects sit side by side: the folder names)."""

    kind: str
    ours: str
    theirs: str


@dataclass(frozen=True)
class NumberedDecision:
    """A watchdog decision worth showing (a change, a declined proposal, a stop), numbered report-wide."""

    number: int
    run: str
    record: Mapping[str, Any]  # the journal's line, as written (see vaediag.watch.journal)


@dataclass(frozen=True, eq=False)
class RunView:
    """One run in the comparison: its diagnosis and what the comparison found about it (compared by identity)."""

    run: str
    number: int
    diag: "RunDiagnosis" = field(repr=False)
    info: Any = field(repr=False)  # RunInfo or None
    config: RunConfig
    verdict: Verdict
    targets: tuple[TargetResult, ...]  # in the targets' order
    milestones: Mapping[str, str]  # checklist rule -> pass, fail, pending, not reached or n/a (rules it has)
    milestones_reached: tuple[int, ...]  # the epoch indexes of the milestones it reached (after epoch 10: 9)
    decisions: tuple[Mapping[str, Any], ...] = ()  # every decision record of its watchdog.jsonl
    journal_error: str | None = None  # why its journal could not be read
    journal_skipped: int = 0  # lines of watchdog.jsonl that were not JSON objects (torn, damaged)

    @property
    def label(self) -> str:
        return f"R{self.number}"

    @property
    def table(self) -> "pd.DataFrame":
        return table_of(self.diag)

    @property
    def epochs(self) -> int:
        return int(self.diag.epochs)

    def final(self, column: str) -> float | None:
        """Value of an epoch-table column at the latest completed epoch that logged it (see :func:`final_of`)."""
        return final_of(self.diag, column)

    def metric(self, term: str, split: str = "val") -> float | None:
        """Final value of ``term``: on ``split`` where logged, else the val-preferred latest metric."""
        return metric_of(self.diag, term, split)

    def judge(self, target: Target) -> str:
        """``target.judge`` of this run's final value, or ``n/a`` for a KL target of a run that ended as an
        autoencoder (Option B: its KL is logged but not penalised; the checklist says n/a there too)."""
        return judge_of(self.diag, target)

    def late_range(self, column: str) -> tuple[float, float, int] | None:
        """(min, max, epochs) of a column's finite values over the last :data:`LATE_WINDOW` completed epochs."""
        t = self.table
        if column not in t:
            return None
        s = t[column]
        if self.epochs:
            s = s[s.index < self.epochs]
        s = s.dropna().iloc[-LATE_WINDOW:]
        s = s[s.map(math.isfinite)]
        if not len(s):
            return None
        return float(s.min()), float(s.max()), len(s)

    def penalty_latest(self, key: str) -> float | None:
        """A finite number of the penalty's latest epoch (``share``, ``ratio`` ...), else None."""
        x = self.diag.penalty.latest.get(key) if self.diag.penalty.latest else None
        return float(x) if x is not None and isinstance(x, (int, float)) and math.isfinite(x) else None

    @property
    def targets_met(self) -> int:
        return sum(r.verdict == "met" for r in self.targets)

    @property
    def targets_judged(self) -> int:
        return sum(r.judged for r in self.targets)

    @property
    def keeps(self) -> int:
        """Epochs its watchdog decided to keep the weight (not listed as decisions)."""
        return sum(1 for rec in self.decisions if is_keep(rec))


@dataclass(frozen=True)
class Ranking:
    """The comparable runs ranked by one criterion: ``column`` of the epoch table (``val_psnr``, ...)."""

    column: str
    label: str  # "final validation PSNR", ...
    higher_is_better: bool
    ranked: tuple[RunView, ...]  # best first; ties go to the earlier run
    diverged: tuple[RunView, ...]  # their last value is not finite
    silent: tuple[RunView, ...]  # they do not log it

    @property
    def term(self) -> str:
        return self.column.split("_", 1)[1]

    @property
    def best(self) -> RunView:
        return self.ranked[0]

    @property
    def runner_up(self) -> RunView | None:
        return self.ranked[1] if len(self.ranked) > 1 else None


@dataclass(frozen=True)
class Contrast:
    """What sets the best run apart from ``other`` (the runner-up, else the baseline): settings, not causes."""

    other: RunView
    differences: tuple[ConfigDifference, ...]
    caveat: DataCaveat | None


@dataclass(frozen=True)
class Comparison:
    """Everything ``vaediag report`` says about a set of runs, before any formatting."""

    runs: tuple[RunView, ...]  # in the order they started: R1 first
    baseline: RunView | None  # the one given, else the earliest run with completed epochs
    ranking: Ranking | None  # None when no run logs a criterion (or none has completed epochs)
    contrast: Contrast | None  # the best run against the runner-up or the baseline
    targets: tuple[Target, ...]
    milestone_rules: tuple[str, ...]  # the checklist rules judged on any comparable run, in epoch order
    decisions: tuple[NumberedDecision, ...]  # D1, D2 ... over every run's journal
    warnings: tuple[str, ...] = ()  # what reading the logs warned about (RunSet.warnings)

    @property
    def comparable(self) -> tuple[RunView, ...]:
        """The runs with at least one completed epoch (the others are only named in the notes)."""
        return tuple(v for v in self.runs if v.epochs > 0)

    @property
    def best(self) -> RunView | None:
        return self.ranking.best if self.ranking is not None else None

    @property
    def compared_baseline(self) -> RunView | None:
        """The baseline, when the best run is measured against it besides the runner-up: it is ranked and is
        neither the best run nor the runner-up."""
        b, r = self.baseline, self.ranking
        if b is None or r is None or b is r.best or b not in r.ranked or b is r.runner_up:
            return None
        return b

    @property
    def failing(self) -> tuple[RunView, ...]:
        """Comparable runs other than the best with a failed check."""
        return tuple(v for v in self.comparable if v.diag.failed and v is not self.best)

    def decisions_of(self, view: RunView) -> list[NumberedDecision]:
        return [d for d in self.decisions if d.run == view.run]


# --------------------------------------------------------------------------------------------------
# Reading a diagnosis (no math of its own: picks from the diagnosis's tables; build.py uses them too)


def table_of(diag: "RunDiagnosis") -> "pd.DataFrame":
    import pandas as pd

    return diag.table if diag.table is not None else pd.DataFrame()


def final_of(diag: "RunDiagnosis", column: str) -> float | None:
    """Value of an epoch-table column at the latest completed epoch that logged it.

    A run whose latest logged value of the term is not finite (it diverged) ends there: the result is
    that NaN or inf, never an older finite value that would make a dead run look healthy.
    """
    t = table_of(diag)
    if column not in t:
        return None
    term = column.split("_", 1)[1] if column.startswith(("val_", "train_")) else column
    latest = diag.metrics.get(term)
    if latest is not None and not math.isfinite(latest):
        return float(latest)
    s = t[column]
    if diag.epochs:
        s = s[s.index < int(diag.epochs)]
    s = s.dropna()
    return float(s.iloc[-1]) if len(s) else None


def metric_of(diag: "RunDiagnosis", term: str, split: str = "val") -> float | None:
    """Final value of ``term``: on ``split`` where logged, else the val-preferred latest metric."""
    latest = diag.metrics.get(term)
    if latest is not None and not math.isfinite(latest):
        return float(latest)
    v = final_of(diag, f"{split}_{term}")
    if v is None and split == "val":
        m = diag.metrics.get(term)
        v = float(m) if m is not None else None
    return v


def judge_of(diag: "RunDiagnosis", target: Target) -> str:
    """``target.judge`` of the run's final value; ``n/a`` for a KL target of a run that ended as an autoencoder."""
    if target.term == "kl" and diag.model == "ae":
        return "n/a"
    return target.judge(metric_of(diag, target.term, target.split))


def is_keep(record: Mapping[str, Any]) -> bool:
    """A journal decision that kept the weight (not declined): not worth a number in the report."""
    return record.get("action") == "keep" and not record.get("declined")
