"""``python -m train``: the training command line (``vaediag train`` forwards here).

Every :class:`TrainConfig` field is a flag (``kl_weight`` -> ``--kl-weight``; booleans also take
``--no-...``). Only the flags actually given count as overrides: with ``--resume CKPT`` the
checkpoint's config is the base and each explicit flag replaces its value (the loop logs each
override); with ``--config FILE`` a saved ``config.json``/``hparams.yaml`` is the base; otherwise the
defaults are. The seed's command works as written::

    python -m train --train-npy data/train.npy --val-npy data/val.npy --epochs 100

Exit codes (every failure is one line on stderr, ``Error: ...``; a usage error too: what is wrong and
``see python -m train --help``, never argparse's usage block):

* 0: done.
* 2: bad input or usage: a flag, a ``--config`` file, the data, a ``--resume`` checkpoint (its fields,
  its weights, its run directory); refused before anything is written.
* 3: the run diverged: the loss (train or val) or the weights became NaN or infinite. The step is
  logged (``vaediag check`` reports it as ``nonfinite``), nothing non-finite is checkpointed, and the
  line names the last good checkpoint; resume from it with a lower ``--lr`` or ``--kl-weight``.
* 4: a write failed: disk full, quota, I/O error, file-size limit, read-only file system, while saving
  a checkpoint or writing the event log. The previous checkpoint is intact (checkpoints are written to
  a temporary name and renamed); free the space, then ``--resume`` it.
* 130: interrupted by SIGINT/SIGTERM (checkpoint saved).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from typing import Any, NoReturn, Sequence

from vaediag.errors import Interrupted, UsageError, VaediagError
from vaediag.sanitize import path_text, terminal

from train.config import TrainConfig, load_config_file

__all__ = ["main", "build_parser", "config_from_args"]


def build_parser(prog: str = "python -m train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train the conv VAE of the seed's recipe; every loss term is logged raw and weighted.",
        argument_default=argparse.SUPPRESS,  # absent flags stay absent: only explicit ones override
    )
    parser.add_argument("--config", metavar="FILE", help="start from a saved config.json or hparams.yaml")
    for f in fields(TrainConfig):
        if not f.metadata.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = f"{f.metadata['help']} (default: {default!r})"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, type=type(default), metavar=f.name.upper(), help=help_text)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config an argument namespace asks for (see the module docstring for precedence)."""
    explicit: dict[str, Any] = dict(vars(args))
    config_file = explicit.pop("config", None)
    if explicit.get("resume"):
        if config_file:
            raise UsageError("pass either --resume (the checkpoint holds the config) or --config, not both")
        from train.loop import resume_config

        return resume_config(explicit["resume"], **explicit)
    base = load_config_file(config_file) if config_file else TrainConfig()
    return base.replace(**explicit)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m train") -> int:
    """Parse, train, and return the process exit code; errors are one line on stderr."""
    parser = build_parser(prog)

    def usage_error(message: str) -> NoReturn:  # one line and where the help is, not argparse's usage block
        raise UsageError(f"{message}; see {prog} --help")

    parser.error = usage_error  # type: ignore[method-assign]
    try:
        args = parser.parse_args(argv)
        cfg = config_from_args(args)
        from train.loop import train

        result = train(cfg)
    except Interrupted as exc:
        _line(f"Interrupted: {terminal(exc.message)}")
        return exc.exit_code
    except VaediagError as exc:
        _line(f"Error: {terminal(exc.message)}")  # a path or name as typed: escapes visible
        return exc.exit_code
    except KeyboardInterrupt:
        _line("Interrupted: stopped at once (signal received twice); no checkpoint saved")
        return 130
    if result.run_dir is not None:
        print(f"done: {result.epochs_done} epochs, {result.global_step} steps; logs in {path_text(result.run_dir)}; "
              f"checkpoint {path_text(result.checkpoint) if result.checkpoint is not None else None}")
    return 0


def _line(text: str) -> None:
    """One line on stderr in one write: the ranks of a torchrun job share one stderr, and print's separate
    write of the newline let two ranks' lines run together."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
