"""The ``vaediag`` command line: check, report, watch, train, demo, examples.

This module and ``vaediag.commands`` are the only places that print to the terminal or choose exit codes.
Each subcommand lives in ``vaediag/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so ``vaediag check`` never
pays for matplotlib, and nothing here imports torch (the ``train`` and ``demo`` subcommands import the
training core when they run).

What reaches stderr is vaediag's own: a usage error is one line (``Error: <what>; see vaediag check
--help``, exit 2; ``--help`` itself is argparse's), every error message is shown through
:func:`vaediag.sanitize.terminal` (a path with an escape sequence or a newline stays one harmless line),
and library warnings (matplotlib's missing glyphs, pandas' and numpy's runtime and future warnings,
TensorBoard's deprecations) and library log records are not shown. Warnings whose class vaediag defines
stay visible, and ``python -W ...`` or ``PYTHONWARNINGS`` (an explicit request) turns the filter off.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from typing import NoReturn, Sequence

from vaediag import __version__
from vaediag.errors import UsageError, VaediagError
from vaediag.sanitize import terminal

__all__ = ["main", "build_parser", "COMMANDS"]

# name -> one-line help. Order is the order `vaediag --help` shows.
COMMANDS: dict[str, str] = {
    "check": "diagnose one run or a tree of runs and recommend the next step",
    "report": "write a markdown run-comparison report with plots",
    "watch": "run training under a watchdog that adjusts kl_weight while it runs",
    "train": "train the conv VAE of the training core (needs the [train] extra)",
    "demo": "build demo data, train under the watchdog, check and report",
    "examples": "where the example logs shipped with vaediag are (or a copy of them), to try check and report on",
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
    # A usage error is one line that says what is wrong and where the help is, not argparse's usage block.
    # Errors the top-level parser reports for a subcommand's arguments ("unrecognized arguments") point
    # at that subcommand's help. A subcommand that installed its own one-line error keeps it.
    first = next((a for a in argv if not a.startswith("-")), None)
    parser.error = _one_line_error(f"vaediag {first} --help" if first in COMMANDS else "vaediag --help")  # type: ignore[method-assign]
    for name, p in sub.choices.items():
        if "error" not in vars(p):
            p.error = _one_line_error(f"vaediag {name} --help")  # type: ignore[method-assign]
    return parser


def _one_line_error(hint: str):
    def error(message: str) -> NoReturn:
        raise UsageError(f"{message}; see {hint}")
    return error


def _quiet_libraries() -> None:
    """Keep library warnings and log records off stderr; vaediag's own warning classes still show.

    Off when the user asked for warnings (``python -W``, ``PYTHONWARNINGS``): then everything shows.
    """
    if sys.warnoptions:
        return
    shown = warnings.showwarning
    if getattr(shown, "_vaediag_quiet", False):  # main() called twice in one process (tests)
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if str(getattr(category, "__module__", "")).split(".")[0] == "vaediag":
            shown(message, category, filename, lineno, file, line)

    showwarning._vaediag_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
    root = logging.getLogger()
    if not root.handlers:  # without a handler, logging's last resort prints WARNING records to stderr
        root.addHandler(logging.NullHandler())


def _wants(name: str, argv: Sequence[str]) -> bool:
    first = next((a for a in argv if not a.startswith("-")), None)
    return first is None or first == name


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _quiet_libraries()
    try:
        args = build_parser(argv).parse_args(argv)
        return int(args.handler(args))
    except VaediagError as exc:
        print(f"Error: {terminal(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vaediag check ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
