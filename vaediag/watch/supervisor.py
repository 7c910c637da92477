"""Run training under the watchdog (:class:`Supervisor`) or follow a run started elsewhere (:class:`Follower`).

Supervisor, step by step
------------------------
1. **Start** the training command as a child in its own session (``start_new_session=True``): Ctrl-C in the
   terminal reaches the watchdog only, which forwards it; a watchdog killed with SIGKILL leaves training
   running untouched. The child's stdout and stderr go to a file (never a pipe, which would break when the
   watchdog dies); the watchdog echoes its lines and moves the file into the run directory as
   ``train_output.log`` when it ends.
2. **Find the run directory**, two ways, checked at every poll:

   * ``VAEDIAG_RUN_DIR_FILE``: the watchdog sets this environment variable to a fresh temporary file; a
     training script that knows the protocol (``python -m train`` does) writes its absolute run
     directory and a newline there right after creating it. Reliable and immediate.
   * For foreign scripts: the event files that appear under ``--logdir`` (default: the current
     directory) after the start and were not there before; their run directory (``tf/`` and
     ``add_hparams`` children belong to their parent) is the run.
3. **Tail** the run's event files with :class:`vaediag.logs.Tail` (only new bytes), feed the rows to an
   :class:`~vaediag.watch.tracker.EpochTracker`, and after each completed epoch ask the policy.
4. **Apply** a change through ``control.json`` (:func:`~vaediag.watch.control.write_control`: temp file,
   fsync, rename; ``seq`` one above the file's current one), or, with ``restart=True``, by stopping the
   child with SIGINT, waiting for it to exit and for its checkpoint, and relaunching the command with
   ``--kl-weight X --resume CKPT`` substituted in or appended (``--ae`` too for the autoencoder). A
   ``stop`` decision sends SIGINT (the loop saves a checkpoint); the watchdog then exits 0.
   ``dry_run=True`` decides and records, and never writes control.json or signals the child.
5. **Journal** every decision, applied or declined, to ``watchdog.jsonl`` (see :mod:`~vaediag.watch.journal`).

Faults: the child's exit code is the watchdog's (a signal N gives 128 + N); SIGINT and SIGTERM to the
watchdog are forwarded to the child's process group and the watchdog waits for it, reads its last logs
and exits with its code.

The child gets ``VAEDIAG_WATCHDOG_PID``: a loop that knows it (vaediag's trainer) waits at each epoch start
until the decision about the epoch that just ended is journalled (:func:`~vaediag.watch.control.wait_for_watchdog`),
so a change decided after epoch ``e`` applies from epoch ``e + 1``. A loop that does not wait reads
control.json at its next epoch start, ``e + 1`` or ``e + 2`` depending on timing. The journal's ``seq``
and the run's logged ``control_seq`` tell exactly which epoch applied it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from vaediag.errors import CheckpointError, ControlFileError, UsageError, VaediagError
from vaediag.logs.discover import _ADD_HPARAMS_DIR, is_event_file
from vaediag.safeio import read_text
from vaediag.watch.control import RUN_DIR_FILE_ENV, WATCHDOG_PID_ENV, Control, now_iso, read_control, write_control
from vaediag.watch.journal import Journal, decision_record
from vaediag.watch.panel import WatchStatus
from vaediag.watch.policies import Decision, MissingMetricWarning, Policy
from vaediag.watch.tracker import EpochMetrics, EpochTracker

__all__ = [
    "OUTPUT_LOG",
    "Display",
    "Supervisor",
    "Follower",
    "set_option",
    "find_checkpoint",
    "exit_code",
]

OUTPUT_LOG = "train_output.log"
_CKPT_SUFFIXES = (".pt", ".pth", ".ckpt")
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "wandb"})


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


def exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it: a death by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def set_option(cmd: Sequence[str], flag: str, value: str | None) -> list[str]:
    """``cmd`` with every ``flag VALUE`` / ``flag=VALUE`` set to ``value``, or the option appended.

    ``value=None`` means a bare flag (``--ae``), added when absent.

    >>> set_option(["python", "t.py", "--kl-weight", "0.01", "--epochs", "5"], "--kl-weight", "0.001")
    ['python', 't.py', '--kl-weight', '0.001', '--epochs', '5']
    >>> set_option(["python", "t.py", "--resume=a.pt"], "--resume", "b.pt")
    ['python', 't.py', '--resume=b.pt']
    >>> set_option(["python", "t.py"], "--resume", "b.pt")
    ['python', 't.py', '--resume', 'b.pt']
    """
    out: list[str] = []
    found = False
    i = 0
    while i < len(cmd):
        a = cmd[i]
        if a == flag:
            found = True
            if value is None:
                out.append(a)
                i += 1
            else:
                out += [flag, value]
                i += 2
            continue
        if value is not None and a.startswith(flag + "="):
            found = True
            out.append(f"{flag}={value}")
            i += 1
            continue
        out.append(a)
        i += 1
    if not found:
        out += [flag] if value is None else [flag, value]
    return out


def _option_value(cmd: Sequence[str], flag: str) -> str | None:
    """The last value given to ``flag`` in ``cmd`` (``flag V`` or ``flag=V``), or None."""
    val = None
    for i, a in enumerate(cmd):
        if a == flag and i + 1 < len(cmd):
            val = cmd[i + 1]
        elif a.startswith(flag + "="):
            val = a[len(flag) + 1:]
    return val


def _walk_files(root: Path, *, max_depth: int = 8):
    root = Path(root)
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS] if depth < max_depth else []
        for f in filenames:
            yield Path(dirpath) / f


def _event_files(root: Path) -> set[Path]:
    if not root.is_dir():
        return set()
    return {p for p in _walk_files(root) if is_event_file(p.name)}


def _owner_dir(event_file: Path) -> Path:
    d = event_file.parent
    while d.name == "tf" or _ADD_HPARAMS_DIR.match(d.name):
        d = d.parent
    return d


def find_checkpoint(
    *, since: float, run_dir: Path | None, roots: Sequence[Path], explicit: str | None = None
) -> Path | None:
    """The checkpoint the stopped child wrote: ``explicit`` (a path or glob; newest match), else the newest
    ``*.pt``/``*.pth``/``*.ckpt`` under ``roots`` modified at or after ``since``, preferring one whose
    directory mirrors the run directory's last three parts (``checkpoints/<project>/<name>/version_N``
    beside ``logs/<project>/<name>/version_N``). Temporary files (dot-names, ``*.tmp``) never count."""
    if explicit:
        import glob

        matches = [Path(p) for p in glob.glob(explicit)] if glob.has_magic(explicit) else [Path(explicit)]
        matches = [p for p in matches if p.is_file()]
        return max(matches, key=lambda p: p.stat().st_mtime) if matches else None
    found: dict[Path, float] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for p in _walk_files(root):
            if p.suffix not in _CKPT_SUFFIXES or p.name.startswith("."):
                continue
            try:
                mtime = p.stat().st_mtime
            except OSError:
                continue
            if mtime >= since - 1.0:  # file-system timestamps can be coarse
                found[p.resolve()] = mtime
    if not found:
        return None
    if run_dir is not None:
        tail = Path(run_dir).resolve().parts[-3:]  # whole names: "myproj" must not pass for "proj"
        mirrored = [p for p in found if p.parent.parts[-3:] == tail]
        if mirrored:
            return max(mirrored, key=found.get)
    return max(found, key=found.get)


# --------------------------------------------------------------------------------------------------


class _Watch:
    """What the supervisor and the follower share: tail -> tracker -> policy -> journal (+ control)."""

    def __init__(self, policy: Policy, *, display: Display | None, poll: float, dry_run: bool) -> None:
        if poll <= 0:
            raise UsageError(f"poll interval must be > 0 seconds, got {poll!r}")
        self.policy = policy
        self.display = display or _NullDisplay()
        self.poll = poll
        self.dry_run = dry_run
        self.run_dir: Path | None = None
        self.tail = None
        self.tracker = EpochTracker()
        self.journal: Journal | None = None
        self.seq = 0
        self.status = WatchStatus(policy=policy.name)
        self.decisions: list[tuple[EpochMetrics, Decision]] = []

    # ---- attaching to a run directory -------------------------------------------------------------

    def attach(self, run_dir: Path, **start_fields: Any) -> None:
        from vaediag.logs import Tail  # pandas: only once there is a run to read

        run_dir = Path(run_dir).resolve()
        if self.run_dir == run_dir:
            return
        self.run_dir = run_dir
        self.tail = Tail(run_dir)
        self.tracker = _continue_tracker(self.tracker)
        if self.journal is not None:
            self.journal.close()
        self.journal = Journal(run_dir)
        self.status.run_dir = str(run_dir)
        self.journal.event("start", policy=self.policy.name, params=self.policy.params(),
                           dry_run=self.dry_run, run_dir=str(run_dir), **start_fields)

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
        return self.seq

    def note(self, text: str) -> None:
        self.status.notes.append(text)
        if self.journal is not None:
            self.journal.event("note", text=text)
        self.display.message(f"watch: {text}")

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


def _continue_tracker(old: EpochTracker) -> EpochTracker:
    """A fresh tracker for a new run directory that still skips epochs already decided."""
    new = EpochTracker()
    new._done_upto = old.last_reported
    return new


def _latest_changes(batch: list[tuple[EpochMetrics, Decision]]) -> int | None:
    """Index of the last decision in a batch that changes something (earlier ones are superseded)."""
    idx = None
    for i, (_, d) in enumerate(batch):
        if d.changes or d.action == "stop":
            idx = i
    return idx


# --------------------------------------------------------------------------------------------------


@dataclass
class _Child:
    cmd: list[str]
    proc: subprocess.Popen
    run_dir_file: Path
    started: float
    before: set[Path] = field(default_factory=set)


class Supervisor(_Watch):
    """Run ``command`` under ``policy`` (see the module docstring). :meth:`run` returns the exit code.

    Args:
        command: the training command line (argv list).
        policy: a policy instance (build it with :func:`~vaediag.watch.policies.make_policy`).
        logdir: where a foreign script's new event files are looked for (default: the current directory).
        restart: apply changes by stop + relaunch with ``--kl-weight``/``--resume`` instead of control.json.
        checkpoint: restart mode: the checkpoint path or glob (default: found, see :func:`find_checkpoint`).
        ae_flag: restart mode: the flag that turns the autoencoder on (None: never add one).
        dry_run: decide and record only.
        poll: seconds between polls.
        stop_timeout: restart/stop: seconds to wait after SIGINT before sending SIGTERM.
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
        display: Display | None = None,
    ) -> None:
        super().__init__(policy, display=display, poll=poll, dry_run=dry_run)
        if not command:
            raise UsageError("no training command given: put it after '--', e.g. vaediag watch -- python -m train")
        self.command = list(command)
        self.logdir = Path(logdir) if logdir is not None else Path.cwd()
        if logdir is not None and not self.logdir.is_dir():
            raise UsageError(f"--logdir {str(logdir)!r} is not a directory")
        self.restart = restart
        self.checkpoint = checkpoint
        self.ae_flag = ae_flag
        self.stop_timeout = stop_timeout
        self.child: _Child | None = None
        self._tmp: Path | None = None  # made in run(): the child's output and run-dir files
        self._out_path = Path(OUTPUT_LOG)
        self._out_fh = None
        self._out_pos = 0
        self._out_partial = ""
        self._signals: list[int] = []
        self._stopping_by_policy = False
        self._user_stop = False
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
        before = _event_files(self.logdir)
        out = open(self._out_path, "ab")
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        except FileNotFoundError:
            raise UsageError(f"cannot start {cmd[0]!r}: command not found") from None
        except PermissionError:
            raise UsageError(f"cannot start {cmd[0]!r}: permission denied") from None
        finally:
            out.close()
        self.child = _Child(cmd, proc, run_dir_file, time.time(), before)
        self.status.pid = proc.pid
        self.status.child_state = "running"
        self.status.command = " ".join(cmd)
        if self._user_stop:  # a signal that came while it was starting had no child to reach
            self._signal_child(self._signals[-1])

    def _signal_child(self, sig: int) -> None:
        if self.child is None or self.child.proc.poll() is not None:
            return
        try:
            os.killpg(self.child.proc.pid, sig)  # the whole group: torchrun's workers too
        except ProcessLookupError:
            pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)
        self._user_stop = True
        self._signal_child(signum)
        self.status.child_state = f"stopping ({signal.Signals(signum).name} forwarded)"

    def _pump_output(self, final: bool = False) -> None:
        """Echo the child's new output lines (a tqdm-style \\r line shows its last state)."""
        try:
            with open(self._out_path, "rb") as fh:
                fh.seek(self._out_pos)
                data = fh.read()
        except OSError:
            return
        if not data:
            return
        self._out_pos += len(data)
        text = self._out_partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._out_partial = "" if final else lines.pop()
        for line in lines:
            line = line.rsplit("\r", 1)[-1].rstrip()
            if line:
                self.display.message(line)

    # ---- the run directory ---------------------------------------------------------------------------

    def _find_run_dir(self) -> tuple[Path, str] | None:
        c = self.child
        assert c is not None
        try:  # safeio: a FIFO or /dev/zero put in its place never blocks or floods the watchdog
            text = read_text(c.run_dir_file, what="run-directory file", max_bytes=1 << 16, missing_ok=True) or ""
        except VaediagError:
            text = ""
        if text.endswith("\n") and text.strip():  # the newline says the write is complete
            p = Path(text.strip())
            if p.is_dir():
                return p, RUN_DIR_FILE_ENV
        new = _event_files(self.logdir) - c.before
        if new:
            owners = sorted({_owner_dir(p) for p in new}, key=lambda d: min(
                (f.stat().st_mtime for f in new if _owner_dir(f) == d), default=0.0))
            if len(owners) > 1:
                self.display.message(f"watch: several new runs under {self.logdir}; following {owners[0]}")
            return owners[0], f"new event files under {self.logdir}"
        return None

    # ---- main loop -----------------------------------------------------------------------------------

    def run(self) -> int:
        self._tmp = Path(tempfile.mkdtemp(prefix="vaediag-watch-"))
        self._out_path = self._tmp / OUTPUT_LOG
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
                    self._child_run_dir_pending = False
                    path, how = found
                    if self.run_dir is None:
                        self.display.message(f"watch: run directory {path} (found by {how})")
                    first = self.run_dir is None
                    self.attach(path, command=self.child.cmd, pid=self.child.proc.pid, found_by=how,
                                restart=self.restart, output_log=str(self._out_path))
                    # A resumed run: its earlier epochs are history, replayed through the policy, not acted on.
                    self._backlog = first and self._has_history(self.child.started)
            if self.run_dir is not None:
                batch = self.read_epochs(final=rc is not None, backlog=self._backlog)
                self._backlog = False
                if batch:
                    self._handle(batch, child_alive=rc is None)
                    if self._fatal is not None:
                        raise self._fatal
            self._pump_output()
            self.display.update(self.status)
            if rc is not None:
                return self._ended(rc)
            time.sleep(self.poll)

    _child_run_dir_pending = False
    _backlog = False

    def _has_history(self, started: float) -> bool:
        """Whether the run directory held event data written before the child started (a resumed run)."""
        assert self.tail is not None
        for f in self.tail.event_files():
            try:
                if f.stat().st_mtime < started - 0.5:
                    return True
            except OSError:
                pass
        return False

    def _ended(self, rc: int) -> int:
        code = exit_code(rc)
        self._pump_output(final=True)
        self.status.child_state = f"exited {code}"
        self.display.update(self.status)
        if self.run_dir is None:
            self.display.message("watch: the training process exited before it created a run directory; "
                                 "nothing to watch")
        if self.journal is not None:
            self.journal.event("exit", code=code, returncode=rc, stopped_by_policy=self._stopping_by_policy,
                               signals=[signal.Signals(s).name for s in self._signals])
        if self._stopping_by_policy and not self._user_stop and code in (0, 130, 128 + signal.SIGINT):
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
            elif self._user_stop:
                self.record(em, d, applied=False, note="training is being stopped by a signal")
            elif self._stopping_by_policy:
                self.record(em, d, applied=False, note="training is stopping after a stop decision")
            elif i != act:
                self.record(em, d, applied=False, note=f"superseded by the decision after epoch {batch[act][0].epoch + 1}")
            elif d.action == "stop":
                self.record(em, d, applied=True, via="stop (SIGINT)")
                self._stopping_by_policy = True
                self.status.child_state = "stopping (policy: stop)"
                self._signal_child(signal.SIGINT)
            elif self.restart:
                self.record(em, d, applied=True, via="restart")
                self._restart(d)
            else:
                self.apply_control(em, d)

    # ---- restart mode --------------------------------------------------------------------------------

    def _wait_child(self) -> int:
        """Wait for the child to exit, echoing output; SIGTERM after ``stop_timeout``."""
        assert self.child is not None
        deadline = time.time() + self.stop_timeout
        termed = False
        while True:
            rc = self.child.proc.poll()
            if rc is not None:
                return rc
            if not termed and time.time() > deadline:
                self.note(f"the training process ignored SIGINT for {self.stop_timeout:g} s; sending SIGTERM")
                self._signal_child(signal.SIGTERM)
                termed = True
            self._pump_output()
            self.display.update(self.status)
            time.sleep(min(self.poll, 0.2))

    def _restart(self, d: Decision) -> None:
        assert self.child is not None and self.journal is not None
        old = self.child
        self.status.child_state = "restarting: stopping (SIGINT)"
        self.display.update(self.status)
        t_stop = time.time()
        self._signal_child(signal.SIGINT)
        rc = self._wait_child()
        # Read what it logged on the way out (its last epoch) before the relaunch.
        self._pump_output()
        if self._user_stop:
            return  # the user stopped it meanwhile: no relaunch; the loop ends with its code
        code = exit_code(rc)
        if code == 0:
            self.note("the training process finished before the restart; nothing to relaunch")
            return
        if code not in (130, 128 + signal.SIGINT, 128 + signal.SIGTERM):
            self.note(f"the training process exited with code {code} while stopping for a restart")
            return
        deadline = time.time() + 10.0
        ckpt = None
        while ckpt is None and time.time() < deadline:
            ckpt = find_checkpoint(since=t_stop, run_dir=self.run_dir, roots=[Path.cwd(), self.run_dir],
                                   explicit=self.checkpoint)
            if ckpt is None:
                time.sleep(0.2)
        if self._user_stop:
            return  # stopped by a signal while the checkpoint was looked for: no relaunch
        if ckpt is None:
            where = self.checkpoint or f"{Path.cwd()} or {self.run_dir}"
            self._fatal = CheckpointError(
                f"restart: the training process stopped (code {code}) but no checkpoint written after the stop "
                f"was found in {where}; pass --checkpoint PATH")
            self.journal.event("note", text=self._fatal.message)
            return
        cmd = set_option(old.cmd, "--kl-weight", format(float(d.kl_weight or 0.0), ".10g"))
        cmd = set_option(cmd, "--resume", str(ckpt))
        if d.mode == "ae" and self.ae_flag:
            cmd = set_option(cmd, self.ae_flag, None)
        self.journal.event("restart", old_command=old.cmd, command=cmd, checkpoint=str(ckpt), old_code=code,
                           kl_weight=d.kl_weight, mode=d.mode)
        self.display.message(f"watch: restarting with {' '.join(cmd)}")
        self._start(cmd)
        self._child_run_dir_pending = True  # a resumed run may or may not reuse its directory

    def _finish_output(self) -> None:
        self._pump_output(final=True)
        target = None
        if self.run_dir is not None and self._out_path.exists():
            target = self.run_dir / OUTPUT_LOG
            n = 1
            while target.exists():  # never overwrite an earlier one
                target = self.run_dir / f"train_output.{n}.log"
                n += 1
            try:
                shutil.move(str(self._out_path), target)
            except OSError:
                target = None
        if self._tmp is not None and (target is not None or not self._out_path.exists()):
            shutil.rmtree(self._tmp, ignore_errors=True)
        # else: leave the output in the temp dir (the journal's start event names it)


