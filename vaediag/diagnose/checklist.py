"""The seed's monitoring checklist and success criteria, judged from data (``vaediag/rules/default.toml``).

Rule ids: ``milestone_<epoch>`` (``milestone_10``, ``milestone_30``, ``milestone_60`` by default) and
``success``; one finding per criterion, keyed by the criterion id (``milestone_10.kl``).

Statuses: ``pass`` and ``fail``; ``pending`` when the run has not reached the milestone's epoch (or, for
success, an unmet criterion before ``judge_after`` epochs); ``n/a`` when the criterion cannot be judged
(term not logged, no ``--baseline`` for a comparison). Pending and n/a findings have severity ``info``
and never fail a check.

A milestone "after epoch N" is judged on the logs' epoch index N - 1, with the latest value logged at or
before it. Comparisons with a baseline use the baseline's value at the same epoch (its last epoch when
it is shorter).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from vaediag.diagnose.health import plateau
from vaediag.diagnose.model import Finding
from vaediag.diagnose.numbers import fmt_kl, fmt_pct, fmt_sig, human_epoch
from vaediag.diagnose.rulesfile import Criterion, Milestone
from vaediag.diagnose.tables import value_at
from vaediag.terms import TERM_INFO

__all__ = ["check_milestones", "check_success", "judge_criterion"]

_SHORT = {"kl": "KL", "psnr": "PSNR", "psnr_grey": "PSNR grey", "psnr_colour": "PSNR colour", "ssim": "SSIM",
          "recon": "recon", "perceptual": "perceptual", "sharpness": "sharpness ratio"}


def _name(term: str | None) -> str:
    if term is None:
        return "?"
    return _SHORT.get(term, TERM_INFO[term].label if term in TERM_INFO else term)


def _show(term: str | None, v: float) -> str:
    if term in ("kl",):
        return fmt_kl(v)
    if term and term.startswith("psnr"):
        return f"{v:.1f} dB" if math.isfinite(v) else str(v)
    return fmt_sig(v, 3)


def _target(c: Criterion) -> str:
    if c.min is not None and c.max is not None:
        return f"{_show(c.term, c.min)}-{_show(c.term, c.max)}"
    if c.max is not None:
        return f"< {_show(c.term, c.max)}"
    if c.min is not None:
        return f"> {_show(c.term, c.min)}"
    return ""


def judge_criterion(
    c: Criterion,
    table: pd.DataFrame,
    *,
    at: int,
    baseline: pd.DataFrame | None = None,
    baseline_run: str | None = None,
    converged: dict | None = None,
) -> tuple[str, float | None, float | tuple[float, float] | None, str]:
    """Judge one criterion at epoch index ``at``: ``(status, value, threshold, message)``.

    ``value`` is the number judged against ``threshold``: the term's value for bounds and baseline
    criteria, the relative spread for ``stable``, the relative improvement for ``converged``.

    ``status`` is pass, fail or n/a (pending is decided by the caller, which knows the epoch count).
    """
    if c.kind == "converged":
        return _judge_converged(table, at, converged)
    term = c.term
    assert term is not None
    got = value_at(table, term, at)
    if got is None:
        return "n/a", None, c.threshold, f"{_name(term)} not logged by {human_epoch(at)}: cannot judge"
    v, _ = got
    if not math.isfinite(v):
        return "fail", v, c.threshold, f"{_name(term)} = {v} (not finite)"
    if term == "kl" and c.kind in ("bounds", "stable") and _autoencoder_at(table, at):
        return "n/a", v if c.kind == "bounds" else None, c.threshold, (f"{_name(term)} = {_show(term, v)}; autoencoder mode (z = mu, kl_weight 0) "
                                       f"at {human_epoch(at)}: the KL is not penalised, its band does not apply")
    if c.kind == "bounds":
        return _judge_bounds(c, term, v)
    if c.kind == "stable":
        return _judge_stable(c, term, table, at)
    if c.kind == "baseline":
        return _judge_baseline(term, v, table, at, baseline, baseline_run)
    raise ValueError(f"unknown criterion kind {c.kind!r}")  # pragma: no cover - validated by the loader


def _judge_converged(table: pd.DataFrame, at: int, converged: dict | None):
    """A ``converged`` criterion: the reconstruction's plateau test up to ``at``."""
    opts = dict(converged or {"window": 10, "min_delta": 0.01})
    window = opts.pop("window")
    min_delta = opts.pop("min_delta")
    opts.pop("regress_fail", None)
    p = plateau(table, upto=at, window=window, min_delta=min_delta, **opts)
    if p is None:
        return "n/a", None, None, "not enough reconstruction history to judge convergence"
    t = p["trend"]
    better = f"improved {fmt_pct(max(p['improvement'], 0.0), 2)} over the last {t.window} epochs"
    if p["kind"] == "plateau":
        return "pass", max(p["improvement"], 0.0), min_delta, f"reconstruction {better} (converged)"
    if p["kind"] == "improving":
        return ("pending", max(p["improvement"], 0.0), min_delta,
                f"reconstruction still improving ({better}): not converged yet, keep training")
    if p["kind"] == "regressing":
        return ("fail", max(p["improvement"], 0.0), min_delta,
                f"reconstruction is regressing (best {fmt_sig(t.best)} at {human_epoch(t.best_epoch)}, "
                f"{fmt_sig(t.last)} at {human_epoch(t.last_epoch)}): not converged")
    return "n/a", None, min_delta, "reconstruction too noisy to judge convergence"


