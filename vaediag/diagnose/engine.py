"""Run every rule family over each run of a RunSet and attach the recommendations.

    >>> import vaediag
    >>> from vaediag.diagnose import diagnose
    >>> for d in diagnose(vaediag.load("logs/ear_teacher"), baseline="ear_vae/version_1"):  # doctest: +SKIP
    ...     print(d.run, d.severity, [r.action for r in d.recommendations])

The order of findings is the order of the families: log health, KL penalty and level, collapse,
training dynamics, sharpness, then the checklist (milestones, success).
"""

from __future__ import annotations

import fnmatch
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from vaediag.diagnose import checklist, collapse, health, penalty
from vaediag.diagnose.model import Finding, Penalty, RunDiagnosis
from vaediag.diagnose.profiles import PROFILES, decide_profile, is_our_run, resolve_profile
from vaediag.diagnose.rulesfile import Rules, load_rules
from vaediag.diagnose.tables import (_STATE_SET, _VALUE_SET, _tables, completed_epochs, latest_metrics,
                                     values_present)
from vaediag.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.diagnose.arithmetic import KLConvention
    from vaediag.logs import RunInfo, RunSet

__all__ = ["diagnose", "diagnose_run", "find_run", "run_order", "check_kl_weight", "resolve_profile", "run_finished", "PROFILES"]


def find_run(runset: "RunSet", spec: str) -> str:
    """The id of the one run that ``spec`` names: its exact id, a unique id suffix (``version_1``), or
    a glob matching exactly one run.

    Raises:
        UsageError: no run or several runs match (the message lists them).
    """
    runs = list(runset.runs)
    if spec in runset.runs:
        return spec
    s = spec.strip("/")
    hits = [r for r in runs if r == s or r.endswith("/" + s)]
    if not hits:
        hits = [r for r in runs if fnmatch.fnmatchcase(r, spec)]
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(runs[:8]) + (" …" if len(runs) > 8 else "")
    if not hits:
        # No "or a run directory": `vaediag report` takes run ids only, and `vaediag check` only gets here when
        # the spec is not an existing path either.
        raise UsageError(f"--baseline {spec!r} matches no run (runs: {shown}); give one of these run ids or a unique "
                         "last part of one")
    raise UsageError(f"--baseline {spec!r} matches {len(hits)} runs ({', '.join(hits[:5])}); give one run id")


def check_kl_weight(kl_weight: float | None) -> float | None:
    """``--kl-weight`` as a float, or None when not given.

    Raises:
        UsageError: it is negative or not finite.
    """
    if kl_weight is None:
        return None
    w = float(kl_weight)
    if not (math.isfinite(w) and w >= 0):
        raise UsageError(f"--kl-weight must be a finite number >= 0, got {w!r}")
    return w


