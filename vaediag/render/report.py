"""The markdown run-comparison report (``vaediag report``): one document a team reads instead of TensorBoard.

Sections, in order: reconstructions (each run's logged pictures, inputs over reconstructions, at its final
epoch, watchdog decisions and milestones, runs side by side: :mod:`.pictures`; only for runs that log
images), summary (the best run, by how much, why, what next), runs (configuration and final
metrics), evolution across runs (the seed's "Run 1 ... Run 2 ... Run 3"), curves (PNG plots), milestones
(pass / fail / pending), expected vs actual (targets from a TOML file, improvement over a baseline),
findings and recommendations (the same rules as ``vaediag check``), watchdog decisions (runs with a
``watchdog.jsonl``), notes.

Rendering computes no diagnosis: every number about penalties, milestones, findings and recommendations
comes from :func:`vaediag.diagnose.diagnose` (one source of math); this module only picks, orders, formats
and escapes. Runs are numbered R1, R2 ... in the order they started (first logged wall time), which is the
order a person ran them in.

Determinism: the same logs give the same markdown bytes, apart from the one line that starts with
:data:`GENERATED_PREFIX`, and the same PNG bytes (no metadata, fixed style; see :mod:`.plots`).

    >>> from vaediag.render.report import write_report                  # doctest: +SKIP
    >>> write_report(runset, diagnoses, "reports/demo.md", title="Demo") # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from vaediag.atomic import atomic_write
from vaediag.diagnose.engine import run_order
from vaediag.diagnose.targets import DEFAULT_TARGETS_PATH, DIRECTIONS, Target, load_targets
from vaediag.errors import InputError, UsageError
from vaediag.render import pictures
from vaediag.render.markdown import MISSING, code_span, escape, link_path, table
from vaediag.sanitize import plot_text, visible
from vaediag.terms import TERM_INFO

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from vaediag.diagnose.model import Finding, RunDiagnosis
    from vaediag.logs import RunSet

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

# The one line that differs between two reports of the same logs (time and sources); tests skip it.
GENERATED_PREFIX = "_Generated "

# Best-run criteria, in order of preference: the first one any run logs decides.
# (column of the epoch table, label, higher is better)
_CRITERIA = (
    ("val_psnr", "final validation PSNR", True),
    ("val_recon", "final validation reconstruction loss", False),
    ("train_recon", "final training reconstruction loss", False),
)
# Final-metric columns of the run table: (term, header).
_METRIC_COLUMNS = (("kl", "KL"), ("perceptual", "Perceptual"), ("psnr", "PSNR (dB)"), ("ssim", "SSIM"),
                   ("recon", "Recon"))
_LOSS_WEIGHT_ORDER = ("recon", "perceptual", "ssim_loss", "edge")
_STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "pending": "⏳ pending", "n/a": "n/a", "not reached": "not reached"}
_MODE_LABEL = {"vae": "VAE", "ae": "AE (z = mu)", "vq": "VQ-VAE (no KL)", "no_kl": "no KL term"}
_SEVERITY_MARK = {"fail": "❌ fail", "warn": "⚠️ warn", "info": "ℹ️ info", "pass": "✅ pass"}
# How many trailing epochs the evolution section summarises as a range (the seed's "KL: 160-180").
_LATE_WINDOW = 10


# --------------------------------------------------------------------------------------------------
# The per-run view: what the renderer needs, picked from one RunDiagnosis (no math of its own).


@dataclass
class _Run:
    run: str
    number: int
    diag: "RunDiagnosis"
    info: Any  # RunInfo or None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    journal_error: str | None = None
    journal_skipped: int = 0  # lines of watchdog.jsonl that were not JSON objects (torn, damaged)

    @property
    def label(self) -> str:
        return f"R{self.number}"

    @property
    def name(self) -> str:
        """R-number and escaped run id, for prose."""
        return f"{self.label} ({escape(self.run)})"

    @property
    def table(self) -> "pd.DataFrame":
        import pandas as pd

        return self.diag.table if self.diag.table is not None else pd.DataFrame()

    @property
    def epochs(self) -> int:
        return int(self.diag.epochs)

    def final(self, column: str) -> float | None:
        """Value of an epoch-table column at the latest completed epoch that logged it.

        A run whose latest logged value of the term is not finite (it diverged) ends there: the result is
        that NaN or inf, never an older finite value that would make a dead run look healthy.
        """
        t = self.table
        if column not in t:
            return None
        term = column.split("_", 1)[1] if column.startswith(("val_", "train_")) else column
        latest = self.diag.metrics.get(term)
        if latest is not None and not math.isfinite(latest):
            return float(latest)
        s = t[column]
        if self.epochs:
            s = s[s.index < self.epochs]
        s = s.dropna()
        return float(s.iloc[-1]) if len(s) else None

    def judge(self, target: "Target") -> str:
        """``target.judge`` of this run's final value, or ``n/a`` for a KL target of a run that ended as an
        autoencoder (Option B: its KL is logged but not penalised; the checklist says n/a there too)."""
        if target.term == "kl" and self.diag.model == "ae":
            return "n/a"
        return target.judge(self.metric(target.term, target.split))

    def metric(self, term: str, split: str = "val") -> float | None:
        """Final value of ``term``: on ``split`` where logged, else the val-preferred latest metric."""
        latest = self.diag.metrics.get(term)
        if latest is not None and not math.isfinite(latest):
            return float(latest)
        v = self.final(f"{split}_{term}")
        if v is None and split == "val":
            m = self.diag.metrics.get(term)
            v = float(m) if m is not None else None
        return v

    def late_range(self, column: str) -> tuple[float, float, int] | None:
        """(min, max, epochs) of a column over the last few completed epochs."""
        t = self.table
        if column not in t:
            return None
        s = t[column]
        if self.epochs:
            s = s[s.index < self.epochs]
        s = s.dropna().iloc[-_LATE_WINDOW:]
        s = s[s.map(math.isfinite)]
        if not len(s):
            return None
        return float(s.min()), float(s.max()), len(s)


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


def _views(runset: "RunSet", diagnoses: Sequence["RunDiagnosis"]) -> list[_Run]:
    from vaediag.watch.journal import run_decisions

    by_run = {d.run: d for d in diagnoses}
    missing = [r for r in runset.runs if r not in by_run]
    if missing:
        raise UsageError(f"no diagnosis for run(s) {', '.join(missing[:5])}: pass diagnose(runset) for the same runset")
    views = []
    for i, run in enumerate(run_order(runset), start=1):
        d = by_run[run]
        info = runset.runs.get(run)
        v = _Run(run=run, number=i, diag=d, info=info)
        # A damaged journal must not cost the whole report: run_decisions says why instead of raising.
        journal = run_decisions(getattr(info, "path", None))
        if journal is not None:
            v.decisions, v.journal_skipped, v.journal_error = list(journal.decisions), journal.skipped, journal.error
        views.append(v)
    return views


# --------------------------------------------------------------------------------------------------
# Formatting helpers (numbers come from vaediag.diagnose.numbers: the same text as `vaediag check`)


def _val(x: float | None, term: str | None = None) -> str:
    """A value for a cell: ``—`` when not logged, ``NaN``/``inf`` spelled out (a diverged run is news)."""
    from vaediag.diagnose.numbers import fmt_value

    if x is None:
        return MISSING
    if not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return fmt_value(x, term)


def _unit(term: str) -> str:
    u = TERM_INFO[term].unit if term in TERM_INFO else ""
    return f" {u}" if u == "dB" else ""


def _weight(w: float | None) -> str:
    from vaediag.diagnose.numbers import fmt_weight

    if w is None or (isinstance(w, float) and math.isnan(w)):
        return MISSING
    return fmt_weight(float(w))  # rounds a float32 read-back (9.999999747e-06) to 0.00001 itself


def _pct(x: float | None) -> str:
    from vaediag.diagnose.numbers import fmt_pct, fmt_sig

    if x is None or not math.isfinite(x):
        return MISSING
    # Tiny shares (0.0009 %) matter here: they are the point of the seed's fix, so keep 2 significant figures.
    return fmt_pct(x, 1) if x >= 0.001 else f"{fmt_sig(100 * x, 2)}%"


def _factor(a: float, b: float) -> str:
    """``a`` relative to ``b`` as "N× lower/higher"."""
    from vaediag.diagnose.numbers import fmt_sig

    if a == b:
        return "unchanged"
    if a <= 0 or b <= 0:
        return f"{'up' if a > b else 'down'} from {fmt_sig(b, 3)}"
    r = a / b
    if 1 / 1.5 < r < 1.5:  # small changes read better as percentages than as "1.1× higher"
        return f"{fmt_sig(abs(r - 1) * 100, 2)}% {'higher' if r > 1 else 'lower'}"
    return f"{fmt_sig(r, 2)}× higher" if r > 1 else f"{fmt_sig(1 / r, 2)}× lower"


def _change(term: str, base: float | None, value: float | None) -> str:
    """How ``value`` compares with ``base``, in the metric's own terms (dB, points, factors)."""
    from vaediag.diagnose.numbers import fmt_sig

    if base is None or value is None or not (math.isfinite(base) and math.isfinite(value)):
        return MISSING
    if term.startswith("psnr"):
        d = value - base
        return f"{'+' if d >= 0 else '−'}{fmt_sig(abs(d), 3) if abs(d) >= 0.1 else f'{abs(d):.2f}'} dB"
    if term.startswith("ssim") and term != "ssim_loss":
        d = value - base
        rel = f" ({'+' if d >= 0 else '−'}{fmt_sig(abs(d) / base * 100, 2)}%)" if base else ""
        return f"{'+' if d >= 0 else '−'}{fmt_sig(abs(d), 2)}{rel}"
    return _factor(value, base)


