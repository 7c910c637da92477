"""Run benchmarks: ``python -m bench`` runs every ``bench/<name>.py`` module's ``main()`` in turn;
``python -m bench NAME [ARGS...]`` runs one, passing ARGS to it.

A module's ``main`` takes the argument list (``main(argv)``) or nothing (``main()``) and returns an exit
status (None counts as 0). When running all of them, a benchmark that raises is reported and the rest
still run; the exit status is the worst one seen. A module may define ``skip_in_all()`` returning why the
run of all benchmarks leaves it out on this machine (``gpu``: no CUDA device), or None; by name it always runs.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import time
import traceback
from pathlib import Path

__all__ = ["main"]


def _modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def _call(name: str, argv: list[str]) -> int:
    fn = getattr(importlib.import_module(f"bench.{name}"), "main", None)
    if fn is None:
        return -1
    takes_args = bool(inspect.signature(fn).parameters)
    return int((fn(argv) if takes_args else fn()) or 0)


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
        rc = _call(name, rest)
        if rc == -1:
            print(f"Error: bench.{name} has no main()", file=sys.stderr)
            return 2
        return rc
    worst = 0
    for name in names:
        skip = getattr(importlib.import_module(f"bench.{name}"), "skip_in_all", None)
        why = skip() if skip is not None else None
        if why:
            print(f"== bench {name}: skipped ({why})", flush=True)
            continue
        print(f"== bench {name}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = _call(name, [])
        except KeyboardInterrupt:
            print("Interrupted.", file=sys.stderr)
            return 130
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            rc = 1
        if rc == -1:
            continue  # a helper module without main()
        print(f"== bench {name}: exit {rc}, {time.perf_counter() - t0:.1f} s", flush=True)
        worst = max(worst, rc)
    return worst


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
