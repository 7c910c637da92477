"""The experiment that shows the watchdog works: a fixed-kl_weight sweep against runs under `vaediag watch`.

On demo data (256 train / 64 val crops) and the demo's model and loss recipe
(``vaediag.commands.demo.demo_config``; the ST-LPIPS term off unless ``--perceptual``, see ``_demo_flags``),
with the same epoch budget for every run:

* five runs at a fixed kl_weight, log-spaced from 1e-2 to 1e-7 (1e-2, 5.6e-4, 3.2e-5, 1.8e-6, 1e-7);
* one run per watchdog policy (default: ladder, geco, controlvae), each started at kl_weight 1e-2, the
  worst starting point of the sweep, and left to the policy within the sweep's range [1e-7, 1e-2].

Then a markdown report (default ``reports/kl_sweep.md``) with the final val PSNR and SSIM of every run, the
best fixed value, each watchdog run's gap to it (goal: within 0.5 dB PSNR, i.e. the sweep's answer for a
fifth of its compute), which policy did best, and the decisions each watchdog made (from its journal).

Not part of CI: the full run takes up to about half an hour on 2 CPU cores. Runs go to
``logs/kl_sweep/<run>/version_N`` (never deleted); a run that already finished with the same epoch budget
is reused, so an interrupted experiment continues where it stopped (``--fresh`` trains everything again).

    python scripts/kl_sweep_experiment.py                      # the full experiment (~20 min on 2 idle cores)
    python scripts/kl_sweep_experiment.py --epochs 1 --report /tmp/kl_sweep_smoke.md   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["RunResult", "SWEEP", "final_metrics", "render_report", "main"]

ROOT = Path(__file__).resolve().parent.parent
SWEEP = tuple(10.0 ** (-2 - 1.25 * i) for i in range(5))  # 1e-2 ... 1e-7, log-spaced
START_KL_WEIGHT = 1e-2
GOAL_DB = 0.5
POLICIES = ("ladder", "geco", "controlvae")


@dataclass
class RunResult:
    """One run of the experiment and what its logs say at the end."""

    name: str
    kind: str  # "fixed" or "watch"
    start_kl_weight: float
    policy: str | None = None
    run_dir: str | None = None
    exit_code: int | None = None
    seconds: float | None = None
    epochs: int = 0
    psnr: float | None = None
    ssim: float | None = None
    kl: float | None = None
    final_kl_weight: float | None = None
    final_mode: str = "vae"
    decisions: list[dict] = field(default_factory=list)
    reused: bool = False


def _fmt_w(w: float | None) -> str:
    return "-" if w is None else f"{w:.2g}"


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def final_metrics(run_dir: str | Path) -> dict:
    """Epochs done and the last epoch's val PSNR, SSIM, KL, and the last kl_weight / mode, from the logs."""
    import vaediag

    f = vaediag.load(run_dir).frame

    def last(term: str, split: str) -> float | None:
        s = f[(f["term"] == term) & (f["split"] == split)]
        return float(s.sort_values("step")["value"].iloc[-1]) if len(s) else None

    val_psnr = f[(f["term"] == "psnr") & (f["split"] == "val")]
    ae = last("ae_mode", "train")
    return {"epochs": int(len(val_psnr)), "psnr": last("psnr", "val"), "ssim": last("ssim", "val"),
            "kl": last("kl", "val"), "final_kl_weight": last("kl_weight", "train"),
            "final_mode": "ae" if ae is not None and ae >= 0.5 else "vae"}


# --------------------------------------------------------------------------------------------------
# Running


