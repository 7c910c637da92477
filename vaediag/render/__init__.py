"""Renderers: the rich console (``vaediag check``), the markdown report and its plots (``vaediag report``), the
live panel of ``vaediag watch`` (:mod:`.panel`).

Rendering computes nothing: every number, verdict and sentence comes from :mod:`vaediag.diagnose`
(findings, penalty arithmetic, recommendations); renderers pick, order and format. Submodules are
imported on use (``from vaediag.render.console import render_check``), so importing this package costs
nothing and never pulls in rich or matplotlib.
"""

from __future__ import annotations

__all__: list[str] = []
