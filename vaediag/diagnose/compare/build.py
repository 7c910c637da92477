"""Building a :class:`~.views.Comparison`: :func:`compare_runs` (the one entry point), the verdicts, the
ranking, the baseline and what sets the best run apart. Every number comes from the runs' diagnoses;
the one read is each run's watchdog journal (:func:`vaediag.watch.journal.run_decisions`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from vaediag.diagnose.compare.views import (LOSS_WEIGHT_ORDER, Comparison, ConfigDifference, Contrast, DataCaveat,
                                            NumberedDecision, Ranking, RunConfig, RunView, TargetResult, Verdict,
                                            is_keep, judge_of, metric_of, table_of)
from vaediag.diagnose.engine import run_order
from vaediag.diagnose.targets import Target, load_targets
from vaediag.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.diagnose.model import RunDiagnosis
    from vaediag.logs import RunSet
    from vaediag.watch.journal import RunDecisions

__all__ = ["compare_runs", "diagnose_runs", "verdict_of"]

# Best-run criteria, in order of preference: the first one any run logs decides.
# (column of the epoch table, label, higher is better)
_CRITERIA = (
    ("val_psnr", "final validation PSNR", True),
    ("val_recon", "final validation reconstruction loss", False),
    ("train_recon", "final training reconstruction loss", False),
)
# Parameters that name a run's training data (our trainer's train_npy; common foreign spellings).
_DATA_PARAMS = ("train_npy", "data_path", "data_dir", "dataset", "train_path")


def _config(diag: "RunDiagnosis", info: Any) -> RunConfig:
    from vaediag.diagnose.penalty import resolve_loss_weights

    pen = diag.penalty
    logged = None
    t = table_of(diag)
    if "kl_weight" in t:
        s = t["kl_weight"].dropna()
        if len(s) and float(s.iloc[0]) != float(s.iloc[-1]):
            logged = (float(s.iloc[0]), float(s.iloc[-1]))
    source = pen.kl_weight_source or ""
    src = ("logged" if source.startswith("logged") else "config" if source.startswith(("config", "run params", "parameter"))
           else "config (AE)" if source.startswith("autoencoder") else "--kl-weight" if source.startswith("--kl")
           else "loss arithmetic" if source.startswith("the logged total") else "unknown")
    params = info.params if info is not None else {}
    return RunConfig(kl_weight=pen.kl_weight, kl_weight_logged=logged,
                     kl_weight_source=src if pen.kl_weight is not None else "unknown",
                     latent_dim=pen.latent_dim or None, model=diag.model,
                     loss_weights=resolve_loss_weights(params) or {})


def verdict_of(diag: "RunDiagnosis") -> Verdict:
    """The run's verdict from its findings: the worst severity names it; the reason prefers a diagnosis (KL
    too high, penalty, blur ...) over a checklist line, and counts unmet success criteria."""
    succ = [f for f in diag.findings if f.rule == "success"]
    judged = [f for f in succ if f.status in ("pass", "fail")]
    # Success only when every criterion was judged and passed (a criterion whose term is not logged, n/a,
    # or not due yet, pending, leaves the question open) and no diagnosis outside the checklist fails.
    # The end state outranks an intermediate milestone missed on the way, which is still named.
    main_fails = [f for f in diag.findings if f.severity == "fail" and not f.is_checklist]
    if succ and all(f.status == "pass" for f in succ) and not main_fails:
        missed = [f for f in diag.findings if f.rule.startswith("milestone_") and f.status == "fail"]
        note = None
        if missed:
            msg = missed[0].message
            note = "on the way it missed " + (msg[: -len(": fail")] if msg.endswith(": fail") else msg)
        return Verdict("meets the success criteria", note)
    why = []
    failed = [f for f in judged if f.status == "fail"]
    if failed:
        why.append(f"misses {len(failed)} of {len(judged)} success criteria")
    for sev in ("fail", "warn"):
        main = [f for f in diag.findings if f.severity == sev and not f.is_checklist]
        if main:
            why.append(main[0].message)
            break
    if not why:
        other = [f for f in diag.findings if f.severity == "fail"]
        if other:
            why.append(other[0].message)
    text = "; ".join(why) or None
    if diag.severity == "fail":
        return Verdict("failing", text)
    if diag.severity == "warn":
        return Verdict("needs attention", text)
    if any(f.status == "pending" for f in diag.findings):
        return Verdict("on track so far (later milestones pending)", text)
    unjudged = [f for f in succ if f.status == "n/a"]
    if unjudged:
        return Verdict("no problems found", f"{len(unjudged)} of {len(succ)} success criteria cannot be judged (not logged)")
    return Verdict("no problems found", text)


# --------------------------------------------------------------------------------------------------
# Milestones and decisions


def _milestone_rules(diags: Sequence["RunDiagnosis"]) -> tuple[str, ...]:
    rules = {f.rule for d in diags for f in d.findings if f.is_checklist}

    def key(r: str) -> tuple[int, int, str]:
        tail = r.split("_", 1)[1] if r.startswith("milestone_") else ""
        return (1 if r == "success" else 0, int(tail) if tail.isdigit() else 0, r)

    return tuple(sorted(rules, key=key))


def _status_of(findings: Sequence[Any]) -> str:
    st = [f.status or ("fail" if f.severity == "fail" else "pass") for f in findings]
    if "fail" in st:
        return "fail"
    if "pending" in st:
        return "pending"
    if "pass" in st:
        return "pass"
    if "not reached" in st:
        return "not reached"
    return "n/a"


def _milestones_reached(diag: "RunDiagnosis") -> tuple[int, ...]:
    reached = set()
    for f in diag.findings:
        tail = f.rule.split("_", 1)[1] if f.rule.startswith("milestone_") else ""
        if tail.isdigit() and 1 <= int(tail) <= int(diag.epochs):
            reached.add(int(tail) - 1)  # "after epoch 10" is the frame's epoch index 9
    return tuple(sorted(reached))


def _numbered(views: Sequence[RunView]) -> tuple[NumberedDecision, ...]:
    out = []
    for v in views:
        for rec in v.decisions:
            if not is_keep(rec):
                out.append(NumberedDecision(number=len(out) + 1, run=v.run, record=rec))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# Ranking, baseline and what sets the best run apart


def _rank(comparable: Sequence[RunView]) -> Ranking | None:
    for column, label, higher in _CRITERIA:
        scored = [(v.final(column), v) for v in comparable]
        scored = [(x, v) for x, v in scored if x is not None and math.isfinite(x)]
        if scored:
            # Ties go to the earlier run (stable sort on R-number), so the order never depends on floats alone.
            scored.sort(key=lambda p: (-p[0] if higher else p[0], p[1].number))
            ranked = tuple(v for _, v in scored)
            unranked = [v for v in comparable if v not in ranked]
            return Ranking(column=column, label=label, higher_is_better=higher, ranked=ranked,
                           diverged=tuple(v for v in unranked if v.final(column) is not None),
                           silent=tuple(v for v in unranked if v.final(column) is None))
    return None


def _pick_baseline(views: Sequence[RunView], baseline: str | None) -> RunView | None:
    if baseline is None:
        return next((v for v in views if v.epochs > 0), None)
    for v in views:
        if v.run == baseline:
            return v
    raise UsageError(f"--baseline {baseline!r} is not a run of this report (runs: "
                     f"{', '.join(v.run for v in views[:8])}{' …' if len(views) > 8 else ''})")


def _differences(a: RunView, b: RunView) -> tuple[ConfigDifference, ...]:
    """The settings in which ``a`` differs from ``b`` (both values known)."""
    ca, cb = a.config, b.config
    out = []
    if ca.kl_weight is not None and cb.kl_weight is not None and ca.kl_weight != cb.kl_weight:
        out.append(ConfigDifference("kl_weight", ca.kl_weight, cb.kl_weight))
    if ca.model != cb.model:
        out.append(ConfigDifference("mode", ca.model, cb.model))
    if ca.latent_dim and cb.latent_dim and ca.latent_dim != cb.latent_dim:
        out.append(ConfigDifference("latent_dim", ca.latent_dim, cb.latent_dim))
    for k in LOSS_WEIGHT_ORDER:
        wa, wb = ca.loss_weights.get(k), cb.loss_weights.get(k)
        if wa is not None and wb is not None and wa != wb:
            out.append(ConfigDifference(k, wa, wb))
    return tuple(out)


def _data_caveat(a: RunView, b: RunView) -> DataCaveat | None:
    """Different training data where the configs say so, or (configs silent) run ids from different
    top-level folders of a deep tree."""
    da = a.info.param(*_DATA_PARAMS) if a.info is not None else None
    db = b.info.param(*_DATA_PARAMS) if b.info is not None else None
    if da is not None and db is not None:
        return DataCaveat("data", str(da), str(db)) if str(da) != str(db) else None
    pa, pb = a.run.split("/"), b.run.split("/")
    if len(pa) >= 3 and len(pb) >= 3 and pa[0] != pb[0]:
        return DataCaveat("folders", pa[0], pb[0])
    return None


# --------------------------------------------------------------------------------------------------
# The one function


def compare_runs(
    runset: "RunSet",
    diagnoses: Sequence["RunDiagnosis"],
    *,
    targets: Sequence[Target] | None = None,
    baseline: str | None = None,
    journals: Mapping[str, "RunDecisions | None"] | None = None,
) -> Comparison:
    """Compare the runs of ``runset`` from their diagnoses.

    Args:
        runset: the logs (:func:`vaediag.load`).
        diagnoses: :func:`vaediag.diagnose.diagnose` of the same runset, one per run.
        targets: expected results (default: :func:`~vaediag.diagnose.targets.load_targets`' default file).
        baseline: run id to measure improvement against (default: the earliest run with completed epochs).
        journals: each run's watchdog decisions by run id (default: read beside each run with
            :func:`vaediag.watch.journal.run_decisions`; a run missing here has no journal).

    Raises:
        UsageError: a run has no diagnosis, or ``baseline`` is not one of the runs.
        RulesError / InputError: the default targets file is broken.
    """
    targets = load_targets() if targets is None else tuple(targets)
    by_run = {d.run: d for d in diagnoses}
    missing = [r for r in runset.runs if r not in by_run]
    if missing:
        raise UsageError(f"no diagnosis for run(s) {', '.join(missing[:5])}: pass diagnose(runset) for the same runset")
    order = run_order(runset)
    if journals is None:
        from vaediag.watch.journal import run_decisions

        journals = {run: run_decisions(getattr(runset.runs.get(run), "path", None)) for run in order}
    rules = _milestone_rules([by_run[r] for r in order if by_run[r].epochs > 0])
    views = []
    for i, run in enumerate(order, start=1):
        d = by_run[run]
        info = runset.runs.get(run)
        journal = journals.get(run)
        views.append(RunView(
            run=run, number=i, diag=d, info=info, config=_config(d, info), verdict=verdict_of(d),
            targets=tuple(TargetResult(t, metric_of(d, t.term, t.split), judge_of(d, t)) for t in targets),
            milestones={r: _status_of(d.findings_of(r)) for r in rules if d.findings_of(r)},
            milestones_reached=_milestones_reached(d),
            decisions=journal.decisions if journal is not None else (),
            journal_error=journal.error if journal is not None else None,
            journal_skipped=journal.skipped if journal is not None else 0,
        ))
    base = _pick_baseline(views, baseline)
    ranking = _rank([v for v in views if v.epochs > 0])
    contrast = None
    if ranking is not None:
        best = ranking.best
        other = ranking.runner_up or (base if base is not None and base is not best else None)
        if other is not None:
            contrast = Contrast(other=other, differences=_differences(best, other), caveat=_data_caveat(best, other))
    return Comparison(runs=tuple(views), baseline=base, ranking=ranking, contrast=contrast, targets=targets,
                      milestone_rules=rules, decisions=_numbered(views), warnings=tuple(runset.warnings))


def diagnose_runs(
    runset: "RunSet",
    *,
    rules: Any = None,
    kl_weight: float | None = None,
    baseline: str | None = None,
    latent_dim: int | None = None,
    profile: str | None = None,
) -> list["RunDiagnosis"]:
    """Diagnose every run for a report: :func:`vaediag.diagnose.diagnose`, the same call ``vaediag check``
    makes (so the report's verdicts are check's), including its "previous run" rule without a baseline.

    Raises:
        UsageError: a bad ``kl_weight`` or ``baseline``; RulesError / InputError: a bad rules file.
    """
    from vaediag.diagnose import diagnose

    return diagnose(runset, rules=rules, kl_weight=kl_weight, baseline=baseline, latent_dim=latent_dim,
                    profile=profile)