def _judgement(verdict: str) -> str:
    if verdict == "n/a":
        return "n/a (autoencoder: the KL is not penalised)"
    if verdict == "met":
        return "✅ met"
    if verdict == "missing":
        return "not logged"
    if verdict == "nonfinite":
        return "❌ not finite"
    return f"❌ {'too low' if verdict == 'low' else 'too high'}"


def _config(v: _Run) -> dict[str, str]:
    """Configuration cells of the run table (kl_weight, latent dim, mode, loss weights)."""
    from vaediag.diagnose.penalty import resolve_loss_weights

    params = v.info.params if v.info is not None else {}
    pen = v.diag.penalty
    w = _weight(pen.kl_weight)
    t = v.table
    if "kl_weight" in t:
        s = t["kl_weight"].dropna()
        if len(s) and float(s.iloc[0]) != float(s.iloc[-1]):
            w = f"{_weight(float(s.iloc[0]))} → {_weight(float(s.iloc[-1]))}"
    source = pen.kl_weight_source or ""
    src = ("logged" if source.startswith("logged") else "config" if source.startswith(("config", "run params", "parameter"))
           else "config (AE)" if source.startswith("autoencoder") else "--kl-weight" if source.startswith("--kl")
           else "loss arithmetic" if source.startswith("the logged total") else "unknown")
    weights = resolve_loss_weights(params) or {}
    wtext = " / ".join(_num_plain(weights.get(k)) for k in _LOSS_WEIGHT_ORDER) if weights else MISSING
    return {
        "kl_weight": w,
        "source": src if pen.kl_weight is not None else "unknown",
        "latent": str(pen.latent_dim) if pen.latent_dim else MISSING,
        "mode": _MODE_LABEL.get(v.diag.model, "VAE"),
        "weights": wtext,
    }


def _num_plain(x: float | None) -> str:
    from vaediag.diagnose.numbers import fmt_loss_weight

    return MISSING if x is None else fmt_loss_weight(x)


def _penalty_latest(v: _Run, key: str) -> float | None:
    x = v.diag.penalty.latest.get(key) if v.diag.penalty.latest else None
    return float(x) if x is not None and isinstance(x, (int, float)) and math.isfinite(x) else None


# --------------------------------------------------------------------------------------------------
# Sections


def _best(views: Sequence[_Run]) -> tuple[list[_Run], str | None, str | None, bool]:
    """(runs ranked best first, criterion column, criterion label, higher is better)."""
    for column, label, higher in _CRITERIA:
        scored = [(v.final(column), v) for v in views if v.epochs > 0]
        scored = [(x, v) for x, v in scored if x is not None and math.isfinite(x)]
        if scored:
            # Ties go to the earlier run (stable sort on R-number), so the order never depends on floats alone.
            scored.sort(key=lambda p: (-p[0] if higher else p[0], p[1].number))
            return [v for _, v in scored], column, label, higher
    return [], None, None, True


def _delta_text(column: str, best: float, other: float) -> str:
    from vaediag.diagnose.numbers import fmt_sig

    term = column.split("_", 1)[1]
    if term == "psnr":
        return f"{fmt_sig(best - other, 3)} dB {'higher' if best >= other else 'lower'}"
    return _factor(best, other)


def _differences(a: _Run, b: _Run) -> list[str]:
    """Configuration differences of ``a`` against ``b``, as short phrases with both values."""
    ca, cb = _config(a), _config(b)
    out = []
    wa, wb = a.diag.penalty.kl_weight, b.diag.penalty.kl_weight
    if wa is not None and wb is not None and wa != wb:
        rel = f", {_factor(wa, wb)}" if wa > 0 and wb > 0 else ""
        out.append(f"kl_weight {_weight(wa)} vs {_weight(wb)}{rel}")
    for key, what in (("mode", "mode"), ("latent", "latent dim")):
        if ca[key] != cb[key] and MISSING not in (ca[key], cb[key]):
            out.append(f"{what} {ca[key]} vs {cb[key]}")
    from vaediag.diagnose.penalty import resolve_loss_weights

    pa = resolve_loss_weights(a.info.params if a.info else {}) or {}
    pb = resolve_loss_weights(b.info.params if b.info else {}) or {}
    names = {"recon": "L1", "perceptual": "perceptual", "ssim_loss": "SSIM", "edge": "edge"}
    for k in _LOSS_WEIGHT_ORDER:
        if k in pa and k in pb and pa[k] != pb[k]:
            out.append(f"{names[k]} weight {_num_plain(pa[k])} vs {_num_plain(pb[k])}")
    return out


