"""`vaediag report`: not built yet."""

from __future__ import annotations

import argparse

from vaediag.errors import UsageError


def add_parser(sub: argparse._SubParsersAction, *, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    raise UsageError("'vaediag report' is not built yet")
