"""Follow a run started elsewhere (``vaediag watch --follow RUN_DIR``): the same tail, policy, journal and
panel as the supervisor, no child process; decisions are recommendations unless ``apply``.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

from vaediag.errors import Interrupted, UsageError
from vaediag.watch.policies import Decision, Policy
from vaediag.watch.session import Display, WatchSession
from vaediag.watch.tracker import EpochMetrics

__all__ = ["Follower"]


class Follower(WatchSession):
    """Follow a run started elsewhere: same tail, policy, journal and panel; control.json only with ``apply``.

    Epochs already complete when following starts are replayed through the policy (recorded with
    ``replayed: true``, never applied) except the latest, which is live. Ends when the run's event files (or
    its metrics log: Lightning's metrics.csv, HF's trainer_state.json, a CSV/JSONL export) have not changed
    for ``idle`` seconds (exit 0) or on SIGINT/SIGTERM (exit 130): the first signal ends the loop at once (no
    wait outlasts it), a second one raises :class:`Interrupted` wherever it lands.
    """

    def __init__(self, run_dir: str | os.PathLike[str], policy: Policy, *, apply: bool = False,
                 idle: float = 300.0, poll: float = 1.0, display: Display | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(policy, display=display, poll=poll, dry_run=not apply)
        p = Path(run_dir)
        if not p.is_dir():
            raise UsageError(f"--follow {str(run_dir)!r} is not a directory; give the run directory to follow")
        if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not math.isfinite(idle) or idle <= 0:
            raise UsageError(f"--idle must be a finite number of seconds > 0, got {idle!r}")
        self.follow_dir = p
        self.apply = apply
        self.idle = idle
        self._clock = clock
        self._stop_signal: int | None = None
        self.status.mode_label = "follow, applying" if apply else "follow, recommending"
        self.status.child_state = "following"

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:
            raise Interrupted(f"interrupted ({signal.Signals(signum).name} received twice)")
        self._stop_signal = signum

    def _nap(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self._stop_signal is None:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def _size(self) -> tuple[int, int, int]:
        """(files, bytes, newest modification): a change in any is growth (HF's trainer_state.json is
        rewritten whole, so its size alone may not move)."""
        files = self.tail.files() if self.tail is not None else []
        total = newest = 0
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime_ns)
        return len(files), total, newest

    def run(self) -> int:
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.attach(self.follow_dir, follow=True, apply=self.apply)
            for em, d in self.read_epochs(backlog=True):  # history is recorded inside; the latest is live
                self._live(em, d)
            last_size, last_growth = self._size(), self._clock()
            while True:
                if self._stop_signal is not None:
                    self.journal.event("exit", code=130, signal=signal.Signals(self._stop_signal).name)
                    return 130
                for em, d in self.read_epochs():
                    self._live(em, d)
                size = self._size()
                now = self._clock()
                if size != last_size:
                    last_size, last_growth = size, now
                elif now - last_growth >= self.idle:
                    for em, d in self.read_epochs(final=True):
                        self._live(em, d)
                    self.journal.event("exit", code=0, idle_s=self.idle)
                    self.display.message(f"watch: no new logs for {self.idle:g} s; done")
                    return 0
                self.display.update(self.status)
                self._nap(self.poll)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            self.close()

    def _live(self, em: EpochMetrics, d: Decision) -> None:
        if not d.changes:
            note = "recommendation only: the run is followed, not supervised" if d.action == "stop" else None
            self.record(em, d, applied=False, **({"note": note} if note else {}))
        elif not self.apply:
            self.record(em, d, applied=False, note="recommendation (pass --apply to write control.json)")
        else:
            self.apply_control(em, d)
