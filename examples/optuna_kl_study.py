"""A kl_weight study with Optuna on the demo data, where vaediag prunes the trials its diagnosis fails.

Each trial trains the demo's VAE (``vaediag demo``'s data generator, model and loss recipe, the ST-LPIPS
term off: by far the costliest term on a CPU, ``python -m bench perceptual_cost``) with ``python -m train``
at a kl_weight Optuna samples log-uniformly from [1e-7, 1e-1], and returns the last epoch's val PSNR (the
study maximises it). While a trial trains, :class:`vaediag.integrations.optuna.RunDirPruner` reads its run
directory every second, reports each epoch's val PSNR to the trial, and prunes the trial when the engine's
diagnosis fails it (posterior collapse, reconstructions that do not depend on the input, NaN, a regressing
reconstruction) after the pruner's warm-up (``--warmup-epochs``, 3); the training process is then
stopped. The first trial is enqueued at kl_weight 0.1, the top of the range, which collapses: a study of
more epochs than the warm-up shows a pruned trial and why.

Trials run in parallel: ``--workers`` worker processes (default 2, one per core, each trial one torch
thread) share one study in Optuna's own storage, a journal file (``JournalStorage`` with a
``JournalFileBackend``), as separate machines would.

    python examples/optuna_kl_study.py                        # 8 trials, 2 workers, 8 epochs: 163 CPU-seconds
    python examples/optuna_kl_study.py --trials 4 --epochs 5   # a quicker look
    python examples/optuna_kl_study.py --resume --trials 4     # 4 more trials in the same study

Everything goes under ``--out`` (default ``logs/optuna``, git-ignored): the journal ``<study>.journal``,
each trial's run ``<study>/trial_<N>/version_0`` (``vaediag check`` and ``vaediag report`` read them) and
its console output ``<study>/trial_<N>.log``. Nothing is deleted or overwritten: a journal that exists is
refused unless ``--resume`` adds trials to it, and the trainer always claims a new ``version_N``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KL_RANGE = (1e-7, 1e-1)
FIRST = (0.1,)  # enqueued: the top of the range, where the posterior collapses


def train_flags(*, perceptual: bool) -> list[str]:
    """The demo's model and loss recipe as ``python -m train`` flags (the per-run fields left out)."""
    from train.config import TrainConfig

    from vaediag.commands import demo

    per_run = ("train_npy", "val_npy", "logdir", "name", "checkpoint_dir", "epochs", "kl_weight", "resume", "quiet")
    base = TrainConfig()
    flags = demo.demo_config().replace(**{k: getattr(base, k) for k in per_run}).to_argv()
    return flags if perceptual else flags + ["--perceptual-weights", "none"]


def storage(journal: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))


# --------------------------------------------------------------------------------------------------
# One trial: a python -m train process, watched through its run directory


