"""One watchdog per run: ``watchdog.lock`` in the run directory.

A watchdog (supervising or following, applying or only recommending) takes the lock before it writes
anything into a run directory and holds it for its whole life:

- the file holds the holder's pid, host and start time (one JSON object), for the refusal message;
- the holder keeps an exclusive ``fcntl.flock`` on it; the kernel drops that lock when the holder dies,
  however it dies (SIGKILL included), so a lock nobody holds is stale by definition: the next watchdog
  takes it over and says so in one line (naming the pid and host that left it);
- a second watchdog finds the flock taken and refuses with one line (:class:`RunLockedError`, exit 2),
  before it writes a journal line or a control file;
- on a clean exit the holder removes the file (while still holding the lock); the next taker checks that
  the file it locked is still the one at the path, so a file removed under it is never "held" by two.

A lock file that is not a regular file (a FIFO, a device, a symbolic link, a directory) is refused; it is
never replaced. ``fcntl`` is POSIX-only; where it is missing the lock is advisory-free (the file is still
written and stale-checked by pid).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from vaediag.errors import InputError, UsageError
from vaediag.safeio import kind_of
from vaediag.watch.control import now_iso

try:  # pragma: no cover - POSIX everywhere we test
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILENAME", "RunLock", "RunLockedError", "holder_text"]

LOCK_FILENAME = "watchdog.lock"
_MAX_LOCK_BYTES = 4096


class RunLockedError(UsageError):
    """Another live watchdog holds this run's lock (exit 2: nothing was written)."""


def _shown(p: Path) -> str:
    return os.fsdecode(os.fspath(p)).encode("utf-8", "backslashreplace").decode("utf-8")


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, _MAX_LOCK_BYTES, 0)
        rec = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def holder_text(rec: dict[str, Any] | None) -> str:
    """'pid 123 on host h since 2026-...' from a lock file's record ('details unknown' without one)."""
    if not rec:
        return "details unknown"
    parts = []
    if isinstance(rec.get("pid"), int):
        parts.append(f"pid {rec['pid']}")
    if isinstance(rec.get("host"), str):
        parts.append(f"on host {rec['host']}")
    if isinstance(rec.get("started"), str):
        parts.append(f"since {rec['started']}")
    return " ".join(parts) or "details unknown"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _open_lock_file(path: Path) -> int:
    """The lock file opened (created if missing), never through a link, never as a terminal; an fd."""
    flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise InputError(f"{_shown(path)} is a symbolic link, not a watchdog lock; move it away to "
                             f"watch this run") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):
            raise InputError(f"{_shown(path)} is not a regular file, not a watchdog lock; move it away to "
                             f"watch this run") from None
        raise InputError(f"cannot create the watchdog lock {_shown(path)}: {exc.strerror or exc}") from None


def _flock(fd: int, path: Path) -> None:
    """An exclusive flock on the open lock file, or RunLockedError naming its holder (without fcntl: nothing
    here; acquire checks the holder's pid instead)."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLockedError(
            f"{_shown(path.parent)} is already watched by another watchdog "
            f"({holder_text(_read_holder(fd))}); one watchdog per run: stop that one first") from None
    except OSError as exc:
        raise InputError(f"cannot lock {_shown(path)}: {exc.strerror or exc}") from None


class RunLock:
    """The held lock of one run directory; :meth:`acquire` takes it, :meth:`release` gives it back."""

    def __init__(self, path: Path, fd: int, *, stale: dict[str, Any] | None) -> None:
        self.path = path
        self._fd = fd
        self.stale = stale  # the record a dead holder left behind, when this lock was taken over

    @property
    def stale_note(self) -> str | None:
        """One line about the stale lock this one took over (None when there was none)."""
        if self.stale is None:
            return None
        s = self.stale
        gone = (s.get("host") == socket.gethostname() and isinstance(s.get("pid"), int) and not _pid_alive(s["pid"]))
        return (f"took over a stale watchdog lock in {_shown(self.path.parent)} (left by {holder_text(s)}, "
                f"{'no longer running' if gone else 'which no longer holds it'})")

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike[str], *, mode: str = "") -> "RunLock":
        """Take the lock of ``run_dir`` or raise.

        Raises:
            RunLockedError: another live watchdog holds it.
            InputError: the lock file cannot be created, or is not a regular file.
        """
        path = Path(run_dir) / LOCK_FILENAME
        for _ in range(10):  # a holder that removes the file between our open and our lock: open again
            fd = _open_lock_file(path)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise InputError(f"{_shown(path)} is {kind_of(st.st_mode)}, not a watchdog lock; move it away "
                                     f"to watch this run")
                os.set_blocking(fd, True)
                _flock(fd, path)
                try:
                    now = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    os.close(fd)
                    continue
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    os.close(fd)  # the file we locked was removed and another took its place
                    continue
                old = _read_holder(fd)
                if fcntl is None and old and old.get("host") == socket.gethostname() \
                        and isinstance(old.get("pid"), int) and old["pid"] != os.getpid() and _pid_alive(old["pid"]):
                    raise RunLockedError(f"{_shown(path.parent)} is already watched by another watchdog "
                                         f"({holder_text(old)}); one watchdog per run: stop that one first")
                rec = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(), "mode": mode}
                data = (json.dumps(rec) + "\n").encode("utf-8")
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, data, 0)
                    os.fsync(fd)
                except OSError as exc:
                    raise InputError(f"cannot write the watchdog lock {_shown(path)}: {exc.strerror or exc}") from None
                return cls(path, fd, stale=old)
            except BaseException:
                try:
                    os.close(fd)
                except OSError:
                    pass
                raise
        raise RunLockedError(f"{_shown(path.parent)}: the watchdog lock keeps changing under us; another watchdog "
                             f"is starting or stopping there")

    def release(self) -> None:
        """Remove the lock file (only if it is still ours) and drop the lock. Idempotent."""
        if self._fd < 0:
            return
        try:
            st = os.fstat(self._fd)
            now = os.stat(self.path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if self._fd >= 0:
                os.close(self._fd)
        except Exception:
            pass
