"""`vaediag examples [--path | --copy DIR]`: the example logs shipped inside the package.

Two real runs of the training core (``vaediag/examples/``, made by ``scripts/make_examples.py``; see the
README.md there), so ``vaediag check`` and ``vaediag report`` can be tried straight after ``pip install``:

* no option: where they are, what each run is, and the commands to try on them;
* ``--path``: the folder alone, for ``vaediag check "$(vaediag examples --path)"``;
* ``--copy DIR``: a copy in ``DIR`` (created, parents too), to keep, edit or open in TensorBoard. ``DIR``
  must not exist or be an empty folder: nothing is ever copied over or into existing files. The copy is
  made in a temporary folder beside ``DIR`` and renamed into place, so ``DIR`` appears whole or not at all;
  its files are the user's own (plain permissions, whatever the installed copy's are).

Exit codes: 0; 2 for a refused ``--copy`` or an installation without its examples (one line on stderr).
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import shutil
import tempfile
from pathlib import Path

from vaediag.errors import InputError
from vaediag.sanitize import path_text, terminal

__all__ = ["add_parser", "run", "EXAMPLES", "examples_dir", "copy_examples"]

# Each shipped run (relative to the examples folder) and what it shows. tests/cli/test_examples.py checks
# that these are exactly the runs in the folder.
EXAMPLES: dict[str, str] = {
    "fixed_kl/version_0": "kl_weight 1e-2 held for 6 epochs, no watchdog: the posterior collapses and every "
                          "reconstruction is the same blur",
    "watched/version_0": "the same start under `vaediag watch`: kl_weight cut 100x after epoch 1, the "
                         "autoencoder after epoch 3; 16 epochs",
}


def examples_dir() -> Path:
    """The installed example logs (``vaediag/examples``).

    Raises:
        InputError: the folder is missing (a broken installation or a package built without its data).
    """
    d = Path(__file__).resolve().parent.parent / "examples"
    if not d.is_dir():
        raise InputError(f"the example logs are missing from this installation (expected {path_text(d)}); "
                         "reinstall vaediag")
    return d


def add_parser(sub: argparse._SubParsersAction, *, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        description="The example logs shipped with vaediag: two real runs of its training core, one with a "
                    "kl_weight far too high, one steered by the watchdog. Without an option: where they are and "
                    "what to run on them.",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--path", action="store_true", help="print the examples folder alone")
    what.add_argument("--copy", metavar="DIR",
                      help="copy the examples into DIR, a new or empty folder (never over existing files)")
    p.set_defaults(handler=run)
    return p


def _files(src: Path) -> list[Path]:
    return sorted(f for f in src.rglob("*") if f.is_file() and "__pycache__" not in f.parts)


def copy_examples(dest: str | os.PathLike[str]) -> Path:
    """Copy the example logs into ``dest`` (a new or empty folder); returns ``dest`` as a Path.

    Raises:
        InputError: ``dest`` exists and is not an empty folder, or the copy cannot be written.
    """
    src = examples_dir()
    dest = Path(dest)
    refused = f"{path_text(dest)} already exists; nothing was copied (name a new or empty folder)"
    if dest.is_symlink() or (dest.exists() and not (dest.is_dir() and not any(dest.iterdir()))):
        raise InputError(refused)
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".vaediag-examples-", dir=dest.parent))
        staged = tmp / "examples"
        for f in _files(src):
            target = staged / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)  # contents only: the copy is the user's, writable whatever the install is
        if dest.is_dir():
            dest.rmdir()  # empty (checked above); fails, and refuses, if a file appeared in it since
        os.rename(staged, dest)  # whole or not at all; never replaces what appeared meanwhile
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or isinstance(exc, FileExistsError):
            raise InputError(refused) from None
        raise InputError(f"cannot copy the examples to {path_text(dest)}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def run(args: argparse.Namespace) -> int:
    from vaediag import __version__

    if args.copy is not None:
        dest = copy_examples(args.copy)
        print(f"Copied {len(EXAMPLES)} example runs to {path_text(dest)}; try: vaediag check "
              f"{terminal(shlex.quote(str(dest)))}")
        return 0
    src = examples_dir()
    if args.path:
        print(path_text(src))
        return 0
    q = terminal(shlex.quote(str(src)))
    width = max(map(len, EXAMPLES))
    print(f"Example logs shipped with vaediag {__version__}, in {path_text(src)}:")
    for run_id, what in EXAMPLES.items():
        print(f"  {run_id:<{width}}  {what}")
    print()
    print("Try:")
    print(f"  vaediag check {q}")
    print(f"  vaediag report {q} -o vaediag-examples.md")
    print("  vaediag examples --copy DIR      a copy of your own (tensorboard --logdir DIR)")
    print(f"More in {path_text(src / 'README.md')}.")
    return 0
