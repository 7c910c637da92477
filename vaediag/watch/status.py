"""What the watchdog knows about its run at any moment (:class:`WatchStatus`): data, filled by the supervisor
and the follower, read by the live panel (:mod:`vaediag.render.panel`). No rich here: the loop needs the
status without the renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vaediag.diagnose.criteria import penalty_ratio

__all__ = ["WatchStatus", "penalty_share"]


def penalty_share(kl_weight: float | None, kl: float | None, recon: float | None) -> float | None:
    """Effective KL penalty over the reconstruction loss, as check and the ladder compute it
    (:func:`~vaediag.diagnose.criteria.penalty_ratio`: the seed's 13.5 %); None where a number is missing or the
    share is not finite.

    >>> round(penalty_share(1e-5, 1500.0, 0.111), 3)
    0.135
    """
    if kl is None or recon is None:
        return None
    v = penalty_ratio(kl_weight, kl, recon)
    return v if v is not None and math.isfinite(v) else None


@dataclass
class WatchStatus:
    """Everything the panel shows; the supervisor or the follower (through their session) updates it, the
    renderer only reads it."""

    policy: str = ""
    profile: str | None = None  # the profile that judges the run (seed or generic), once decided
    mode_label: str = "supervise"  # supervise | restart | follow | dry-run ...
    command: str = ""
    pid: int | None = None
    child_state: str = "starting"  # starting | running | stopping | restarting | exited N | following
    run_dir: str | None = None
    epoch: int | None = None  # 0-based, last completed
    kl: float | None = None
    recon: float | None = None
    psnr: float | None = None
    kl_weight: float | None = None
    mode: str = "vae"
    last_action: str | None = None
    last_reason: str | None = None
    last_applied: str | None = None  # "control seq 2", "restart", "not applied (dry run)" ...
    decisions: int = 0
    changes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def penalty_share(self) -> float | None:
        return penalty_share(self.kl_weight, self.kl, self.recon)
