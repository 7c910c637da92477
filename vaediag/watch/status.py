"""What the watchdog knows about its run at any moment (:class:`WatchStatus`): data, filled by the supervisor
and the follower, read by the live panel (:mod:`vaediag.render.panel`). No rich here: the loop needs the
status without the renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["WatchStatus", "penalty_share"]


def penalty_share(kl_weight: float | None, kl: float | None, recon: float | None) -> float | None:
    """Effective KL penalty over the reconstruction loss: ``kl_weight * KL / recon`` (the seed's 13.5 %).

    >>> round(penalty_share(1e-5, 1500.0, 0.111), 3)
    0.135
    """
    if kl_weight is None or kl is None or recon is None or recon <= 0:
        return None
    v = kl_weight * kl / recon
    return v if math.isfinite(v) else None


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
