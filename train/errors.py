"""The training core's own ways to stop, beyond vaediag's errors (2: bad input or usage, 130: interrupted).

Each carries the exit code ``python -m train`` ends with (documented in ``train/__main__.py``); the
message is one line that says what happened, what was kept, and what to do next.
"""

from __future__ import annotations

import errno
import os

from vaediag.errors import VaediagError

__all__ = ["TrainingDiverged", "OutputError", "DIVERGED_EXIT", "OUTPUT_EXIT", "describe_os_error"]

DIVERGED_EXIT = 3
OUTPUT_EXIT = 4


class TrainingDiverged(VaediagError):
    """The loss or the weights became NaN or infinite. The non-finite step was logged; nothing
    non-finite was checkpointed (the last good checkpoint, if any, is untouched)."""

    exit_code = DIVERGED_EXIT


class OutputError(VaediagError):
    """The machine refused a write the run needs: disk full, quota, I/O error, file-size limit, read-only
    file system. The previous checkpoint is intact (checkpoints are written to a temporary name first)."""

    exit_code = OUTPUT_EXIT


_ADVICE = {
    errno.ENOSPC: "free disk space",
    getattr(errno, "EDQUOT", -1): "free space within your disk quota",
    errno.EFBIG: "raise the file-size limit (ulimit -f) or write to another disk",
    errno.EROFS: "write to a file system that is not read-only",
    errno.EIO: "check the disk (it reported an I/O error)",
}


def describe_os_error(exc: OSError) -> tuple[str, str]:
    """``(what the system said, what to do)`` for an OSError from a write, e.g.
    ``("No space left on device", "free disk space")``."""
    said = exc.strerror or str(exc) or type(exc).__name__
    return said, _ADVICE.get(exc.errno or 0, "fix the cause")


def shown(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message (non-UTF-8 bytes escaped)."""
    return os.fsdecode(os.fspath(path)).encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
