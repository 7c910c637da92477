"""The rich console view of ``vaediag check``: one block per run.

Each block: a header (run, completed epochs, overall verdict, the file a run without event files was read
from, latest metrics), the penalty arithmetic as
the seed writes it (and, when the run logged it, the KL's share of the gradient at the encoder head), the checklist table (milestones and success, pass / fail / pending / n/a), the other
findings, and the recommendations with their plan arithmetic and next command. A closing line counts the
verdicts, and the reader's warnings (skipped folders, damaged files) follow.

Every text that comes from the logs (run ids, tags in messages, paths in commands, config values) goes
through :func:`vaediag.sanitize.terminal` before it reaches rich: an escape sequence in a run name shows
as ``\x1b[2K``, it never moves the cursor or erases a line.

    >>> import io                                                         # doctest: +SKIP
    >>> from rich.console import Console                                  # doctest: +SKIP
    >>> render_check(diags, console=Console(file=io.StringIO(), width=100))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vaediag.diagnose.numbers import fmt_value, human_epoch
from vaediag.sanitize import terminal as _t

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.diagnose.model import Finding, Recommendation, RunDiagnosis

__all__ = ["render_check", "render_run", "HEADER_TERMS", "VERDICT", "GROUP_EMPTY_AFTER"]

# Metrics shown in a run's header, in this order, when logged.
HEADER_TERMS = ("kl", "recon", "perceptual", "ssim_loss", "edge", "loss", "psnr", "psnr_grey", "psnr_colour",
                "ssim", "sharpness", "active_units", "kl_weight", "lr")
_HEADER_NAMES = {"kl": "KL", "recon": "recon", "perceptual": "perceptual", "ssim_loss": "SSIM loss", "edge": "edge",
                 "loss": "total", "psnr": "PSNR", "psnr_grey": "PSNR grey", "psnr_colour": "PSNR colour",
                 "ssim": "SSIM", "sharpness": "sharpness", "active_units": "active units",
                 "kl_weight": "kl_weight", "lr": "lr"}
_UNITS = {"psnr": " dB", "psnr_grey": " dB", "psnr_colour": " dB"}

# Severity -> (verdict word, mark, style).
VERDICT = {
    "fail": ("FAIL", "✗", "bold red"),
    "warn": ("WARN", "!", "yellow"),
    "info": ("OK", "i", "cyan"),
    "pass": ("PASS", "✓", "green"),
}
_STATUS_STYLE = {"pass": "green", "fail": "bold red", "pending": "yellow", "n/a": "dim", "not reached": "dim"}


def _header(d: "RunDiagnosis") -> Group:
    word, _, style = VERDICT[d.severity]
    title = Text.assemble((_t(d.run), "bold"), f"  ·  {d.epochs} completed epoch{'s' if d.epochs != 1 else ''}  ·  ",
                          (word, style))
    parts = []
    for term in HEADER_TERMS:
        if term in d.metrics:
            parts.append(f"{_HEADER_NAMES[term]} {fmt_value(d.metrics[term], term)}{_UNITS.get(term, '')}")
    lines: list = [title]
    source = getattr(d.info, "source_line", "") if d.info is not None else ""
    if source:  # a run read from a metrics log (metrics.csv, trainer_state.json, an export): which file
        lines.append(Text(_t(source), style="dim"))
    if parts:
        at = f"latest ({human_epoch(d.epochs - 1)})" if d.epochs else "latest"
        lines.append(Text(f"{at}: " + " · ".join(parts), style="dim" if not d.epochs else ""))
    return Group(*lines)


def _penalty(d: "RunDiagnosis") -> Group | None:
    p = d.penalty
    if not p.arithmetic:  # nothing logged to compute it from: the findings say why
        return None
    lines: list = []
    context = p.latest.get("context") if p.latest else None
    lines.append(Text.assemble(("KL penalty", "bold"), f" ({_t(context)})" if context else ""))
    for line in p.arithmetic:
        lines.append(Text("  " + _t(line)))
    if p.gradient:  # logged by the run (--grad-share-every): the gradient beside the value
        lines.append(Text("  Gradient: " + _t(p.gradient["sentence"])))
    if p.note and p.kl_weight is None:
        lines.append(Text("  " + _t(p.note), style="yellow"))
    return Group(*lines)


def _checklist(findings: Sequence["Finding"]) -> Table | None:
    rows = [f for f in findings if f.is_checklist]
    if not rows:
        return None
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False, title=None)
    t.add_column("Checklist", no_wrap=True)
    t.add_column("Criterion")
    t.add_column("Value", justify="right", no_wrap=True)
    t.add_column("Status", no_wrap=True)
    last_group = None
    for f in rows:
        group = "Success" if f.rule == "success" else f"After {human_epoch(f.epoch)}"
        status = f.status or f.severity
        t.add_row(group if group != last_group else "", escape(_t(f.label or f.key or f.rule)),
                  escape(_t(f.value_text or ("" if f.value is None else fmt_value(f.value, f.term)))),
                  Text(status.upper() if status in ("pass", "fail") else status, style=_STATUS_STYLE.get(status, "")))
        last_group = group
    return t


def _findings(findings: Iterable["Finding"]) -> Group | None:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    n = 0
    for f in findings:
        if f.is_checklist:
            continue
        _, mark, style = VERDICT[f.severity]
        grid.add_row(Text(f"  {mark}", style=style), Text.assemble((_t(f.rule), "bold"), f": {_t(f.message)}"))
        n += 1
    if not n:
        return None
    return Group(Text("Findings", style="bold"), grid)


def _print_recommendations(recs: Sequence["Recommendation"], *, console: Console) -> None:
    console.print(Text("Next steps", style="bold"))
    for i, r in enumerate(recs, 1):
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column()
        grid.add_row(Text(f"  {i}."), Text.assemble((_t(r.action), "bold magenta"), f": {_t(r.reason)}"))
        for line in r.params.get("plan") or []:
            grid.add_row("", Text(_t(line)))
        console.print(grid)
        if r.command:
            # soft_wrap: the terminal wraps a long command, so a copy and paste gets it in one piece
            console.print(Text.assemble("     $ ", (_t(r.command), "bold")), soft_wrap=True)


def render_run(d: "RunDiagnosis", *, console: Console) -> None:
    """Print one run's block (header, penalty, checklist, findings, next steps)."""
    console.rule(style="dim")
    console.print(_header(d))
    for part in (_penalty(d), _checklist(d.findings), _findings(d.findings)):
        if part is not None:
            console.print()
            console.print(part)
    if d.recommendations:
        console.print()
        _print_recommendations(d.recommendations, console=console)


