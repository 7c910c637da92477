"""`vaediag check` wall time on a 120k-scalar tree, interpreter start included (goal: under 1.5 s).

    python -m bench check                  # 5 repeats on bench/_data/small (built with bench.gen if missing)
    python -m bench.check --repeat 9 --path logs/ear_teacher

Each repeat is a fresh ``python -m vaediag.cli check PATH`` subprocess (console view, and ``--json``),
timed from spawn to exit, so it counts what a user waits for: interpreter start, imports, reading the
tree, every rule and the rendering. For scale it also times a bare ``python -c pass`` and
``import vaediag.cli`` alone, and lists the heavy modules a check imports (none of torch, matplotlib).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["GOAL_SECONDS", "main", "time_command"]

GOAL_SECONDS = 1.5
_ROOT = Path(__file__).resolve().parent.parent
_PROBE = (
    "import sys, io, contextlib, vaediag.cli\n"
    "with contextlib.redirect_stdout(io.StringIO()): vaediag.cli.main(['check', sys.argv[1]])\n"
    "print(' '.join(m for m in ('torch', 'matplotlib', 'tensorboard', 'rich', 'pandas') if m in sys.modules))\n"
)


def time_command(argv: list[str], *, repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` runs of ``argv`` (exit code 0 or 1 expected)."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(argv, cwd=_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        out.append(time.perf_counter() - t)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return out


def _tree(path: str | None) -> Path:
    if path:
        return Path(path)
    from bench import gen

    small = gen.DATA / "small"
    if not (small / ".complete").exists():
        gen.main(["--only", "small"])
    return small


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench check", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (default 5)")
    ap.add_argument("--path", help="tree to check (default: bench/_data/small, 120,000 scalars)")
    args = ap.parse_args(argv or [])
    tree = _tree(args.path)
    py = sys.executable

    import vaediag

    n_scalars = len(vaediag.load(tree).frame)
    rows = {
        "python -c pass": time_command([py, "-c", "pass"], repeat=args.repeat),
        "import vaediag.cli": time_command([py, "-c", "import vaediag.cli"], repeat=args.repeat),
        "vaediag check PATH": time_command([py, "-m", "vaediag.cli", "check", str(tree)], repeat=args.repeat),
        "vaediag check PATH --json": time_command([py, "-m", "vaediag.cli", "check", str(tree), "--json"],
                                                  repeat=args.repeat),
    }
    imported = subprocess.run([py, "-c", _PROBE, str(tree)], cwd=_ROOT, capture_output=True, text=True).stdout.split()

    print(f"tree: {tree} ({n_scalars:,} scalars); {args.repeat} runs each; wall seconds incl. interpreter start")
    print(f"{'command':<28} {'min':>7} {'median':>7} {'max':>7}")
    for name, secs in rows.items():
        print(f"{name:<28} {min(secs):7.3f} {statistics.median(secs):7.3f} {max(secs):7.3f}")
    worst = max(statistics.median(rows["vaediag check PATH"]), statistics.median(rows["vaediag check PATH --json"]))
    verdict = "ok" if worst < GOAL_SECONDS else "OVER"
    print(f"goal: median under {GOAL_SECONDS} s -> {worst:.3f} s ({verdict}); heavy modules imported by a check: "
          f"{', '.join(imported) or 'none'}")
    print(json.dumps({"bench": "check", "scalars": n_scalars, "median_s": round(worst, 3), "goal_s": GOAL_SECONDS,
                      "torch": "torch" in imported, "matplotlib": "matplotlib" in imported}))
    return 0 if worst < GOAL_SECONDS and "torch" not in imported else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
