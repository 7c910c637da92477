"""The training process as the supervisor runs it: started in its own session with its output in a file,
signalled as a process group with an escalation to SIGKILL, its output echoed and kept, its exit code
reported as a shell would.

* **Start** (:func:`spawn`): its own session (``start_new_session=True``), so Ctrl-C in the terminal
  reaches the watchdog only, which forwards it, and a watchdog killed with SIGKILL leaves training running
  untouched. Its stdout and stderr go to a file, never a pipe, which would break when the watchdog dies.
* **Signals** (:class:`ChildSignals`): every signal goes to the child's whole process group (torchrun's
  workers too). The first SIGINT/SIGTERM the watchdog receives is forwarded, and SIGKILL follows after
  ``grace`` seconds; a second one kills at once; a third raises :class:`~vaediag.errors.Interrupted`. A
  stop the watchdog decides itself (a policy's ``stop``, a restart) sends SIGINT (the loop saves a
  checkpoint), SIGTERM after ``stop_timeout``, then SIGKILL after ``grace``. Each step is a line for the
  journal, kept in ``pending`` (a signal handler never prints) until the loop's next tick.
* **Output** (:class:`ChildOutput`): new lines are echoed at each poll, in bounded reads; the file is
  copied into the run directory as ``train_output.log`` at the end (a new name, never over a file).
* **Exit code** (:func:`exit_code`): a death by signal N is 128 + N.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from vaediag.errors import Interrupted, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.watch.status import WatchStatus

__all__ = ["OUTPUT_LOG", "DEFAULT_GRACE_S", "exit_code", "spawn", "alive", "ChildSignals", "ChildOutput"]

OUTPUT_LOG = "train_output.log"
#: Seconds a child has to exit after a forwarded SIGINT/SIGTERM before its process group is SIGKILLed.
DEFAULT_GRACE_S = 30.0
_OUTPUT_CHUNK = 4 << 20


def exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it: a death by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class _Child:
    cmd: list[str]
    proc: subprocess.Popen
    run_dir_file: Path
    started: float
    before: set[Path] = field(default_factory=set)
    tree: set[int] = field(default_factory=set)  # every pid seen in its process tree so far
    sole: tuple[Path, float] | None = None  # without /proc: the only new run so far, and since when


def spawn(cmd: list[str], *, env: Mapping[str, str], output: Path, run_dir_file: Path,
          before: set[Path]) -> _Child:
    """Start ``cmd`` in its own session, stdout and stderr appended to ``output``.

    Raises:
        UsageError: the command is not found or not executable.
    """
    out = open(output, "ab")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(env), start_new_session=True)
    except FileNotFoundError:
        raise UsageError(f"cannot start {cmd[0]!r}: command not found") from None
    except PermissionError:
        raise UsageError(f"cannot start {cmd[0]!r}: permission denied") from None
    finally:
        out.close()
    return _Child(cmd, proc, run_dir_file, time.time(), before)


def alive(child: _Child | None) -> bool:
    """Whether there is a child and it has not exited."""
    return child is not None and child.proc.poll() is None


class ChildSignals:
    """Signals to the child's process group, the escalation that follows them, and the user's signals.

    Args:
        grace: seconds between a forwarded signal (or a stop's SIGTERM) and SIGKILL.
        stop_timeout: seconds between a stop's SIGINT and its SIGTERM.
        status: the panel's status, whose ``child_state`` says what is being done to the child.
    """

    def __init__(self, *, grace: float, stop_timeout: float, status: "WatchStatus") -> None:
        self.grace = grace
        self.stop_timeout = stop_timeout
        self.status = status
        self.received: list[int] = []  # the SIGINT/SIGTERM the watchdog received, in order
        self.killed = False
        self.pending: list[str] = []  # lines from signal handlers, shown by the loop (never print in a handler)
        # The next step of stopping the child: (monotonic deadline, signal to send then, why). Set when a
        # signal is forwarded or a stop begins; tick() carries it out.
        self._escalation: tuple[float, int, str] | None = None

    @property
    def user_stop(self) -> bool:
        """Whether the user has asked the watchdog to stop (a signal was received)."""
        return bool(self.received)

    def send(self, child: _Child | None, sig: int) -> None:
        """``sig`` to the child's whole process group, if it is still running."""
        if child is None or child.proc.poll() is not None:
            return
        try:
            os.killpg(child.proc.pid, sig)  # the whole group: torchrun's workers too
        except ProcessLookupError:
            pass

    def forward(self, child: _Child | None, sig: int) -> None:
        """Pass a user's SIGINT/SIGTERM to the child's group; SIGKILL follows after ``grace`` seconds."""
        if not alive(child):
            return
        name = signal.Signals(sig).name
        self.send(child, sig)
        self._escalation = (time.monotonic() + self.grace, signal.SIGKILL,
                            f"did not exit within {self.grace:g} s of {name} (--grace)")
        self.pending.append(f"{name} forwarded to the training process (pid {child.proc.pid}); it is killed "
                            f"(SIGKILL) if it has not exited in {self.grace:g} s; {name} again kills it now")
        self.status.child_state = f"stopping ({name} forwarded)"

    def interrupt(self, child: _Child | None) -> None:
        """SIGINT now, SIGKILL after ``grace`` seconds (a child the watchdog may not watch)."""
        self.send(child, signal.SIGINT)
        self._escalation = (time.monotonic() + self.grace, signal.SIGKILL,
                            f"did not exit within {self.grace:g} s of SIGINT (--grace)")

    def kill(self, child: _Child | None, why: str) -> None:
        """SIGKILL the child's whole process group (its workers too), at once."""
        self._escalation = None
        if not alive(child):
            return
        self.send(child, signal.SIGKILL)
        self.killed = True
        self.pending.append(f"the training process {why}; sent SIGKILL to its process group "
                            f"(pid {child.proc.pid})")
        self.status.child_state = "killed (SIGKILL)"

    def stop(self, child: _Child | None, why: str) -> None:
        """Ask the child to stop (SIGINT: it saves a checkpoint); SIGTERM after ``stop_timeout``, then SIGKILL."""
        self.send(child, signal.SIGINT)
        self._escalation = (time.monotonic() + self.stop_timeout, signal.SIGTERM,
                            f"did not stop within {self.stop_timeout:g} s of SIGINT ({why})")

    def on_signal(self, child: _Child | None, signum: int) -> None:
        """A SIGINT/SIGTERM to the watchdog (called from its handler): forward, kill, or give up waiting."""
        self.received.append(signum)
        name = signal.Signals(signum).name
        if len(self.received) == 1:
            self.forward(child, signum)
        elif len(self.received) == 2:
            self.kill(child, f"was killed on a second signal ({name})")
        else:  # the loop should have ended by now: stop waiting for anything
            raise Interrupted(f"interrupted ({name} received {len(self.received)} times)")

    def tick(self, child: _Child | None) -> None:
        """Carry out a due escalation (SIGTERM, then SIGKILL)."""
        esc = self._escalation
        if esc is not None and time.monotonic() >= esc[0]:
            _, sig, why = esc
            if not alive(child):
                self._escalation = None
            elif sig == signal.SIGKILL:
                self.kill(child, why)
            else:
                self.send(child, sig)
                name = signal.Signals(sig).name
                self.pending.append(f"the training process {why}; sent {name}")
                self._escalation = (time.monotonic() + self.grace, signal.SIGKILL,
                                    f"did not exit within {self.grace:g} s of {name} (--grace)")

    def nap(self, seconds: float) -> None:
        """Sleep up to ``seconds``; a signal ends the nap at once (the loop reacts to it without delay)."""
        end = time.monotonic() + seconds
        seen = len(self.received)
        while len(self.received) == seen:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))