# Parameters that name a run's training data (our trainer's train_npy; common foreign spellings).
_DATA_PARAMS = ("train_npy", "data_path", "data_dir", "dataset", "train_path")


def _data_caveat(a: _Run, b: _Run) -> str | None:
    """A warning when two runs cannot be compared on equal terms: different training data where the
    configs say so, or (configs silent) run ids from different top-level folders of a deep tree, which is
    how separate projects sit side by side."""
    da = a.info.param(*_DATA_PARAMS) if a.info is not None else None
    db = b.info.param(*_DATA_PARAMS) if b.info is not None else None
    if da is not None and db is not None:
        if str(da) != str(db):
            return (f"{a.label} and {b.label} were trained on different data ({escape(da)} vs {escape(db)}), "
                    "so the gap is not the settings' alone.")
        return None
    pa, pb = a.run.split("/"), b.run.split("/")
    if len(pa) >= 3 and len(pb) >= 3 and pa[0] != pb[0]:
        return (f"{a.label} and {b.label} come from different folders ({escape(pa[0])}, {escape(pb[0])}), "
                "so the gap may come from different data or code rather than settings.")
    return None


def _section_summary(views: Sequence[_Run], baseline: _Run | None, targets: Sequence[Target]) -> list[str]:
    from vaediag.diagnose.numbers import fmt_value

    lines = ["## Summary", ""]
    comparable = [v for v in views if v.epochs > 0]
    if not comparable:
        lines += ["No run has a completed epoch with loss terms or metrics, so there is nothing to compare. "
                  "See the notes at the end for what each run holds.", ""]
        return lines
    ranked, column, label, higher = _best(comparable)
    if not ranked:
        lines += [f"No run logs PSNR or a reconstruction loss, so no run can be ranked. "
                  f"{len(comparable)} run(s) have completed epochs; their findings are below.", ""]
        return lines
    best = ranked[0]
    term = column.split("_", 1)[1]
    value = best.final(column)
    result = f"**{fmt_value(value, term)}{_unit(term)}** after {best.epochs} epoch{'s' if best.epochs != 1 else ''}"
    if len(comparable) == 1:
        s = f"**One run: {best.label}** ({escape(best.run)}), {label} {result}"
    else:
        s = (f"**Best run: {best.label}** ({escape(best.run)}), ranked by {label} (the first of PSNR, "
             f"validation reconstruction, training reconstruction that the runs log): {result}")
    if len(ranked) > 1:
        second = ranked[1]
        s += (f", {_delta_text(column, value, second.final(column))} than the runner-up "
              f"{second.label} ({fmt_value(second.final(column), term)}{_unit(term)})")
    if baseline is not None and baseline is not best and baseline in ranked and (
        len(ranked) < 2 or baseline is not ranked[1]
    ):
        s += (f" and {_delta_text(column, value, baseline.final(column))} than the baseline "
              f"{baseline.label} ({fmt_value(baseline.final(column), term)}{_unit(term)})")
    s += "."
    unranked = [v for v in comparable if v not in ranked]
    diverged = [v for v in unranked if v.final(column) is not None]
    silent = [v for v in unranked if v.final(column) is None]
    if diverged:
        s += (f" Not ranked because their last value is not finite (the run diverged): "
              f"{', '.join(v.label for v in diverged)}.")
    if silent:
        s += f" {len(silent)} run(s) do not log this and are not ranked: {', '.join(v.label for v in silent)}."
    if term == "recon":
        s += " (Reconstruction losses compare only between runs with the same loss and data.)"
    lines += [s, ""]

    # Why: what differs from the runner-up (or the baseline), and where the KL penalty stands. This is
    # what the logs can show; it is a difference in settings, not a proof of cause.
    other = ranked[1] if len(ranked) > 1 else (baseline if baseline is not None and baseline is not best else None)
    why = []
    if other is not None:
        diffs = _differences(best, other)
        if diffs:
            why.append(f"What sets it apart from {other.label}: " + "; ".join(diffs) + ".")
        else:
            why.append(f"The logs record no configuration difference from {other.label}.")
        caveat = _data_caveat(best, other)
        if caveat:
            why.append(caveat)
    share = _penalty_latest(best, "share")
    if share is not None:
        p = f"Its KL penalty (kl_weight × KL) is {_pct(share)} of the training loss"
        if other is not None and _penalty_latest(other, "share") is not None:
            p += f" ({other.label}: {_pct(_penalty_latest(other, 'share'))})"
        why.append(p + ".")
    if best.diag.penalty.gradient:
        why.append(_sentence(escape(best.diag.penalty.gradient["sentence"])))
    met = [t for t in targets if best.judge(t) == "met"]
    logged = [t for t in targets if best.judge(t) not in ("missing", "n/a")]
    if logged:
        missed = [t.label for t in logged if t not in met]
        why.append(f"It meets {len(met)} of the {len(logged)} targets its logs can be judged on"
                   + (f" (missed: {', '.join(escape(m) for m in missed)})." if missed else "."))
    if why:
        lines += [" ".join(why), ""]

    # What next: the best run's most urgent recommendation (the same ladder as `vaediag check`).
    if best.diag.recommendations:
        r = best.diag.recommendations[0]
        nxt = f"**Next:** `{r.action}` for {best.label}: {_sentence(escape(r.reason))}"
        lines += [nxt, ""]
        if r.command:
            lines += _code(r.command, "bash") + [""]
    failing = [v for v in comparable if v.diag.failed and v is not best]
    if failing:
        lines += [f"Runs with failed checks: {', '.join(v.label for v in failing)} (details under Findings).", ""]
    return lines


def _code(text: str, lang: str = "") -> list[str]:
    """A fenced code block; the fence is longer than any backtick run inside, so nothing escapes it.
    Control characters other than the line breaks show as visible escapes (the file holds none)."""
    text = visible(text, newlines=True)
    longest = 0
    run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", *text.splitlines(), fence]


def _section_runs(views: Sequence[_Run]) -> list[str]:
    lines = ["## Runs", ""]
    comparable = [v for v in views if v.epochs > 0]
    if not comparable:
        return lines + ["No run has a completed epoch.", ""]
    lines += ["Configuration (from the run's config.json or hparams, or the logged kl_weight). "
              "Loss weights are the training core's reconstruction terms: L1 / perceptual / SSIM / edge.", ""]
    rows = []
    for v in comparable:
        c = _config(v)
        rows.append([v.label, escape(v.run), str(v.epochs), c["kl_weight"], c["source"], c["latent"], c["mode"],
                     c["weights"]])
    lines += [table(["#", "Run", "Epochs", "kl_weight", "kl_weight from", "Latent dim", "Mode",
                     "Loss weights"], rows, align="llrrlrll"), ""]
    lines += ["Final metrics at the last completed epoch (validation where logged, else training). "
              "KL penalty = kl_weight × KL, as a share of the total training loss and relative to the "
              "reconstruction loss.", ""]
    rows = []
    for v in comparable:
        cells = [v.label]
        for term, _ in _METRIC_COLUMNS:
            cells.append(_val(v.metric(term), term))
        cells += [_pct(_penalty_latest(v, "share")), _pct(_penalty_latest(v, "ratio"))]
        rows.append(cells)
    header = ["#"] + [h for _, h in _METRIC_COLUMNS] + ["KL penalty, % of loss", "KL penalty / recon"]
    lines += [table(header, rows, align="l" + "r" * (len(header) - 1)), ""]
    return lines


