"""`vaediag train ...`: the training core's command line, forwarded unchanged to ``python -m train``.

Every argument after ``train`` (``--help`` included) goes to the training CLI, so the two commands
accept exactly the same flags. The training core needs torch (the ``[train]`` extra); it is imported
only when this command runs, never by ``vaediag`` itself.
"""

from __future__ import annotations

import argparse

from vaediag.errors import UsageError

__all__ = ["add_parser", "run"]

INSTALL_HINT = "the training core needs torch: pip install 'vaediag[train]'"


def add_parser(sub: argparse._SubParsersAction, *, name: str, help: str) -> argparse.ArgumentParser:
    # No option prefix: every string after `train`, flags and --help included, is forwarded as is.
    p = sub.add_parser(name, help=help, description=help, add_help=False, prefix_chars="\0")
    p.add_argument("args", nargs="*", help="arguments of python -m train (see vaediag train --help)")
    p.set_defaults(handler=run)
    return p


def _import_training_cli():
    try:
        import torch  # noqa: F401 - only to turn a missing torch into the install hint
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    from train.__main__ import main

    return main


def run(args: argparse.Namespace) -> int:
    main = _import_training_cli()
    return main(list(args.args), prog="vaediag train")