class ChildOutput:
    """The child's stdout and stderr, in the file at ``path``: echoed line by line, then kept with the run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._partial = ""

    def pump(self, echo: Callable[[str], None], *, final: bool = False) -> None:
        """Echo the child's new output lines (a tqdm-style \\r line shows its last state); at most 4 MiB a
        poll (``final``: all of it, 4 MiB at a time), so a child that floods its output never floods the
        watchdog's memory; an unfinished line is kept up to its last 64 KiB."""
        while True:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self._pos)
                    data = fh.read(_OUTPUT_CHUNK)
            except OSError:
                return
            if not data:
                break
            self._pos += len(data)
            more = len(data) == _OUTPUT_CHUNK
            lines = (self._partial + data.decode("utf-8", errors="replace")).split("\n")
            self._partial = lines.pop()[-(64 << 10):]
            for line in lines:
                _echo(echo, line)
            if not (final and more):
                break
        if final and self._partial:
            _echo(echo, self._partial)
            self._partial = ""

    def place(self, run_dir: Path) -> Path | None:
        """Copy the output into ``run_dir`` as ``train_output.log`` (``train_output.N.log`` when taken); the
        copy's path, or None when it could not be made."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        for n in range(1000):
            target = run_dir / (OUTPUT_LOG if n == 0 else f"train_output.{n}.log")
            try:
                fd = os.open(target, flags, 0o644)  # O_EXCL: never over an earlier log, a link or a FIFO
            except FileExistsError:
                continue
            except OSError:
                return None
            try:
                with os.fdopen(fd, "wb") as out, open(self.path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            except OSError:
                target.unlink(missing_ok=True)  # our own half-written copy
                return None
            return target
        return None


def _echo(echo: Callable[[str], None], line: str) -> None:
    line = line.rsplit("\r", 1)[-1].rstrip()
    if line:
        echo(line)
