"""The ``vaediag`` command line: check, report, watch, train, demo.

This module and ``vaediag.commands`` are the only places that print to the terminal or choose exit codes.
Each subcommand lives in ``vaediag/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so ``vaediag check`` never
pays for matplotlib, and nothing here imports torch (the ``train`` and ``demo`` subcommands import the
training core when they run).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from vaediag import __version__
from vaediag.errors import VaediagError

__all__ = ["main", "build_parser", "COMMANDS"]

# name -> one-line help. Order is the order `vaediag --help` shows.
COMMANDS: dict[str, str] = {
    "check": "diagnose one run or a tree of runs and recommend the next step",
    "report": "write a markdown run-comparison report with plots",
    "watch": "run training under a watchdog that adjusts kl_weight while it runs",
    "train": "train the conv VAE of the training core (needs the [train] extra)",
    "demo": "build demo data, train under the watchdog, check and report",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with only the subparser that ``argv`` (default: ``sys.argv[1:]``) runs fully built."""
    parser = argparse.ArgumentParser(
        prog="vaediag",
        description="Diagnose and steer VAE training runs from their TensorBoard logs.",
    )
    parser.add_argument("--version", action="version", version=f"vaediag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    argv = sys.argv[1:] if argv is None else argv
    for name, help_text in COMMANDS.items():
        # Build only the subparser that will run (cheap start-up); all of them for --help.
        if _wants(name, argv):
            module = importlib.import_module(f"vaediag.commands.{name}")
            module.add_parser(sub, name=name, help=help_text)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _wants(name: str, argv: Sequence[str]) -> bool:
    first = next((a for a in argv if not a.startswith("-")), None)
    return first is None or first == name


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.handler(args))
    except VaediagError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vaediag check ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