# More runs than this with the same "nothing logged" diagnosis are listed in one block, not one block each.
GROUP_EMPTY_AFTER = 5
_LIST_IDS = 20  # run ids listed in such a block


def _empty_key(d: "RunDiagnosis") -> tuple | None:
    """What a run with nothing to judge (its one finding ``no_scalars``) shares with others like it."""
    if len(d.findings) != 1 or d.findings[0].rule != "no_scalars" or d.epochs or d.metrics:
        return None
    return d.findings[0].message, tuple((r.action, r.reason, r.command) for r in d.recommendations)


def _render_empty_group(group: Sequence["RunDiagnosis"], *, console: Console) -> None:
    d = group[0]
    word, _, style = VERDICT[d.severity]
    f = d.findings[0]
    console.rule(style="dim")
    console.print(Text.assemble((f"{len(group)} runs with nothing to judge", "bold"), "  ·  0 completed epochs  ·  ",
                                (word, style)))
    ids = ", ".join(x.run for x in group[:_LIST_IDS])
    more = f" and {len(group) - _LIST_IDS} more (--json lists each)" if len(group) > _LIST_IDS else ""
    console.print(Text(f"runs: {ids}{more}", style="dim"))
    console.print()
    console.print(_findings([f]))
    if d.recommendations:
        console.print()
        _print_recommendations(d.recommendations, console=console)


def render_check(
    diagnoses: Sequence["RunDiagnosis"],
    *,
    console: Console,
    warnings: Sequence[str] = (),
) -> None:
    """Print every run's block, a summary line and the reader's warnings.

    Runs with nothing to judge (only a ``no_scalars`` finding) that share one message are listed in one
    block after the others when there are more than :data:`GROUP_EMPTY_AFTER` of them: a tree of
    10,000 runs that died at start-up gets one block, not 10,000 identical ones.
    """
    groups: dict[tuple, list] = {}
    for d in diagnoses:
        key = _empty_key(d)
        if key is not None:
            groups.setdefault(key, []).append(d)
    grouped = {id(d) for g in groups.values() if len(g) > GROUP_EMPTY_AFTER for d in g}
    for d in diagnoses:
        if id(d) not in grouped:
            render_run(d, console=console)
    for g in groups.values():
        if len(g) > GROUP_EMPTY_AFTER:
            _render_empty_group(g, console=console)
    console.rule(style="dim")
    counts: dict[str, int] = {}
    for d in diagnoses:
        counts[d.severity] = counts.get(d.severity, 0) + 1
    parts = [f"{counts[s]} {VERDICT[s][0].lower() if s != 'info' else 'ok'}" for s in ("fail", "warn", "info", "pass")
             if counts.get(s)]
    n = len(diagnoses)
    console.print(Text(f"{n} run{'s' if n != 1 else ''} checked: " + ", ".join(parts), style="bold"))
    if warnings:
        console.print(Text("Warnings", style="bold yellow"))
        for w in warnings:
            console.print(Text(f"  ! {_t(w)}", style="yellow"))
