"""The options ``vaediag check`` and ``vaediag report`` share, defined once: flag, metavar, help, and the type
that validates the value when the command line is read, so a bad value is one usage error (exit 2, a line
that names the option and quotes the value) before any log is read or any file written.

    vaediag check PATH   [--rules FILE] [--kl-weight W] [--latent-dim N] [--profile P] [--baseline RUN]
                         [--run GLOB] [--tags FILE] [--steps-per-epoch N]
    vaediag report PATH... (the same)
    vaediag watch ... [--profile P] (add_profile_option: the ladder's profile, decided as check decides it)

The library checks the same values again where it takes them (:func:`vaediag.load`,
:func:`vaediag.diagnose.diagnose`), for callers that do not come through the command line.
"""

from __future__ import annotations

import argparse
import math

from vaediag.diagnose.profiles import PROFILES  # pandas-free: the names check, report and watch take

__all__ = ["PROFILES", "add_profile_option", "add_run_options", "kl_weight_arg", "positive_int_arg"]


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


def add_profile_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, *, what: str) -> None:
    """``--profile``, for check, report and watch alike: ``what`` says what the seed profile adds there; the
    choices, the default (the rules file's ``[profiles] default``, auto) and how auto decides are one text."""
    p.add_argument("--profile", choices=PROFILES,
                   help=f"{what}, generic (scale-free criteria only) or auto (seed for vaediag's trainer's runs, "
                        "generic for others; the default, from the rules file's [profiles])")


def add_run_options(p: argparse.ArgumentParser, *, baseline_help: str) -> None:
    """Add the options that choose, read and judge runs; ``--baseline`` says in ``baseline_help`` what it
    accepts (check also takes a run directory outside PATH, report a run id of its PATHs)."""
    p.add_argument("--rules", metavar="FILE", help="a rules TOML file merged over vaediag/rules/default.toml")
    p.add_argument("--kl-weight", metavar="W", type=kl_weight_arg,
                   help="the runs' KL weight: it wins over what their logs and config say (a disagreement is shown)")
    p.add_argument("--latent-dim", metavar="N", type=positive_int_arg,
                   help="the runs' latent size (number of latent values), over their parameters")
    add_profile_option(p, what="the checklist: seed (the seed's KL band, milestones and success criteria)")
    p.add_argument("--baseline", metavar="RUN", help=baseline_help)
    p.add_argument("--run", metavar="GLOB", dest="run_glob", help="only runs whose id matches this glob")
    p.add_argument("--tags", metavar="FILE", help="a TOML file mapping your tag names to vaediag's terms")
    p.add_argument("--steps-per-epoch", metavar="N", type=positive_int_arg,
                   help="align steps to epochs for runs that log no epoch")
