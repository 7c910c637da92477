"""The report's figures: the PNG plots (drawn by :mod:`vaediag.render.plots`) and the runs' logged pictures
(drawn by :mod:`vaediag.render.pictures`), wired from the :class:`~vaediag.diagnose.compare.Comparison`.

This picks each run's per-epoch tables, legend label, decisions and milestones for the drawing modules;
it reads no file (the scalar read counted the image tags; :func:`vaediag.render.pictures.collect` reads
the pictures).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from vaediag.diagnose.compare import Comparison, RunView
from vaediag.render import pictures
from vaediag.sanitize import plot_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from vaediag.logs import RunSet

__all__ = ["PLOT_FILES", "picture_runs", "render_plots"]

# The plot files a report writes into NAME_files/ (see render_plots). Only these names and the pictures'
# (vaediag.render.pictures.PICTURE_NAME) are ever written there, and only these (when the old report linked
# them and they still hold PNG, or for a picture any image, bytes) are removed as stale by --force.
PLOT_FILES = ("loss_terms.png", "loss_terms_weighted.png", "quality.png", "penalty_share.png", "kl_weight.png")


def picture_runs(runset: "RunSet", c: Comparison) -> list[pictures.RunPictures]:
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


def render_plots(c: Comparison) -> list[tuple[str, str, str, bytes]]:
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
            decisions.append(plots.DecisionMark(run=d.run, epoch=float(ep),
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