def _verdict(v: _Run) -> tuple[str, str | None]:
    """(label, why) from the run's findings: the worst severity names it; the explanation prefers a
    diagnosis (KL too high, penalty, blur ...) over a checklist line, and counts unmet success criteria."""
    d = v.diag
    succ = [f for f in d.findings if f.rule == "success"]
    judged = [f for f in succ if f.status in ("pass", "fail")]
    # Success only when every criterion was judged and passed (a criterion whose term is not logged, n/a,
    # or not due yet, pending, leaves the question open) and no diagnosis outside the checklist fails.
    # The end state outranks an intermediate milestone missed on the way, which is still named.
    main_fails = [f for f in d.findings if f.severity == "fail" and not f.is_checklist]
    if succ and all(f.status == "pass" for f in succ) and not main_fails:
        missed = [f for f in d.findings if f.rule.startswith("milestone_") and f.status == "fail"]
        note = None
        if missed:
            msg = missed[0].message
            note = "on the way it missed " + (msg[: -len(": fail")] if msg.endswith(": fail") else msg)
        return "meets the success criteria", note
    why = []
    failed = [f for f in judged if f.status == "fail"]
    if failed:
        why.append(f"misses {len(failed)} of {len(judged)} success criteria")
    for sev in ("fail", "warn"):
        main = [f for f in d.findings if f.severity == sev and not f.is_checklist]
        if main:
            why.append(main[0].message)
            break
    if not why:
        other = [f for f in d.findings if f.severity == "fail"]
        if other:
            why.append(other[0].message)
    text = "; ".join(why) or None
    if d.severity == "fail":
        return "failing", text
    if d.severity == "warn":
        return "needs attention", text
    if any(f.status == "pending" for f in d.findings):
        return "on track so far (later milestones pending)", text
    unjudged = [f for f in succ if f.status == "n/a"]
    if unjudged:
        return "no problems found", f"{len(unjudged)} of {len(succ)} success criteria cannot be judged (not logged)"
    return "no problems found", text


def _sentence(text: str) -> str:
    """``text`` ending with a full stop (finding messages and reasons come without one)."""
    t = text.rstrip()
    return t if t.endswith((".", "!", "?", ")")) and not t.endswith("e.g.)") else t + "."


def _section_evolution(views: Sequence[_Run]) -> list[str]:
    from vaediag.diagnose.numbers import fmt_value

    lines = ["## Evolution across runs", ""]
    comparable = [v for v in views if v.epochs > 0]
    if not comparable:
        return lines + ["No run has a completed epoch.", ""]
    lines += [f"In the order the runs started. Ranges are over the last {_LATE_WINDOW} completed epochs "
              "(fewer for shorter runs).", ""]
    prev: _Run | None = None
    for v in comparable:
        label, why = _verdict(v)
        lines += [f"### {v.label}: {escape(v.run)} ({label})", ""]
        items = []
        c = _config(v)
        items.append(f"Configuration: kl_weight {c['kl_weight']}, {c['mode']}"
                     + (f", latent dim {c['latent']}" if c["latent"] != MISSING else "")
                     + f"; {v.epochs} completed epoch{'s' if v.epochs != 1 else ''}")
        for term in ("kl", "psnr", "ssim", "perceptual", "recon"):
            rng = v.late_range(term)
            if rng is None:
                continue
            lo, hi, n = rng
            final = v.metric(term)
            flat = fmt_value(lo, term) == fmt_value(hi, term)
            span = fmt_value(lo, term) if flat else f"{fmt_value(lo, term)}-{fmt_value(hi, term)}"
            name = TERM_INFO[term].label
            item = f"{name[:1].upper()}{name[1:]}: {span}{_unit(term)}"
            if final is not None and not math.isfinite(final):
                item += f" (final {_val(final, term)}: not finite)"
            elif final is not None and not (flat and fmt_value(final, term) == span):
                item += f" (final {fmt_value(final, term)}{_unit(term)})"
            if prev is not None and prev.metric(term) is not None and final is not None:
                item += f"; {_change(term, prev.metric(term), final)} vs {prev.label}"
            items.append(item)
        share = _penalty_latest(v, "share")
        if share is not None:
            items.append(f"KL penalty: {_pct(share)} of the training loss ({_pct(_penalty_latest(v, 'ratio'))} of "
                         "the reconstruction loss)")
        if v.diag.penalty.gradient:
            items.append(f"Gradient: {escape(v.diag.penalty.gradient['sentence'])}")
        items.append(f"Verdict: **{label}**" + (f": {escape(why)}" if why else ""))
        lines += [f"- {it}" for it in items] + [""]
        prev = v
    return lines


def _milestone_rules(findings: Iterable["Finding"]) -> list[str]:
    rules = {f.rule for f in findings if f.is_checklist}

    def key(r: str) -> tuple[int, int, str]:
        tail = r.split("_", 1)[1] if r.startswith("milestone_") else ""
        return (1 if r == "success" else 0, int(tail) if tail.isdigit() else 0, r)

    return sorted(rules, key=key)


def _rule_title(rule: str) -> str:
    if rule == "success":
        return "Success criteria"
    tail = rule.split("_", 1)[1]
    return f"After epoch {tail}" if tail.isdigit() else rule


def _status_of(findings: Sequence["Finding"]) -> str:
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


def _section_milestones(views: Sequence[_Run]) -> list[str]:
    lines = ["## Milestones", ""]
    comparable = [v for v in views if v.epochs > 0]
    rules = _milestone_rules([f for v in comparable for f in v.diag.findings])
    if not comparable:
        return lines + ["No milestone was judged (no run has completed epochs).", ""]
    if not rules:
        return lines + ["No milestone was judged: the epoch 10/30/60 checklist is the seed profile's, for runs of "
                        "vaediag's trainer; these runs are judged by the generic profile (`--profile seed` judges "
                        "them by the checklist).", ""]
    lines += ["The seed's monitoring checklist, judged on each run (same rules as `vaediag check`). "
              "A milestone the run has not reached yet is pending, not failed.", ""]
    rows = []
    for v in comparable:
        row = [v.label, str(v.epochs)]
        for r in rules:
            fs = v.diag.findings_of(r)
            row.append(_STATUS_MARK[_status_of(fs)] if fs else MISSING)
        rows.append(row)
    lines += [table(["#", "Epochs"] + [_rule_title(r) for r in rules], rows, align="lr" + "c" * len(rules)), ""]
    for v in comparable:
        fs = [f for f in v.diag.findings if f.rule in rules]
        if not fs:
            continue
        lines += [f"### Milestones of {v.label}: {escape(v.run)}", ""]
        rows = []
        for r in rules:
            for f in v.diag.findings_of(r):
                row = [_rule_title(r), _STATUS_MARK.get(f.status or "", f.severity), escape(f.message)]
                if row not in rows:  # every criterion of an unreached milestone says the same "pending"
                    rows.append(row)
        lines += [table(["Milestone", "Status", "Check"], rows), ""]
    return lines


