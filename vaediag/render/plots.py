"""Matplotlib plots for reports: loss terms, PSNR/SSIM, penalty share, kl_weight with decisions.

Rendering computes nothing: every function takes per-epoch tables already built by the analysis
layer (``run -> DataFrame`` indexed by the 0-based epoch index, one column per canonical term) and
draws them. Runs are aligned by epoch, so runs of different lengths share an axis; each run keeps one
colour in every plot (:func:`run_styles`).

No pyplot: figures are built with :class:`matplotlib.figure.Figure` and drawn by the Agg canvas, so
nothing here touches a GUI backend or pyplot's global figure registry (a report on a headless server or
inside a notebook neither opens windows nor leaks figures), and :func:`png_bytes` writes PNGs without
the software/version metadata, so the same tables give the same bytes. Every plot function returns
``(fig, ax)`` (``ax`` is an array of axes for multi-panel figures) and never shows anything.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from vaediag.terms import LOSS_TERMS, TERM_INFO

__all__ = [
    "EPOCH_OFFSET",
    "EPOCH_LABEL",
    "RunStyle",
    "DecisionMark",
    "run_styles",
    "plot_loss_terms",
    "plot_quality",
    "plot_penalty_share",
    "plot_kl_weight",
    "png_bytes",
    "plot_style",
]

# The frame's epoch is a 0-based index; readers (and the seed: "after epoch 10") count completed epochs.
EPOCH_OFFSET = 1
EPOCH_LABEL = "epoch (completed epochs)"

# A fixed look that does not depend on the user's matplotlibrc, so every machine draws the same pixels.
_RC = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.family": "DejaVu Sans",  # ships inside matplotlib: the same glyphs everywhere
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "path.simplify": True,
    "svg.hashsalt": "vaediag",
}

_WIDTH_IN = 10.0
_PANEL_H_IN = 3.0
# A log axis once values span this factor: KL of 160 next to 1,600, shares from 0.001 % to 40 %.
_LOG_SPAN = 50.0


@dataclass(frozen=True)
class RunStyle:
    """How one run is drawn in every plot: its colour and its short legend label."""

    colour: str
    label: str


@dataclass(frozen=True)
class DecisionMark:
    """Where to mark a watchdog decision on the kl_weight plot (``number`` matches the report's table)."""

    run: str
    epoch: float  # 0-based epoch index at which the decision was taken
    kl_weight: float | None
    number: int
    applied: bool = True


def plot_style():
    """A context manager with the report's matplotlib settings (matplotlib defaults plus :data:`_RC`)."""
    import matplotlib as mpl

    class _Ctx:
        def __enter__(self):
            self._cm = mpl.rc_context()
            self._cm.__enter__()
            mpl.rcdefaults()  # ignore the user's matplotlibrc inside the context; restored on exit
            mpl.rcParams.update(_RC)
            return self

        def __exit__(self, *exc):
            return self._cm.__exit__(*exc)

    return _Ctx()


def run_styles(runs: Sequence[str], labels: Mapping[str, str] | None = None) -> dict[str, RunStyle]:
    """One colour per run, in the given order (tab10, or tab20 beyond ten runs; cycles beyond twenty)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10" if len(runs) <= 10 else "tab20"]
    n = cmap.N
    out = {}
    for i, run in enumerate(runs):
        label = labels.get(run, run) if labels else run
        out[run] = RunStyle(colour=to_hex(cmap(i % n)), label=label)
    return out


def _figure(n_panels: int, *, ncols: int = 1, height: float | None = None):
    from matplotlib.figure import Figure

    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(_WIDTH_IN, height or (_PANEL_H_IN * nrows + 0.9)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _xy(table: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    if column not in table.columns:
        return np.array([]), np.array([])
    s = table[column].dropna()
    s = s[np.isfinite(s.to_numpy(dtype=float))]
    return s.index.to_numpy(dtype=float) + EPOCH_OFFSET, s.to_numpy(dtype=float)


def _line(ax, x: np.ndarray, y: np.ndarray, style: RunStyle, *, linestyle: str = "-"):
    # A run with a handful of epochs is a few points; markers keep a one-epoch run visible.
    marker = "o" if len(x) <= 12 else None
    ax.plot(x, y, color=style.colour, linestyle=linestyle, marker=marker, markersize=3.5)


def _run_lines(ax, tables: Mapping[str, pd.DataFrame], styles: Mapping[str, RunStyle], column: str,
               drawn: set[str], *, scale: float = 1.0) -> list[np.ndarray]:
    """One line per run that logs ``column``; those runs join ``drawn``. Returns the y values drawn."""
    ys = []
    for run, tb in tables.items():
        x, y = _xy(tb, column)
        if len(x):
            y = scale * y
            _line(ax, x, y, styles[run])
            ys.append(y)
            drawn.add(run)
    return ys


def _autoscale_y(ax, values: list[np.ndarray]) -> None:
    v = np.concatenate([a for a in values if len(a)]) if any(len(a) for a in values) else np.array([])
    v = v[np.isfinite(v)]
    if len(v) and (v > 0).all() and v.max() / v.min() > _LOG_SPAN:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:g}"))  # 0.001, not 10^-3


def _finish(fig, axes, styles: Mapping[str, RunStyle], runs_drawn: Sequence[str], *, title: str) -> None:
    fig.suptitle(title, fontsize=11)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        if ax.get_visible():
            ax.set_xlabel(EPOCH_LABEL)
            # Epochs are whole numbers: no 2.5 ticks on a three-epoch run, and a one-epoch run gets an
            # axis a few epochs wide instead of one zoomed to 0.99-1.01.
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            lo, hi = ax.dataLim.intervalx
            if ax.has_data() and hi - lo < 2:
                ax.set_xlim(lo - 1, hi + 1)
    if runs_drawn:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=styles[r].colour, label=styles[r].label) for r in runs_drawn]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)))


def _percent_formatter():
    """Tick labels as plain percentages (``0.01%``, ``1%``, ``10%``) on linear and log axes alike."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:g}%")


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def plot_loss_terms(
    tables: Mapping[str, pd.DataFrame],
    styles: Mapping[str, RunStyle],
    *,
    weighted: bool = False,
    terms: Sequence[str] = ("loss",) + LOSS_TERMS,
):
    """One panel per loss term that any run logs, every run a line: raw values or weighted contributions.

    Args:
        tables: run -> per-epoch table (index: 0-based epoch; columns: canonical terms).
        styles: run -> :class:`RunStyle` (from :func:`run_styles`).
        weighted: plot ``<term>_weighted`` (weight x raw value, what the optimiser sees) instead of raw.
        terms: loss terms to consider, in panel order.

    Returns:
        ``(fig, axes)``.
    """
    cols = [(t if not weighted or t == "loss" else f"{t}_weighted") for t in terms]
    present = [c for c in cols if any(c in tb.columns and tb[c].notna().any() for tb in tables.values())]
    fig, axes = _figure(max(1, len(present)), ncols=2 if len(present) > 1 else 1)
    drawn: set[str] = set()
    for ax, col in zip(axes, present):
        ys = _run_lines(ax, tables, styles, col, drawn)
        info = TERM_INFO.get(col)
        name = info.label if info else col
        unit = f" ({info.unit})" if info and info.unit else ""
        ax.set_title(name)
        ax.set_ylabel(f"{'weighted ' if weighted and col != 'loss' else ''}value{unit}")
        _autoscale_y(ax, ys)
    if not present:
        _no_data(axes[0], "no loss terms logged")
    kind = "weighted contribution (weight x value)" if weighted else "raw value"
    _finish(fig, axes, styles, [r for r in tables if r in drawn], title=f"Loss terms per epoch, {kind}")
    return fig, axes


