"""The report as a document: :func:`build_report` renders it in memory (:class:`Report`: the markdown and the
plot and picture files), nothing written.

Order: title, the generated line (:data:`GENERATED_PREFIX`), the runs, then reconstructions
(:mod:`vaediag.render.pictures`), summary, runs, evolution, curves, milestones, expected vs actual,
findings and recommendations, watchdog decisions, notes (:mod:`.sections`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Sequence

from vaediag.diagnose.compare import compare_runs
from vaediag.render import pictures
from vaediag.render.markdown import code_span, escape
from vaediag.render.report import figures
from vaediag.render.report.sections import (section_curves, section_evolution, section_findings, section_milestones,
                                            section_notes, section_runs, section_summary, section_targets,
                                            section_watchdog)

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.diagnose.model import RunDiagnosis
    from vaediag.diagnose.targets import Target
    from vaediag.logs import RunSet

__all__ = ["GENERATED_PREFIX", "Report", "build_report"]


# The one line that differs between two reports of the same logs (time and sources); tests skip it.
GENERATED_PREFIX = "_Generated "


@dataclass
class Report:
    """A rendered report: the markdown text and the plot and picture files (names in the files directory)."""

    markdown: str
    files: dict[str, bytes]
    files_dir: str  # the plots folder's name, beside the markdown (NAME_files)


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
    rendered = figures.render_plots(c) if plots else []
    picture_runs = figures.picture_runs(runset, c)
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
    lines += section_summary(c)
    lines += section_runs(c)
    lines += section_evolution(c)
    lines += section_curves(rendered, files_dir) if plots else []
    lines += section_milestones(c)
    lines += section_targets(c)
    lines += section_findings(c)
    lines += section_watchdog(c)
    lines += section_notes(c)
    text = "\n".join(lines).rstrip("\n") + "\n"
    files = {name: data for name, _, _, data in rendered}
    files.update(gallery.files if gallery is not None else {})
    return Report(markdown=text, files=files, files_dir=files_dir)


def _now() -> datetime:
    sde = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible-builds convention: a fixed time for the stamp
    if sde and sde.strip().isdigit():
        return datetime.fromtimestamp(int(sde), tz=timezone.utc)
    return datetime.now(timezone.utc)