def _section_targets(views: Sequence[_Run], baseline: _Run | None, best: _Run | None,
                     targets: Sequence[Target]) -> list[str]:
    lines = ["## Expected vs actual", ""]
    comparable = [v for v in views if v.epochs > 0]
    if not comparable or not targets:
        return lines + ["Nothing to compare.", ""]
    lines += ["Targets are the seed's expected results (override with `--targets FILE`). Values are final "
              "validation values (training where validation is not logged).", ""]
    if best is not None:
        show_base = baseline is not None and baseline is not best
        header = ["Metric", "Target"]
        if show_base:
            header.append(f"Baseline {baseline.label}")
        header += [f"Best {best.label}"]
        if show_base:
            header.append("Change vs baseline")
        header.append("Verdict")
        rows = []
        for t in targets:
            val = best.metric(t.term, t.split)
            row = [escape(t.label), escape(t.describe())]
            if show_base:
                row.append(_val(baseline.metric(t.term, t.split), t.term))
            row.append(_val(val, t.term))
            if show_base:
                row.append(_change(t.term, baseline.metric(t.term, t.split), val))
            row.append(_judgement(best.judge(t)))
            rows.append(row)
        align = "ll" + "r" * (len(header) - 3) + "l"
        lines += [table(header, rows, align=align), ""]
    if len(comparable) > 1:
        lines += ["Every run against the targets:", ""]
        rows = []
        for v in comparable:
            row = [v.label]
            met = logged = 0
            for t in targets:
                x = v.metric(t.term, t.split)
                j = v.judge(t)
                if j not in ("missing", "n/a"):
                    logged += 1
                    met += j == "met"
                row.append(MISSING if j == "missing" else f"n/a {_val(x, t.term)}" if j == "n/a"
                           else f"{'✅' if j == 'met' else '❌'} {_val(x, t.term)}")
            row.append(f"{met}/{logged}" if logged else MISSING)
            rows.append(row)
        lines += [table(["#"] + [escape(t.label) for t in targets] + ["Targets met"], rows,
                        align="l" + "r" * (len(targets) + 1)), ""]
    return lines


def _section_findings(views: Sequence[_Run]) -> list[str]:
    lines = ["## Findings and recommendations", ""]
    lines += ["From the same rules as `vaediag check` (milestone results are in their own section; passed "
              "checks are counted, not listed).", ""]
    for v in views:
        d = v.diag
        lines += [f"### {v.label}: {escape(v.run)}", ""]
        if d.penalty.arithmetic:
            ctx = d.penalty.latest.get("context") if d.penalty.latest else None
            lines += [f"KL penalty arithmetic{' (' + escape(ctx) + ')' if ctx else ''}:", ""]
            lines += _code("\n".join(d.penalty.arithmetic)) + [""]
        if d.penalty.gradient:
            lines += _gradient_table(d.penalty.gradient)
        shown = [f for f in d.findings if not f.is_checklist and f.severity != "pass"]
        passed = [f for f in d.findings if not f.is_checklist and f.severity == "pass"]
        if shown:
            rows = [[_SEVERITY_MARK[f.severity], escape(f.id), _epoch_cell(f.epoch), escape(msg)]
                    for f, msg in _collapse(shown)]
            lines += [table(["Severity", "Rule", "Epoch", "Finding"], rows, align="llrl"), ""]
        if passed:
            lines += [f"Passed: {', '.join(escape(f.id) for f in passed)}.", ""]
        if not shown and not passed:
            lines += ["No findings.", ""]
        if d.recommendations:
            lines += ["Recommendations, most urgent first:", ""]
            for i, r in enumerate(d.recommendations, start=1):
                lines.append(f"{i}. **{escape(r.action)}**: {_sentence(escape(r.reason))}")
                if r.command:
                    lines += [""] + ["   " + ln for ln in _code(r.command, "bash")] + [""]
            lines.append("")
    return lines


def _gradient_table(g: dict[str, Any]) -> list[str]:
    """The run's gradient shares at the encoder head beside each weighted term's share of the loss value."""
    from vaediag.diagnose.numbers import human_epoch

    lines = [f"Each weighted term's share of the loss value and of the gradient at the encoder head (the L2 norm of "
             f"its gradient with respect to mu and logvar over the sum of every term's norm; train, "
             f"{human_epoch(g['epoch'])}):", ""]
    names = [t for t in g["shares"] if t != "kl"] + (["kl"] if "kl" in g["shares"] else [])
    rows = [[escape(TERM_INFO[t].label if t in TERM_INFO else t), _pct(g["value_shares"].get(t)),
             _pct(g["shares"].get(t))] for t in names]
    lines += [table(["Term", "Share of the loss value", "Share of the gradient"], rows, align="lrr"), ""]
    if g.get("cosine") is not None:
        lines += [f"Cosine of the KL's gradient with the sum of the others' at the head: {g['cosine']:.2f} "
                  "(-1: it undoes them, 0: it pulls sideways, 1: along).", ""]
    return lines


# More findings of one rule in one run than this are shown as one row (a diverged run has a
# ``nonfinite`` finding per tag: thirty rows that say the same thing).
_COLLAPSE_OVER = 3


def _collapse(findings: Sequence["Finding"]) -> list[tuple["Finding", str]]:
    """(finding, message) rows: a rule with many findings keeps its first, naming the others by key."""
    by_rule: dict[str, list["Finding"]] = {}
    for f in findings:
        by_rule.setdefault(f.rule, []).append(f)
    out = []
    for f in findings:
        group = by_rule[f.rule]
        if len(group) <= _COLLAPSE_OVER:
            out.append((f, f.message))
        elif f is group[0]:
            others = [g.key or g.rule for g in group[1:]]
            shown = ", ".join(others[:6]) + (" …" if len(others) > 6 else "")
            out.append((f, f"{f.message} (and {len(others)} more like it: {shown})"))
    return out


def _epoch_cell(epoch: int | None) -> str:
    return MISSING if epoch is None else str(int(epoch) + 1)


def _numbered_decisions(views: Sequence[_Run]) -> list[tuple[int, _Run, dict[str, Any]]]:
    """Decisions worth showing (a change, a declined proposal, a stop), numbered D1, D2 ... report-wide."""
    out = []
    n = 0
    for v in views:
        for rec in v.decisions:
            if rec.get("action") == "keep" and not rec.get("declined"):
                continue
            n += 1
            out.append((n, v, rec))
    return out


