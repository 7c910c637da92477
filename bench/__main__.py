"""Run benchmarks: ``python -m bench`` runs every ``bench/<name>.py`` module's ``main()``;
``python -m bench NAME [ARGS...]`` runs one, passing ARGS to it."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def _modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = _modules()
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nbenchmarks: " + ", ".join(names))
        return 0
    if argv:
        name, rest = argv[0], argv[1:]
        if name not in names:
            print(f"Error: unknown benchmark {name!r} (choose {', '.join(names)})", file=sys.stderr)
            return 2
        return int(importlib.import_module(f"bench.{name}").main(rest) or 0)
    rc = 0
    for name in names:
        mod = importlib.import_module(f"bench.{name}")
        if hasattr(mod, "main"):
            print(f"== bench {name}", flush=True)
            rc = max(rc, int(mod.main([]) or 0))
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