def _split_runs(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    if len(frame) == 0:
        return {}
    return {str(run): rf for run, rf in frame.groupby("run", observed=True, sort=False)}


def _run_findings(frame: pd.DataFrame, table: pd.DataFrame, info: "RunInfo | None", conv: "KLConvention",
                  pen: Penalty, *, run: str, epochs: int, ended: tuple[bool, str], prof: str, rules: Rules,
                  baseline: pd.DataFrame | None, baseline_run: str | None) -> list[Finding]:
    """Every rule's findings for a run with scalars, in the order check prints them."""
    findings: list[Finding] = []
    findings += health.check_unmapped(info, run=run)
    findings += health.check_pictures(info, frame, run=run)
    findings += _arithmetic_findings(conv, run=run)
    if ended[0]:
        findings.append(Finding("run_finished", "info", run, ended[1], epoch=epochs - 1 if epochs else None))
    if conv.has_kl:
        findings += health.check_missing_terms(table, run=run, frame=frame)
    else:
        findings += health.check_missing_terms(table, run=run, frame=frame, required=("recon",))
    findings += health.check_nonfinite(frame, run=run)
    findings += health.check_too_short(epochs, run=run, **rules.section("too_short"))
    if conv.has_kl:
        findings += _kl_findings(table, pen, conv, run=run, epochs=epochs, prof=prof, rules=rules)
    findings += health.check_dead_model(table, run=run, epochs=epochs, **rules.section("dead_model"))
    findings += health.check_val_recon_divergence(table, run=run, **rules.section("divergence"))
    findings += health.check_lr_vanished(table, run=run, **rules.section("lr"))
    findings += health.check_trends(table, run=run, epochs=epochs, **rules.section("converged"))
    findings += health.check_blurry(table, run=run, epochs=epochs, **rules.section("blurry"))
    if prof == "seed":
        if baseline_run is not None and baseline_run == run:
            baseline = table  # the baseline is not compared with itself
        findings += _checklist_findings(table, run=run, epochs=epochs, rules=rules, baseline=baseline,
                                        baseline_run=baseline_run, finished=ended[0])
    return findings


def diagnose_run(
    frame: pd.DataFrame,
    *,
    run: str | None = None,
    info: "RunInfo | None" = None,
    rules: Rules | None = None,
    kl_weight: float | None = None,
    latent_dim: int | None = None,
    baseline: pd.DataFrame | None = None,
    baseline_run: str | None = None,
    params: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    profile: str | None = None,
    now: float | None = None,
    finished: bool | None = None,
) -> RunDiagnosis:
    """Diagnose one run from its rows of the tidy frame (what the watchdog calls on a tailed frame).

    Args:
        frame: the run's rows (may be empty).
        run: its id (default: ``info.run``, else the frame's run).
        info: the reader's metadata (params, config, notes, warnings), when there is one.
        rules: thresholds (default: :func:`load_rules`).
        kl_weight: ``--kl-weight``: the run's KL weight, over anything its logs or config say.
        latent_dim: ``--latent-dim``: the run's latent size, over its parameters.
        baseline: the baseline run's epoch table (:func:`epoch_table`) for comparative checks.
        baseline_run: the baseline's id (for messages; the run itself is not compared with itself).
        params, config: override ``info.params`` / ``info.config``.
        profile: ``seed``, ``generic`` or ``auto`` (default: the rules file's ``[profiles] default``).
        now: the time "now" for the idle test of a finished run (default: the clock).
        finished: force the run's finished state (the watchdog knows its child is alive).
    """
    from vaediag.diagnose.arithmetic import read_kl_convention

    rules = rules or load_rules()
    if run is None:
        run = info.run if info is not None else (str(frame["run"].iloc[0]) if len(frame) else "run")
    if params is None:
        params = info.params if info is not None else {}
    if config is None:
        config = info.config if info is not None else {}

    ours = is_our_run(config)
    conv = read_kl_convention(frame, params=params, config=config, kl_weight=kl_weight, latent_dim=latent_dim,
                              ours=ours)
    # The profile, decided as every watchdog decides it (vaediag.diagnose.profiles).
    prof = decide_profile(profile or rules.section("profiles")["default"], config=config)
    # No row of a term the epoch table reads (no rows at all, or bookkeeping like hp_metric): the table is
    # empty, built once per process and copied (a tree of 10,000 empty runs spent most of its time here).
    termed = bool(_terms_present(frame) & _TABLE_TERMS)
    empty = None if termed else _empty_tables()
    table, present = _tables(frame) if empty is None else empty[:2]
    _judge_raw_kl(table, conv)
    epochs = completed_epochs(frame) if termed else 0
    metrics = latest_metrics(table, present, epochs=epochs) if termed else {}
    ended = run_finished(frame, info=info, params=params, epochs=epochs, now=now, forced=finished,
                         **rules.section("finished"))
    findings: list[Finding] = []

    findings += health.check_no_scalars(frame, run=run, n_scalars=info.n_scalars if info is not None else None)
    findings += health.check_log_warnings(info.warnings if info is not None else [], run=run)
    findings += health.check_kl_sign_convention(getattr(info, "facts", None) or [], run=run)
    if findings and findings[0].rule == "no_scalars":
        pen = Penalty(kl_weight=None, kl_weight_source=None, latent_dim=conv.latent_dim,
                      table=penalty.penalty_table(table) if empty is None else empty[2],
                      note="no scalars: nothing to compute")
    else:
        pen = penalty.compute_penalty(table, convention=conv, params=params, epochs=epochs)
        findings += _run_findings(frame, table, info, conv, pen, run=run, epochs=epochs, ended=ended, prof=prof,
                                  rules=rules, baseline=baseline, baseline_run=baseline_run)
    d = RunDiagnosis(run=run, epochs=epochs, metrics=metrics, penalty=pen, findings=findings, recommendations=[],
                     table=table, info=info, convention=conv, profile=prof, finished=ended)
    d.recommendations = _recommend(d, rules, config, params)
    return d


def _judge_raw_kl(table: pd.DataFrame, conv: "KLConvention") -> None:
    """Where the logged KL already includes the weight, the rules judge the raw KL: the table's KL columns scaled."""
    scale = conv.raw_scale()
    if scale != 1.0:
        for col in [c for c in table.columns if c in ("kl", "train_kl", "val_kl")]:
            table[col] = table[col] * scale


def _kl_findings(table: pd.DataFrame, pen: Penalty, conv: "KLConvention", *, run: str, epochs: int, prof: str,
                 rules: Rules) -> list[Finding]:
    """The KL families, for a run with a KL term: KL band (seed profile), penalty share, gradient share, collapse."""
    ae = conv.model == "ae"
    findings: list[Finding] = []
    if prof == "seed":
        findings += penalty.check_kl_too_high(table, run=run, epochs=epochs, autoencoder=ae, **rules.section("kl"))
    findings += penalty.check_penalty_share(pen, run=run, **rules.section("penalty"))
    findings += penalty.check_gradient_share(pen, run=run, **rules.section("gradient"))
    findings += collapse.check_kl_collapse(table, run=run, epochs=epochs, latent_dim=conv.latent_dim,
                                           per_dim_divisor=0.0 if conv.reduction is None else conv.per_dim_divisor(),
                                           autoencoder=ae, **rules.section("collapse"))
    return findings


def _checklist_findings(table: pd.DataFrame, *, run: str, epochs: int, rules: Rules,
                        baseline: pd.DataFrame | None, baseline_run: str | None, finished: bool) -> list[Finding]:
    """The seed profile's checklist: its milestones, then its success criteria."""
    conv_rules = rules.section("converged")
    return (checklist.check_milestones(table, run=run, epochs=epochs, milestones=rules.milestones,
                                       baseline=baseline, baseline_run=baseline_run, converged=conv_rules,
                                       finished=finished)
            + checklist.check_success(table, run=run, epochs=epochs, criteria=rules.success,
                                      judge_after=rules.success_judge_after, baseline=baseline,
                                      baseline_run=baseline_run, converged=conv_rules, finished=finished))


_TABLE_TERMS = _VALUE_SET | _STATE_SET
_EMPTY: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None


def _terms_present(frame: pd.DataFrame) -> set[str]:
    """The terms of a run's rows (cheap on the reader's categorical column)."""
    return values_present(frame["term"]) if len(frame) else set()


def _empty_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(epoch table, presence, penalty table) of a run without termed rows, as :func:`_tables` and
    :func:`penalty.penalty_table` make them: computed once per process; the tables a diagnosis keeps are
    copies, the presence frame (read by nothing on this path) is shared."""
    global _EMPTY
    if _EMPTY is None:
        table, present = _tables(pd.DataFrame({"run": [], "tag": [], "term": [], "split": [], "step": [],
                                               "epoch": [], "value": [], "wall_time": []}))
        _EMPTY = (table, present, penalty.penalty_table(table))
    return _EMPTY[0].copy(), _EMPTY[1], _EMPTY[2].copy()


# Parameters that hold a run's planned epoch count (ours, Lightning, HF).
_EPOCH_PARAMS = ("epochs", "max_epochs", "num_train_epochs", "n_epochs", "num_epochs")


def run_finished(
    frame: pd.DataFrame,
    *,
    info: "RunInfo | None",
    params: Mapping[str, Any],
    epochs: int,
    idle_seconds: float,
    now: float | None = None,
    forced: bool | None = None,
) -> tuple[bool, str]:
    """``(finished, why)``: the run has ended when its planned epoch count is reached, its watchdog journal
    records the training process's exit, or no event was written for ``idle_seconds`` (for a metrics log
    that records no times, its file was not modified for that long)."""
    from vaediag.diagnose.penalty import _finite_or_none, find_param

    if forced is not None:
        return forced, "the training process has exited" if forced else "the training process is running"
    hit = find_param(params, *_EPOCH_PARAMS)
    planned = _finite_or_none(hit[1]) if hit else None
    if planned is not None and planned >= 1 and epochs >= planned:
        return True, f"the run ended at epoch {epochs}: it reached its planned {int(planned)} epochs ({hit[0]})"
    if info is not None and _journal_records_exit(Path(info.path) / "watchdog.jsonl"):
        return True, f"the run ended at epoch {epochs}: its watchdog journal records the training process's exit"
    if len(frame):
        walls = frame["wall_time"].to_numpy(dtype=np.float64)
        walls = walls[~np.isnan(walls)]
        last = float(walls.max()) if len(walls) else math.nan
        what = "no event"
        mtime = getattr(info, "source_mtime", None) if info is not None else None
        if not math.isfinite(last) and mtime is not None:  # a metrics log without times: when it was last written
            last, what = float(mtime), f"no write to {', '.join(Path(f).name for f in info.source_files)}"
        now = time.time() if now is None else now
        if math.isfinite(last) and now - last > idle_seconds:
            hours = (now - last) / 3600
            return True, (f"the run ended at epoch {epochs}: {what} for {hours:,.1f} h (more than "
                          f"{idle_seconds / 3600:g} h)")
    return False, "the run may still be training"


#: The largest watchdog journal read for its exit record: the journal reader's own cap
#: (``vaediag.watch.journal.JOURNAL_MAX_BYTES``, not imported: it would load the watchdog's policies).
JOURNAL_SCAN_MAX = 256 << 20
_EXIT_MARKS = (b'"event": "exit"', b'"event":"exit"')


def _journal_records_exit(path: Path) -> bool:
    """Whether the watchdog journal ``path`` records the training process's exit. It lies in a log tree anyone
    can write: opened as a regular file only (:func:`vaediag.safeio.open_regular`: a FIFO never blocks, a
    device is never read), scanned in 1 MiB chunks, and not read at all past :data:`JOURNAL_SCAN_MAX` bytes
    (no watchdog writes that much; ``report`` says the journal is too large)."""
    from vaediag.safeio import open_regular

    try:
        fh = open_regular(path)
    except (OSError, ValueError):
        return False
    with fh:
        try:
            if os.fstat(fh.fileno()).st_size > JOURNAL_SCAN_MAX:
                return False
            keep = max(len(m) for m in _EXIT_MARKS) - 1  # a mark cut by a chunk boundary is still found
            tail, seen = b"", 0
            while seen <= JOURNAL_SCAN_MAX:  # a journal growing while it is read still stops at the cap
                chunk = fh.read(1 << 20)
                if not chunk:
                    return False
                seen += len(chunk)
                buf = tail + chunk
                if any(m in buf for m in _EXIT_MARKS):
                    return True
                tail = buf[-keep:]
        except OSError:
            return False
    return False


def _arithmetic_findings(conv, *, run: str) -> list[Finding]:
    """``loss_arithmetic``: what the total is made of and the KL convention (info); a disagreement between the
    config and the logs' arithmetic is a ``warn``."""
    from vaediag.diagnose.numbers import fmt_weight

    if not conv.notes and not conv.disagreements:
        return []
    parts = []
    if conv.has_kl:
        w = "unknown" if conv.kl_weight is None else fmt_weight(conv.kl_weight)
        logged = {"weighted": "logged already weighted", "raw": "logged raw"}.get(conv.logged or "", "logged")
        red = (conv.reduction or "unknown reduction").replace("_", " ")
        parts.append(f"KL convention: {logged}, {red}, kl_weight {w} ({conv.kl_weight_source or 'unknown'})")
    parts += [n for n in conv.notes if n not in conv.disagreements]
    out = [Finding("loss_arithmetic", "info", run, "; ".join(parts), term="kl" if conv.has_kl else None,
                   value=conv.kl_weight, key="convention")]
    for i, msg in enumerate(conv.disagreements):
        out.append(Finding("loss_arithmetic", "warn", run, f"config and arithmetic disagree: {msg}", term="kl",
                           key=f"disagreement{i}"))
    return out


