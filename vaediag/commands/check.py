"""``vaediag check PATH``: diagnose one run or a tree of runs and recommend the next step.

    vaediag check logs/ear_teacher                       # rich output per run
    vaediag check logs/ear_teacher --json                # {"runs": [{"run", "epochs", "metrics", ...}]}
    vaediag check logs/ear_teacher --baseline version_1  # comparative checklist items against a run
    vaediag check runs/ --kl-weight 0.00025              # the KL weight of runs that do not record it

Exit codes (ARCHITECTURE): 0 every check passes or is pending; 1 at least one finding is ``fail``; 2 usage
error or unreadable input (one line on stderr); 130 interrupted.

Start-up is kept cheap (``vaediag check`` on a 120k-scalar tree runs in well under 1.5 s): the reader,
pandas and rich are imported when the command runs, matplotlib and tensorboard never.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vaediag.commands.options import add_run_options
from vaediag.errors import UsageError
from vaediag.sanitize import terminal

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction, *, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        description=help + ". Exit codes: 0 all checks pass or are pending, 1 a check failed, "
        "2 usage error or unreadable input, 130 interrupted.",
    )
    p.add_argument("path", metavar="PATH", help="a run directory, a tree of runs, or one event file")
    p.add_argument("--json", action="store_true", help='print {"runs": [...]} as JSON instead of the console view')
    add_run_options(p, baseline_help="the previous run to compare with: a run id under PATH (or its last part, "
                                     "e.g. version_1), or another run directory")
    p.set_defaults(handler=run)
    return p


def _baseline(spec: str | None, runset, *, tags, steps_per_epoch):
    """A run id of ``runset``, or a separately loaded RunSet for a run directory outside it."""
    if spec is None:
        return None
    from vaediag.diagnose import find_run

    try:
        return find_run(runset, spec)
    except UsageError:
        if not Path(spec).exists():
            raise
    import vaediag

    return vaediag.load(spec, tags=tags, steps_per_epoch=steps_per_epoch)


def _of_a_run(warning: str, runs) -> bool:
    """True for a warning that starts ``"<run id>: "`` for one of ``runs`` (a dict or set: one lookup per
    ``": "`` in the warning, not one test per run; 10,000 damaged runs made that quadratic)."""
    i = warning.find(": ")
    while i >= 0:
        if warning[:i] in runs:
            return True
        i = warning.find(": ", i + 1)
    return False


def run(args: argparse.Namespace) -> int:
    import vaediag
    from vaediag.diagnose import diagnose, load_rules

    rules = load_rules(args.rules)  # a bad rules file fails before any log is read
    runset = vaediag.load(args.path, tags=args.tags, steps_per_epoch=args.steps_per_epoch, run_glob=args.run_glob)
    baseline = _baseline(args.baseline, runset, tags=args.tags, steps_per_epoch=args.steps_per_epoch)
    diags = diagnose(runset, rules=rules, kl_weight=args.kl_weight, latent_dim=args.latent_dim, baseline=baseline,
                     profile=args.profile)
    # Per-run damage shows in that run's findings (log_warning); the rest (skipped folders) goes here.
    warnings = [w for w in runset.warnings if not _of_a_run(w, runset.runs)]

    if args.json:
        doc = {"runs": [d.to_dict() for d in diags]}
        sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")
        for w in warnings:
            print(f"warning: {terminal(w)}", file=sys.stderr)
    else:
        from rich.console import Console

        from vaediag.render.console import render_check

        render_check(diags, console=Console(highlight=False), warnings=warnings)
    return 1 if any(d.failed for d in diags) else 0
