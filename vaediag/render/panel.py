"""The live panel of ``vaediag watch``: the rich rendering of a :class:`~vaediag.watch.status.WatchStatus`
(presentation only; the status is data, in :mod:`vaediag.watch.status`).

The watchdog (supervisor or follower) fills a :class:`WatchStatus`; ``vaediag watch`` renders it with :func:`render_panel` in a
live display, or prints :func:`status_line` once per epoch where the output is not a terminal. Text from
the run (its directory, the command, reasons, notes) passes :func:`vaediag.sanitize.terminal` and is never
read as rich markup: an escape sequence or ``[bold]`` in a run name shows as typed.
"""

from __future__ import annotations

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from vaediag.sanitize import terminal as _t
from vaediag.watch.status import WatchStatus

__all__ = ["render_panel", "status_line"]


def _value_text(x: float | None, fmt: str = ".4g", unit: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:{fmt}}{unit}"


def render_panel(s: WatchStatus) -> Panel:
    """The live panel: run, epoch, KL, penalty share, PSNR, kl_weight, last decision and its reason."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("run", Text(_t(s.run_dir)) if s.run_dir else Text("waiting for the run directory...", style="dim"))
    t.add_row("process", Text(_t(s.child_state) + (f" (pid {s.pid})" if s.pid else "")))
    t.add_row("epoch", "-" if s.epoch is None else f"{s.epoch + 1} completed")
    t.add_row("KL", _value_text(s.kl))
    share = s.penalty_share
    t.add_row("penalty share", "-" if share is None else f"{share:.2%} (kl_weight x KL / recon)")
    t.add_row("PSNR", _value_text(s.psnr, ".2f", " dB"))
    t.add_row("kl_weight", _value_text(s.kl_weight, ".3g") + ("  [bold]AE mode[/bold]" if s.mode == "ae" else ""))
    if s.last_action:
        style = "green" if s.last_action == "keep" else "bold yellow"
        t.add_row("decision", Text(_t(s.last_action), style=style) + Text(f"  {_t(s.last_applied or '')}", style="dim"))
        t.add_row("reason", Text(_t(s.last_reason or "")))
    t.add_row("decisions", f"{s.decisions} ({s.changes} changes)")
    for note in s.notes[-3:]:
        t.add_row("note", Text(_t(note), style="yellow"))
    judged = f", {_t(s.profile)} profile" if s.profile else ""
    title = Text(f"vaediag watch - {_t(s.policy)}{judged} ({_t(s.mode_label)})")
    return Panel(t, title=title, title_align="left", border_style="cyan")


def status_line(s: WatchStatus) -> str:
    """One plain line per decision, for logs and non-terminal output."""
    share = s.penalty_share
    parts = [
        f"epoch {s.epoch + 1}" if s.epoch is not None else "epoch -",
        f"kl {_value_text(s.kl)}",
        f"share {share:.2%}" if share is not None else "share -",
        f"psnr {_value_text(s.psnr, '.2f')}",
        f"kl_weight {_value_text(s.kl_weight, '.3g')}",
    ]
    head = "watch: " + "  ".join(parts)
    if s.last_action:
        head += f"  -> {s.last_action}"
        if s.last_applied:
            head += f" [{s.last_applied}]"
        head += f": {s.last_reason}"
    return _t(head)