def _judge_bounds(c: Criterion, term: str, v: float):
    """A ``bounds`` criterion: the term's value ``v`` inside its band or past its one side."""
    if c.min is not None and c.max is not None:  # a band ("KL 100-300") includes its ends
        ok = c.min <= v <= c.max
    else:  # one side ("KL < 500", "PSNR > 28 dB") is strict, as the seed writes it
        ok = (c.min is None or v > c.min) and (c.max is None or v < c.max)
    return "pass" if ok else "fail", v, c.threshold, f"{_name(term)} = {_show(term, v)} (target {_target(c)})"


def _judge_stable(c: Criterion, term: str, table: pd.DataFrame, at: int):
    """A ``stable`` criterion: the term's relative spread over its last ``window`` epochs up to ``at``."""
    s = table[term].loc[:at].dropna() if term in table else pd.Series(dtype=float)
    s = s[np.isfinite(s)]
    w = int(c.window or 2)
    if len(s) < w:
        return "n/a", None, c.tolerance, f"{_name(term)} logged on {len(s)} epochs: needs {w} to judge stability"
    last = s.iloc[-w:]
    mean = float(last.mean())
    spread = float(last.max() - last.min()) / abs(mean) if mean else math.inf
    ok = spread <= float(c.tolerance or 0.0)
    return ("pass" if ok else "fail", spread, c.tolerance,
            f"{_name(term)} varied {fmt_pct(spread)} over the last {w} epochs "
            f"({_show(term, float(last.min()))}-{_show(term, float(last.max()))}; at most {fmt_pct(c.tolerance or 0.0)})")


def _judge_baseline(term: str, v: float, table: pd.DataFrame, at: int, baseline: pd.DataFrame | None,
                    baseline_run: str | None):
    """A ``baseline`` criterion: the term's value ``v`` better than the baseline run's at (or before) ``at``."""
    if baseline is None:
        return "n/a", v, None, (f"{_name(term)} = {_show(term, v)}; no baseline run to compare with "
                                "(pass --baseline RUN)")
    if baseline_run is not None and baseline is table:
        return "n/a", v, None, f"{_name(term)} = {_show(term, v)}; this run is the baseline"
    b = value_at(baseline, term, at)
    if b is None:
        return "n/a", v, None, f"{_name(term)} = {_show(term, v)}; the baseline {baseline_run or ''} does not log it"
    bv, be = b
    higher = TERM_INFO[term].higher_is_better if term in TERM_INFO else None
    if higher is None:
        return "n/a", v, bv, f"{_name(term)} has no better direction to compare"
    ok = v > bv if higher else v < bv
    when = human_epoch(be) if be == at else f"its last {human_epoch(be)}"
    return ("pass" if ok else "fail", v, bv,
            f"{_name(term)} = {_show(term, v)} vs {_show(term, bv)} in baseline {baseline_run or ''} at {when} "
            f"({'better' if ok else 'not better'})")


