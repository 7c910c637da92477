"""Scale: `vaediag check` on 10,000 empty runs (goal: under 10 s), on one run with 1,000,000 distinct tags
(time and peak memory), and on a tree 1,000 directories deep.

    python -m bench scale                                  # everything below, defaults
    python -m bench scale --only empty --runs 10000 --kinds header,zero,lightning
    python -m bench scale --only tags --tags 1000000

Trees are built in a temporary directory and removed afterwards (without recursion: the deep tree is
deeper than shutil.rmtree can go). "An empty run", as found in practice: an event file holding only the
``file_version`` header (a SummaryWriter whose run died before its first scalar: ``header``) or nothing
(killed before its first flush: ``zero``); ``lightning`` adds what Lightning writes at start-up
(``hp_metric``, the hparams plugin record and ``hparams.yaml``). Many tags: 5 epochs of real tags plus
N per-sample tags that no term names (``hist/0000017``) or that all name the loss (``sample/0000017/loss``).

Each check is a fresh ``python -m vaediag.cli check PATH`` process (stdout discarded), timed from spawn
to exit; its CPU time and peak RSS come from ``wait4``. Discovery and ``vaediag.load`` of the empty
trees are also timed in this process. The machine is shared: wall times move with its load (printed),
CPU times much less. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.trees import deep_tree, empty_runs, many_tags_run, remove_tree

__all__ = ["GOAL_SECONDS", "main", "measure"]

GOAL_SECONDS = 10.0
_ROOT = Path(__file__).resolve().parent.parent


# --- building --------------------------------------------------------------------------------------

def build_tags(run: Path, n: int, fmt: str) -> int:
    """One run: 5 epochs of real tags, then ``n`` distinct tags ``fmt.format(i)``; returns its bytes."""
    return many_tags_run(run, n, fmt=fmt).stat().st_size


# --- measuring -------------------------------------------------------------------------------------

def measure(argv: list[str], *, timeout: float = 1800) -> dict:
    """Wall, CPU (user + sys) and peak RSS of one ``python -m vaediag.cli ARGV`` process."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vaediag.cli", *argv], cwd=_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = t + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_mb": round(ru.ru_maxrss / 1024, 1), "exit": proc.returncode, "stderr": err[-300:]}


def _in_process(fn) -> dict:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": round(time.perf_counter() - w, 2), "cpu_s": round(time.process_time() - c, 2)}


def _row(name: str, r: dict) -> None:
    peak = f"{r['peak_mb']:8.0f}" if "peak_mb" in r else f"{'':8}"
    extra = f"  exit {r['exit']}" if r.get("exit") not in (None, 0, 1) else ""
    print(f"{name:<50} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {peak}{extra}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["empty", "tags", "deep"], help="one part")
    ap.add_argument("--runs", type=int, default=10_000, help="empty runs per tree (default 10,000)")
    ap.add_argument("--kinds", default="header,zero", help="empty-run kinds: header, zero, lightning")
    ap.add_argument("--tags", type=int, default=1_000_000, help="distinct tags in the many-tags run")
    ap.add_argument("--depth", type=int, default=1000, help="depth of the deep tree")
    args = ap.parse_args(argv or [])
    results: dict[str, dict] = {}
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; seconds and MB")
    print(f"{'':<50} {'wall':>8} {'cpu':>8} {'peak':>8}")
    with tempfile.TemporaryDirectory(prefix="vaediag-bench-scale-") as tmp:
        base = Path(tmp)
        try:
            if args.only in (None, "empty"):
                import vaediag
                from vaediag.logs.discover import discover

                for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
                    tree = base / f"empty-{kind}"
                    empty_runs(tree, args.runs, kind=kind)
                    results[f"discover {kind}"] = r = _in_process(lambda: discover(tree))
                    _row(f"discover {args.runs:,} {kind} runs (in process)", r)
                    results[f"load {kind}"] = r = _in_process(lambda: vaediag.load(tree))
                    _row(f"vaediag.load {args.runs:,} {kind} runs (in process)", r)
                    results[f"check {kind}"] = r = measure(["check", str(tree)])
                    _row(f"vaediag check: {args.runs:,} {kind} runs", r)
                    results[f"check --json {kind}"] = r = measure(["check", str(tree), "--json"])
                    _row(f"vaediag check --json: {args.runs:,} {kind} runs", r)
                    remove_tree(tree)
            if args.only in (None, "tags"):
                for label, fmt in (("unmapped", "hist/{:07d}"), ("loss", "sample/{:07d}/loss")):
                    run = base / f"tags-{label}" / "run"
                    size = build_tags(run, args.tags, fmt)
                    results[f"check tags {label}"] = r = measure(["check", str(run)])
                    r["file_mb"] = round(size / 1e6, 1)
                    _row(f"vaediag check: {args.tags:,} {label} tags ({size / 1e6:.0f} MB)", r)
                    remove_tree(run.parent)
            if args.only in (None, "deep"):
                tree = base / "deep"
                deep_tree(tree, args.depth)
                results["check deep"] = r = measure(["check", str(tree)])
                _row(f"vaediag check: a tree {args.depth:,} directories deep", r)
                results["report deep"] = r = measure(["report", str(tree), "-o", str(base / "deep.md")])
                _row(f"vaediag report: a tree {args.depth:,} directories deep", r)
                remove_tree(tree)
        finally:
            for child in list(base.iterdir()):  # TemporaryDirectory's own clean-up recurses
                remove_tree(child)  # a file, a link or a tree of any depth
    checks = [v for k, v in results.items() if k.startswith("check ") and k.split()[-1] in ("header", "zero")
              and "--json" not in k]
    if checks:
        worst = max(r["wall_s"] for r in checks)
        print(f"goal: check on {args.runs:,} empty runs under {GOAL_SECONDS:g} s wall -> {worst:.2f} s "
              f"({'ok' if worst < GOAL_SECONDS else 'OVER'}; CPU {max(r['cpu_s'] for r in checks):.2f} s)")
    print(json.dumps({"bench": "scale", "runs": args.runs, "tags": args.tags, "depth": args.depth,
                      "load_average": round(os.getloadavg()[0], 2),
                      "results": {k: {x: y for x, y in v.items() if x != "stderr"} for k, v in results.items()}}))
    bad = [k for k, v in results.items() if v.get("exit") not in (None, 0, 1)]
    for k in bad:
        print(f"{k}: exit {results[k]['exit']}: {results[k]['stderr']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