def _section_watchdog(views: Sequence[_Run]) -> list[str]:
    with_journal = [v for v in views if v.decisions or v.journal_error or v.journal_skipped]
    if not with_journal:
        return []
    lines = ["## Watchdog decisions", ""]
    lines += ["What `vaediag watch` decided while the runs trained (from each run's `watchdog.jsonl`). Epochs count "
              "completed epochs; a change applies from the next epoch. D-numbers mark the kl_weight plot.", ""]
    numbered = _numbered_decisions(views)
    for v in with_journal:
        lines += [f"### {v.label}: {escape(v.run)}", ""]
        if v.journal_error:
            lines += [f"The journal could not be read: {escape(v.journal_error)}", ""]
        if v.journal_skipped:
            lines += [f"{v.journal_skipped} line(s) of the journal were not complete JSON records (a watchdog "
                      f"killed mid-write, or damage) and were skipped; every other line is shown.", ""]
        mine = [(n, rec) for n, w, rec in numbered if w is v]
        keeps = sum(1 for rec in v.decisions if rec.get("action") == "keep" and not rec.get("declined"))
        if mine:
            rows = []
            for n, rec in mine:
                applied = rec.get("applied")
                via = rec.get("via")
                status = ("applied" + (f" ({escape(via)})" if via else "")) if applied else "not applied"
                if rec.get("declined"):
                    status = f"declined: {escape(rec['declined'])}"
                kw = rec.get("kl_weight")
                rows.append([f"D{n}", _epoch_cell(rec.get("epoch")), escape(rec.get("action", "?")),
                             _weight(kw if isinstance(kw, (int, float)) else None), escape(rec.get("mode") or MISSING),
                             status, escape(rec.get("reason") or "")])
            lines += [table(["#", "After epoch", "Action", "kl_weight", "Mode", "Status", "Reason"], rows,
                            align="lrlrlll"), ""]
        lines += [f"{keeps} epoch(s) with no change (keep) are not listed.", ""] if keeps else []
    return lines


def _section_notes(runset: "RunSet", views: Sequence[_Run]) -> list[str]:
    lines = ["## Notes", ""]
    items = []
    empty = [v for v in views if v.epochs == 0]
    for v in empty:
        why = next((f.message for f in v.diag.findings if f.severity in ("fail", "warn", "info")), None)
        items.append(f"{v.label} ({escape(v.run)}) has no completed epoch and is left out of the comparison"
                     + (f": {escape(why)}" if why else "."))
    for v in views:
        if v.info is not None:
            for note in v.info.notes:
                items.append(f"{v.label}: {escape(note)}")
        if v.diag.penalty.note and v.epochs > 0:
            items.append(f"{v.label}: {escape(v.diag.penalty.note)}")
    for w in runset.warnings:
        items.append(f"Reading the logs: {escape(w)}")
    items.append("Epochs count completed epochs, as the seed does: epoch 10 is the 10th validation point "
                 "(index 9 in TensorBoard's 0-based epoch).")
    items.append("Run numbers (R1, R2 ...) follow the order the runs started, by their first logged time.")
    lines += [f"- {it}" for it in items] + [""]
    return lines


# --------------------------------------------------------------------------------------------------
# Pictures (vaediag.render.pictures draws the section; this picks what it needs from the views)


def _picture_runs(runset: "RunSet", views: Sequence[_Run]) -> list[pictures.RunPictures]:
    """The runs that log pictures, with their tag (check's rule), decisions and milestones reached.
    Nothing is read here: the scalar read counted the image tags."""
    from vaediag.logs.images import StepEpochs, picture_tag

    numbered = _numbered_decisions(views)
    out = []
    for v in views:
        tags = dict(getattr(v.info, "image_tags", None) or {})
        tag = picture_tag(tags)
        if tag is None:
            continue
        decisions = []
        for n, w, rec in numbered:
            e = rec.get("epoch")
            if w is v and isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) and e >= 0:
                decisions.append((n, int(e)))
        reached = set()
        for f in v.diag.findings:
            tail = f.rule.split("_", 1)[1] if f.rule.startswith("milestone_") else ""
            if tail.isdigit() and 1 <= int(tail) <= v.epochs:
                reached.add(int(tail) - 1)  # "after epoch 10" is the frame's epoch index 9
        count, latest = tags[tag]
        out.append(pictures.RunPictures(run=v.run, label=v.label, tag=tag, count=int(count), latest_step=int(latest),
                                        files=list(v.info.event_files), epochs=StepEpochs(runset.run_frame(v.run)),
                                        decisions=decisions, milestones=sorted(reached)))
    return out


# --------------------------------------------------------------------------------------------------
# Plots


@dataclass
class Report:
    """A rendered report: the markdown text and the plot and picture files (names in the files directory)."""

    markdown: str
    files: dict[str, bytes]
    files_dir: str  # the plots folder's name, beside the markdown (NAME_files)


def _plot_tables(views: Sequence[_Run]) -> dict[str, "pd.DataFrame"]:
    """Per-run per-epoch tables for the plots: the epoch table plus the penalty table's columns."""
    import pandas as pd

    out = {}
    for v in views:
        if v.epochs == 0:
            continue
        t = v.table
        t = t[t.index < v.epochs]
        pt = v.diag.penalty.table
        extra = pd.DataFrame(index=t.index)
        if pt is not None and len(pt):
            pt = pt[pt.index < v.epochs]
            extra = pd.DataFrame({"penalty_share": pt["share"], "penalty_ratio": pt["ratio"],
                                  "kl_weight_resolved": pt["kl_weight"]})
        t = t.join(extra, how="outer") if len(extra.columns) else t
        if "kl_weight" not in t and "kl_weight_resolved" in t:
            t = t.assign(kl_weight=t["kl_weight_resolved"])
        out[v.run] = t
    return out


def _legend_label(v: _Run) -> str:
    parts = v.run.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 2 else v.run
    if len(short) > 40:
        short = "…" + short[-39:]
    return plot_text(f"{v.label} {short}")  # an undecodable byte or a "$" must not stop matplotlib