def _autoencoder_at(table: pd.DataFrame, at: int) -> bool:
    """Whether the run trained as an autoencoder (Option B: logged ``ae_mode`` 1) in epoch index ``at``."""
    if "ae_mode" not in table:
        return False
    s = table["ae_mode"].loc[:at].dropna()
    return bool(len(s)) and float(s.iloc[-1]) >= 0.5


def _value_text(c: Criterion, value: float | None) -> str | None:
    if value is None:
        return None
    if c.kind == "stable":
        return f"{fmt_pct(value)} spread"
    if c.kind == "converged":
        return f"{fmt_pct(value, 2)} better"
    return _show(c.term, value)


def _finding(rule: str, c: Criterion, run: str, status: str, epoch: int | None, value, threshold, message: str,
             ) -> Finding:
    severity = {"pass": "pass", "fail": "fail"}.get(status, "info")
    return Finding(rule, severity, run, message, epoch=epoch, term=c.term or ("recon" if c.kind == "converged" else None),
                   value=value, threshold=threshold, key=c.id, status=status, label=c.label,
                   value_text=_value_text(c, value))


def check_milestones(
    table: pd.DataFrame,
    *,
    run: str,
    epochs: int,
    milestones: Sequence[Milestone],
    baseline: pd.DataFrame | None = None,
    baseline_run: str | None = None,
    converged: dict | None = None,
    finished: bool = False,
) -> list[Finding]:
    """``milestone_<N>``: each criterion of each milestone; pending where the run has fewer than N epochs,
    or "not reached" when the run has ended before epoch N (neither pending nor failed)."""
    out = []
    for m in milestones:
        at = m.epoch - 1
        for c in m.criteria:
            if epochs < m.epoch:
                if finished:
                    msg = f"{m.title.lower()}: not reached: the run ended at epoch {epochs}"
                    out.append(_finding(m.rule, c, run, "not reached", at, None, c.threshold, msg))
                else:
                    msg = f"{m.title.lower()}: pending (the run has {epochs} of {m.epoch} epochs)"
                    out.append(_finding(m.rule, c, run, "pending", at, None, c.threshold, msg))
                continue
            status, value, threshold, detail = judge_criterion(c, table, at=at, baseline=baseline,
                                                               baseline_run=baseline_run, converged=converged)
            out.append(_finding(m.rule, c, run, status, at, value, threshold,
                                f"{m.title.lower()}: {detail}: {status}"))
    return out


def check_success(
    table: pd.DataFrame,
    *,
    run: str,
    epochs: int,
    criteria: Sequence[Criterion],
    judge_after: int,
    baseline: pd.DataFrame | None = None,
    baseline_run: str | None = None,
    converged: dict | None = None,
    finished: bool = False,
) -> list[Finding]:
    """``success``: each criterion on the latest completed epoch; unmet before ``judge_after`` is pending,
    unless the run has ended: a finished run is judged on its final state, and falling short is a fail."""
    out = []
    at = epochs - 1
    for c in criteria:
        if epochs == 0:
            out.append(_finding("success", c, run, "pending", None, None, c.threshold, "success: no completed epoch yet"))
            continue
        status, value, threshold, detail = judge_criterion(c, table, at=at, baseline=baseline,
                                                           baseline_run=baseline_run, converged=converged)
        if status == "fail" and epochs < judge_after and not finished:
            status = "pending"
            detail += f"; not met yet, judged from {human_epoch(judge_after - 1)}"
        elif status == "fail" and epochs < judge_after:
            detail += f"; the run ended at epoch {epochs} short of it"
        elif status == "pending" and finished:
            status = "fail" if c.kind != "converged" else "n/a"
            detail += "; the run has ended"
        out.append(_finding("success", c, run, status, at, value, threshold, f"success at {human_epoch(at)}: {detail}: {status}"))
    return out
