"""The options ``vaediag check`` and ``vaediag report`` share, defined once: flag, metavar, help, and the type
that validates the value when the command line is read, so a bad value is one usage error (exit 2, a line
that names the option and quotes the value) before any log is read or any file written.

    vaediag check PATH   [--rules FILE] [--kl-weight W] [--latent-dim N] [--profile P] [--baseline RUN]
                         [--run GLOB] [--tags FILE] [--steps-per-epoch N]
    vaediag report PATH... (the same)

The library checks the same values again where it takes them (:func:`vaediag.load`,
:func:`vaediag.diagnose.diagnose`), for callers that do not come through the command line.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["PROFILES", "add_run_options", "kl_weight_arg", "positive_int_arg"]

#: The checklists ``--profile`` chooses from (vaediag.diagnose.engine.PROFILES, without importing pandas).
PROFILES = ("auto", "seed", "generic")


def kl_weight_arg(text: str) -> float:
    """``--kl-weight``: a finite number >= 0.

    >>> kl_weight_arg("1e-5")
    1e-05
    """
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number like 1e-5, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def positive_int_arg(text: str) -> int:
    """``--latent-dim``, ``--steps-per-epoch``: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def add_run_options(p: argparse.ArgumentParser, *, baseline_help: str) -> None:
    """Add the options that choose, read and judge runs; ``--baseline`` says in ``baseline_help`` what it
    accepts (check also takes a run directory outside PATH, report a run id of its PATHs)."""
    p.add_argument("--rules", metavar="FILE", help="a rules TOML file merged over vaediag/rules/default.toml")
    p.add_argument("--kl-weight", metavar="W", type=kl_weight_arg,
                   help="the runs' KL weight: it wins over what their logs and config say (a disagreement is shown)")
    p.add_argument("--latent-dim", metavar="N", type=positive_int_arg,
                   help="the runs' latent size (number of latent values), over their parameters")
    p.add_argument("--profile", choices=PROFILES,
                   help="the checklist: seed (the seed's KL band, milestones and success criteria), generic "
                        "(scale-free criteria only) or auto (seed for vaediag's trainer's runs; the default)")
    p.add_argument("--baseline", metavar="RUN", help=baseline_help)
    p.add_argument("--run", metavar="GLOB", dest="run_glob", help="only runs whose id matches this glob")
    p.add_argument("--tags", metavar="FILE", help="a TOML file mapping your tag names to vaediag's terms")
    p.add_argument("--steps-per-epoch", metavar="N", type=positive_int_arg,
                   help="align steps to epochs for runs that log no epoch")