def _demo_flags(*, perceptual: bool = False, n_train: int = 256, n_val: int = 64) -> tuple[list[str], dict]:
    """The demo's training configuration as command-line flags (only where it differs from the defaults).

    By default the ST-LPIPS term is off: it is ~95 % of a CPU step, and with it 2 cores afford ~300 steps per
    run, where every kl_weight is still at the mean image (~12.5 dB). Without it each run gets ~1,300 steps,
    enough for the kl_weights to differ. ``--perceptual`` keeps the full recipe.
    """
    from train.config import TrainConfig

    from vaediag.commands import demo

    # Where the runs go, how long and at which kl_weight is set per run: those fields stay at their defaults,
    # which to_argv() leaves out.
    per_run = ("train_npy", "val_npy", "logdir", "name", "checkpoint_dir", "epochs", "kl_weight", "resume", "quiet")
    base = TrainConfig()
    flags = demo.demo_config().replace(**{k: getattr(base, k) for k in per_run}).to_argv()
    if not perceptual:
        flags += ["--perceptual-weights", "none"]
    data = {"n_train": n_train, "n_val": n_val, "size": demo.DEMO_SIZE}
    return flags, data


def _latest_version(project: Path, name: str) -> Path | None:
    d = project / name
    versions = sorted(d.glob("version_*"), key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit() else -1)
    return versions[-1] if versions else None


def _run(cmd: list[str], *, log: Path, env: dict) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n".encode())
        fh.flush()
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return rc, time.perf_counter() - t0


def _policy_args(policy: str, epochs: int) -> list[str]:
    """Each policy with the seed's targets; the ladder's milestones scaled to the budget (10/30 of ~100)."""
    common = ["--min-kl-weight", "1e-7", "--max-kl-weight", "1e-2"]
    if policy == "ladder":
        reduce_at = max(1, round(epochs * 0.1))
        ae_at = max(reduce_at + 1, round(epochs * 0.3))
        return common + ["--param", f"reduce_at={reduce_at}", "--param", f"ae_at={ae_at}",
                         "--param", f"stop_at={max(ae_at, epochs + 1)}"]
    if policy == "geco":
        return common + ["--target-psnr", "30"]  # the seed's success criterion (PSNR > 30 dB)
    return common + ["--target-kl", "500"]


def run_experiment(args: argparse.Namespace) -> list[RunResult]:
    from train.data import ensure_demo

    flags, data = _demo_flags(perceptual=args.perceptual, n_train=args.n_train, n_val=args.n_val)
    data_dir = ROOT / "data" / f"kl_sweep_{args.n_train}_{args.n_val}"
    train_npy, val_npy = ensure_demo(data_dir, **data)
    project = ROOT / "logs" / "kl_sweep"
    project.mkdir(parents=True, exist_ok=True)
    out_log = project / "experiment_output.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    train = [sys.executable, "-m", "train", "--train-npy", str(train_npy), "--val-npy", str(val_npy),
             "--logdir", str(project),  # checkpoints beside each run, in its version_N/checkpoints/
             "--epochs", str(args.epochs), "--seed", str(args.seed), "--quiet", *flags]

    plan = [RunResult(f"fixed_{w:.1e}", "fixed", w) for w in args.weights]
    plan += [RunResult(f"watch_{p}", "watch", START_KL_WEIGHT, policy=p) for p in args.policies]
    t_all = time.perf_counter()
    for i, r in enumerate(plan, 1):
        prev = _latest_version(project, r.name)
        if prev is not None and not args.fresh:
            m = final_metrics(prev) if list(prev.glob("events.out.tfevents.*")) else {"epochs": 0}
            done = prev / "run.json"
            if m["epochs"] == args.epochs and done.is_file():
                saved = json.loads(done.read_text())
                r.__dict__.update({k: v for k, v in saved.items() if k in r.__dict__})
                r.reused = True
                print(f"[{i}/{len(plan)}] {r.name}: reusing {prev} ({m['epochs']} epochs)", flush=True)
                continue
        cmd = train + ["--name", r.name, "--kl-weight", format(r.start_kl_weight, ".10g")]
        if r.kind == "watch":
            cmd = [sys.executable, "-m", "vaediag.cli", "watch", "--no-live", "--poll", "0.2", "--policy", r.policy,
                   *_policy_args(r.policy, args.epochs), "--", *cmd]
        print(f"[{i}/{len(plan)}] {r.name}: {shlex.join(cmd[:8])} ...", flush=True)
        r.exit_code, r.seconds = _run(cmd, log=out_log, env=env)
        run_dir = _latest_version(project, r.name)
        r.run_dir = str(run_dir) if run_dir else None
        if run_dir is not None and list(run_dir.glob("events.out.tfevents.*")):
            r.__dict__.update(final_metrics(run_dir))
        if r.kind == "watch" and run_dir is not None and (run_dir / "watchdog.jsonl").is_file():
            from vaediag.watch import read_journal

            r.decisions = [{k: d.get(k) for k in ("epoch", "action", "kl_weight", "mode", "applied", "seq", "reason",
                                                  "declined")}
                           for d in read_journal(run_dir) if d.get("event") == "decision" and d["action"] != "keep"]
        if run_dir is not None and r.exit_code == 0:
            (run_dir / "run.json").write_text(json.dumps(asdict(r), indent=2))
        eta = (time.perf_counter() - t_all) / i * (len(plan) - i)
        print(f"    exit {r.exit_code} in {r.seconds:.0f} s: {r.epochs} epochs, PSNR {_fmt(r.psnr, '.2f')} dB, "
              f"SSIM {_fmt(r.ssim, '.3f')}, final kl_weight {_fmt_w(r.final_kl_weight)} ({r.final_mode}); "
              f"about {eta / 60:.0f} min to go", flush=True)
    return plan


