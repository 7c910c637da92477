"""`vaediag watch`: run training under a watchdog that adjusts kl_weight while it runs, or follow a run.

    vaediag watch [--policy ladder|controlvae|geco] [--profile auto|seed|generic] [--target-kl X] [--target-psnr DB]
                  [--min-kl-weight W] [--max-kl-weight W] [--cooldown EPOCHS] [--rules FILE]
                  [--param KEY=VALUE ...]
                  [--restart [--checkpoint PATH] [--ae-flag FLAG]] [--logdir DIR] [--dry-run]
                  [--poll SECONDS] [--grace SECONDS] -- <training command...>
    vaediag watch --follow RUN_DIR [--apply] [--idle SECONDS] [policy options]

Exits with the training process's exit code (0 also when the policy stopped a converged run; 137 when the
watchdog had to SIGKILL a training process that ignored a forwarded SIGINT/SIGTERM for --grace seconds);
2 with one line for a usage error, and when another watchdog already watches the run (one watchdog per
run: the second writes nothing there, and stops the training process it started); 130 when a followed
run is left with Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from vaediag.commands.options import add_profile_option
from vaediag.errors import UsageError, VaediagError
from vaediag.sanitize import path_text, terminal

__all__ = ["add_parser", "run", "policy_from_args"]

_EPILOG = """\
examples:
  vaediag watch -- python -m train --kl-weight 1e-2 --epochs 40
  vaediag watch --policy controlvae --target-kl 300 -- python -m train --epochs 60
  vaediag watch --policy geco --target-psnr 30 --restart -- python my_train.py --kl-weight 1e-3
  vaediag watch --follow logs/ear_teacher/ear_vae/version_3 --apply --idle 600

