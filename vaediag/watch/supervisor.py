# Over 450 lines on purpose: one job (the loop of `vaediag watch -- CMD`); child, discovery, argv and session are their own modules already, what is left is the loop and its restart, which share the supervisor's state.
"""Run training under the watchdog (:class:`Supervisor`): the loop that ties the child process, the discovery
of its run, the session (tail, policy, journal, control file) and restarts together. :class:`Follower`, which
follows a run started elsewhere, lives in :mod:`~vaediag.watch.follower` and is importable from here.

Supervisor, step by step
------------------------
1. **Start** the training command as a child in its own session (:mod:`~vaediag.watch.child`): Ctrl-C in
   the terminal reaches the watchdog only, which forwards it; a watchdog killed with SIGKILL leaves training
   running untouched. The child's stdout and stderr go to a file (never a pipe, which would break when the
   watchdog dies); the watchdog echoes its lines and moves the file into the run directory as
   ``train_output.log`` when it ends.
2. **Find the run directory** (:mod:`~vaediag.watch.discovery`), checked at every poll: the file named by
   ``VAEDIAG_RUN_DIR_FILE``, where a training script that knows the protocol (``python -m train`` does)
   writes it; for foreign scripts, event files under ``--logdir`` that are the child's by evidence (held
   open by its process tree, or named after one of its pids; without ``/proc``, the one new run once it has
   settled). Another process's new run is never attached to: the watchdog says so once and keeps waiting.
3. **Tail** the run's event files with :class:`vaediag.logs.Tail` (only new bytes), feed the rows to an
   :class:`~vaediag.watch.tracker.EpochTracker`, and after each completed epoch ask the policy.
4. **Apply** a change through ``control.json`` (:func:`~vaediag.watch.control.write_control`: temp file,
   fsync, rename; ``seq`` one above the file's current one), or, with ``restart=True``, by stopping the
   child with SIGINT, waiting for it to exit and for its checkpoint
   (:func:`~vaediag.watch.discovery.find_checkpoint`: the run's own ``checkpoints/`` folder first), and
   relaunching the command with ``--kl-weight X --resume CKPT`` substituted in or appended
   (:mod:`~vaediag.watch.argv`; ``--ae`` too for the autoencoder). A
   ``stop`` decision sends SIGINT (the loop saves a checkpoint); the watchdog then exits 0.
   ``dry_run=True`` decides and records, and never writes control.json or signals the child.
5. **Journal** every decision, applied or declined, to ``watchdog.jsonl`` (see :mod:`~vaediag.watch.journal`).

Faults (:mod:`~vaediag.watch.child`): the child's exit code is the watchdog's (a signal N gives 128 + N);
SIGINT and SIGTERM to the watchdog are forwarded to the child's process group and the watchdog waits for
it, reads its last logs and exits with its code. A child still running ``grace`` seconds (30) after the
forwarded signal is killed with its whole process group (SIGKILL: exit 137), and a second signal kills it
at once; each step is one line on the display and a ``note`` in the journal.

One watchdog per run (:mod:`~vaediag.watch.lock`): before writing anything into a run directory the
watchdog takes its ``watchdog.lock``; when another live watchdog holds it, this one writes nothing there,
stops the child it started (SIGINT, SIGKILL after ``grace``) and raises
:class:`~vaediag.watch.lock.RunLockedError` (exit 2). ``--restart`` refuses to stop a child whose script
has written no checkpoint since the watch began (the decision is journalled as not applied).

The child gets ``VAEDIAG_WATCHDOG_PID``: a loop that knows it (vaediag's trainer) waits at each epoch start
until the decision about the epoch that just ended is journalled (:func:`~vaediag.watch.control.wait_for_watchdog`),
so a change decided after epoch ``e`` applies from epoch ``e + 1``. A loop that does not wait reads
control.json at its next epoch start, ``e + 1`` or ``e + 2`` depending on timing. The journal's ``seq``
and the run's logged ``control_seq`` tell exactly which epoch applied it.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from vaediag.errors import CheckpointError, InputError, UsageError, VaediagError
from vaediag.watch.argv import option_value, set_option
from vaediag.watch.child import (DEFAULT_GRACE_S, OUTPUT_LOG, ChildOutput, ChildSignals, _Child, alive, exit_code,
                                 spawn)
from vaediag.watch.control import RUN_CHECKPOINT_DIR, RUN_DIR_FILE_ENV, WATCHDOG_PID_ENV
from vaediag.watch.discovery import event_files, find_checkpoint, find_foreign_run_dir, read_run_dir_file
from vaediag.watch.follower import Follower
from vaediag.watch.policies import Decision, Policy
from vaediag.watch.session import MAX_POLL_S, Display, WatchSession
from vaediag.watch.tracker import EpochMetrics

__all__ = [
    "OUTPUT_LOG",
    "DEFAULT_GRACE_S",
    "MAX_POLL_S",
    "Display",
    "Supervisor",
    "Follower",
    "set_option",
    "find_checkpoint",
    "option_value",
    "exit_code",
]


def _latest_changes(batch: list[tuple[EpochMetrics, Decision]]) -> int | None:
    """Index of the last decision in a batch that changes something (earlier ones are superseded)."""
    idx = None
    for i, (_, d) in enumerate(batch):
        if d.changes or d.action == "stop":
            idx = i
    return idx


# --------------------------------------------------------------------------------------------------


class Supervisor(WatchSession):
    """Run ``command`` under ``policy`` (see the module docstring). :meth:`run` returns the exit code.

    Args:
        command: the training command line (argv list).
        policy: a policy instance (build it with :func:`~vaediag.watch.policies.make_policy`).
        logdir: where a foreign script's new event files are looked for (default: the current directory); it
            may not exist yet (the script creates it), but must be a directory if it does.
        restart: apply changes by stop + relaunch with ``--kl-weight``/``--resume`` instead of control.json.
        checkpoint: restart mode: the checkpoint path or glob (default: found, see :func:`find_checkpoint`).
        ae_flag: restart mode: the flag that turns the autoencoder on (None: never add one).
        dry_run: decide and record only.
        poll: seconds between polls.
        stop_timeout: restart/stop: seconds to wait after SIGINT before sending SIGTERM.
        grace: seconds a child gets to exit after a forwarded SIGINT/SIGTERM (or after the SIGTERM of a
            stop) before the watchdog SIGKILLs its process group; a second signal kills it at once.
        display: where to show the panel and the child's output.
    """

    def __init__(
        self,
        command: Sequence[str],
        policy: Policy,
        *,
        logdir: str | os.PathLike[str] | None = None,
        restart: bool = False,
        checkpoint: str | None = None,
        ae_flag: str | None = "--ae",
        dry_run: bool = False,
        poll: float = 1.0,
        stop_timeout: float = 300.0,
        grace: float = DEFAULT_GRACE_S,
        display: Display | None = None,
    ) -> None:
        super().__init__(policy, display=display, poll=poll, dry_run=dry_run)
        for name, v in (("grace", grace), ("stop_timeout", stop_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise UsageError(f"{'--' + name if name == 'grace' else name} must be a finite number of seconds "
                                 f">= 0, got {v!r}")
        if not command:
            raise UsageError("no training command given: put it after '--', e.g. vaediag watch -- python -m train")
        self.command = list(command)
        self.logdir = Path(logdir) if logdir is not None else Path.cwd()
        # A --logdir that does not exist yet is the script's to create (it is watched for, like its runs);
        # anything else that is not a directory (a file, a FIFO) is a mistake.
        if logdir is not None and os.path.lexists(self.logdir) and not self.logdir.is_dir():
            raise UsageError(f"--logdir {str(logdir)!r} is not a directory")
        self._logdir_abs = self.logdir.resolve()
        self._said: set[str] = set()  # discovery messages already shown (each once)
        self.restart = restart
        self.checkpoint = checkpoint
        self.ae_flag = ae_flag
        self.child: _Child | None = None
        self.signals = ChildSignals(grace=float(grace), stop_timeout=stop_timeout, status=self.status)
        self._tmp: Path | None = None  # made in run(): the child's output and run-dir files
        self.output = ChildOutput(Path(OUTPUT_LOG))
        self._stopping_by_policy = False
        self._fatal: VaediagError | None = None
        self.status.command = " ".join(self.command)
        self.status.mode_label = ("dry run" if dry_run else "restart" if restart else "control file")

    # ---- the child ----------------------------------------------------------------------------------

    def _start(self, cmd: list[str]) -> None:
        run_dir_file = self._tmp / f"run_dir.{len(list(self._tmp.glob('run_dir.*')))}"
        env = dict(os.environ)
        env[RUN_DIR_FILE_ENV] = str(run_dir_file)
        # The loop waits at each epoch start for our decision about the last epoch (control.py).
        env[WATCHDOG_PID_ENV] = str(os.getpid())
        self.child = spawn(cmd, env=env, output=self.output.path, run_dir_file=run_dir_file,
                           before=event_files(self._logdir_abs))
        self.status.pid = self.child.proc.pid
        self.status.child_state = "running"
        self.status.command = " ".join(cmd)
        if self.signals.user_stop:  # a signal that came while it was starting had no child to reach
            self.signals.forward(self.child, self.signals.received[-1])

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.on_signal(self.child, signum)

    def _tick(self) -> None:
        """Carry out a due escalation (SIGTERM, then SIGKILL), and show what the signal handlers said."""
        self.signals.tick(self.child)
        while self.signals.pending:
            self.note(self.signals.pending.pop(0))

    def _pump_output(self, final: bool = False) -> None:
        self.output.pump(self.display.message, final=final)

    # ---- the run directory ---------------------------------------------------------------------------

    def _find_run_dir(self) -> tuple[Path, str] | None:
        c = self.child
        assert c is not None
        named = read_run_dir_file(c.run_dir_file)
        if named is not None:
            return named, RUN_DIR_FILE_ENV
        return self._find_foreign_run_dir()

    def _say_once(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self.display.message(text)

    def _find_foreign_run_dir(self) -> tuple[Path, str] | None:
        """The child's run by evidence under ``--logdir`` (:func:`~vaediag.watch.discovery.find_foreign_run_dir`)."""
        assert self.child is not None
        return find_foreign_run_dir(self.child, logdir=self.logdir, root=self._logdir_abs, say=self._say_once)

    # ---- main loop -----------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix="vaediag-watch-")).resolve()
        except OSError as exc:
            raise InputError(f"cannot make a temporary directory for the training output in "
                             f"{tempfile.gettempdir()}: {exc.strerror or exc}") from None
        self.output = ChildOutput(self._tmp / OUTPUT_LOG)
        self._session_started = time.time()
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._start(self.command)
            return self._loop()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            self._finish_output()
            self.close()

    def _loop(self) -> int:
        while True:
            assert self.child is not None
            rc = self.child.proc.poll()
            if self.run_dir is None or self._child_run_dir_pending:
                found = self._find_run_dir()
                if found is not None:
                    path, how = found
                    if self.run_dir is None:
                        self.display.message(f"watch: run directory {path} (found by {how})")
                    first = self.run_dir is None
                    try:
                        self.attach(path, command=self.child.cmd, pid=self.child.proc.pid, found_by=how,
                                    restart=self.restart, output_log=str(self.output.path))
                    except VaediagError as exc:  # another watchdog's run, or no lock/journal possible there
                        self._refuse(Path(path), exc)
                    self._child_run_dir_pending = False
                    # A resumed run: its earlier epochs are history, replayed through the policy, not acted on.
                    self._backlog = first and self._has_history(self.child.started)
            if self.run_dir is not None:
                batch = self.read_epochs(final=rc is not None, backlog=self._backlog)
                self._backlog = False
                if batch:
                    self._handle(batch, child_alive=rc is None)
                    if self._fatal is not None:
                        raise self._fatal
            self._tick()
            self._pump_output()
            self.display.update(self.status)
            if rc is not None:
                return self._ended(rc)
            self.signals.nap(self.poll)

    _child_run_dir_pending = False
    _backlog = False
    _session_started = 0.0

    def _refuse(self, path: Path, exc: VaediagError) -> None:
        """The child's run cannot be watched (another watchdog holds it): write nothing there, stop the
        child this watchdog started (SIGINT, SIGKILL after ``grace``), and raise ``exc`` (exit 2)."""
        self.display.message(f"watch: not watching {path}: {exc.message}")
        if alive(self.child):
            self.display.message(f"watch: stopping the training process it started (SIGINT; SIGKILL after "
                                 f"{self.signals.grace:g} s)")
            self.signals.interrupt(self.child)
            self._wait_child()
        self._pump_output(final=True)
        raise exc

    def _has_history(self, started: float) -> bool:
        """Whether the run directory held event data written before the child started (a resumed run)."""
        assert self.tail is not None
        for f in self.tail.files():
            try:
                if f.stat().st_mtime < started - 0.5:
                    return True
            except OSError:
                pass
        return False

    def _ended(self, rc: int) -> int:
        code = exit_code(rc)
        self._tick()
        self._pump_output(final=True)
        self.status.child_state = f"exited {code}" + (" (killed by the watchdog)" if self.signals.killed else "")
        self.display.update(self.status)
        if self.run_dir is None:
            never = not self._logdir_abs.exists()
            self.display.message("watch: the training process exited before it created a run directory; "
                                 "nothing to watch"
                                 + (f" (--logdir {self.logdir} never appeared: is it the directory the script "
                                    "logs to?)" if never else ""))
        if self.journal is not None:
            self.journal.event("exit", code=code, returncode=rc, stopped_by_policy=self._stopping_by_policy,
                               signals=[signal.Signals(s).name for s in self.signals.received],
                               killed=self.signals.killed)
        if self._stopping_by_policy and not self.signals.user_stop and code in (0, 130, 128 + signal.SIGINT):
            return 0  # the policy asked it to stop, and it stopped: success
        return code

    def _handle(self, batch: list[tuple[EpochMetrics, Decision]], *, child_alive: bool) -> None:
        act = _latest_changes(batch)
        for i, (em, d) in enumerate(batch):
            if not (d.changes or d.action == "stop"):
                self.record(em, d, applied=False)
            elif self.dry_run:
                self.record(em, d, applied=False, note="dry run")
            elif not child_alive:
                self.record(em, d, applied=False, note="training had already ended")
            elif self.signals.user_stop:
                self.record(em, d, applied=False, note="training is being stopped by a signal")
            elif self._stopping_by_policy:
                self.record(em, d, applied=False, note="training is stopping after a stop decision")
            elif i != act:
                self.record(em, d, applied=False, note=f"superseded by the decision after epoch {batch[act][0].epoch + 1}")
            elif d.action == "stop":
                self.record(em, d, applied=True, via="stop (SIGINT)")
                self._stopping_by_policy = True
                self.status.child_state = "stopping (policy: stop)"
                self.signals.stop(self.child, "policy: stop")
            elif self.restart:
                self._restart(em, d)
            else:
                self.apply_control(em, d)

    # ---- restart mode --------------------------------------------------------------------------------

    def _wait_child(self) -> int:
        """Wait for the child to exit, echoing output and carrying out the escalation (SIGTERM, SIGKILL)."""
        assert self.child is not None
        while True:
            rc = self.child.proc.poll()
            if rc is not None:
                return rc
            self._tick()
            self._pump_output()
            self.display.update(self.status)
            self.signals.nap(min(self.poll, 0.2))

    def _ckpt_roots(self) -> list[Path]:
        """Where checkpoints are looked for besides ``<run_dir>/checkpoints``: the current directory, the run
        directory, and the ``--checkpoint-dir`` the training command names (checkpoints on another disk)."""
        roots = [Path.cwd(), *([self.run_dir] if self.run_dir is not None else [])]
        named = option_value(self.child.cmd if self.child is not None else self.command, "--checkpoint-dir")
        if named:
            roots.append(Path(named))
        return roots

    def _find_ckpt(self, since: float) -> Path | None:
        """The newest checkpoint written at or after ``since`` (see :func:`find_checkpoint`); an explicit
        ``--checkpoint`` counts only when it too was written then."""
        ckpt = find_checkpoint(since=since, run_dir=self.run_dir, roots=self._ckpt_roots(),
                               explicit=self.checkpoint)
        if ckpt is not None and self.checkpoint:
            try:
                if ckpt.stat().st_mtime < since - 1.0:
                    return None
            except OSError:
                return None
        return ckpt

    def _restart(self, em: EpochMetrics, d: Decision) -> None:
        """Apply ``d`` by stopping the child and relaunching it from its checkpoint; journal the decision as
        applied only once the relaunch happens, else as not applied with the reason."""
        assert self.child is not None and self.journal is not None
        old = self.child
        places = [*([self.run_dir / RUN_CHECKPOINT_DIR] if self.run_dir is not None else []), *self._ckpt_roots()]
        where = self.checkpoint or "*.pt, *.pth or *.ckpt under " + ", ".join(str(p) for p in places)

        def not_applied(why: str) -> None:
            self.policy.not_applied(d)
            self.record(em, d, applied=False, note=why)

        # A script that has written no checkpoint yet cannot be resumed: stopping it would only end a run.
        earlier = self._find_ckpt(self._session_started)
        if self.signals.user_stop:
            return not_applied("training is being stopped by a signal")
        if earlier is None:
            return not_applied(f"restart refused: the training script has written no checkpoint yet ({where}); "
                               f"the run goes on unchanged")
        self.status.child_state = "restarting: stopping (SIGINT)"
        self.display.update(self.status)
        t_stop = time.time()
        self.signals.stop(self.child, "stopping for a restart")
        rc = self._wait_child()
        # Read what it logged on the way out (its last epoch) before the relaunch.
        self._pump_output()
        if self.signals.user_stop:  # the user stopped it meanwhile: no relaunch; the loop ends with its code
            return not_applied("training was stopped by a signal during the restart")
        code = exit_code(rc)
        if code == 0:
            self.note("the training process finished before the restart; nothing to relaunch")
            return not_applied("training finished before the restart")
        if code not in (130, 128 + signal.SIGINT, 128 + signal.SIGTERM):
            self.note(f"the training process exited with code {code} while stopping for a restart")
            return not_applied(f"training exited with code {code} while stopping for the restart")
        ckpt = self._wait_for_checkpoint(t_stop)
        if self.signals.user_stop:  # stopped by a signal while the checkpoint was looked for: no relaunch
            return not_applied("training was stopped by a signal during the restart")
        if ckpt is None and earlier.is_file():
            self.note(f"no checkpoint was written on the stop; resuming from the last one, {earlier}")
            ckpt = earlier
        if ckpt is None:
            self._fatal = CheckpointError(
                f"restart: the training process stopped (code {code}) but no checkpoint written after the stop "
                f"was found ({where}); pass --checkpoint PATH")
            return not_applied(self._fatal.message)
        cmd = self._relaunch_command(old.cmd, d, ckpt)
        self.record(em, d, applied=True, via="restart")
        self.journal.event("restart", old_command=old.cmd, command=cmd, checkpoint=str(ckpt), old_code=code,
                           kl_weight=d.kl_weight, mode=d.mode)
        self.display.message(f"watch: restarting with {' '.join(cmd)}")
        self._start(cmd)
        self._child_run_dir_pending = True  # a resumed run may or may not reuse its directory

    def _wait_for_checkpoint(self, t_stop: float) -> Path | None:
        """A checkpoint written after ``t_stop``, looked for up to 10 s (a signal to stop ends the wait)."""
        deadline = time.time() + 10.0
        ckpt = None
        while ckpt is None and time.time() < deadline and not self.signals.user_stop:
            ckpt = self._find_ckpt(t_stop)
            if ckpt is None:
                self.signals.nap(0.2)
        return ckpt

    def _relaunch_command(self, cmd: Sequence[str], d: Decision, ckpt: Path) -> list[str]:
        """The training command with the decided ``--kl-weight``, ``--resume`` from ``ckpt`` and, for a switch to
        the autoencoder, the ae flag."""
        cmd = set_option(cmd, "--kl-weight", format(float(d.kl_weight or 0.0), ".10g"))
        cmd = set_option(cmd, "--resume", str(ckpt))
        if d.mode == "ae" and self.ae_flag:
            cmd = set_option(cmd, self.ae_flag, None)
        return cmd

    def _finish_output(self) -> None:
        """Copy the child's output into the run directory as ``train_output.log`` (a new name, never over an
        existing file) and remove the temporary directory. Without a run directory the output was echoed
        and is not kept; only an output that could not be copied into the run is left, and said so."""
        self._pump_output(final=True)
        keep = False
        if self.run_dir is not None and self.output.path.exists():
            if self.output.place(self.run_dir) is None:
                keep = True
                self.note(f"the training output is left at {self.output.path}: it could not be copied into "
                          f"{self.run_dir}")
        if self._tmp is not None and not keep:
            shutil.rmtree(self._tmp, ignore_errors=True)
