"""`vaediag report PATH... [-o reports/NAME.md]`: a markdown run-comparison report with PNG plots.

Loads every PATH (runs or trees of runs, ours or foreign), diagnoses each run with the same rules as
``vaediag check``, and writes ``NAME.md`` plus ``NAME_files/`` beside it (the plots, and the runs'
logged pictures: :mod:`vaediag.render.pictures`). An existing report is never overwritten without
``--force``, and never one of the files the report reads or a file inside a log tree it reads
(:mod:`vaediag.outputs`). ``-o -``, ``-o /dev/stdout``, a FIFO or a character device get the markdown
written into them (no plots, no pictures read; one line on stderr says so). Exit codes: 0 report
written; 2 bad input or refusal (one line on stderr); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from vaediag.commands.options import add_run_options

__all__ = ["add_parser", "run", "load_paths", "default_output"]

_DEFAULT_DIR = "reports"


def add_parser(sub: argparse._SubParsersAction, *, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Write a markdown report that compares runs: each run's logged reconstructions (inputs over "
            "reconstructions at the final epoch, watchdog decisions and milestones), the best run and why, "
            "configuration and final metrics, evolution across runs, milestones, expected vs actual, findings and recommendations, "
            "watchdog decisions, and plots (PNG files in NAME_files/ beside the report)."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="run directories or trees of runs (ours or foreign)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="report file (default: reports/<first PATH's name>.md); a missing directory is created; "
                        "'-' (or /dev/stdout, a FIFO) writes the markdown alone to that stream")
    p.add_argument("--title", metavar="T", help="document title (default: 'VAE training report: <PATH name>')")
    p.add_argument("--targets", metavar="FILE", help="expected results TOML (default: the seed's targets)")
    add_run_options(p, baseline_help="run id to measure improvement against (default: the earliest run)")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing report and its plots (never an input file or a file in the logs)")
    p.set_defaults(handler=run)
    return p


def default_output(paths: Sequence[str]) -> Path:
    """``reports/<name of the first PATH>.md`` (``reports/ear_teacher.md`` for ``logs/ear_teacher``)."""
    from vaediag.render.markdown import slug

    first = Path(paths[0])
    name = first.name or Path(os.path.abspath(first)).name
    if first.is_file():  # a single event file: name the report after its run directory
        name = first.parent.name or Path(os.path.abspath(first.parent)).name
    return Path(_DEFAULT_DIR) / f"{slug(name)}.md"


def __getattr__(name: str):
    # load_paths lived here before it moved to the library (vaediag.logs.merge); imported on use, so that
    # building this command's parser does not load pandas.
    if name == "load_paths":
        from vaediag.logs.merge import load_paths

        return load_paths
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(args: argparse.Namespace) -> int:
    from vaediag.outputs import Inputs
    from vaediag.render.report import check_destination, diagnose_runs, files_dir_for, load_targets, write_report
    from vaediag.sanitize import terminal

    # Option values were checked when the command line was read (commands/options.py). Cheap checks first:
    # a refused destination or a bad targets/rules file costs no log reading.
    out = args.output or default_output(args.paths)  # kept as typed: "./-" is a file, "-" standard output
    # Everything the report reads; none of it (nor anything else in the log trees) is ever written over.
    inputs = Inputs([*args.paths, args.targets, args.rules, args.tags])
    dest = check_destination(out, force=args.force, inputs=inputs)
    targets = load_targets(args.targets)
    rules = None
    if args.rules is not None:
        from vaediag.diagnose.rulesfile import load_rules

        rules = load_rules(args.rules)

    from vaediag.logs.merge import load_paths

    runset = load_paths(args.paths, tags=args.tags, steps_per_epoch=args.steps_per_epoch, run_glob=args.run_glob)
    from vaediag.diagnose import find_run

    # One resolution of --baseline (exact id, unique suffix or glob) for the checks and the report.
    baseline = find_run(runset, args.baseline) if args.baseline is not None else None
    diagnoses = diagnose_runs(runset, rules=rules, kl_weight=args.kl_weight, baseline=baseline,
                              latent_dim=args.latent_dim, profile=args.profile)
    path = write_report(runset, diagnoses, out, title=args.title, baseline=baseline, targets=targets,
                        force=args.force, sources=list(args.paths), inputs=inputs)
    n = len(runset.runs)
    runs = f"{n} run{'s' if n != 1 else ''}"
    if dest.is_stream:  # stdout may be the report itself: the note goes to stderr
        where = "standard output" if dest.given == "-" else terminal(dest.given)
        print(f"Wrote the report into {where} ({runs}); no plots: a stream takes the markdown alone "
              f"(give -o FILE.md for the plots and pictures)", file=sys.stderr)
    else:
        print(f"Wrote {terminal(path)} ({runs}; plots in {terminal(files_dir_for(path))}/)")
    return 0