def plot_quality(tables: Mapping[str, pd.DataFrame], styles: Mapping[str, RunStyle]):
    """PSNR (dB) and SSIM per epoch; solid = all images, dashed = grey images, dotted = colour images."""
    fig, axes = _figure(2, ncols=2, height=_PANEL_H_IN + 1.3)
    variants = (("", "-", "all images"), ("_grey", "--", "grey images"), ("_colour", ":", "colour images"))
    drawn: set[str] = set()
    used_variants: list[int] = []
    for ax, metric, unit in ((axes[0], "psnr", "dB"), (axes[1], "ssim", "")):
        any_line = False
        for run, tb in tables.items():
            for i, (suffix, ls, _) in enumerate(variants):
                x, y = _xy(tb, metric + suffix)
                if len(x):
                    _line(ax, x, y, styles[run], linestyle=ls)
                    any_line = True
                    drawn.add(run)
                    if i not in used_variants:
                        used_variants.append(i)
        ax.set_title(TERM_INFO[metric].label + " (higher is better)")
        ax.set_ylabel(f"{TERM_INFO[metric].label}{' (' + unit + ')' if unit else ''}")
        if not any_line:
            _no_data(ax, f"{TERM_INFO[metric].label} not logged")
    if len(used_variants) > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="0.3", linestyle=variants[i][1], label=variants[i][2])
                   for i in sorted(used_variants)]
        axes[0].legend(handles=handles, loc="lower right")
    _finish(fig, axes, styles, [r for r in tables if r in drawn], title="Image quality on validation, per epoch")
    return fig, axes


