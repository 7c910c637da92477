r"""Writing a file the user named, safely: nothing read is replaced, nothing special is clobbered.

Every file vaediag writes at a path a user gave (``vaediag report -o`` and the plots in its
``NAME_files/`` folder) is planned with :func:`plan_output` and written with :func:`write_output`.
The rules, in the order they are checked:

- **Inputs are never outputs.** A path that is one of the files the command reads (the same file by
  device and inode: a hard link or another spelling of it counts) is refused, with or without
  ``--force``. So is an existing file inside a log tree the command reads, unless it is a report
  vaediag itself wrote there (recognised by its ``_Generated ... by vaediag`` line; see ``owned``):
  the tree's event files, ``config.json``, ``hparams.yaml`` and journals stay as they are. A new file
  inside a tree is fine (nothing is replaced). A file outside the trees that is a hard link to one
  inside them is refused too.
- **Streams are written into, never replaced.** ``-`` is standard output; a character device
  (``/dev/null``, a terminal) or a FIFO (``/dev/stdout`` on a pipe, ``>(cat)``) is opened for writing
  and written into, without ``--force`` (nothing is replaced) and without creating or truncating
  anything. A path that is our own standard output or error (``/dev/stdout`` when the shell
  redirected it to a file) is written through that descriptor, as the redirection asked. A FIFO
  with no reader is refused at once rather than waited on. Block devices, sockets and other
  special files are refused.
- **A symbolic link is never replaced by a file.** A link to a regular file is followed: the target
  is what gets written, under the same rules (so ``latest.md -> 2024-05.md`` keeps being a link and
  the report it points to is replaced, with ``--force``); a dangling link or a loop is refused
  (following one would create a file wherever it points). Callers that must not follow links (the
  plot files) pass ``follow_links=False`` and a link there is refused.
- **A new file is created without a window for clobbering:** the bytes go to a temporary file in
  the same directory, which is then hard-linked to the name (``os.link`` fails if the name exists),
  so of two processes writing one new report, the second gets "already exists" instead of silently
  replacing the first's. (On a file system without hard links, ``O_CREAT | O_EXCL`` does the same
  without the atomicity.)
- **An existing regular file is replaced only with ``--force``**, atomically (temporary file,
  fsync, rename over it): a reader sees the old bytes or the new ones.

Refusals raise :class:`vaediag.errors.UsageError` (exit 2) with one line that names the path (with
any control character shown as an escape) and says what to do instead.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from vaediag.atomic import _UMASK, _fsync_dir, atomic_write
from vaediag.errors import InputError, UsageError
from vaediag.safeio import kind_of
from vaediag.sanitize import path_text

__all__ = ["Inputs", "Destination", "plan_output", "write_output", "NEW", "REPLACE", "STREAM"]

NEW, REPLACE, STREAM = "new", "replace", "stream"


def _shown(path: str | os.PathLike[str]) -> str:
    """A path for a message, quoted, with control characters and undecodable bytes as escapes."""
    return repr(path_text(path)).replace("\\\\", "\\")


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class Inputs:
    """What a command reads: files (known by device and inode) and log trees (their root directories).

    Build it from the paths the user gave (run directories, trees, event files, rules/targets/tags
    files); missing paths are ignored here (the reader reports them). An event file or a metrics log given
    by name makes its run directory a tree too: the reader takes that run's hparams.yaml and config.json.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str] | None] = ()) -> None:
        self.files: dict[tuple[int, int], str] = {}
        self.trees: dict[tuple[int, int], str] = {}
        for p in paths:
            if p is None:
                continue
            try:
                st = os.stat(p)
            except (OSError, ValueError):
                continue
            if stat.S_ISDIR(st.st_mode):
                self.trees[_ident(st)] = os.fspath(p)
            else:
                self.files[_ident(st)] = os.fspath(p)
                if _is_event_file(os.path.basename(os.fspath(p))):  # its run directory is read too
                    parent = os.path.dirname(os.path.abspath(os.fspath(p)))
                    try:
                        self.trees[_ident(os.stat(parent))] = parent
                    except OSError:
                        pass

    def tree_holding(self, path: str | os.PathLike[str]) -> str | None:
        """The input tree that ``path`` (existing or not) lies inside, by directory identity, or None."""
        if not self.trees:
            return None
        d = Path(os.path.realpath(os.path.dirname(os.path.abspath(os.fspath(path)))))
        for a in (d, *d.parents):
            try:
                ident = _ident(os.stat(a))
            except OSError:
                continue
            if ident in self.trees:
                return self.trees[ident]
        return None

    def file_matching(self, st: os.stat_result) -> str | None:
        """The input file that is the same file as ``st`` (its path as given), or None.

        Files given by name are matched at once; a file with more than one hard link is also looked
        for inside the input trees (an event file linked under another name outside its run).
        """
        ident = _ident(st)
        if ident in self.files:
            return self.files[ident]
        if st.st_nlink > 1:
            for root in self.trees.values():
                hit = _find_in_tree(root, ident)
                if hit is not None:
                    return hit
        return None