def _recommend(d: RunDiagnosis, rules: Rules, config: Mapping[str, Any], params: Mapping[str, Any]):
    from vaediag.diagnose.recommend import recommend

    return recommend(d, rules=rules, config=config, params=params)


def _baseline(runset: "RunSet", runs: Mapping[str, pd.DataFrame], baseline: "str | RunSet | None"
              ) -> tuple[pd.DataFrame | None, str | None]:
    """The given baseline's epoch table and id: a run of ``runset`` by id, or the one run of a separately
    loaded RunSet (its id prefixed with its directory where it clashes); (None, None) when none is given."""
    if isinstance(baseline, str):
        base_run = find_run(runset, baseline)
        return _tables(runs.get(base_run, runset.frame.iloc[:0]))[0], base_run
    if baseline is None:
        return None, None
    if len(baseline.runs) != 1:
        ids = ", ".join(list(baseline.runs)[:5])
        raise UsageError(f"the baseline path holds {len(baseline.runs)} runs ({ids}); give one run directory")
    (only,) = baseline.runs
    base_run = f"{Path(str(baseline.root)).name}:{only}" if only in runset.runs else only
    return _tables(baseline.frame)[0], base_run


def diagnose(
    runset: "RunSet",
    *,
    rules: Rules | str | os.PathLike[str] | None = None,
    kl_weight: float | None = None,
    latent_dim: int | None = None,
    baseline: "str | RunSet | None" = None,
    profile: str | None = None,
    now: float | None = None,
) -> list[RunDiagnosis]:
    """Diagnose every run of a :class:`~vaediag.logs.RunSet`, in run-id order.

    Args:
        runset: what :func:`vaediag.load` returned.
        rules: a :class:`Rules`, the path of a rules TOML file, or None for the defaults.
        kl_weight: ``--kl-weight``: the runs' KL weight, over what their logs and configs say.
        latent_dim: ``--latent-dim``: the runs' latent size.
        profile: ``seed``, ``generic`` or ``auto`` (default: the rules file's).
        now: the clock for the finished-run idle test.
        baseline: the run the comparative checks compare with: a run id of ``runset`` (see
            :func:`find_run`), or a separately loaded one-run RunSet. None: each run is compared with
            the run that started just before it (:func:`run_order`); ``check`` and ``report`` both
            diagnose through here, so they judge a tree of runs alike.

    Raises:
        UsageError: the baseline matches no run or several; ``kl_weight`` is negative or not finite.
        RulesError, InputError: a bad rules file.
    """
    if not isinstance(rules, Rules):
        rules = load_rules(rules)
    kl_weight = check_kl_weight(kl_weight)
    runs = _split_runs(runset.frame)
    base_table, base_run = _baseline(runset, runs, baseline)

    empty = runset.frame.iloc[:0]
    out: dict[str, RunDiagnosis] = {}
    if baseline is not None or len(runset.runs) < 2:
        for run_id, info in runset.runs.items():
            out[run_id] = diagnose_run(runs.get(run_id, empty), run=run_id, info=info, rules=rules,
                                       kl_weight=kl_weight, latent_dim=latent_dim, baseline=base_table,
                                       baseline_run=base_run, profile=profile, now=now)
        return list(out.values())
    # No baseline given: "better than previous run" compares each run with the one that started just before
    # it (run_order), which is what "previous run" means in a series of runs; the first has nothing (n/a).
    prev: RunDiagnosis | None = None
    for run_id in run_order(runset):
        d = diagnose_run(runs.get(run_id, empty), run=run_id, info=runset.runs[run_id], rules=rules,
                         kl_weight=kl_weight, latent_dim=latent_dim, profile=profile, now=now,
                         baseline=prev.table if prev is not None else None,
                         baseline_run=prev.run if prev is not None else None)
        out[run_id] = d
        if d.epochs > 0:  # a run that never logged an epoch is nobody's "previous run"
            prev = d
    return [out[r] for r in runset.runs]


def run_order(runset: "RunSet") -> list[str]:
    """Run ids in the order they started (first logged wall time), runs without scalars last, by id."""
    f = runset.frame
    starts: dict[str, float] = {}
    if len(f):
        first = f.groupby("run", observed=True, sort=False)["wall_time"].min()  # on the codes: no str copy
        starts = {str(k): float(v) for k, v in first.items() if math.isfinite(v)}
    return sorted(runset.runs, key=lambda r: (r not in starts, starts.get(r, 0.0), r))