def _wait_for_run_dir(announce: Path, proc: subprocess.Popen, timeout: float = 120.0) -> Path | None:
    """The run directory the trainer names in $VAEDIAG_RUN_DIR_FILE (written whole, newline last)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        text = announce.read_text() if announce.is_file() else ""
        if text.endswith("\n") and Path(text.strip()).is_dir():
            return Path(text.strip())
        if proc.poll() is not None:
            return None
        time.sleep(0.1)
    return None


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the trainer saves its checkpoint and exits), then SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_objective(args: argparse.Namespace, worker: int):
    import optuna

    from vaediag.integrations.optuna import RunDirPruner
    from vaediag.watch.control import RUN_DIR_FILE_ENV, WATCHDOG_PID_ENV

    project = Path(args.out) / args.study
    data = Path(args.data_dir)
    flags = train_flags(perceptual=args.perceptual)

    def objective(trial: optuna.Trial) -> float:
        kl_weight = trial.suggest_float("kl_weight", *KL_RANGE, log=True)
        name = f"trial_{trial.number}"
        log = project / f"{name}.log"
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="vaediag_optuna_") as tmp:
            announce = Path(tmp) / "run_dir"
            env = {**os.environ, RUN_DIR_FILE_ENV: str(announce), "OMP_NUM_THREADS": str(args.threads),
                   "MKL_NUM_THREADS": str(args.threads)}
            env.pop(WATCHDOG_PID_ENV, None)  # nobody steers these runs: the loop must not wait for a watchdog
            cmd = [sys.executable, "-m", "train", "--train-npy", str(data / "train.npy"), "--val-npy",
                   str(data / "val.npy"), "--logdir", str(project), "--name", name, "--epochs", str(args.epochs),
                   "--seed", str(args.seed), "--kl-weight", repr(kl_weight), "--quiet", *flags]
            with open(log, "ab") as out:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, cwd=ROOT)
            try:
                run_dir = _wait_for_run_dir(announce, proc)
                if run_dir is None:
                    proc.wait()
                    raise RuntimeError(f"python -m train exited {proc.returncode} before naming its run (see {log})")
                trial.set_user_attr("run_dir", str(run_dir))
                pruner = RunDirPruner(trial, run_dir, n_warmup_epochs=args.warmup_epochs)
                while proc.poll() is None:
                    pruner.poll()
                    time.sleep(args.poll)
                pruner.poll(final=True)  # the last epoch
            except optuna.TrialPruned as pruned:
                _stop(proc)
                _say(worker, trial.number, kl_weight, f"pruned after {len(pruner.reported)} epoch(s), "
                     f"{time.monotonic() - t0:.0f} s: {pruned}")
                raise
            except BaseException:
                _stop(proc)
                raise
        if proc.returncode != 0:
            raise RuntimeError(f"python -m train exited {proc.returncode} (see {log})")
        if pruner.value is None:
            raise RuntimeError(f"the run logged no val PSNR (see {log})")
        _say(worker, trial.number, kl_weight, f"complete: val PSNR {pruner.value:.2f} dB after {len(pruner.reported)} "
             f"epochs, {time.monotonic() - t0:.0f} s")
        return pruner.value

    return objective


def _say(worker: int, number: int, kl_weight: float, text: str) -> None:
    print(f"[worker {worker}] trial {number} (kl_weight {kl_weight:.2g}) {text}", flush=True)


def worker_main(args: argparse.Namespace, worker: int, n_trials: int) -> None:
    """One worker process: ``n_trials`` trials, one after another, in the shared study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the objective prints one line per trial
    study = optuna.load_study(study_name=args.study, storage=storage(Path(args.journal)),
                              sampler=optuna.samplers.TPESampler(seed=args.seed + worker))
    from vaediag.errors import VaediagError

    # A trial whose training process fails is recorded as FAIL and the worker goes on; a VaediagError (a
    # usage mistake) stops it with one line.
    try:
        study.optimize(make_objective(args, worker), n_trials=n_trials, catch=(RuntimeError,))
    except VaediagError as exc:
        print(f"[worker {worker}] error: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # its trial's training process was stopped on the way out
        sys.exit(130)


# --------------------------------------------------------------------------------------------------
# The study


def summary(study, *, numbers: set[int]) -> list[str]:
    """The trials run now: state, kl_weight, val PSNR, vaediag's verdict; then the best and the pruned."""
    import optuna

    trials = [t for t in study.get_trials(deepcopy=False) if t.number in numbers]
    lines = [f"{'trial':>5}  {'kl_weight':>9}  {'state':<8}  {'val PSNR':>8}  {'epochs':>6}  vaediag"]
    for t in trials:
        w = t.params.get("kl_weight")
        value = "-" if t.value is None else f"{t.value:.2f}"
        verdict = t.user_attrs.get("vaediag_verdict", "-")
        reason = t.user_attrs.get("vaediag_reason", "")
        if verdict == "pruned":
            reason = reason.split(":")[0]  # the rule; the reason in full is listed below
        text = f"{verdict}{': ' + reason if reason else ''}"
        lines.append(f"{t.number:>5}  {'-' if w is None else format(w, '.2g'):>9}  {t.state.name:<8}  {value:>8}  "
                     f"{len(t.intermediate_values):>6}  {text if len(text) <= 70 else text[:69] + '…'}")
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    lines.append("")
    if done:
        best = max(done, key=lambda t: t.value)
        lines.append(f"best: trial {best.number}, kl_weight {best.params['kl_weight']:.2g}: val PSNR "
                     f"{best.value:.2f} dB after {len(best.intermediate_values)} epochs ({best.user_attrs.get('run_dir')})")
    else:
        lines.append("best: no trial completed")
    if pruned:
        lines.append(f"pruned: {len(pruned)} of {len(trials)}:")
        for t in pruned:
            lines.append(f"  trial {t.number} (kl_weight {t.params['kl_weight']:.2g}), after "
                         f"{len(t.intermediate_values)} epoch(s): {t.user_attrs.get('vaediag_reason', '?')}")
    else:
        lines.append(f"pruned: none of {len(trials)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from vaediag.errors import VaediagError

    try:
        return _main(argv)
    except VaediagError as exc:  # demo data of other sizes in --data-dir, a usage mistake: one line
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8, help="trials to run, over all workers (default 8)")
    p.add_argument("--workers", type=int, default=2, help="worker processes, each one trial at a time (default 2)")
    p.add_argument("--epochs", type=int, default=8, help="epochs per trial (default 8)")
    p.add_argument("--n-train", type=int, default=96, help="demo training crops (default 96, the demo's)")
    p.add_argument("--n-val", type=int, default=32, help="demo validation crops (default 32, the demo's)")
    p.add_argument("--study", default="kl_study", help="the study's name (default kl_study)")
    p.add_argument("--out", default=str(ROOT / "logs" / "optuna"),
                   help="where the journal and the runs go (default logs/optuna)")
    p.add_argument("--data-dir", default=None,
                   help="demo data directory (default data/optuna_<n-train>_<n-val>; built when absent)")
    p.add_argument("--enqueue", default=",".join(map(str, FIRST)),
                   help="kl_weights tried first in a new study, comma-separated (default 0.1, which collapses; "
                        "'' for none)")
    p.add_argument("--resume", action="store_true", help="add trials to the study in an existing journal")
    p.add_argument("--seed", type=int, default=0, help="training seed; worker i samples with seed + i")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial (default 1)")
    p.add_argument("--warmup-epochs", type=int, default=3,
                   help="no verdict about a trial's first N epochs prunes it (default 3; NaN always does)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between reads of a trial's logs (default 1)")
    p.add_argument("--perceptual", action="store_true", help="keep the ST-LPIPS term (the demo's full recipe; "
                                                            "~10x slower per step on CPU)")
    args = p.parse_args(argv)
    for name in ("trials", "workers", "epochs", "n_train", "n_val", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup_epochs < 0:
        p.error(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
    if args.poll <= 0:
        p.error(f"--poll must be > 0, got {args.poll}")
    try:
        first = [float(x) for x in args.enqueue.split(",") if x.strip()]
    except ValueError:
        p.error(f"--enqueue must be comma-separated numbers, got {args.enqueue!r}")
    bad = [w for w in first if not KL_RANGE[0] <= w <= KL_RANGE[1]]
    if bad:
        p.error(f"--enqueue {bad[0]!r} is outside the study's range [{KL_RANGE[0]:g}, {KL_RANGE[1]:g}]")
    try:
        import optuna
    except ImportError:
        p.error("this example needs optuna: pip install 'vaediag[optuna]'")
    from train.data import ensure_demo

    from vaediag.commands.demo import DEMO_SIZE

    out = Path(args.out)
    args.journal = str(out / f"{args.study}.journal")
    journal = Path(args.journal)
    if journal.exists() and not args.resume:
        p.error(f"{journal} exists (an earlier study): pass --resume to add trials to it, or another --study or --out")
    if args.resume and not journal.exists():
        p.error(f"--resume: there is no {journal} to resume")
    (out / args.study).mkdir(parents=True, exist_ok=True)
    args.data_dir = args.data_dir or str(ROOT / "data" / f"optuna_{args.n_train}_{args.n_val}")
    ensure_demo(args.data_dir, n_train=args.n_train, n_val=args.n_val, size=DEMO_SIZE)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=args.study, storage=storage(journal), direction="maximize",
                                pruner=optuna.pruners.NopPruner(),  # only vaediag prunes here
                                load_if_exists=args.resume)
    before = {t.number for t in study.get_trials(deepcopy=False)}
    if not before:
        for w in first:
            study.enqueue_trial({"kl_weight": w})
    workers = min(args.workers, args.trials)
    shares = [args.trials // workers + (i < args.trials % workers) for i in range(workers)]
    print(f"study {args.study!r}: {args.trials} trial(s) of {args.epochs} epochs on {args.n_train} demo crops, "
          f"kl_weight log-uniform in [{KL_RANGE[0]:g}, {KL_RANGE[1]:g}], {workers} worker process(es) sharing "
          f"{journal}", flush=True)
    if args.epochs <= args.warmup_epochs:
        print(f"note: with --epochs {args.epochs} and --warmup-epochs {args.warmup_epochs} only a NaN can prune a "
              "trial", flush=True)
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker_main, args=(args, i, n), name=f"worker {i}") for i, n in enumerate(shares)]
    for w in procs:
        w.start()
    try:
        for w in procs:
            w.join()
    except KeyboardInterrupt:
        for w in procs:
            w.join()  # each worker got the SIGINT too: it stops its trial's training process and exits
        return 130
    seconds = time.perf_counter() - t0
    study = optuna.load_study(study_name=args.study, storage=storage(journal))
    now = {t.number for t in study.get_trials(deepcopy=False)} - before
    print()
    print("\n".join(summary(study, numbers=now)))
    print(f"\n{len(now)} trial(s) in {seconds:.0f} s; the study is in {journal} "
          f"(optuna.load_study(study_name={args.study!r}, storage=JournalStorage(JournalFileBackend(...))))")
    failed = [w.name for w in procs if w.exitcode != 0]
    if failed:
        print(f"{', '.join(failed)} exited with an error (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