def _render_plots(views: Sequence[_Run]) -> list[tuple[str, str, str, bytes]]:
    """(file name, title, caption, PNG bytes) for each plot, in report order."""
    from vaediag.render import plots

    tables = _plot_tables(views)
    if not tables:
        return []
    order = [v.run for v in views if v.run in tables]
    styles = plots.run_styles(order, {v.run: _legend_label(v) for v in views})
    tables = {r: tables[r] for r in order}
    decisions = []
    for n, v, rec in _numbered_decisions(views):
        kw = rec.get("kl_weight")
        ep = rec.get("epoch")
        if isinstance(ep, (int, float)):
            decisions.append(plots.Decision(run=v.run, epoch=float(ep),
                                            kl_weight=float(kw) if isinstance(kw, (int, float)) else None,
                                            number=n, applied=bool(rec.get("applied"))))
    specs = [
        ("loss_terms.png", "Loss terms per epoch (raw)",
         "Each loss term as logged, per epoch (validation where logged, else the mean over the epoch's "
         "training steps). Log scale where values span more than 50×.",
         lambda: plots.plot_loss_terms(tables, styles)),
        ("loss_terms_weighted.png", "Loss terms per epoch (weighted)",
         "What the optimiser sees: each term times its weight. A KL line far below the others means the "
         "KL term no longer shapes training.",
         lambda: plots.plot_loss_terms(tables, styles, weighted=True)),
        ("quality.png", "PSNR and SSIM per epoch",
         "Validation image quality; higher is better. Dashed: grey images, dotted: colour images, where logged.",
         lambda: plots.plot_quality(tables, styles)),
        ("penalty_share.png", "Effective KL penalty per epoch",
         "kl_weight × KL as a share of the total training loss (left) and relative to the reconstruction "
         "loss (right). The seed's bad run spent 13.5 % of its reconstruction signal here.",
         lambda: plots.plot_penalty_share(tables, styles)),
        ("kl_weight.png", "KL weight over time",
         "The kl_weight in force in each epoch; triangles mark watchdog decisions (D-numbers as in the "
         "Watchdog decisions section).",
         lambda: plots.plot_kl_weight(tables, styles, decisions=decisions)),
    ]
    out = []
    with plots.plot_style():
        for name, title, caption, draw in specs:
            fig, _ = draw()
            try:
                data = plots.png_bytes(fig)
            finally:
                fig.clear()  # Figure objects are not in pyplot's registry; clearing frees the artists now
            out.append((name, title, caption, data))
    return out


def _section_curves(plots_out: Sequence[tuple[str, str, str, bytes]], files_dir: str) -> list[str]:
    lines = ["## Curves", ""]
    if not plots_out:
        return lines + ["No run has per-epoch values to plot.", ""]
    lines += ["Runs are aligned by epoch and keep one colour in every plot (legend: R-number and run).", ""]
    for name, title, caption, _ in plots_out:
        lines += [f"### {title}", "", f"![{escape(title)}]({link_path(f'{files_dir}/{name}')})", "", caption, ""]
    return lines


# --------------------------------------------------------------------------------------------------
# Assembly and writing


def _pick_baseline(views: Sequence[_Run], baseline: str | None) -> _Run | None:
    comparable = [v for v in views if v.epochs > 0]
    if baseline is None:
        return comparable[0] if comparable else None
    for v in views:
        if v.run == baseline:
            return v
    raise UsageError(f"--baseline {baseline!r} is not a run of this report (runs: "
                     f"{', '.join(v.run for v in views[:8])}{' …' if len(views) > 8 else ''})")


def files_dir_for(out_path: str | os.PathLike[str]) -> Path:
    """The plots folder beside a report: ``reports/demo.md`` -> ``reports/demo_files``."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}_files")


def build_report(
    runset: "RunSet",
    diagnoses: Sequence["RunDiagnosis"],
    *,
    out_name: str = "report",
    title: str | None = None,
    baseline: str | None = None,
    targets: Sequence[Target] | None = None,
    sources: Sequence[str] = (),
    generated_at: datetime | None = None,
    plots: bool = True,
) -> Report:
    """Render the report in memory (nothing is written).

    Args:
        runset: the logs (:func:`vaediag.load`).
        diagnoses: :func:`vaediag.diagnose.diagnose` of the same runset, one per run.
        out_name: the report's file stem; plots are linked as ``<out_name>_files/<plot>.png``.
        title: the document title (default: "VAE training report: <root folder>").
        baseline: run id to measure improvement against (default: the earliest run with epochs).
        targets: expected results (default: :func:`load_targets`).
        sources: the paths the user gave, for the generated line.
        generated_at: time for the generated line (default: now, or ``SOURCE_DATE_EPOCH`` when set).
        plots: render the PNG plots and read the runs' pictures (False: text only, no Curves images, no
            pictures read; the Reconstructions section says where to see them).

    Raises:
        UsageError: ``baseline`` is not one of the runs, or a run has no diagnosis.
    """
    targets = load_targets() if targets is None else tuple(targets)
    views = _views(runset, diagnoses)
    base = _pick_baseline(views, baseline)
    ranked, _, _, _ = _best([v for v in views if v.epochs > 0])
    best = ranked[0] if ranked else None
    files_dir = f"{out_name}_files"
    rendered = _render_plots(views) if plots else []
    picture_runs = _picture_runs(runset, views)
    gallery = pictures.collect(picture_runs) if plots and picture_runs else None

    heading = title or f"VAE training report: {runset.root.name or runset.root}"
    when = generated_at or _now()
    from vaediag import __version__

    # The paths as typed, each in a code span that shows it exactly: a newline, an HTML tag or a
    # backtick in a path can neither start a block nor end the span (see markdown.code_span).
    src = ", ".join(code_span(s) for s in sources) if sources else escape(runset.root.name)
    n = len(views)
    lines = [f"# {escape(heading)}", "",
             f"{GENERATED_PREFIX}{when.strftime('%Y-%m-%d %H:%M UTC')} by vaediag {__version__} from {src}._", "",
             f"{n} run{'s' if n != 1 else ''}: " + ", ".join(f"{v.label} {escape(v.run)}" for v in views) + ".", ""]
    # Inputs beside reconstructions come before any number (a VAE user looks at those first).
    lines += pictures.section(gallery, files_dir) if gallery is not None else pictures.text_only_section(picture_runs)
    lines += _section_summary(views, base, targets)
    lines += _section_runs(views)
    lines += _section_evolution(views)
    lines += _section_curves(rendered, files_dir) if plots else []
    lines += _section_milestones(views)
    lines += _section_targets(views, base, best, targets)
    lines += _section_findings(views)
    lines += _section_watchdog(views)
    lines += _section_notes(runset, views)
    text = "\n".join(lines).rstrip("\n") + "\n"
    files = {name: data for name, _, _, data in rendered}
    files.update(gallery.files if gallery is not None else {})
    return Report(markdown=text, files=files, files_dir=files_dir)


def _now() -> datetime:
    sde = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible-builds convention: a fixed time for the stamp
    if sde and sde.strip().isdigit():
        return datetime.fromtimestamp(int(sde), tz=timezone.utc)
    return datetime.now(timezone.utc)


# The plot files a report writes into NAME_files/ (see _render_plots). Only these names and the pictures'
# (vaediag.render.pictures.PICTURE_NAME) are ever written there, and only these (when the old report linked
# them and they still hold PNG, or for a picture any image, bytes) are removed as stale by --force.
PLOT_FILES = ("loss_terms.png", "loss_terms_weighted.png", "quality.png", "penalty_share.png", "kl_weight.png")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_HEAD_BYTES = 4096


def _head(path: Path, n: int = _HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of a regular file ("" for anything else); never blocks, never raises."""
    import stat as _stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return b""
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, n)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _is_own_report(path: Path) -> bool:
    """True when ``path`` is a report vaediag wrote (its generated line is near the top)."""
    head = _head(path).decode("utf-8", "replace")
    return any(line.startswith(GENERATED_PREFIX) and " by vaediag " in line for line in head.splitlines()[:8])