def plot_penalty_share(
    tables: Mapping[str, pd.DataFrame],
    styles: Mapping[str, RunStyle],
    *,
    column: str = "penalty_share",
    ratio_column: str | None = "penalty_ratio",
):
    """Effective KL penalty (kl_weight x KL) per epoch as a percentage of the total weighted loss.

    With ``ratio_column`` present a second panel shows the penalty relative to the reconstruction loss
    (the seed's "13.5 % of reconstruction signal wasted on regularisation").
    """
    two = ratio_column is not None and any(
        ratio_column in tb.columns and tb[ratio_column].notna().any() for tb in tables.values()
    )
    fig, axes = _figure(2 if two else 1, ncols=2 if two else 1, height=_PANEL_H_IN + 1.3)
    panels = [(axes[0], column, "share of total weighted loss")]
    if two:
        panels.append((axes[1], ratio_column, "relative to reconstruction loss"))
    drawn: set[str] = set()
    for ax, col, what in panels:
        ys = _run_lines(ax, tables, styles, col, drawn, scale=100.0)
        ax.set_title(f"KL penalty, {what}")
        ax.set_ylabel("effective KL penalty (%)")
        _autoscale_y(ax, ys)
        ax.yaxis.set_major_formatter(_percent_formatter())
        if not ys:
            _no_data(ax, "kl_weight or KL unknown")
    _finish(fig, axes, styles, [r for r in tables if r in drawn],
            title="Effective KL penalty (kl_weight x KL) per epoch: lower leaves more signal for reconstruction")
    return fig, axes


def plot_kl_weight(
    tables: Mapping[str, pd.DataFrame],
    styles: Mapping[str, RunStyle],
    *,
    decisions: Sequence[DecisionMark] = (),
    column: str = "kl_weight",
):
    """kl_weight per epoch (log axis), with the watchdog's decisions marked and numbered (D1, D2 ...).

    A run with kl_weight 0 (an autoencoder) cannot sit on a log axis; it is drawn on a linear axis when
    every value is 0, otherwise its zero epochs are left out and the report's tables carry them.
    """
    fig, axes = _figure(1, height=_PANEL_H_IN + 1.4)
    ax = axes[0]
    drawn: list[str] = []
    values = []
    for run, tb in tables.items():
        x, y = _xy(tb, column)
        if len(x):
            # A step plot: a weight holds for the whole epoch in which it was applied.
            ax.step(x, y, where="post", color=styles[run].colour)
            if len(x) <= 12:
                ax.plot(x, y, "o", color=styles[run].colour, markersize=3.5)
            drawn.append(run)
            values.append(y)
    if values and (np.concatenate(values) > 0).any():
        ax.set_yscale("log")  # weights span decades (1e-2 ... 1e-7); zeros drop out and stay in the tables
        from matplotlib.ticker import FuncFormatter, NullFormatter

        pos = np.concatenate(values)
        pos = pos[pos > 0]
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        # Within one decade only minor ticks fall inside the axis: label them too, plainly.
        ax.yaxis.set_minor_formatter(plain if pos.max() / pos.min() < 10 else NullFormatter())
    marked = _mark_decisions(ax, decisions, styles)
    ax.set_ylabel("kl_weight (beta)")
    if marked:
        ax.set_title("Triangles: watchdog decisions, numbered as in the report (hollow: not applied; "
                     "on the axis: autoencoder or stop)", fontsize=9)
    if not drawn:
        _no_data(ax, "kl_weight not logged")
    _finish(fig, axes, styles, [r for r in tables if r in drawn], title="KL weight over time")
    return fig, axes


def _mark_decisions(ax, decisions: Sequence[DecisionMark], styles: Mapping[str, RunStyle]) -> int:
    """Each decision of a drawn run as a numbered triangle at its epoch (filled: applied); how many were marked."""
    marked = 0
    for d in decisions:
        if d.run not in styles:
            continue
        x = d.epoch + EPOCH_OFFSET
        face = styles[d.run].colour if d.applied else "white"
        y = d.kl_weight
        if y is None or not math.isfinite(y) or (ax.get_yscale() == "log" and y <= 0):
            # A switch to the autoencoder (weight 0) or a stop has no place on a log axis: mark it on
            # the bottom edge, at its epoch.
            tr = ax.get_xaxis_transform()
            ax.plot([x], [0.0], marker="^", markersize=9, markerfacecolor=face, markeredgecolor="black",
                    linestyle="none", transform=tr, clip_on=False)
            ax.annotate(f"D{d.number}", (x, 0.0), xycoords=tr, textcoords="offset points", xytext=(6, 6),
                        fontsize=8)
        else:
            ax.plot([x], [y], marker="v", markersize=9, markerfacecolor=face, markeredgecolor="black",
                    linestyle="none")
            ax.annotate(f"D{d.number}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
        marked += 1
    return marked


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes with no time or software metadata (identical input -> identical bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()
