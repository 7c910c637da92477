"""The diagnosis data model: findings, recommendations, the penalty summary and one run's diagnosis.

These objects are the contract between the rules, the recommender, the renderers (console, markdown
report) and the watchdog. They validate and store; they never print. ``RunDiagnosis.to_dict()`` is one
entry of ``vaediag check --json``'s ``runs`` list (ARCHITECTURE):

    {"run", "epochs", "metrics", "penalty", "findings", "recommendations"}

Epochs: ``Finding.epoch`` and the penalty's ``epoch`` are the frame's 0-based epoch index; messages speak
in completed epochs as the seed does ("after epoch 10" is index 9). ``RunDiagnosis.epochs`` is the number
of completed epochs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from vaediag.diagnose.arithmetic import KLConvention
    from vaediag.logs import RunInfo

__all__ = [
    "SEVERITIES",
    "STATUSES",
    "RULE_IDS",
    "ACTION_IDS",
    "Finding",
    "Recommendation",
    "Penalty",
    "RunDiagnosis",
    "jsonable",
    "worst_severity",
]

# Ordered from best to worst; the exit code is 1 when any finding is "fail".
SEVERITIES = ("pass", "info", "warn", "fail")
# Checklist findings also carry a status: "pending" (epoch not reached yet) and "n/a" (cannot be judged:
# term not logged, no baseline) are severity "info"; they never fail a check.
# "not reached": a finished run ended before this milestone (neither pending nor failed).
STATUSES = ("pass", "fail", "pending", "n/a", "not reached")

# Stable ids (ARCHITECTURE): users script against them. Add more, never rename.
RULE_IDS = (
    "kl_too_high",
    "kl_collapse",
    "penalty_share",
    "milestone_10",
    "milestone_30",
    "milestone_60",
    "success",
    "nonfinite",
    "val_recon_divergence",
    "lr_vanished",
    "too_short",
    "no_scalars",
    "kl_sign_convention",
    "converged",
    "blurry",
    "log_warning",  # damage the reader found (truncated tail, bad CRC): the numbers may be incomplete
    "missing_terms",  # KL or reconstruction not logged: penalty and collapse cannot be judged
    "trend",  # each monitored series: improving, plateau, regressing, too noisy (key: the series' column)
    "dead_model",  # reconstructions that do not depend on the input or do not beat each image's mean colour
    "loss_arithmetic",  # what the logged total is made of, fitted on the logged steps; conventions read
    "run_finished",  # the run has ended: judged on its final state
    "unmapped_tags",  # scalar tags no term maps to: ignored (map them with --tags)
    "pictures",  # the run logs images (the reconstruction grid first): tag, count, latest epoch, file
    "gradient_share",  # the KL's share of the gradient at the latent head beside its value share (when logged)
)
ACTION_IDS = (
    "reduce_kl_weight",
    "increase_kl_weight",
    "switch_to_autoencoder",
    "increase_latent_dim",
    "stop_training",
    "continue",
    "check_logging",
    "lower_learning_rate",  # a regressing run: keep its best checkpoint, lower the learning rate
    "fix_model",  # a dead model: the reconstructions do not depend on the input
)


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None and numpy scalars, tuples and paths as plain JSON types."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    # numpy scalars without importing numpy here
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(obj)


def worst_severity(severities: Any) -> str:
    """The worst of some severities (``pass`` for none)."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    worst = "pass"
    for s in severities:
        if rank[s] > rank[worst]:
            worst = s
    return worst


