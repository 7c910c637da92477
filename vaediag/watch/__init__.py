"""The watchdog: policies that decide kl_weight, a supervisor that runs training, a journal.

    from vaediag.watch import KLWatchdog              # in-process, inside any training loop
    from vaediag.watch.policies import make_policy    # the policies alone
    from vaediag.watch.supervisor import Supervisor   # what `vaediag watch` runs (imports pandas)

Modules, one concern each: ``policies/`` (the decisions), ``supervisor`` (the loop of ``vaediag watch --
CMD``) over ``child`` (the training process), ``discovery`` (its run directory and checkpoint), ``argv``
(its command line) and ``session`` (tail, policy, journal, control file, shared with ``follower``);
``tracker``, ``control``, ``journal``, ``lock``, ``status`` (the panel's data; the panel itself is
:mod:`vaediag.render.panel`) and ``inprocess`` (:class:`KLWatchdog`).

This package imports nothing heavy on its own: the supervisor and its tail (pandas) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaediag.watch.inprocess import KLWatchdog
from vaediag.watch.journal import JOURNAL_FILENAME, Journal, load_journal, read_journal
from vaediag.watch.policies import (
    ControlVAEPolicy,
    Decision,
    GECOPolicy,
    LadderPolicy,
    Policy,
    make_policy,
)

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.watch.follower import Follower
    from vaediag.watch.supervisor import Supervisor

__all__ = [
    "KLWatchdog",
    "Decision",
    "Policy",
    "LadderPolicy",
    "ControlVAEPolicy",
    "GECOPolicy",
    "make_policy",
    "Journal",
    "read_journal",
    "load_journal",
    "JOURNAL_FILENAME",
    "Supervisor",
    "Follower",
]


def __getattr__(name: str) -> Any:
    if name in ("Supervisor", "Follower"):
        from vaediag.watch import supervisor

        return getattr(supervisor, name)
    raise AttributeError(f"module 'vaediag.watch' has no attribute {name!r}")
