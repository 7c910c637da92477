"""Reading a file the user named, safely: regular files only, never blocking, never unbounded.

Every small file vaediag reads by name (rules, tags and targets TOML, control.json, a trainer config,
hparams.yaml, the run-directory handshake file) goes through :func:`read_text`:

- the path is opened with ``O_NONBLOCK`` (a FIFO never blocks the open) and ``O_NOCTTY``, then
  ``fstat``-ed: anything but a regular file (a FIFO, a device such as ``/dev/zero``, a socket, a
  directory) is refused with one line, before a byte is read; a symlink to a regular file is fine;
- at most ``max_bytes`` are read: a larger file is refused (it is not a config of ours), so
  ``/dev/zero``-like or runaway files never exhaust memory;
- the text must be UTF-8.

Each refusal raises the caller's error class (``InputError`` by default) with a message that names
the file, says what it is, and what to pass instead; callers catch nothing else.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Type

from vaediag.errors import InputError, VaediagError

__all__ = ["read_bytes", "read_text", "open_regular", "is_regular_file", "kind_of", "SMALL_FILE_MAX", "NotAFileError"]

#: The cap for configuration-like files (rules, tags, targets, configs, control.json): 1 MiB.
SMALL_FILE_MAX = 1 << 20


class NotAFileError(InputError):
    """The path exists but is not a regular file (or is too large to be what we expect)."""


def kind_of(mode: int) -> str:
    """A word for a file type, for messages: 'a FIFO', 'a character device', ..."""
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return word
    return "not a regular file"


def read_bytes(path: str | os.PathLike[str], *, what: str, max_bytes: int = SMALL_FILE_MAX,
               error: Type[VaediagError] = InputError, missing_ok: bool = False) -> bytes | None:
    """The bytes of the regular file ``path`` (None when it does not exist and ``missing_ok``).

    ``what`` names the file in messages ("rules file", "control file"). Raises ``error`` (or
    :class:`NotAFileError` for a non-regular or oversized file when ``error`` is InputError).
    """
    p = os.fspath(path)
    shown = os.fsdecode(p).encode("utf-8", "backslashreplace").decode("utf-8")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"{what} {shown!r} does not exist") from None
    except IsADirectoryError:
        raise _refuse(error, f"{what} {shown!r} is a directory; pass a file") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO's write end with no reader, or a socket
            raise _refuse(error, f"{what} {shown!r} is not a regular file; pass a file") from None
        raise error(f"cannot read {what} {shown!r}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(error, f"{what} {shown!r} is {kind_of(st.st_mode)}, not a regular file; pass a file")
        if st.st_size > max_bytes:
            raise _refuse(error, f"{what} {shown!r} is {st.st_size:,} bytes; the limit is {max_bytes:,} "
                                 f"(this is not the file you meant)")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while True:  # a file that grows while we read still stops at the cap
            chunk = os.read(fd, min(1 << 16, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise _refuse(error, f"{what} {shown!r} is larger than the limit of {max_bytes:,} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"cannot read {what} {shown!r}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], *, what: str, max_bytes: int = SMALL_FILE_MAX,
              error: Type[VaediagError] = InputError, missing_ok: bool = False) -> str | None:
    """:func:`read_bytes`, decoded as UTF-8 (a file that is not UTF-8 raises ``error``)."""
    data = read_bytes(path, what=what, max_bytes=max_bytes, error=error, missing_ok=missing_ok)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = os.fsdecode(os.fspath(path)).encode("utf-8", "backslashreplace").decode("utf-8")
        raise error(f"{what} {shown!r} is not UTF-8 text (byte {exc.start}); pass a text file") from None


def _refuse(error: Type[VaediagError], message: str) -> VaediagError:
    return NotAFileError(message) if error is InputError else error(message)


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` (following links) is a regular file; never blocks, never raises."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_regular(path: str | os.PathLike[str]):
    """Open ``path`` for binary reading, unbuffered, only if it is a regular file (large files: event files).

    Opened with ``O_NONBLOCK`` (a FIFO never blocks the open) and ``fstat``-ed on the open descriptor (no
    window between a check and the open); anything but a regular file raises ``OSError(EINVAL, "a FIFO
    (named pipe), not a regular file")``, so callers that report ``exc.strerror`` say what it is. Other
    failures are the ``OSError`` of ``os.open`` (ENOENT, EACCES, ...). No size cap: callers read in chunks.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(os.fspath(path), flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO's write side with no reader)
            raise OSError(errno.EINVAL, "not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{kind_of(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