@dataclass(frozen=True)
class Finding:
    """One fact a rule established about a run, with the numbers behind it.

    Attributes:
        rule: stable rule id (:data:`RULE_IDS`, or a user milestone ``milestone_<epoch>``).
        severity: ``pass``, ``info``, ``warn`` or ``fail``.
        run: the run id.
        message: one sentence with the numbers in it.
        epoch: 0-based epoch index the finding is about, or None.
        term: the canonical term judged, or None.
        value: the value judged, or None.
        threshold: the bound it was judged against: a number, ``[low, high]``, or None.
        key: tells apart several findings of one rule in a run (a checklist criterion: ``kl``,
            ``recon_vs_baseline`` ...). ``id`` is ``rule`` or ``rule.key``.
        status: checklist findings only: ``pass``, ``fail``, ``pending`` or ``n/a``.
        label: checklist findings only: the criterion as the checklist words it ("KL loss < 500").
        value_text: the value as the checklist shows it ("1,660", "23.9 dB", "12% spread"), or None.
    """

    rule: str
    severity: str
    run: str
    message: str
    epoch: int | None = None
    term: str | None = None
    value: float | None = None
    threshold: float | tuple[float, float] | None = None
    key: str | None = None
    status: str | None = None
    label: str | None = None
    value_text: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r} (choose {', '.join(SEVERITIES)})")
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r} (choose {', '.join(STATUSES)})")

    @property
    def id(self) -> str:
        """The finding's id within its run, used as a recommendation's evidence: ``milestone_10.kl``."""
        return self.rule if self.key is None else f"{self.rule}.{self.key}"

    @property
    def is_checklist(self) -> bool:
        """True for the checklist's findings (``milestone_<N>`` and ``success``), which renderers show
        as a table of their own."""
        return self.rule == "success" or self.rule.startswith("milestone_")

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "id": self.id,
                "rule": self.rule,
                "severity": self.severity,
                "status": self.status,
                "label": self.label,
                "value_text": self.value_text,
                "run": self.run,
                "epoch": self.epoch,
                "term": self.term,
                "value": self.value,
                "threshold": list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold,
                "message": self.message,
            }
        )


@dataclass(frozen=True)
class Recommendation:
    """One next step, with the reason (numbers), the findings behind it and, where known, the command.

    Attributes:
        action: stable action id (:data:`ACTION_IDS`).
        params: the action's parameters (``{"kl_weight": 1e-06, "from": 1e-05, "factor": 10}`` ...);
            ``params["plan"]``, when present, lists lines of arithmetic to print as they are.
        reason: one or two sentences with the numbers.
        evidence: ids of the findings (:attr:`Finding.id`) that led here.
        command: the exact next command line for runs made by vaediag's trainer, else None.
    """

    action: str
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()
    command: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTION_IDS:
            raise ValueError(f"unknown action {self.action!r} (choose {', '.join(ACTION_IDS)})")

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "action": self.action,
                "params": self.params,
                "reason": self.reason,
                "evidence": list(self.evidence),
                "command": self.command,
            }
        )


@dataclass
class Penalty:
    """The KL penalty of a run: per-epoch table, the latest epoch, and the seed's arithmetic as text.

    Attributes:
        kl_weight: the latest KL weight, or None when unknown.
        kl_weight_source: where it came from (``"logged train/kl_weight"``, ``"config.json kl_weight"``,
            ``"--kl-weight"``, ``"inferred from train loss = recon + w x KL"``), or None.
        latent_dim: latent size where known (for KL per dimension).
        table: :func:`vaediag.diagnose.penalty_table` (one row per epoch).
        latest: the last completed epoch's row of ``table`` with a known penalty, else the last row: ``epoch``
            (its index), the table's columns, and ``context`` ("epoch 200, train split; kl_weight 0.00001
            (logged kl_weight))").
        arithmetic: the seed's three lines (effective penalty, reconstruction loss, ratio), ready to print.
        note: why something could not be computed (``kl_weight unknown ...``), or None.
        gradient: the KL's share of the gradient at the latent head beside its value share
            (:func:`vaediag.diagnose.penalty.gradient_summary`), or None when the run did not log it; in
            the JSON only when present.
    """

    kl_weight: float | None
    kl_weight_source: str | None
    latent_dim: int | None
    table: "pd.DataFrame"
    latest: dict[str, Any] = field(default_factory=dict)
    arithmetic: list[str] = field(default_factory=list)
    note: str | None = None
    gradient: dict[str, Any] | None = None

    def to_dict(self, *, per_epoch: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kl_weight": self.kl_weight,
            "kl_weight_source": self.kl_weight_source,
            "latent_dim": self.latent_dim,
            "latest": self.latest,
            "arithmetic": self.arithmetic,
            "note": self.note,
        }
        if self.gradient is not None:  # absent, not null, for runs that did not log it (the key set stays)
            out["gradient"] = self.gradient
        if per_epoch:
            t = self.table
            rows = []
            if len(t):  # (to_dict costs ~1 ms even on an empty frame: 10 s for 10,000 empty runs)
                for epoch, row in zip(t.index.tolist(), t.to_dict("records")):
                    rows.append({"epoch": int(epoch), **row})
            out["per_epoch"] = rows
        return jsonable(out)