The training command finds out where its run directory is in two ways: a script that knows the protocol
(python -m train does) writes its run directory to the file named by $VAEDIAG_RUN_DIR_FILE; for any other
script, the event files under --logdir that are its own (held open by its processes, or named after one of
their pids; without /proc, the only new run) mark its run, never another process's. Decisions go to
control.json in the run directory (read by the loop at each epoch start) or, with --restart, to a relaunch
with --kl-weight and --resume; every decision is appended to watchdog.jsonl there.
"""


def _number_option(kind: type, name: str):
    def conv(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    return conv


def _seconds(name: str, *, low: float, low_ok: bool, high: float = math.inf):
    """A finite number of seconds in range, checked when the command line is read (before any child starts)."""
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        ok = math.isfinite(v) and (v >= low if low_ok else v > low) and v <= high
        if not ok:
            rng = f"{'>=' if low_ok else '>'} {low:g}" + (f" and <= {high:g}" if math.isfinite(high) else "")
            raise argparse.ArgumentTypeError(f"{name} must be a finite number of seconds {rng}, got {text!r}")
        return v
    return conv


def _watch_usage_error(parser: argparse.ArgumentParser):
    # Watch's own wording ("Error: vaediag watch: ... (see vaediag watch --help)"), older than cli.py's
    # _one_line_error ("Error: ...; see vaediag check --help"); the tests pin both.
    def error(message: str) -> None:  # usage errors: one line, exit 2 (ARCHITECTURE)
        print(f"Error: vaediag watch: {message} (see vaediag watch --help)", file=sys.stderr)
        sys.exit(2)
    return error


def add_parser(sub: argparse._SubParsersAction, *, name: str, help: str) -> argparse.ArgumentParser:
    # Long on purpose: the option table of `vaediag watch`, one add_argument per option, in --help's order.
    p = sub.add_parser(name, help=help, description=help, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = _watch_usage_error(p)  # type: ignore[method-assign]
    g = p.add_argument_group("policy")
    g.add_argument("--policy", default="ladder", metavar="NAME",
                   help="ladder (the seed's escalation; default), controlvae (PI control to a KL set point), "
                        "geco (multiplicative update toward a PSNR target)")
    g.add_argument("--target-kl", type=_number_option(float, "--target-kl"), metavar="X",
                   help="ladder: KL above this is too high, under any profile (default: 500 under the seed profile, "
                        "none under generic); controlvae: the KL set point")
    g.add_argument("--target-psnr", type=_number_option(float, "--target-psnr"), metavar="DB",
                   help="geco: the reconstruction target (28 dB = MSE 1.58e-3 on [0, 1]); ladder: below it is blurry, "
                        "under any profile (default: 28 dB under the seed profile, none under generic)")
    g.add_argument("--min-kl-weight", type=_number_option(float, "--min-kl-weight"), metavar="W",
                   help="lowest kl_weight any decision may set (default 1e-8)")
    g.add_argument("--max-kl-weight", type=_number_option(float, "--max-kl-weight"), metavar="W",
                   help="highest kl_weight any decision may set (default 1)")
    g.add_argument("--cooldown", type=_number_option(int, "--cooldown"), default=1, metavar="EPOCHS",
                   help="epochs after a change with no further change (default 1: a change shows in a full "
                        "epoch of logs before the next)")
    g.add_argument("--kl-weight", type=_number_option(float, "--kl-weight"), metavar="W",
                   help="the run's starting kl_weight when its logs do not say (default: the command's --kl-weight)")
    add_profile_option(g, what="ladder: which numbers judge the run, decided as `vaediag check --profile` decides "
                               "it: seed (the seed's absolute KL limit 500 and PSNR floor 28 dB on top)")
    g.add_argument("--rules", metavar="FILE",
                   help="the rules TOML `vaediag check --rules` takes: the policy's milestones, cuts and guards "
                        "default to its values (see vaediag/rules/default.toml [watch])")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other policy parameter, e.g. reduce_at=2 ae_at=4 (ladder milestones), kp=0.01 ki=1e-4 "
                        "(controlvae), alpha=1 momentum=0.5 (geco); repeatable")
    r = p.add_argument_group("supervision")
    r.add_argument("--restart", action="store_true",
                   help="apply a change by stopping the run (SIGINT) and relaunching it with --kl-weight X "
                        "--resume CKPT, for scripts that do not read control.json")
    r.add_argument("--checkpoint", metavar="PATH",
                   help="--restart: the checkpoint to resume from (a path or glob; default: the newest *.pt, "
                        "*.pth or *.ckpt written after the stop, in the run's checkpoints/ folder first, then "
                        "under the current directory, the run directory or the command's --checkpoint-dir)")
    r.add_argument("--ae-flag", default="--ae", metavar="FLAG",
                   help="--restart: flag appended to switch to the autoencoder (default --ae; '' for none)")
    r.add_argument("--logdir", metavar="DIR",
                   help="where a foreign script's event files appear (default: the current directory); it may "
                        "not exist yet: the watchdog waits for the script to create it")
    r.add_argument("--dry-run", action="store_true", help="decide and record, never write control.json")
    # The watchdog owns the limits (watch.session.MAX_POLL_S, watch.child.DEFAULT_GRACE_S); importing the
    # session here would load pandas.
    r.add_argument("--poll", type=_seconds("--poll", low=0, low_ok=False, high=3600), default=1.0,
                   metavar="SECONDS", help="seconds between reads of the logs (default 1, at most 3600)")
    r.add_argument("--grace", type=_seconds("--grace", low=0, low_ok=True), default=None, metavar="SECONDS",
                   help="after forwarding SIGINT/SIGTERM to the training process, seconds it gets to exit before "
                        "its process group is killed with SIGKILL (default 30; a second Ctrl-C kills at once)")
    r.add_argument("--no-live", action="store_true", help="print one line per epoch instead of a live panel")
    f = p.add_argument_group("follow a run started elsewhere")
    f.add_argument("--follow", metavar="RUN_DIR", help="tail this run directory instead of starting a command")
    f.add_argument("--apply", action="store_true", help="--follow: write control.json (default: recommend only)")
    f.add_argument("--idle", type=_seconds("--idle", low=0, low_ok=False), default=300.0, metavar="SECONDS",
                   help="--follow: stop when the logs have not grown for this long (default 300)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the training command, after --")
    p.set_defaults(handler=run)
    return p


def _command(args: argparse.Namespace) -> list[str]:
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if cmd and cmd[0].startswith("-") and not args.follow:
        raise UsageError(f"unknown option {cmd[0]!r}; put the training command after '--'")
    return cmd


def policy_from_args(args: argparse.Namespace, command: list[str] | None = None):
    """Build the policy from the command-line options (validated; UsageError quotes bad values)."""
    from vaediag.watch.policies import POLICIES, make_policy, parse_param

    name = args.policy
    if name not in POLICIES:
        raise UsageError(f"unknown policy {name!r} (choose {', '.join(POLICIES)})")
    params: dict[str, Any] = {}
    for item in args.param:
        k, v = parse_param(name, item)
        params[k] = v
    applies = POLICIES[name].param_types
    for opt, key in (("--target-kl", "target_kl"), ("--target-psnr", "target_psnr"),
                     ("--min-kl-weight", "min_kl_weight"), ("--max-kl-weight", "max_kl_weight"),
                     ("--cooldown", "cooldown"), ("--kl-weight", "kl_weight"), ("--profile", "profile")):
        value = getattr(args, key)
        if value is None:
            continue
        if key not in applies:
            hint = {"target_kl": "it steers PSNR; use --target-psnr",
                    "target_psnr": "it steers KL; use --target-kl",
                    "profile": "its target is the one you give"}.get(key, "")
            raise UsageError(f"{opt} does not apply to policy {name!r}" + (f" ({hint})" if hint else ""))
        params[key] = value
    if "kl_weight" not in params and command:
        from vaediag.watch.argv import option_value

        given = option_value(command, "--kl-weight")
        if given is not None:
            try:
                params["kl_weight"] = float(given)
            except ValueError:
                pass  # the training script will complain about its own argument
    # Supervising, a metric the run does not log must not kill the watchdog mid-run and leave the training
    # unsupervised: the epoch is a "keep" and the journal says why (--param strict=true to fail instead).
    params.setdefault("strict", False)
    rules = None
    if getattr(args, "rules", None):
        from vaediag.diagnose.rulesfile import load_rules

        rules = load_rules(args.rules)
    return make_policy(name, rules=rules, **params)


class _RichDisplay:
    """The live panel on a terminal; one line per epoch elsewhere. Child output scrolls above the panel."""

    def __init__(self, *, live: bool) -> None:
        from rich.console import Console

        self.console = Console(highlight=False)
        self.live = None
        if live and self.console.is_terminal:
            from rich.live import Live

            from vaediag.render.panel import render_panel
            from vaediag.watch.status import WatchStatus

            self.live = Live(render_panel(WatchStatus()), console=self.console, refresh_per_second=4)

    def __enter__(self) -> "_RichDisplay":
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, status) -> None:
        if self.live is not None:
            from vaediag.render.panel import render_panel

            self.live.update(render_panel(status))

    def decision(self, status) -> None:
        from vaediag.render.panel import status_line

        self.console.print(status_line(status), markup=False, highlight=False, soft_wrap=True)
        sys.stdout.flush()

    def message(self, text: str) -> None:
        # Messages carry run directories, commands, notes and the child's output lines (written to a file,
        # so well-behaved tools send no colour codes): every escape sequence shows, none acts.
        self.console.print(terminal(text), markup=False, highlight=False, soft_wrap=True)
        sys.stdout.flush()


def _refuse_packaged_example(run_dir: str) -> None:
    """A followed run gets its journal (and with --apply a control file) written into it: never into the example
    runs vaediag ships, which every later `vaediag check` of them would then read."""
    from vaediag.commands.examples import examples_dir

    try:
        shipped, target = examples_dir(), Path(run_dir).resolve()
        inside = target.is_relative_to(shipped) or shipped.is_relative_to(target)  # a run of them, or above them
    except (VaediagError, OSError, RuntimeError, ValueError):
        return  # no examples here, or a path the follower itself will report
    if inside:
        raise UsageError(f"{path_text(run_dir)} is one of the example runs vaediag ships: following it would write "
                         "a watchdog journal into the installation; copy them first (vaediag examples --copy "
                         "my-examples) and follow the copy")


def run(args: argparse.Namespace) -> int:
    from vaediag.watch.supervisor import Follower, Supervisor

    cmd = _command(args)
    if args.follow and cmd:
        raise UsageError("give either --follow RUN_DIR or a training command after '--', not both")
    if not args.follow and not cmd:
        raise UsageError("no training command: put it after '--', e.g. vaediag watch -- python -m train --epochs 40")
    if args.apply and not args.follow:
        raise UsageError("--apply only goes with --follow (a supervised run applies decisions unless --dry-run)")
    if args.follow and (args.restart or args.dry_run):
        raise UsageError("--follow cannot --restart or --dry-run a run it did not start (it recommends unless --apply)")
    if (args.checkpoint or args.ae_flag != "--ae") and not args.restart:
        raise UsageError("--checkpoint and --ae-flag only go with --restart")
    if args.logdir and args.follow:
        raise UsageError("--logdir is for a started command; --follow takes the run directory itself")
    if args.grace is not None and args.follow:
        raise UsageError("--grace is for a started command; --follow stops no process")
    if args.follow:
        _refuse_packaged_example(args.follow)
    policy = policy_from_args(args, cmd)

    with _RichDisplay(live=not args.no_live) as display:
        if args.follow:
            w = Follower(args.follow, policy, apply=args.apply, idle=args.idle, poll=args.poll, display=display)
        else:
            w = Supervisor(cmd, policy, logdir=args.logdir, restart=args.restart, checkpoint=args.checkpoint,
                           ae_flag=args.ae_flag or None, dry_run=args.dry_run, poll=args.poll, display=display,
                           **({"grace": args.grace} if args.grace is not None else {}))
            display.message(f"watch: {shlex.join(cmd)}  (policy {policy.name}"
                            f"{', dry run' if args.dry_run else ', restart mode' if args.restart else ''})")
        code = w.run()
        s = w.status
        where = f"; journal {Path(w.run_dir) / 'watchdog.jsonl'}" if w.run_dir else ""
        display.message(f"watch: {s.decisions} decisions, {s.changes} applied changes{where}; exit code {code}")
    return code
