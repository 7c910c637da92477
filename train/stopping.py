"""How a run stops: SIGINT/SIGTERM caught as a flag (:class:`StopOnSignal`), and the one-line messages of a
run that diverged or whose write was refused: what happened, what was kept, what to do next.
"""

from __future__ import annotations

import errno
import math
import signal
import threading
from pathlib import Path
from typing import Any

from vaediag.errors import InputError, VaediagError

from train.errors import OutputError, TrainingDiverged, describe_os_error, shown
from train.events import BadStep

__all__ = ["StopOnSignal", "os_failure", "what_is_kept", "bad_step_detail", "diverged_error", "fmt",
           "nonfinite_terms"]


class StopOnSignal:
    """SIGINT/SIGTERM set a flag (the loop finishes its step, saves and exits 130); a second one aborts."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt  # asked twice: stop now, without a checkpoint
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def os_failure(exc: OSError, what: str, then: str) -> VaediagError:
    """One line for an OSError while creating or writing ``what``: the machine's refusals (disk full,
    quota, I/O error, file-size limit, read-only) are OutputError (exit 4); a path that cannot be used
    (not a directory, no permission, a name too long) is InputError (exit 2)."""
    said, advice = describe_os_error(exc)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EIO, errno.EFBIG, errno.EROFS):
        return OutputError(f"cannot write {what}: {said}; {then}; {advice}")
    name = f" ({shown(exc.filename)})" if exc.filename else ""
    return InputError(f"cannot create {what}: {said}{name}; choose another --logdir or --checkpoint-dir")


def what_is_kept(exc: OSError, last_good: tuple[Path, int] | None) -> tuple[str, str]:
    """(what failed, what is intact and what to do) for a refused write; ``last_good`` is the last checkpoint
    with finite weights, (path, step), if any."""
    said, advice = describe_os_error(exc)
    if last_good is None:
        return said, f"no checkpoint was saved; {advice}, then start the run again"
    path, step = last_good
    return said, f"the checkpoint {path} (step {step}) is intact; {advice}, then continue with --resume {path}"


def bad_step_detail(bad: BadStep | None, *, kl_weight: float, control_seq: int) -> str:
    """What a non-finite train step logged: its loss, the terms that were not finite, its kl_weight (and the
    control.json seq that set it, when the base weight ``kl_weight`` came from one) and lr. ``bad`` None: the
    step was another process's."""
    if bad is None:
        return "the loss was not finite on another process"
    source = f" from control.json seq {control_seq}" if control_seq >= 0 and bad.kl_weight == kl_weight else ""
    return (f"loss {fmt(bad.values.get('loss'))} ({nonfinite_terms(bad.values)}"
            f"kl_weight {bad.kl_weight:.3g}{source}, lr {bad.lr:.3g})")


def diverged_error(step: int | None, detail: str, last_good: tuple[Path, int] | None,
                   run_dir: Path | None) -> TrainingDiverged:
    """The error of a run that diverged at ``step``: what was not finite, the last good checkpoint, where the
    evidence is logged, what to try."""
    if last_good is not None:
        path, good_step = last_good
        kept = f"last good checkpoint {path} (step {good_step})"
    else:
        kept = "no checkpoint was saved (the run diverged in its first epoch)"
    logged = f"; logged in {run_dir}" if run_dir is not None else ""
    return TrainingDiverged(f"training diverged at step {step}: {detail}; {kept}{logged}; "
                            "try a lower --lr or --kl-weight")


def fmt(v: float | None) -> str:
    """A number in a message: 4 significant digits, ``nan``/``inf`` as themselves, ``?`` for none."""
    if v is None:
        return "?"
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def nonfinite_terms(values: dict[str, float]) -> str:
    """``"kl inf, kl_weighted inf; "``, or ``"every term nan; "``: the terms besides the total that are not finite."""
    terms_ = {k: v for k, v in values.items() if k != "loss"}
    bad = {k: v for k, v in terms_.items() if not math.isfinite(v)}
    if not bad:
        return ""
    if len(bad) == len(terms_) and len({fmt(v) for v in bad.values()}) == 1:
        return f"every term {fmt(next(iter(bad.values())))}; "
    shown_ = [f"{k} {fmt(v)}" for k, v in bad.items()]
    more = f" and {len(shown_) - 4} more" if len(shown_) > 4 else ""
    return ", ".join(shown_[:4]) + more + "; "
