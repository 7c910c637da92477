"""The report's markdown sections, each a list of lines from the :class:`~vaediag.diagnose.compare.Comparison`.

Summary (the best run, by how much, why, what next), runs (configuration and final metrics), evolution
across runs, curves (the plots' links and captions), milestones, expected vs actual, findings and
recommendations, watchdog decisions, notes. The pictures' section is :mod:`vaediag.render.pictures`'.
Each section picks from the comparison and formats (:mod:`.format`); none computes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from vaediag.diagnose.compare import LATE_WINDOW, Comparison, RunView
from vaediag.render.markdown import MISSING, escape, link_path, table
from vaediag.render.report.format import (_SEVERITY_MARK, _STATUS_MARK, _caveat, _change, _code, _config,
                                          _delta_text, _difference, _epoch_cell, _judgement, _pct, _rule_title,
                                          _sentence, _unit, _val, _weight_or_missing)
from vaediag.terms import TERM_INFO

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.diagnose.model import Finding

__all__ = ["section_summary", "section_runs", "section_evolution", "section_curves", "section_milestones",
           "section_targets", "section_findings", "section_watchdog", "section_notes"]

# Final-metric columns of the run table: (term, header).
_METRIC_COLUMNS = (("kl", "KL"), ("perceptual", "Perceptual"), ("psnr", "PSNR (dB)"), ("ssim", "SSIM"),
                   ("recon", "Recon"))


def section_summary(c: Comparison) -> list[str]:
    """The best run and its result, why it stands apart, and what to do next."""
    lines = ["## Summary", ""]
    comparable = c.comparable
    if not comparable:
        lines += ["No run has a completed epoch with loss terms or metrics, so there is nothing to compare. "
                  "See the notes at the end for what each run holds.", ""]
        return lines
    if c.ranking is None:
        lines += [f"No run logs PSNR or a reconstruction loss, so no run can be ranked. "
                  f"{len(comparable)} run(s) have completed epochs; their findings are below.", ""]
        return lines
    lines += [_summary_headline(c), ""]
    why = _summary_why(c)
    if why:
        lines += [" ".join(why), ""]
    lines += _summary_next(c)
    return lines


def _summary_headline(c: Comparison) -> str:
    """The best run, its result, and how far it is from the runner-up and the baseline."""
    from vaediag.diagnose.numbers import fmt_value

    rk = c.ranking
    best, column, term = rk.best, rk.column, rk.term
    value = best.final(column)
    result = f"**{fmt_value(value, term)}{_unit(term)}** after {best.epochs} epoch{'s' if best.epochs != 1 else ''}"
    if len(c.comparable) == 1:
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
    return s


def _summary_why(c: Comparison) -> list[str]:
    """What differs from the runner-up (or the baseline), and where the KL penalty stands.

    This is what the logs can show; it is a difference in settings, not a proof of cause.
    """
    best = c.ranking.best
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
    return why


def _summary_next(c: Comparison) -> list[str]:
    """The best run's most urgent recommendation (the same ladder as `vaediag check`), and the failing runs."""
    best = c.ranking.best
    lines: list[str] = []
    if best.diag.recommendations:
        r = best.diag.recommendations[0]
        lines += [f"**Next:** `{r.action}` for {best.label}: {_sentence(escape(r.reason))}", ""]
        if r.command:
            lines += _code(r.command, "bash") + [""]
    if c.failing:
        lines += [f"Runs with failed checks: {', '.join(v.label for v in c.failing)} (details under Findings).", ""]
    return lines


def section_runs(c: Comparison) -> list[str]:
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


def section_evolution(c: Comparison) -> list[str]:
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


def section_curves(plots_out: Sequence[tuple[str, str, str, bytes]], files_dir: str) -> list[str]:
    lines = ["## Curves", ""]
    if not plots_out:
        return lines + ["No run has per-epoch values to plot.", ""]
    lines += ["Runs are aligned by epoch and keep one colour in every plot (legend: R-number and run).", ""]
    for name, title, caption, _ in plots_out:
        lines += [f"### {title}", "", f"![{escape(title)}]({link_path(f'{files_dir}/{name}')})", "", caption, ""]
    return lines


def section_milestones(c: Comparison) -> list[str]:
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


def section_targets(c: Comparison) -> list[str]:
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


def section_findings(c: Comparison) -> list[str]:
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


def section_watchdog(c: Comparison) -> list[str]:
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
                             _weight_or_missing(kw if isinstance(kw, (int, float)) else None),
                             escape(rec.get("mode") or MISSING), status, escape(rec.get("reason") or "")])
            lines += [table(["#", "After epoch", "Action", "kl_weight", "Mode", "Status", "Reason"], rows,
                            align="lrlrlll"), ""]
        lines += [f"{v.keeps} epoch(s) with no change (keep) are not listed.", ""] if v.keeps else []
    return lines


def section_notes(c: Comparison) -> list[str]:
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