def _source(info: Any) -> dict[str, Any] | None:
    """``{"kind", "label", "files"}``: what a run was read from (files relative to its directory); None
    without reader metadata (a diagnosis of a tailed frame)."""
    if info is None:
        return None
    base = Path(getattr(info, "path", "."))
    files = []
    for f in getattr(info, "source_files", None) or getattr(info, "event_files", None) or []:
        try:
            files.append(Path(f).relative_to(base).as_posix())
        except ValueError:
            files.append(str(f))
    return {"kind": getattr(info, "source", "tensorboard"), "label": getattr(info, "source_label", ""),
            "files": files}


@dataclass
class RunDiagnosis:
    """Everything vaediag concluded about one run.

    Attributes:
        run: run id.
        epochs: completed epochs (the last val epoch index + 1; train-only runs: last epoch index + 1).
        metrics: latest value per canonical term (column of :func:`epoch_table`: val preferred).
        penalty: the KL penalty summary.
        findings: every finding, in rule order.
        recommendations: the ladder's next steps, most urgent first.
        table: the run's :func:`epoch_table` (not part of the JSON; a KL logged already weighted is raw here).
        info: the reader's :class:`~vaediag.logs.RunInfo` for the run, when diagnosed from a RunSet.
        convention: what the logs' arithmetic says about the KL term (:class:`KLConvention`).
        profile: the checklist the run was judged by: ``seed`` (absolute bands and milestones) or ``generic``.
        finished: ``(ended, why)``: an ended run is judged on its final state.
    """

    run: str
    epochs: int
    metrics: dict[str, float]
    penalty: Penalty
    findings: list[Finding]
    recommendations: list[Recommendation]
    table: "pd.DataFrame | None" = None
    info: "RunInfo | None" = None
    convention: "KLConvention | None" = None
    profile: str = "seed"
    finished: tuple[bool, str] = (False, "")

    @property
    def model(self) -> str:
        """``vae``, ``ae``, ``vq`` or ``no_kl``: decided once, from the logs (:class:`KLConvention`)."""
        return self.convention.model if self.convention is not None else "vae"

    @property
    def has_kl(self) -> bool:
        """True for a run whose objective has a KL term (a VAE, or one switched to autoencoder mode)."""
        return self.model in ("vae", "ae")

    @property
    def severity(self) -> str:
        """The worst severity among the findings."""
        return worst_severity(f.severity for f in self.findings)

    @property
    def failed(self) -> bool:
        return any(f.severity == "fail" for f in self.findings)

    def finding(self, rule: str, key: str | None = None) -> Finding | None:
        """The first finding of ``rule`` (and ``key``, when given), or None."""
        for f in self.findings:
            if f.rule == rule and (key is None or f.key == key):
                return f
        return None

    def findings_of(self, rule: str) -> list[Finding]:
        return [f for f in self.findings if f.rule == rule]

    def to_dict(self, *, per_epoch: bool = True) -> dict[str, Any]:
        """One entry of ``vaediag check --json``: JSON-ready (NaN and inf are None)."""
        return {
            "run": self.run,
            "epochs": int(self.epochs),
            "metrics": jsonable(self.metrics),
            "penalty": self.penalty.to_dict(per_epoch=per_epoch),
            "findings": [f.to_dict() for f in self.findings],
            "recommendations": [r.to_dict() for r in self.recommendations],
            "model": self.model,
            "profile": self.profile,
            "finished": bool(self.finished[0]),
            "kl_convention": jsonable(self.convention.to_dict()) if self.convention is not None else None,
            "unmapped_tags": list(getattr(self.info, "unmapped_tags", []) or []) if self.info is not None else [],
            "source": _source(self.info),
        }

    def to_json(self, *, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string (strict: no NaN)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)
