"""The report's files: where they go and how they are written (:func:`check_destination`, :func:`write_report`).

The markdown goes to a file or a stream (:mod:`vaediag.outputs` decides, and refuses an input or a file in a
log tree); its plots and pictures go to ``NAME_files/`` beside it (:func:`files_dir_for`). Only files
vaediag wrote are ever replaced or removed: a report is recognised by its generated line, a plot by its
name and PNG bytes, a picture by its name and image bytes.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from vaediag.atomic import atomic_write
from vaediag.diagnose.targets import Target, load_targets
from vaediag.errors import InputError, UsageError
from vaediag.render import pictures
from vaediag.render.report.document import GENERATED_PREFIX, build_report
from vaediag.render.report.figures import PLOT_FILES

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.diagnose.model import RunDiagnosis
    from vaediag.logs import RunSet
    from vaediag.outputs import Destination

__all__ = ["check_destination", "files_dir_for", "write_report"]


def files_dir_for(out_path: str | os.PathLike[str]) -> Path:
    """The plots folder beside a report: ``reports/demo.md`` -> ``reports/demo_files``."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}_files")


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_HEAD_BYTES = 4096


def _head(path: Path, n: int = _HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of a regular file ("" for anything else); never blocks, never raises."""
    import stat as _stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return b""
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, n)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _is_own_report(path: Path) -> bool:
    """True when ``path`` is a report vaediag wrote (its generated line is near the top)."""
    head = _head(path).decode("utf-8", "replace")
    return any(line.startswith(GENERATED_PREFIX) and " by vaediag " in line for line in head.splitlines()[:8])


def _is_own_plot(path: Path) -> bool:
    """True for a file vaediag writes into NAME_files/: a plot (its name, PNG bytes) or a picture
    (:data:`vaediag.render.pictures.PICTURE_NAME`, starting with an image signature)."""
    from vaediag.logs.images import image_format

    if path.name in PLOT_FILES:
        return _head(path, len(_PNG_MAGIC)) == _PNG_MAGIC
    return pictures.is_picture_name(path.name) and image_format(_head(path, 16)) is not None


def _is_own_name(name: str) -> bool:
    return name in PLOT_FILES or pictures.is_picture_name(name)


def _linked_plots(report: Path, fdir_name: str) -> set[str]:
    """The plot and picture files an existing report links from its NAME_files/ folder (empty when
    unreadable)."""
    import re
    from urllib.parse import unquote

    from vaediag.safeio import read_text

    try:
        text = read_text(report, what="report", max_bytes=256 << 20)
    except Exception:  # noqa: BLE001 - an unreadable old report only means nothing is removed
        return set()
    out = set()
    for link in re.findall(r"\]\(([^)\s]+)\)", text or ""):
        target = unquote(link)
        head, sep, name = target.partition("/")
        if sep and head == fdir_name and _is_own_name(name):
            out.add(name)
    return out


def check_destination(out_path: str | os.PathLike[str], *, force: bool = False, inputs: Any = None):
    """Plan where the report and its plots go, or refuse (see :mod:`vaediag.outputs` for the rules).

    Returns the :class:`vaediag.outputs.Destination` of the markdown. A stream (``-``, ``/dev/null``, a
    FIFO, a terminal) takes the markdown alone; for a file, ``NAME_files/`` and each plot file in it are
    checked too: without ``force`` an existing folder is refused; with it, only regular plot files may be
    replaced (a link, a folder or a device in the way is refused).

    Raises:
        UsageError: the report or its plots folder exists (and not ``force``), it is an input or inside a
            log tree the command reads, or a path is in the way.
    """
    from vaediag.outputs import Inputs, plan_output

    inputs = inputs if inputs is not None else Inputs()
    dest = plan_output(out_path, force=force, inputs=inputs, owned=_is_own_report)
    if dest.is_stream:
        return dest
    fdir = files_dir_for(dest.path)
    if os.path.lexists(fdir):
        if not fdir.is_dir():
            raise UsageError(f"cannot write the plots: {str(fdir)!r} exists and is not a directory")
        if not force:
            raise UsageError(f"{str(fdir)!r} already exists; pass --force to overwrite it or choose another -o")
        for name in PLOT_FILES:
            plan_output(fdir / name, force=True, inputs=inputs, allow_stream=False, follow_links=False,
                        owned=_is_own_plot)
    return dest


def write_report(
    runset: "RunSet",
    diagnoses: Sequence["RunDiagnosis"],
    out_path: str | os.PathLike[str],
    *,
    title: str | None = None,
    baseline: str | None = None,
    targets: Sequence[Target] | str | os.PathLike[str] | None = None,
    force: bool = False,
    sources: Sequence[str] = (),
    generated_at: datetime | None = None,
    plots: bool = True,
    inputs: Any = None,
) -> Path:
    """Render the report and write ``out_path`` and its plots folder (``<stem>_files/``) beside it.

    Checks come first (:func:`check_destination`: an existing report or plots folder without ``force``,
    an input or a file inside a log tree the report reads, a link or special file in the way; a bad
    baseline or targets file), then rendering in memory, then writing. A missing parent directory of
    ``out_path`` is created.

    - A new report is created without a window for clobbering (:mod:`vaediag.outputs`): of two
      processes writing one new report, the second gets "already exists". The markdown claims the name
      first, then the plots are written; if they cannot be, the new markdown is removed again.
    - ``force`` replaces an existing report and its plots and pictures atomically, then removes the
      plots and pictures the old report linked that the new one does not write (no stale files); any
      other file in ``NAME_files/`` is left alone, and a picture's name held by something that is not an
      image is refused before anything is written.
    - A stream (``-``, ``/dev/stdout``, ``/dev/null``, a FIFO, a terminal) gets the markdown written into
      it, without ``force``; no plots are drawn and no pictures read or written (the returned path is
      the stream's).

    ``plots=False`` writes the text alone (no Curves section, no pictures, no plots folder): quicker
    where no one will look at them.

    Returns:
        The path of the markdown file (the target of a followed symbolic link).

    Raises:
        UsageError: the destination is refused (see above), or ``baseline`` is not a run.
        RulesError / InputError: a bad targets file; the operating system refused a write.
    """
    from vaediag.outputs import NEW, write_output

    dest = check_destination(out_path, force=force, inputs=inputs)
    if targets is not None and not isinstance(targets, (list, tuple)):
        targets = load_targets(targets)
    out = dest.path
    report = build_report(runset, diagnoses, out_name=out.stem, title=title, baseline=baseline,
                          targets=targets, sources=sources, generated_at=generated_at,
                          plots=plots and not dest.is_stream)
    data = report.markdown.encode("utf-8")
    if dest.is_stream:
        write_output(dest, data)
        return out
    fdir = files_dir_for(out)
    stale = _linked_plots(out, fdir.name) - set(report.files) if dest.mode != NEW else set()
    if os.path.lexists(fdir):  # (only with --force: check_destination refused it otherwise)
        _check_pictures(fdir, report.files, inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write the report to {str(out)!r}: {exc.strerror or exc}") from None
    if dest.mode == NEW:
        _write_new(dest, data, fdir, report.files)
        return out
    _write_plots(fdir, report.files)
    write_output(dest, data)
    _remove_stale(fdir, stale)
    return out


def _check_pictures(fdir: Path, files: dict[str, bytes], inputs: Any) -> None:
    """Before anything is written into an existing plots folder: each picture's name is free or holds a
    picture vaediag wrote there (the plots were planned by check_destination already)."""
    from vaediag.outputs import Inputs, plan_output

    for name in sorted(set(files) - set(PLOT_FILES)):
        p = fdir / name
        plan_output(p, force=True, inputs=inputs if inputs is not None else Inputs(),
                    allow_stream=False, follow_links=False, owned=_is_own_plot, what="the picture")
        if os.path.lexists(p) and not _is_own_plot(p):
            raise UsageError(f"cannot write the picture {str(p)!r}: a file that is not a picture is in the "
                             f"way (vaediag replaces only pictures it wrote there); move it or choose another -o")


def _write_new(dest: "Destination", data: bytes, fdir: Path, files: dict[str, bytes]) -> None:
    """A new report: the markdown claims the name (or says it was taken meanwhile), then the plots; if they
    fail, what this call created goes again."""
    from vaediag.outputs import write_output

    out = dest.path
    write_output(dest, data)
    made: list[Path] = []
    try:
        mine = os.stat(out)
        _write_plots(fdir, files, made=made)
    except BaseException:
        # A report without its plots is not left behind, nor a half-filled plots folder (a retry without
        # --force would be refused by it): only what this call created goes.
        _remove_made(made)
        try:
            now = os.stat(out)
            if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                out.unlink()
        except (OSError, UnboundLocalError):
            pass
        raise


def _remove_stale(fdir: Path, stale: set[str]) -> None:
    """After a replaced report: the plots and pictures the old one linked that the new one does not write."""
    for name in sorted(stale):
        p = fdir / name
        if _is_own_plot(p) and not p.is_symlink():
            try:
                p.unlink()
            except OSError:
                pass


def _write_plots(fdir: Path, files: dict[str, bytes], *, made: list[Path] | None = None) -> None:
    """Write the plots and pictures into ``fdir``; ``made`` collects what this call created (the folder
    first, if it did not exist, then each new file), for :func:`_remove_made` to take back."""
    if not files:
        return
    made = [] if made is None else made
    try:
        try:
            fdir.mkdir()
            made.append(fdir)
        except FileExistsError:
            pass
        for name, data in sorted(files.items()):
            p = fdir / name
            new = not os.path.lexists(p)
            atomic_write(p, data)
            if new:
                made.append(p)
    except OSError as exc:
        raise InputError(f"cannot write the plots to {str(fdir)!r}: {exc.strerror or exc}") from None


def _remove_made(made: Sequence[Path]) -> None:
    """Take back the files and folder :func:`_write_plots` created, newest first; what cannot be removed
    (or something another process put in the folder meanwhile) stays."""
    for p in reversed(made):
        try:
            p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError:
            pass