# --------------------------------------------------------------------------------------------------
# Reporting


def render_report(results: list[RunResult], *, epochs: int, setup: str, command: str) -> str:
    """The markdown report: verdict, run table, each watchdog's decisions, how to reproduce."""
    fixed = [r for r in results if r.kind == "fixed" and r.psnr is not None]
    watch = [r for r in results if r.kind == "watch"]
    lines = ["# kl_weight sweep vs the watchdog", "",
             f"Generated by `scripts/kl_sweep_experiment.py` on "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. {setup}", ""]
    lines += ["## Result", ""]
    best = max(fixed, key=lambda r: r.psnr) if fixed else None
    if best is None:
        lines.append("No fixed-weight run finished, so there is nothing to compare against.")
    else:
        sweep_s = sum(r.seconds or 0.0 for r in results if r.kind == "fixed")
        lines.append(f"The best fixed kl_weight was **{_fmt_w(best.start_kl_weight)}**: val PSNR "
                     f"{best.psnr:.2f} dB, SSIM {_fmt(best.ssim, '.3f')} after {best.epochs} epochs. "
                     f"The sweep took {len(fixed)} runs ({sweep_s / 60:.1f} min).")
        lines.append("")
        for r in watch:
            if r.psnr is None:
                lines.append(f"- **{r.policy}**: the run did not finish (exit code {r.exit_code}).")
                continue
            gap = r.psnr - best.psnr
            verdict = "meets" if gap >= -GOAL_DB else "misses"
            lines.append(f"- **{r.policy}**, started at {_fmt_w(r.start_kl_weight)}: PSNR {r.psnr:.2f} dB "
                         f"({gap:+.2f} dB against the best fixed value), SSIM {_fmt(r.ssim, '.3f')}; it "
                         f"**{verdict}** the goal of {GOAL_DB} dB, in one run ({(r.seconds or 0) / 60:.1f} min). "
                         f"It ended at kl_weight {_fmt_w(r.final_kl_weight)}"
                         f"{' in autoencoder mode' if r.final_mode == 'ae' else ''} after "
                         f"{len(r.decisions)} change(s).")
        done = [r for r in watch if r.psnr is not None]
        if done:
            top = max(r.psnr for r in done)
            tied = [r for r in done if r.psnr >= top - 0.005]  # the same to the reported 0.01 dB
            names = " and ".join(f"**{r.policy}**" for r in tied)
            lines += ["", f"Best policy: {names} ({top:.2f} dB PSNR{', a tie' if len(tied) > 1 else ''})."]
    lines += ["", "## Runs", "",
              f"Every run had the same budget of {epochs} epochs. Final = the last epoch's validation metrics.", "",
              "| run | start kl_weight | final kl_weight | mode | epochs | val PSNR (dB) | val SSIM | val KL | minutes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {_fmt_w(r.start_kl_weight)} | {_fmt_w(r.final_kl_weight)} | {r.final_mode} | "
                     f"{r.epochs} | {_fmt(r.psnr, '.2f')} | {_fmt(r.ssim, '.3f')} | {_fmt(r.kl, '.4g')} | "
                     f"{_fmt((r.seconds or 0) / 60, '.1f')} |")
    for r in watch:
        lines += ["", f"## Decisions: {r.policy}", ""]
        if not r.decisions:
            lines.append("No change was decided.")
            continue
        lines += ["| after epoch | action | kl_weight | applied | reason |", "|---|---|---|---|---|"]
        for d in r.decisions:
            reason = str(d.get("reason", "")).replace("|", "\\|")
            if d.get("declined"):
                reason += f" (declined: {d['declined']})"
            lines.append(f"| {d['epoch'] + 1} | {d['action']} | {_fmt_w(d.get('kl_weight'))} | "
                         f"{'yes' if d.get('applied') else 'no'} | {reason} |")
    lines += ["", "## Reproduce", "", "```", command, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=40, help="epochs per run, the same for all (default 40)")
    p.add_argument("--perceptual", action="store_true",
                   help="keep the ST-LPIPS term (the demo's full recipe; ~10x slower per step on CPU)")
    p.add_argument("--n-train", type=int, default=256, help="demo training crops (default 256)")
    p.add_argument("--n-val", type=int, default=64, help="demo validation crops (default 64)")
    p.add_argument("--policies", default=",".join(POLICIES),
                   help=f"comma-separated watchdog policies to run (default {','.join(POLICIES)})")
    p.add_argument("--weights", default=",".join(f"{w:.3g}" for w in SWEEP),
                   help="comma-separated fixed kl_weights (default: five log-spaced from 1e-2 to 1e-7)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    p.add_argument("--report", default=str(ROOT / "reports" / "kl_sweep.md"), help="markdown report to write")
    p.add_argument("--fresh", action="store_true", help="train every run again instead of reusing finished ones")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    args.policies = [x.strip() for x in args.policies.split(",") if x.strip()]
    bad = [x for x in args.policies if x not in POLICIES]
    if bad:
        p.error(f"unknown policy {bad[0]!r} (choose {', '.join(POLICIES)})")
    try:
        args.weights = [float(x) for x in args.weights.split(",") if x.strip()]
    except ValueError:
        p.error(f"--weights must be comma-separated numbers, got {args.weights!r}")
    report = Path(args.report)
    if report.exists() and not args.force:
        p.error(f"{report} exists; pass --force to overwrite it")

    results = run_experiment(args)
    flags, data = _demo_flags(perceptual=args.perceptual, n_train=args.n_train, n_val=args.n_val)
    recipe = ("the demo's model and full loss recipe" if args.perceptual else
              "the demo's model and loss recipe without the ST-LPIPS term (it is ~95 % of a CPU step; without it "
              "each run affords ~1,300 steps instead of ~300)")
    setup = (f"Demo data: {data['n_train']} train / {data['n_val']} val crops of scikit-image photographs at "
             f"{data['size']} px (`train.data.build_demo`); {recipe} "
             f"(`{' '.join(flags)}`); seed {args.seed}; {args.threads} torch thread(s) per run, runs one after "
             f"another. Watchdog runs use `vaediag watch` with control.json and their policy's defaults "
             f"(`--cooldown 1`, kl_weight bounds [1e-7, 1e-2]; ladder milestones scaled to the budget: "
             f"{' '.join(_policy_args('ladder', args.epochs)[4:])}).")
    cmd = "python scripts/kl_sweep_experiment.py " + " ".join(
        x for x in (f"--epochs {args.epochs}", f"--policies {','.join(args.policies)}", f"--seed {args.seed}",
                    f"--n-train {args.n_train} --n-val {args.n_val}", "--perceptual" if args.perceptual else "") if x)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_report(results, epochs=args.epochs, setup=setup, command=cmd))
    (report.with_suffix(".json")).write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"report: {report}")
    return 0 if all(r.exit_code in (0, None) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
