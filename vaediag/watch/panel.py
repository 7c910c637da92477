"""Where the watchdog's panel used to live; kept so that old imports work.

The status (data) is :mod:`vaediag.watch.status`; its rendering is :mod:`vaediag.render.panel`, beside the
other renderers. Importing this module imports rich.
"""

from __future__ import annotations

from vaediag.render.panel import render_panel, status_line
from vaediag.watch.status import WatchStatus, penalty_share

__all__ = ["WatchStatus", "penalty_share", "render_panel", "status_line"]