def _is_event_file(name: str) -> bool:
    """An event file or a metrics log (metrics.csv, trainer_state.json, an export): a log whose run
    directory the reader reads too."""
    from vaediag.logs.discover import is_event_file
    from vaediag.logs.sources import is_log_name

    return is_event_file(name) or is_log_name(name)


def _find_in_tree(root: str, ident: tuple[int, int]) -> str | None:
    stack = [root]
    while stack:  # iterative: trees can be deeper than the recursion limit
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False) and e.inode() == ident[1]:
                    if e.stat(follow_symlinks=False).st_dev == ident[0]:
                        return os.fsdecode(e.path)
            except OSError:
                continue
    return None


@dataclass(frozen=True)
class Destination:
    """Where and how an output goes: a new file, a replacement, or a stream written into."""

    given: str  # the path as the user gave it
    path: Path  # the file written (symbolic links followed); for "-" the given text
    mode: str  # NEW, REPLACE or STREAM
    kind: str = "a regular file"  # for streams: "standard output", "a character device", "a FIFO ..."
    fd: int | None = None  # a stream that is our own stdout (1) or stderr (2)

    @property
    def is_stream(self) -> bool:
        return self.mode == STREAM


def _same_as_fd(st: os.stat_result) -> int | None:
    for fd in (1, 2):
        try:
            if _ident(os.fstat(fd)) == _ident(st):
                return fd
        except OSError:
            continue
    return None


def _stat_through_link(given: str, label: str, *, follow_links: bool) -> tuple[os.stat_result | None, Path]:
    """What ``given`` is (None: nothing there yet) and the path to write: a link to a regular file is followed
    (its real path), a dangling, unfollowable or refused link is a :class:`UsageError`."""
    try:
        lst = os.lstat(given)
    except FileNotFoundError:
        lst = None
    except NotADirectoryError:
        lst = None  # a parent is a file: plan_output says so
    except OSError as exc:
        raise UsageError(f"cannot write {label}: {exc.strerror or exc}") from None
    target = Path(given)
    st = lst
    if lst is not None and stat.S_ISLNK(lst.st_mode):
        link = path_text(os.readlink(given))
        if not follow_links:
            raise UsageError(f"{label} is a symbolic link (to {link!r}); vaediag replaces only regular files "
                             f"there: remove the link or choose another place")
        try:
            st = os.stat(given)
        except FileNotFoundError:
            raise UsageError(f"{label} is a symbolic link to {link!r}, which does not exist; vaediag does not "
                             f"create files through a dangling link: give the target itself") from None
        except OSError as exc:
            raise UsageError(f"{label} is a symbolic link that cannot be followed ({exc.strerror or exc}); "
                             f"give the file itself") from None
        if stat.S_ISREG(st.st_mode):
            target = Path(os.path.realpath(given))
    return st, target