# --------------------------------------------------------------------------------------------------


class Follower(_Watch):
    """Follow a run started elsewhere: same tail, policy, journal and panel; control.json only with ``apply``.

    Epochs already complete when following starts are replayed through the policy (recorded with
    ``replayed: true``, never applied) except the latest, which is live. Ends when the run's event files
    have not grown for ``idle`` seconds (exit 0) or on SIGINT/SIGTERM (exit 130).
    """

    def __init__(self, run_dir: str | os.PathLike[str], policy: Policy, *, apply: bool = False,
                 idle: float = 300.0, poll: float = 1.0, display: Display | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(policy, display=display, poll=poll, dry_run=not apply)
        p = Path(run_dir)
        if not p.is_dir():
            raise UsageError(f"--follow {str(run_dir)!r} is not a directory; give the run directory to follow")
        if idle <= 0:
            raise UsageError(f"--idle must be > 0 seconds, got {idle!r}")
        self.follow_dir = p
        self.apply = apply
        self.idle = idle
        self._clock = clock
        self._stop_signal: int | None = None
        self.status.mode_label = "follow, applying" if apply else "follow, recommending"
        self.status.child_state = "following"

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def _size(self) -> tuple[int, int]:
        files = self.tail.event_files() if self.tail is not None else []
        total = 0
        for f in files:
            try:
                total += f.stat().st_size
            except OSError:
                pass
        return len(files), total

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
                time.sleep(self.poll)
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
