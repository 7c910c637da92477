"""The markdown run-comparison report (``vaediag report``): one document a team reads instead of TensorBoard.

Sections, in order: reconstructions (each run's logged pictures, inputs over reconstructions, at its final
epoch, watchdog decisions and milestones, runs side by side: :mod:`.pictures`; only for runs that log
images), summary (the best run, by how much, why, what next), runs (configuration and final
metrics), evolution across runs (the seed's "Run 1 ... Run 2 ... Run 3"), curves (PNG plots), milestones
(pass / fail / pending), expected vs actual (targets from a TOML file, improvement over a baseline),
findings and recommendations (the same rules as ``vaediag check``), watchdog decisions (runs with a
``watchdog.jsonl``), notes.

Rendering computes nothing: the run order, ranking, verdicts, configuration differences, targets,
milestones and numbered watchdog decisions are :func:`vaediag.diagnose.compare.compare_runs`'s
:class:`~vaediag.diagnose.compare.Comparison` (every number from :func:`vaediag.diagnose.diagnose`, one
source of math); this module only formats and escapes it. Runs are numbered R1, R2 ... in the order they
started (first logged wall time), which is the order a person ran them in.

Determinism: the same logs give the same markdown bytes, apart from the one line that starts with
:data:`GENERATED_PREFIX`, and the same PNG bytes (no metadata, fixed style; see :mod:`.plots`).

    >>> from vaediag.render.report import write_report                  # doctest: +SKIP
    >>> write_report(runset, diagnoses, "reports/demo.md", title="Demo") # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from vaediag.atomic import atomic_write
from vaediag.diagnose.compare import (LATE_WINDOW, LOSS_WEIGHT_ORDER, Comparison, ConfigDifference, DataCaveat,
                                      RunConfig, RunView, compare_runs, diagnose_runs)
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

# Final-metric columns of the run table: (term, header).
_METRIC_COLUMNS = (("kl", "KL"), ("perceptual", "Perceptual"), ("psnr", "PSNR (dB)"), ("ssim", "SSIM"),
                   ("recon", "Recon"))
_STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "pending": "⏳ pending", "n/a": "n/a", "not reached": "not reached"}
_MODE_LABEL = {"vae": "VAE", "ae": "AE (z = mu)", "vq": "VQ-VAE (no KL)", "no_kl": "no KL term"}
_SEVERITY_MARK = {"fail": "❌ fail", "warn": "⚠️ warn", "info": "ℹ️ info", "pass": "✅ pass"}


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


def _config(c: RunConfig) -> dict[str, str]:
    """Configuration cells of the run table (kl_weight, latent dim, mode, loss weights)."""
    w = _weight(c.kl_weight)
    if c.kl_weight_logged is not None:
        w = f"{_weight(c.kl_weight_logged[0])} → {_weight(c.kl_weight_logged[1])}"
    weights = c.loss_weights
    return {
        "kl_weight": w,
        "source": c.kl_weight_source,
        "latent": str(c.latent_dim) if c.latent_dim else MISSING,
        "mode": _MODE_LABEL.get(c.model, "VAE"),
        "weights": " / ".join(_num_plain(weights.get(k)) for k in LOSS_WEIGHT_ORDER) if weights else MISSING,
    }


def _num_plain(x: float | None) -> str:
    from vaediag.diagnose.numbers import fmt_loss_weight

    return MISSING if x is None else fmt_loss_weight(x)


# --------------------------------------------------------------------------------------------------
# Sections


def _delta_text(column: str, best: float, other: float) -> str:
    from vaediag.diagnose.numbers import fmt_sig

    term = column.split("_", 1)[1]
    if term == "psnr":
        return f"{fmt_sig(best - other, 3)} dB {'higher' if best >= other else 'lower'}"
    return _factor(best, other)


# What the summary calls each loss term's weight.
_WEIGHT_NAMES = {"recon": "L1", "perceptual": "perceptual", "ssim_loss": "SSIM", "edge": "edge"}


def _difference(d: ConfigDifference) -> str:
    """A configuration difference as a short phrase with both values."""
    if d.key == "kl_weight":
        rel = f", {_factor(d.ours, d.theirs)}" if d.ours > 0 and d.theirs > 0 else ""
        return f"kl_weight {_weight(d.ours)} vs {_weight(d.theirs)}{rel}"
    if d.key == "mode":
        return f"mode {_MODE_LABEL.get(d.ours, 'VAE')} vs {_MODE_LABEL.get(d.theirs, 'VAE')}"
    if d.key == "latent_dim":
        return f"latent dim {d.ours} vs {d.theirs}"
    return f"{_WEIGHT_NAMES[d.key]} weight {_num_plain(d.ours)} vs {_num_plain(d.theirs)}"


def _caveat(a: RunView, b: RunView, caveat: DataCaveat) -> str:
    """Why ``a`` and ``b`` may not compare on equal terms, as a sentence."""
    if caveat.kind == "data":
        return (f"{a.label} and {b.label} were trained on different data ({escape(caveat.ours)} vs "
                f"{escape(caveat.theirs)}), so the gap is not the settings' alone.")
    return (f"{a.label} and {b.label} come from different folders ({escape(caveat.ours)}, {escape(caveat.theirs)}), "
            "so the gap may come from different data or code rather than settings.")


def _section_summary(c: Comparison) -> list[str]:
    from vaediag.diagnose.numbers import fmt_value

    lines = ["## Summary", ""]
    comparable = c.comparable
    if not comparable:
        lines += ["No run has a completed epoch with loss terms or metrics, so there is nothing to compare. "
                  "See the notes at the end for what each run holds.", ""]
        return lines
    rk = c.ranking
    if rk is None:
        lines += [f"No run logs PSNR or a reconstruction loss, so no run can be ranked. "
                  f"{len(comparable)} run(s) have completed epochs; their findings are below.", ""]
        return lines
    best, column, term = rk.best, rk.column, rk.term
    value = best.final(column)
    result = f"**{fmt_value(value, term)}{_unit(term)}** after {best.epochs} epoch{'s' if best.epochs != 1 else ''}"
    if len(comparable) == 1:
        s = f"**One run: {best.label}** ({escape(best.run)}), {rk.label} {result}"
    else:
        s = (f"**Best run: {best.label}** ({escape(best.run)}), ranked by {rk.label} (the first of PSNR, "
             f"validation reconstruction, training reconstruction that the runs log): {result}")
    second = rk.runner_up
    if second is not None:
        s += (f", {_delta_text(column, value, second.final(column))} than the runner-up "
              f"{second.label} ({fmt_value(second.final(column), term)}{_unit(term)})")
    baseline = c.compared_baseline
    if baseline is not None:
        s += (f" and {_delta_text(column, value, baseline.final(column))} than the baseline "
              f"{baseline.label} ({fmt_value(baseline.final(column), term)}{_unit(term)})")
    s += "."
    if rk.diverged:
        s += (f" Not ranked because their last value is not finite (the run diverged): "
              f"{', '.join(v.label for v in rk.diverged)}.")
    if rk.silent:
        s += f" {len(rk.silent)} run(s) do not log this and are not ranked: {', '.join(v.label for v in rk.silent)}."
    if term == "recon":
        s += " (Reconstruction losses compare only between runs with the same loss and data.)"
    lines += [s, ""]

    # Why: what differs from the runner-up (or the baseline), and where the KL penalty stands. This is
    # what the logs can show; it is a difference in settings, not a proof of cause.
    other = c.contrast.other if c.contrast is not None else None
    why = []
    if c.contrast is not None:
        if c.contrast.differences:
            why.append(f"What sets it apart from {other.label}: "
                       + "; ".join(_difference(d) for d in c.contrast.differences) + ".")
        else:
            why.append(f"The logs record no configuration difference from {other.label}.")
        if c.contrast.caveat is not None:
            why.append(_caveat(best, other, c.contrast.caveat))
    share = best.penalty_latest("share")
    if share is not None:
        p = f"Its KL penalty (kl_weight × KL) is {_pct(share)} of the training loss"
        if other is not None and other.penalty_latest("share") is not None:
            p += f" ({other.label}: {_pct(other.penalty_latest('share'))})"
        why.append(p + ".")
    if best.diag.penalty.gradient:
        why.append(_sentence(escape(best.diag.penalty.gradient["sentence"])))
    if best.targets_judged:
        missed = [r.target.label for r in best.targets if r.judged and r.verdict != "met"]
        why.append(f"It meets {best.targets_met} of the {best.targets_judged} targets its logs can be judged on"
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
    if c.failing:
        lines += [f"Runs with failed checks: {', '.join(v.label for v in c.failing)} (details under Findings).", ""]
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


def _section_runs(c: Comparison) -> list[str]:
    lines = ["## Runs", ""]
    comparable = c.comparable
    if not comparable:
        return lines + ["No run has a completed epoch.", ""]
    lines += ["Configuration (from the run's config.json or hparams, or the logged kl_weight). "
              "Loss weights are the training core's reconstruction terms: L1 / perceptual / SSIM / edge.", ""]
    rows = []
    for v in comparable:
        cfg = _config(v.config)
        rows.append([v.label, escape(v.run), str(v.epochs), cfg["kl_weight"], cfg["source"], cfg["latent"],
                     cfg["mode"], cfg["weights"]])
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
        cells += [_pct(v.penalty_latest("share")), _pct(v.penalty_latest("ratio"))]
        rows.append(cells)
    header = ["#"] + [h for _, h in _METRIC_COLUMNS] + ["KL penalty, % of loss", "KL penalty / recon"]
    lines += [table(header, rows, align="l" + "r" * (len(header) - 1)), ""]
    return lines


def _sentence(text: str) -> str:
    """``text`` ending with a full stop (finding messages and reasons come without one)."""
    t = text.rstrip()
    return t if t.endswith((".", "!", "?", ")")) and not t.endswith("e.g.)") else t + "."


def _section_evolution(c: Comparison) -> list[str]:
    from vaediag.diagnose.numbers import fmt_value

    lines = ["## Evolution across runs", ""]
    comparable = c.comparable
    if not comparable:
        return lines + ["No run has a completed epoch.", ""]
    lines += [f"In the order the runs started. Ranges are over the last {LATE_WINDOW} completed epochs "
              "(fewer for shorter runs).", ""]
    prev: RunView | None = None
    for v in comparable:
        label, why = v.verdict.label, v.verdict.reason
        lines += [f"### {v.label}: {escape(v.run)} ({label})", ""]
        items = []
        cfg = _config(v.config)
        items.append(f"Configuration: kl_weight {cfg['kl_weight']}, {cfg['mode']}"
                     + (f", latent dim {cfg['latent']}" if cfg["latent"] != MISSING else "")
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
        share = v.penalty_latest("share")
        if share is not None:
            items.append(f"KL penalty: {_pct(share)} of the training loss ({_pct(v.penalty_latest('ratio'))} of "
                         "the reconstruction loss)")
        if v.diag.penalty.gradient:
            items.append(f"Gradient: {escape(v.diag.penalty.gradient['sentence'])}")
        items.append(f"Verdict: **{label}**" + (f": {escape(why)}" if why else ""))
        lines += [f"- {it}" for it in items] + [""]
        prev = v
    return lines


def _rule_title(rule: str) -> str:
    if rule == "success":
        return "Success criteria"
    tail = rule.split("_", 1)[1]
    return f"After epoch {tail}" if tail.isdigit() else rule


def _section_milestones(c: Comparison) -> list[str]:
    lines = ["## Milestones", ""]
    comparable = c.comparable
    rules = c.milestone_rules
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
            status = v.milestones.get(r)
            row.append(_STATUS_MARK[status] if status is not None else MISSING)
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


def _section_targets(c: Comparison) -> list[str]:
    lines = ["## Expected vs actual", ""]
    comparable = c.comparable
    targets = c.targets
    if not comparable or not targets:
        return lines + ["Nothing to compare.", ""]
    lines += ["Targets are the seed's expected results (override with `--targets FILE`). Values are final "
              "validation values (training where validation is not logged).", ""]
    best, baseline = c.best, c.baseline
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
        for i, res in enumerate(best.targets):
            t = res.target
            row = [escape(t.label), escape(t.describe())]
            if show_base:
                row.append(_val(baseline.targets[i].value, t.term))
            row.append(_val(res.value, t.term))
            if show_base:
                row.append(_change(t.term, baseline.targets[i].value, res.value))
            row.append(_judgement(res.verdict))
            rows.append(row)
        align = "ll" + "r" * (len(header) - 3) + "l"
        lines += [table(header, rows, align=align), ""]
    if len(comparable) > 1:
        lines += ["Every run against the targets:", ""]
        rows = []
        for v in comparable:
            row = [v.label]
            for res in v.targets:
                x, j = res.value, res.verdict
                row.append(MISSING if j == "missing" else f"n/a {_val(x, res.target.term)}" if j == "n/a"
                           else f"{'✅' if j == 'met' else '❌'} {_val(x, res.target.term)}")
            row.append(f"{v.targets_met}/{v.targets_judged}" if v.targets_judged else MISSING)
            rows.append(row)
        lines += [table(["#"] + [escape(t.label) for t in targets] + ["Targets met"], rows,
                        align="l" + "r" * (len(targets) + 1)), ""]
    return lines


def _section_findings(c: Comparison) -> list[str]:
    lines = ["## Findings and recommendations", ""]
    lines += ["From the same rules as `vaediag check` (milestone results are in their own section; passed "
              "checks are counted, not listed).", ""]
    for v in c.runs:
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


def _section_watchdog(c: Comparison) -> list[str]:
    with_journal = [v for v in c.runs if v.decisions or v.journal_error or v.journal_skipped]
    if not with_journal:
        return []
    lines = ["## Watchdog decisions", ""]
    lines += ["What `vaediag watch` decided while the runs trained (from each run's `watchdog.jsonl`). Epochs count "
              "completed epochs; a change applies from the next epoch. D-numbers mark the kl_weight plot.", ""]
    for v in with_journal:
        lines += [f"### {v.label}: {escape(v.run)}", ""]
        if v.journal_error:
            lines += [f"The journal could not be read: {escape(v.journal_error)}", ""]
        if v.journal_skipped:
            lines += [f"{v.journal_skipped} line(s) of the journal were not complete JSON records (a watchdog "
                      f"killed mid-write, or damage) and were skipped; every other line is shown.", ""]
        mine = c.decisions_of(v)
        if mine:
            rows = []
            for d in mine:
                rec = d.record
                applied = rec.get("applied")
                via = rec.get("via")
                status = ("applied" + (f" ({escape(via)})" if via else "")) if applied else "not applied"
                if rec.get("declined"):
                    status = f"declined: {escape(rec['declined'])}"
                kw = rec.get("kl_weight")
                rows.append([f"D{d.number}", _epoch_cell(rec.get("epoch")), escape(rec.get("action", "?")),
                             _weight(kw if isinstance(kw, (int, float)) else None), escape(rec.get("mode") or MISSING),
                             status, escape(rec.get("reason") or "")])
            lines += [table(["#", "After epoch", "Action", "kl_weight", "Mode", "Status", "Reason"], rows,
                            align="lrlrlll"), ""]
        lines += [f"{v.keeps} epoch(s) with no change (keep) are not listed.", ""] if v.keeps else []
    return lines


def _section_notes(c: Comparison) -> list[str]:
    lines = ["## Notes", ""]
    items = []
    empty = [v for v in c.runs if v.epochs == 0]
    for v in empty:
        why = next((f.message for f in v.diag.findings if f.severity in ("fail", "warn", "info")), None)
        items.append(f"{v.label} ({escape(v.run)}) has no completed epoch and is left out of the comparison"
                     + (f": {escape(why)}" if why else "."))
    for v in c.runs:
        if v.info is not None:
            for note in v.info.notes:
                items.append(f"{v.label}: {escape(note)}")
        if v.diag.penalty.note and v.epochs > 0:
            items.append(f"{v.label}: {escape(v.diag.penalty.note)}")
    for w in c.warnings:
        items.append(f"Reading the logs: {escape(w)}")
    items.append("Epochs count completed epochs, as the seed does: epoch 10 is the 10th validation point "
                 "(index 9 in TensorBoard's 0-based epoch).")
    items.append("Run numbers (R1, R2 ...) follow the order the runs started, by their first logged time.")
    lines += [f"- {it}" for it in items] + [""]
    return lines


# --------------------------------------------------------------------------------------------------
# Pictures (vaediag.render.pictures draws the section; this picks what it needs from the comparison)


def _picture_runs(runset: "RunSet", c: Comparison) -> list[pictures.RunPictures]:
    """The runs that log pictures, with their tag (check's rule), decisions and milestones reached.
    Nothing is read here: the scalar read counted the image tags."""
    from vaediag.logs.images import StepEpochs, picture_tag

    out = []
    for v in c.runs:
        tags = dict(getattr(v.info, "image_tags", None) or {})
        tag = picture_tag(tags)
        if tag is None:
            continue
        decisions = []
        for d in c.decisions_of(v):
            e = d.record.get("epoch")
            if isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) and e >= 0:
                decisions.append((d.number, int(e)))
        count, latest = tags[tag]
        out.append(pictures.RunPictures(run=v.run, label=v.label, tag=tag, count=int(count), latest_step=int(latest),
                                        files=list(v.info.event_files), epochs=StepEpochs(runset.run_frame(v.run)),
                                        decisions=decisions, milestones=list(v.milestones_reached)))
    return out


# --------------------------------------------------------------------------------------------------
# Plots


@dataclass
class Report:
    """A rendered report: the markdown text and the plot and picture files (names in the files directory)."""

    markdown: str
    files: dict[str, bytes]
    files_dir: str  # the plots folder's name, beside the markdown (NAME_files)


def _plot_tables(views: Sequence[RunView]) -> dict[str, "pd.DataFrame"]:
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


def _legend_label(v: RunView) -> str:
    parts = v.run.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 2 else v.run
    if len(short) > 40:
        short = "…" + short[-39:]
    return plot_text(f"{v.label} {short}")  # an undecodable byte or a "$" must not stop matplotlib


def _render_plots(c: Comparison) -> list[tuple[str, str, str, bytes]]:
    """(file name, title, caption, PNG bytes) for each plot, in report order."""
    from vaediag.render import plots

    views = c.runs
    tables = _plot_tables(views)
    if not tables:
        return []
    order = [v.run for v in views if v.run in tables]
    styles = plots.run_styles(order, {v.run: _legend_label(v) for v in views})
    tables = {r: tables[r] for r in order}
    decisions = []
    for d in c.decisions:
        kw = d.record.get("kl_weight")
        ep = d.record.get("epoch")
        if isinstance(ep, (int, float)):
            decisions.append(plots.Decision(run=d.run, epoch=float(ep),
                                            kl_weight=float(kw) if isinstance(kw, (int, float)) else None,
                                            number=d.number, applied=bool(d.record.get("applied"))))
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
    c = compare_runs(runset, diagnoses, targets=targets, baseline=baseline)
    files_dir = f"{out_name}_files"
    rendered = _render_plots(c) if plots else []
    picture_runs = _picture_runs(runset, c)
    gallery = pictures.collect(picture_runs) if plots and picture_runs else None

    heading = title or f"VAE training report: {runset.root.name or runset.root}"
    when = generated_at or _now()
    from vaediag import __version__

    # The paths as typed, each in a code span that shows it exactly: a newline, an HTML tag or a
    # backtick in a path can neither start a block nor end the span (see markdown.code_span).
    src = ", ".join(code_span(s) for s in sources) if sources else escape(runset.root.name)
    n = len(c.runs)
    lines = [f"# {escape(heading)}", "",
             f"{GENERATED_PREFIX}{when.strftime('%Y-%m-%d %H:%M UTC')} by vaediag {__version__} from {src}._", "",
             f"{n} run{'s' if n != 1 else ''}: " + ", ".join(f"{v.label} {escape(v.run)}" for v in c.runs) + ".", ""]
    # Inputs beside reconstructions come before any number (a VAE user looks at those first).
    lines += pictures.section(gallery, files_dir) if gallery is not None else pictures.text_only_section(picture_runs)
    lines += _section_summary(c)
    lines += _section_runs(c)
    lines += _section_evolution(c)
    lines += _section_curves(rendered, files_dir) if plots else []
    lines += _section_milestones(c)
    lines += _section_targets(c)
    lines += _section_findings(c)
    lines += _section_watchdog(c)
    lines += _section_notes(c)
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