def _is_own_plot(path: Path) -> bool:
    """True for a file vaediag writes into NAME_files/: a plot (its name, PNG bytes) or a picture
    (:data:`vaediag.render.pictures.PICTURE_NAME`, starting with an image signature)."""
    from vaediag.logs.images import image_format

    if path.name in PLOT_FILES:
        return _head(path, len(_PNG_MAGIC)) == _PNG_MAGIC
    return pictures.is_picture_name(path.name) and image_format(_head(path, 16)) is not None


def _is_own_name(name: str) -> bool:
    return name in PLOT_FILES or pictures.is_picture_name(name)


def _linked_plots(report: Path, fdir_name: str) -> set[str]:
    """The plot and picture files an existing report links from its NAME_files/ folder (empty when
    unreadable)."""
    import re
    from urllib.parse import unquote

    from vaediag.safeio import read_text

    try:
        text = read_text(report, what="report", max_bytes=256 << 20)
    except Exception:  # noqa: BLE001 - an unreadable old report only means nothing is removed
        return set()
    out = set()
    for link in re.findall(r"\]\(([^)\s]+)\)", text or ""):
        target = unquote(link)
        head, sep, name = target.partition("/")
        if sep and head == fdir_name and _is_own_name(name):
            out.add(name)
    return out


def check_destination(out_path: str | os.PathLike[str], *, force: bool = False, inputs: Any = None):
    """Plan where the report and its plots go, or refuse (see :mod:`vaediag.outputs` for the rules).

    Returns the :class:`vaediag.outputs.Destination` of the markdown. A stream (``-``, ``/dev/null``, a
    FIFO, a terminal) takes the markdown alone; for a file, ``NAME_files/`` and each plot file in it are
    checked too: without ``force`` an existing folder is refused; with it, only regular plot files may be
    replaced (a link, a folder or a device in the way is refused).

    Raises:
        UsageError: the report or its plots folder exists (and not ``force``), it is an input or inside a
            log tree the command reads, or a path is in the way.
    """
    from vaediag.outputs import Inputs, plan_output

    inputs = inputs if inputs is not None else Inputs()
    dest = plan_output(out_path, force=force, inputs=inputs, owned=_is_own_report)
    if dest.is_stream:
        return dest
    fdir = files_dir_for(dest.path)
    if os.path.lexists(fdir):
        if not fdir.is_dir():
            raise UsageError(f"cannot write the plots: {str(fdir)!r} exists and is not a directory")
        if not force:
            raise UsageError(f"{str(fdir)!r} already exists; pass --force to overwrite it or choose another -o")
        for name in PLOT_FILES:
            plan_output(fdir / name, force=True, inputs=inputs, allow_stream=False, follow_links=False,
                        owned=_is_own_plot)
    return dest


def write_report(
    runset: "RunSet",
    diagnoses: Sequence["RunDiagnosis"],
    out_path: str | os.PathLike[str],
    *,
    title: str | None = None,
    baseline: str | None = None,
    targets: Sequence[Target] | str | os.PathLike[str] | None = None,
    force: bool = False,
    sources: Sequence[str] = (),
    generated_at: datetime | None = None,
    plots: bool = True,
    inputs: Any = None,
) -> Path:
    """Render the report and write ``out_path`` and its plots folder (``<stem>_files/``) beside it.

    Checks come first (:func:`check_destination`: an existing report or plots folder without ``force``,
    an input or a file inside a log tree the report reads, a link or special file in the way; a bad
    baseline or targets file), then rendering in memory, then writing. A missing parent directory of
    ``out_path`` is created.

    - A new report is created without a window for clobbering (:mod:`vaediag.outputs`): of two
      processes writing one new report, the second gets "already exists". The markdown claims the name
      first, then the plots are written; if they cannot be, the new markdown is removed again.
    - ``force`` replaces an existing report and its plots and pictures atomically, then removes the
      plots and pictures the old report linked that the new one does not write (no stale files); any
      other file in ``NAME_files/`` is left alone, and a picture's name held by something that is not an
      image is refused before anything is written.
    - A stream (``-``, ``/dev/stdout``, ``/dev/null``, a FIFO, a terminal) gets the markdown written into
      it, without ``force``; no plots are drawn and no pictures read or written (the returned path is
      the stream's).

    ``plots=False`` writes the text alone (no Curves section, no pictures, no plots folder): quicker
    where no one will look at them.

    Returns:
        The path of the markdown file (the target of a followed symbolic link).

    Raises:
        UsageError: the destination is refused (see above), or ``baseline`` is not a run.
        RulesError / InputError: a bad targets file; the operating system refused a write.
    """
    from vaediag.outputs import NEW, write_output

    dest = check_destination(out_path, force=force, inputs=inputs)
    if targets is not None and not isinstance(targets, (list, tuple)):
        targets = load_targets(targets)
    out = dest.path
    report = build_report(runset, diagnoses, out_name=out.stem, title=title, baseline=baseline,
                          targets=targets, sources=sources, generated_at=generated_at,
                          plots=plots and not dest.is_stream)
    data = report.markdown.encode("utf-8")
    if dest.is_stream:
        write_output(dest, data)
        return out
    fdir = files_dir_for(out)
    stale = _linked_plots(out, fdir.name) - set(report.files) if dest.mode != NEW else set()
    if os.path.lexists(fdir):  # (only with --force: check_destination refused it otherwise)
        from vaediag.outputs import Inputs, plan_output

        for name in sorted(set(report.files) - set(PLOT_FILES)):  # the plots were planned already
            p = fdir / name
            plan_output(p, force=True, inputs=inputs if inputs is not None else Inputs(),
                        allow_stream=False, follow_links=False, owned=_is_own_plot, what="the picture")
            if os.path.lexists(p) and not _is_own_plot(p):
                raise UsageError(f"cannot write the picture {str(p)!r}: a file that is not a picture is in the "
                                 f"way (vaediag replaces only pictures it wrote there); move it or choose another -o")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write the report to {str(out)!r}: {exc.strerror or exc}") from None
    if dest.mode == NEW:
        write_output(dest, data)  # claims the name (or says it was taken meanwhile)
        try:
            mine = os.stat(out)
            _write_plots(fdir, report.files)
        except BaseException:
            try:  # a report without its plots is not left behind; only the file this call created goes
                now = os.stat(out)
                if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                    out.unlink()
            except (OSError, UnboundLocalError):
                pass
            raise
        return out
    _write_plots(fdir, report.files)
    write_output(dest, data)
    for name in sorted(stale):
        p = fdir / name
        if _is_own_plot(p) and not p.is_symlink():
            try:
                p.unlink()
            except OSError:
                pass
    return out


def _write_plots(fdir: Path, files: dict[str, bytes]) -> None:
    if not files:
        return
    try:
        fdir.mkdir(exist_ok=True)
        for name, data in sorted(files.items()):
            atomic_write(fdir / name, data)
    except OSError as exc:
        raise InputError(f"cannot write the plots to {str(fdir)!r}: {exc.strerror or exc}") from None