def plan_output(
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    inputs: Inputs | None = None,
    allow_stream: bool = True,
    follow_links: bool = True,
    owned: Callable[[Path], bool] | None = None,
    what: str = "",
) -> Destination:
    """Decide how to write ``path`` under the module's rules, or raise :class:`UsageError`.

    Args:
        force: an existing regular file may be replaced.
        inputs: what the command reads; none of it is ever replaced.
        allow_stream: ``-``, character devices and FIFOs are written into (else refused).
        follow_links: a symbolic link to a regular file is followed (else refused).
        owned: for an existing file inside an input tree: True when it is vaediag's own output there
            (only then may ``force`` replace it).
        what: a word for messages ("the report", "the plot"); default: just the path.
    """
    inputs = inputs or Inputs()
    given = os.fspath(path)
    shown = _shown(given)
    label = f"{what} {shown}" if what else shown
    if given == "-":
        if not allow_stream:
            raise UsageError(f"{label}: '-' (standard output) is not possible here; give a file name")
        return Destination(given, Path(given), STREAM, kind="standard output", fd=1)
    st, target = _stat_through_link(given, label, follow_links=follow_links)
    if st is None:
        for parent in target.parents:
            if os.path.lexists(parent) and not parent.is_dir():
                raise UsageError(f"cannot write {label}: {_shown(parent)} is a file, not a directory")
        return Destination(given, target, NEW)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise UsageError(f"{label} is a directory; give a file name such as {_shown(target / 'report.md')}")
    hit = inputs.file_matching(st)
    if hit is not None:
        same = "" if os.path.abspath(hit) == os.path.abspath(given) else f" (the same file as {_shown(hit)})"
        raise UsageError(f"{label} is one of the files this command reads{same}; vaediag never writes over "
                         f"its input, even with --force: choose another -o")
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        if not allow_stream:
            raise UsageError(f"{label} is {kind_of(mode)}, not a regular file; remove it or choose another place")
        return Destination(given, Path(given), STREAM, kind=kind_of(mode), fd=_same_as_fd(st))
    if not stat.S_ISREG(mode):
        raise UsageError(f"{label} is {kind_of(mode)}; vaediag writes a regular file, or into a character "
                         f"device or FIFO (e.g. -o - for standard output)")
    fd = _same_as_fd(st)
    if fd is not None and allow_stream:  # `-o /dev/stdout > file`: write through the redirection
        return Destination(given, Path(given), STREAM, kind="standard output" if fd == 1 else "standard error",
                           fd=fd)
    tree = inputs.tree_holding(target)
    if tree is not None and not (owned is not None and owned(target)):
        raise UsageError(f"{label} is inside {_shown(tree)}, a log tree this command reads; vaediag never "
                         f"replaces a file there, even with --force: choose another -o")
    if not force:
        raise UsageError(f"{label} already exists; pass --force to overwrite it or choose another -o")
    return Destination(given, target, REPLACE)


def write_output(dest: Destination, data: bytes, *, what: str = "") -> None:
    """Write ``data`` as planned. Raises UsageError (the name was taken meanwhile, a FIFO without a
    reader, a stream that became a file) or InputError (the operating system refused the write)."""
    shown = _shown(dest.given)
    label = f"{what} {shown}" if what else shown
    try:
        if dest.mode == STREAM:
            _write_stream(dest, data, label)
        elif dest.mode == NEW:
            _create_new(dest.path, data, label)
        else:
            atomic_write(dest.path, data)
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # the reader went away (`| head`): the CLI treats it as done
            raise BrokenPipeError(exc.errno, exc.strerror) from None
        raise InputError(f"cannot write {label}: {exc.strerror or exc}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _write_stream(dest: Destination, data: bytes, label: str) -> None:
    if dest.fd is not None:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except (OSError, ValueError):
                pass
        _write_all(dest.fd, data)
        return
    flags = os.O_WRONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(dest.given, flags)  # no O_CREAT, no O_TRUNC: the node is written into, never made or cut
    except FileNotFoundError:
        raise UsageError(f"{label} disappeared before the report was written") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise UsageError(f"{label} is a FIFO with no reader; start the reader first (e.g. cat "
                             f"{shown_path(dest.given)}) or give a file name") from None
        raise
    try:
        st = os.fstat(fd)
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise UsageError(f"{label} changed into {kind_of(st.st_mode)} before the report was written; "
                             f"nothing written")
        os.set_blocking(fd, True)
        _write_all(fd, data)
    finally:
        os.close(fd)


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message, control characters as escapes (no quotes)."""
    return path_text(path)


def _create_new(path: Path, data: bytes, label: str) -> None:
    """Create ``path`` with ``data``; never replace anything that appeared there meanwhile."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails with EEXIST if anyone created the name since it was planned
        except FileExistsError:
            raise UsageError(f"{label} already exists (another process wrote it meanwhile); pass --force "
                             f"to overwrite it or choose another -o") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            _create_exclusive(path, data, label)  # a file system without hard links
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    _fsync_dir(path.parent)


def _create_exclusive(path: Path, data: bytes, label: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except FileExistsError:
        raise UsageError(f"{label} already exists (another process wrote it meanwhile); pass --force "
                         f"to overwrite it or choose another -o") from None
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
