"""What the supervisor and the follower share (:class:`WatchSession`): one run directory, tailed, its epochs
fed to the tracker and the policy, every decision journalled and shown, a change written to ``control.json``.

Attaching to a run takes its ``watchdog.lock`` first (one watchdog per run) and opens its journal; nothing
is written into a run the session could not lock. A change goes to ``control.json`` with a ``seq`` one above
the file's current one (temp file, fsync, rename: :func:`~vaediag.watch.control.write_control`); a control
file that is not a regular file is never read or replaced, and a write that fails is journalled as not
applied, with the policy told (:meth:`~vaediag.watch.policies.Policy.not_applied`) so it may decide again.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Protocol

from vaediag.errors import ControlFileError, UsageError
from vaediag.safeio import kind_of
from vaediag.watch.control import CONTROL_FILENAME, Control, now_iso, read_control, write_control
from vaediag.watch.journal import Journal, decision_record
from vaediag.watch.lock import RunLock
from vaediag.watch.policies import Decision, MissingMetricWarning, Policy
from vaediag.watch.status import WatchStatus
from vaediag.watch.tracker import EpochMetrics, EpochTracker

__all__ = ["MAX_POLL_S", "Display", "WatchSession"]

#: The longest poll interval: a watchdog that looks less than once an hour is not watching.
MAX_POLL_S = 3600.0


class Display(Protocol):
    """Where the watchdog shows things; ``vaediag watch`` passes a rich live panel."""

    def update(self, status: WatchStatus) -> None: ...

    def decision(self, status: WatchStatus) -> None: ...

    def message(self, text: str) -> None: ...


class _NullDisplay:
    def update(self, status: WatchStatus) -> None:
        pass

    def decision(self, status: WatchStatus) -> None:
        pass

    def message(self, text: str) -> None:
        pass


class WatchSession:
    """What the supervisor and the follower share: tail -> tracker -> policy -> journal (+ control)."""

    def __init__(self, policy: Policy, *, display: Display | None, poll: float, dry_run: bool) -> None:
        if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not math.isfinite(poll) \
                or not 0 < poll <= MAX_POLL_S:
            raise UsageError(f"--poll must be a number of seconds > 0 and <= {MAX_POLL_S:g}, got {poll!r}")
        self.policy = policy
        self.display = display or _NullDisplay()
        self.poll = poll
        self.dry_run = dry_run
        self.run_dir: Path | None = None
        self.tail = None
        self.tracker = EpochTracker()
        self.journal: Journal | None = None
        self.lock: RunLock | None = None
        self.seq = 0
        self.status = WatchStatus(policy=policy.name)
        self.decisions: list[tuple[EpochMetrics, Decision]] = []
        self._profile_for: Path | None = None  # the run directory the policy's profile was decided for

    # ---- attaching to a run directory -------------------------------------------------------------

    def attach(self, run_dir: Path, **start_fields: Any) -> None:
        """Take the run's lock (one watchdog per run), open its journal and start tailing it.

        Raises :class:`~vaediag.watch.lock.RunLockedError` (another live watchdog holds the run) or
        InputError (no lock or journal can be made there) before anything is written into the run."""
        from vaediag.logs import Tail  # pandas: only once there is a run to read

        run_dir = Path(run_dir).resolve()
        if self.run_dir == run_dir:
            return
        lock = RunLock.acquire(run_dir, mode=self.status.mode_label)
        try:
            journal = Journal(run_dir)
        except BaseException:
            lock.release()
            raise
        if self.lock is not None:
            self.lock.release()
        self.lock = lock
        self.run_dir = run_dir
        self.tail = Tail(run_dir)
        self.tracker = _continue_tracker(self.tracker)
        if self.journal is not None:
            self.journal.close()
        self.journal = journal
        self.status.run_dir = str(run_dir)
        self.journal.event("start", policy=self.policy.name, params=self.policy.params(),
                           dry_run=self.dry_run, run_dir=str(run_dir), lock=str(lock.path), **start_fields)
        if lock.stale_note:
            self.note(lock.stale_note)

    # ---- deciding -----------------------------------------------------------------------------------

    def read_epochs(self, *, final: bool = False, backlog: bool = False) -> list[tuple[EpochMetrics, Decision]]:
        """Poll the tail and decide on every epoch that completed since the last call.

        ``backlog``: everything already in the files counts as complete (the files were written before
        we looked, so the last val point cannot still be arriving in pieces).
        """
        if self.tail is None:
            return []
        self.tracker.feed(self.tail.poll())
        if backlog:
            self.tracker.feed(None)  # one quiet poll: the val points already on disk are whole
        out = []
        ready = self.tracker.ready(final=final)
        if ready and self._profile_for != self.run_dir:
            self._judge_run()
        for i, em in enumerate(ready):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MissingMetricWarning)
                d = self.policy.update(em.epoch, em.metrics)
            for w in caught:
                self.note(str(w.message))
            if backlog and i < len(ready) - 1:
                # History: the run trained these epochs before we looked. What the policy would have done
                # then is recorded, but it did not happen, so the policy must not believe it did.
                self.policy.not_applied(d)
                self.record(em, d, applied=False, replayed=True, note="replayed history")
                continue
            out.append((em, d))
        return out

    def _judge_run(self) -> None:
        """Decide the policy's profile for this run as ``vaediag check`` decides it, once its first epoch is
        complete (our trainer names its run directory before it writes config.json), and journal why."""
        from vaediag.watch.profile import judge_run

        self._profile_for = self.run_dir
        why = judge_run(self.policy, self.run_dir)
        if why is None:
            return
        self.status.profile = self.policy.judged_by
        if self.journal is not None:
            self.journal.event("profile", profile=self.policy.judged_by, why=why)
        self.display.message(f"watch: judged by the {why}")

    def record(self, em: EpochMetrics, d: Decision, *, applied: bool, via: str | None = None,
               seq: int | None = None, **extra: Any) -> None:
        """Journal one decision and show it."""
        if self.journal is not None:
            self.journal.append(decision_record(d, metrics=em.metrics, policy=self.policy, applied=applied,
                                                seq=seq, via=via, **extra))
        self.decisions.append((em, d))
        s = self.status
        m = em.metrics
        s.epoch = em.epoch
        s.kl, s.recon, s.psnr = m.get("kl"), m.get("recon"), m.get("psnr")
        s.kl_weight = m.get("kl_weight", s.kl_weight)
        s.mode = "ae" if m.get("ae_mode", 0.0) >= 0.5 else s.mode
        s.last_action, s.last_reason = d.action, (d.reason + (f" [declined: {d.declined}]" if d.declined else ""))
        s.decisions += 1
        s.changes += int(d.changes and applied)
        if d.action == "keep":
            s.last_applied = None
        elif applied:
            s.last_applied = f"applied: control seq {seq}" if via == "control" else f"applied: {via}"
        else:
            s.last_applied = f"not applied: {extra.get('note', 'recommendation only')}"
        self.display.decision(s)

    def apply_control(self, em: EpochMetrics, d: Decision) -> None:
        """Apply a change through control.json and journal it; a failed write is journalled as not applied
        and the policy forgets the change, so it may decide again next epoch."""
        seq = self.write_control(d)
        if seq is None:
            self.policy.not_applied(d)
            self.record(em, d, applied=False, seq=None, note="control.json could not be written")
        else:
            self.record(em, d, applied=True, via="control", seq=seq)

    def write_control(self, d: Decision) -> int | None:
        """Write a change to control.json; return its seq, or None when the file could not be written."""
        assert self.run_dir is not None
        path = self.run_dir / CONTROL_FILENAME
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            self.note(f"cannot check {path}: {exc.strerror or exc}")
            return None
        if mode is not None and not stat.S_ISREG(mode):  # never read (a FIFO would block), never replaced
            self.note(f"{path} is {kind_of(mode)}, not a regular file; it is left as it is and the decision is "
                      f"not applied (move it away to let the watchdog write control.json)")
            return None
        try:
            cur = read_control(self.run_dir)
            base = cur.seq if cur is not None else 0
        except ControlFileError as exc:
            self.note(f"existing control.json unreadable ({exc.message}); it is replaced")
            base = 0
        self.seq = max(self.seq, base) + 1
        ctl = Control(seq=self.seq, kl_weight=float(d.kl_weight or 0.0), mode=d.mode, reason=d.reason,
                      issued_at=now_iso())
        try:
            write_control(self.run_dir, ctl)
        except OSError as exc:
            self.note(f"cannot write control.json in {self.run_dir}: {exc.strerror}")
            return None
        except ControlFileError as exc:
            self.note(exc.message)
            return None
        return self.seq

    def note(self, text: str) -> None:
        self.status.notes.append(text)
        if self.journal is not None:
            self.journal.event("note", text=text)
        self.display.message(f"watch: {text}")

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _continue_tracker(old: EpochTracker) -> EpochTracker:
    """A fresh tracker for a new run directory that still skips epochs already decided."""
    new = EpochTracker()
    new._done_upto = old.last_reported
    return new
