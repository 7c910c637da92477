# Over 450 lines on purpose: one job (a trial judged and pruned by the engine's diagnosis); the two pruners (in process, run directory) differ only in how epochs arrive and share _TrialPruning.
"""Optuna: report each epoch of a trial to Optuna and prune the trial when vaediag's diagnosis fails it.

The diagnosis is the engine's (:func:`vaediag.diagnose.engine.diagnose_run`, the rules ``vaediag check``
runs), judged after every epoch. Two entry points, for the two ways a training run reaches vaediag:

* :class:`RunDirPruner`: a run that writes logs vaediag reads (``python -m train``, Lightning's
  TensorBoard or CSV logger, any TensorBoard writer). Give it the run directory and call
  :meth:`~RunDirPruner.poll` while the run trains (a supervising loop, a callback): each call that finds
  new data reads the logs with :func:`vaediag.load` and diagnoses them.
* :class:`EpochPruner`: any training loop, in process. The loop hands over each epoch's metrics by
  canonical term, as :meth:`vaediag.watch.KLWatchdog.step` takes them; they become a tidy frame
  (:func:`vaediag.logs.inprocess.frame_from_epochs`, the trainer's own tags) that the engine reads like a log.

Each completed epoch's value of the *objective* is reported with ``trial.report(value, step=epoch)``
(0-based epoch index, as Optuna's pruners expect). The default objective is the val PSNR (higher is
better: create the study with ``direction="maximize"``) when the run logs it, else the val reconstruction
loss (lower is better: ``direction="minimize"``); ``objective="val/ssim"``, ``"train/recon"``, ... picks
another, and a study whose direction contradicts the objective's is refused with a one-line error rather
than optimised backwards. Non-finite values are not reported (the ``nonfinite`` rule judges them).

**What prunes** (:data:`PRUNE_ON`): a ``fail`` finding of

* ``kl_collapse``: the posterior has collapsed (KL per latent dim at the prior, few active units), judged
  by the engine from its own ``[collapse] after`` epoch on (5 by default);
* ``dead_model``: the reconstructions do not depend on the input (``recon_spread`` below its threshold).
  The rule's other evidence, a val PSNR that does not beat each image's own mean colour, does *not*
  prune: a healthy run starts below that baseline and climbs past it (on the demo data at kl_weight 1e-6
  it is still below after 6 epochs while its reconstructions already follow the input);
* ``nonfinite``: NaN or inf in a loss or metric (the run diverged; it prunes even during warm-up);
* ``trend``: a reconstruction regressing far above its best (the engine's ``regress_fail``).

No verdict about the first ``n_warmup_epochs`` epochs prunes (default 3; NaN excepted), as Optuna's
``n_warmup_steps``: a young model may not follow its input yet and still recover. Measured on the demo
data (12 steps an epoch): at kl_weight 4.1e-4 the reconstructions vary 22 %, 19 % and 23 % as much as the
inputs after epochs 1-3 (``dead_model`` fails), then 49 % after epoch 4 and 95 % after epoch 7; at 1e-4,
22 % after epoch 1, then 61 %; at 1e-3 and above they stay under 2 % from epoch 2 on and the posterior
collapses. Epochs of fewer steps may need more.

Left out on purpose: ``penalty_share`` and ``kl_too_high`` (a heavy KL term is what a kl_weight study
explores, not a broken trial; its collapse is what prunes), the milestones and ``success`` (absolute
targets a still-young trial cannot meet yet), and ``val_recon_divergence`` (overfitting is a ``warn`` in
the engine: the trial's earlier epochs are still good). Pass ``prune_on=`` to choose otherwise.

Every check records on the trial, as user attributes, ``vaediag_verdict`` (``pruned``, or the diagnosis's
worst severity: ``fail``, ``warn``, ``pass``) and ``vaediag_reason`` (the pruning finding with its
numbers, or the ids of the worst findings), and once ``vaediag_objective`` (``"val/psnr (maximize)"``),
so ``study.trials_dataframe()`` shows why each trial was pruned. The ``TrialPruned`` message is the
pruning finding's message. The study's own pruner (``MedianPruner`` ...) is asked too, after vaediag
(``study_pruner=False`` leaves it out).

    import optuna
    from vaediag.integrations.optuna import EpochPruner

    def objective(trial):
        kl_weight = trial.suggest_float("kl_weight", 1e-7, 1e-1, log=True)
        pruner = EpochPruner(trial, latent_dim=32)          # raises optuna.TrialPruned from step()
        for epoch in range(20):
            ...                                             # train one epoch with kl_weight
            pruner.step(epoch, {"kl": kl, "recon": recon, "psnr": psnr, "kl_weight": kl_weight})
        return pruner.value                                 # the last epoch's val PSNR

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=20)

``examples/optuna_kl_study.py`` runs a whole study of ``python -m train`` trials in parallel worker
processes that share an Optuna journal file, with :class:`RunDirPruner`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

try:
    import optuna
except ImportError:  # the [optuna] extra is not installed
    raise ModuleNotFoundError(
        "vaediag.integrations.optuna needs optuna: pip install 'vaediag[optuna]' (or pip install optuna)",
        name="optuna",
    ) from None

from vaediag.diagnose.engine import PROFILES, diagnose_run
from vaediag.diagnose.model import RULE_IDS, Finding, RunDiagnosis
from vaediag.diagnose.rulesfile import Rules, load_rules
from vaediag.errors import InputError, NoRunsError, UsageError
from vaediag.logs.inprocess import frame_from_epochs
from vaediag.logs.reader import load
from vaediag.terms import BOOKKEEPING_TERMS, CANONICAL_TERMS, TERM_INFO

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["PRUNE_ON", "DIRECTIONS", "EpochPruner", "RunDirPruner", "pruning_finding", "whole_epochs"]

#: Rule ids whose ``fail`` prunes a trial by default (the module docstring says why these and no others).
PRUNE_ON: tuple[str, ...] = ("kl_collapse", "dead_model", "nonfinite", "trend")
DIRECTIONS = ("maximize", "minimize")
_OBJECTIVE_TERMS = tuple(t for t in CANONICAL_TERMS if t not in BOOKKEEPING_TERMS)
_DEFAULT_OBJECTIVES = ("val/psnr", "val/recon")


def pruning_finding(diagnosis: RunDiagnosis, prune_on: Iterable[str] = PRUNE_ON) -> Finding | None:
    """The first ``fail`` finding of ``diagnosis`` (the engine's order) whose rule is in ``prune_on``, or None.

    A ``dead_model`` fail prunes only on its input-dependence evidence: its finding's ``recon_spread`` below
    the finding's threshold (a young, healthy run fails the rule's other test, PSNR above each image's mean
    colour, for its first epochs).
    """
    rules = set(prune_on)
    for f in diagnosis.findings:
        if f.severity != "fail" or f.rule not in rules:
            continue
        if f.rule == "dead_model" and not (f.term == "recon_spread" and f.value is not None
                                           and isinstance(f.threshold, (int, float)) and f.value < f.threshold):
            continue
        return f
    return None


def _check_prune_on(prune_on: Iterable[str]) -> tuple[str, ...]:
    if isinstance(prune_on, str):
        prune_on = (prune_on,)
    out = tuple(prune_on)
    for r in out:
        if r not in RULE_IDS and not (isinstance(r, str) and r.startswith("milestone_") and r[10:].isdigit()):
            raise UsageError(f"prune_on: unknown rule id {r!r} (choose from {', '.join(RULE_IDS)}, or milestone_<N>)")
    return out


def _parse_objective(spec: str) -> tuple[str, str]:
    """``"psnr"`` -> ``("val", "psnr")``; ``"train/recon"`` -> ``("train", "recon")``."""
    if not isinstance(spec, str):
        raise UsageError(f"objective must be a string such as 'psnr' or 'val/recon', got {spec!r}")
    split, _, term = spec.rpartition("/")
    split = split or "val"
    if split not in ("train", "val") or term not in _OBJECTIVE_TERMS:
        raise UsageError(f"objective {spec!r} is not a loss or metric term (choose a canonical term, optionally as "
                         f"train/<term> or val/<term>: {', '.join(_OBJECTIVE_TERMS)})")
    return split, term


def _direction_of(term: str, direction: str | None) -> str | None:
    """The direction an objective term is optimised in; None when unknown and not given."""
    if direction is not None and direction not in DIRECTIONS:
        raise UsageError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    higher = TERM_INFO[term].higher_is_better if term in TERM_INFO else None
    known = None if higher is None else ("maximize" if higher else "minimize")
    if direction is not None and known is not None and direction != known:
        raise UsageError(f"direction {direction!r} contradicts the objective {term!r}, which is "
                         f"{'higher' if higher else 'lower'} for a better model ({known})")
    return direction or known


class _TrialPruning:
    """What both entry points share: the objective, the reports, the verdict, the pruning."""

    def __init__(
        self,
        trial: "optuna.trial.BaseTrial",
        *,
        objective: str | None = None,
        direction: str | None = None,
        prune_on: Iterable[str] = PRUNE_ON,
        n_warmup_epochs: int = 3,
        study_pruner: bool = True,
        rules: Rules | str | os.PathLike[str] | None = None,
        kl_weight: float | None = None,
        latent_dim: int | None = None,
        profile: str | None = None,
    ) -> None:
        if isinstance(n_warmup_epochs, bool) or not isinstance(n_warmup_epochs, int) or n_warmup_epochs < 0:
            raise UsageError(f"n_warmup_epochs must be an integer >= 0, got {n_warmup_epochs!r}")
        if latent_dim is not None and (isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1):
            raise UsageError(f"latent_dim must be an integer >= 1, got {latent_dim!r}")
        self.trial = trial
        self.prune_on = _check_prune_on(prune_on)
        self.n_warmup_epochs = n_warmup_epochs
        self.study_pruner = study_pruner
        self.rules = rules if isinstance(rules, Rules) else load_rules(rules)
        if kl_weight is not None and not (isinstance(kl_weight, (int, float)) and not isinstance(kl_weight, bool)
                                          and math.isfinite(kl_weight) and kl_weight >= 0):
            raise UsageError(f"kl_weight must be a finite number >= 0, got {kl_weight!r}")
        if profile is not None and profile not in PROFILES:
            raise UsageError(f"unknown profile {profile!r} (choose {', '.join(PROFILES)})")
        self.kl_weight = kl_weight
        self.latent_dim = latent_dim
        self.profile = profile
        self._direction_given = direction
        self._attrs: dict[str, Any] = {}
        self.objective: tuple[str, str] | None = None  # (split, term), once resolved
        self.direction: str | None = None
        if objective is not None:
            self._set_objective(*_parse_objective(objective))
        elif direction is not None and direction not in DIRECTIONS:
            raise UsageError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        self.diagnosis: RunDiagnosis | None = None
        self.value: float | None = None  #: the latest reported objective value
        self.reported: dict[int, float] = {}  #: epoch index -> reported value
        self.pruned: str | None = None  #: the TrialPruned message, once pruned
        self._next_epoch = 0

    # ---- the objective -------------------------------------------------------------------------------

    @property
    def objective_name(self) -> str | None:
        """``"val/psnr"``, once known."""
        return None if self.objective is None else f"{self.objective[0]}/{self.objective[1]}"

    def _set_objective(self, split: str, term: str) -> None:
        direction = _direction_of(term, self._direction_given)
        name = f"{split}/{term}"
        if direction is None:
            raise UsageError(f"objective {name!r}: vaediag does not know whether higher or lower is better; pass "
                             "direction='maximize' or direction='minimize'")
        study = getattr(self.trial, "study", None)
        wanted = getattr(study, "directions", None)
        if wanted is not None:
            if len(wanted) != 1:
                raise UsageError(f"the study has {len(wanted)} objectives; Optuna reports and prunes single-objective "
                                 "studies only")
            have = wanted[0].name.lower()
            if have != direction:
                raise UsageError(f"the objective {name!r} is best {'high' if direction == 'maximize' else 'low'} "
                                 f"({direction}) but the study is created with direction={have!r}: create it with "
                                 f"direction={direction!r} or pass objective= a term to {have}")
        self.objective, self.direction = (split, term), direction
        self._set_attr("vaediag_objective", f"{name} ({direction})")

    def _resolve_objective(self, d: RunDiagnosis, logged: list[str]) -> None:
        """Settle the objective on the run's logged columns (the default: val PSNR, else val recon).

        Raises:
            UsageError: the objective (by default, both val/psnr and val/recon) is not logged; the message
                lists what the run logs.
        """
        if self.objective is not None and f"{self.objective[0]}_{self.objective[1]}" in logged:
            return
        epochs = f"{d.epochs} completed epoch{'s' if d.epochs != 1 else ''}"
        if self.objective is not None:
            raise UsageError(f"objective {self.objective_name!r} is not logged by {d.run} in {epochs}; it logs "
                             f"{_show(logged)}: pass objective= one of these")
        for name in _DEFAULT_OBJECTIVES:
            split, term = name.split("/")
            if f"{split}_{term}" in logged:
                self._set_objective(split, term)
                return
        raise UsageError(f"{d.run} logs neither val/psnr nor val/recon (the default objective) in {epochs}; it logs "
                         f"{_show(logged)}: pass objective= one of these")

    # ---- judging one diagnosis -----------------------------------------------------------------------

    def _judge(self, d: RunDiagnosis, frame: "pd.DataFrame") -> RunDiagnosis:
        """Report the epochs completed since the last call, record the verdict, prune if it says so.

        ``d`` is the diagnosis of ``frame``, whole epochs only (the caller's business), so a metric not
        logged by now is not coming.
        """
        self.diagnosis = d
        if self.pruned is not None:
            raise optuna.TrialPruned(self.pruned)
        new = list(range(self._next_epoch, d.epochs))
        if new:
            self._resolve_objective(d, _logged(frame))
            column = f"{self.objective[0]}_{self.objective[1]}"
            series = d.table[column] if d.table is not None and column in d.table else {}  # no epochs: nothing
            for epoch in new:
                v = float(series.get(epoch, math.nan))
                if math.isfinite(v):
                    self.trial.report(v, step=epoch)
                    self.reported[epoch] = v
                    self.value = v
            self._next_epoch = d.epochs
        step = d.epochs - 1
        hit = pruning_finding(d, self.prune_on)
        # Warm-up: a verdict about an epoch index below n_warmup_epochs does not prune (NaN always does).
        if hit is not None and (hit.rule == "nonfinite" or (hit.epoch if hit.epoch is not None else step)
                                >= self.n_warmup_epochs):
            where = f"step {step}" if step >= 0 else "before the first epoch"
            self._prune(f"vaediag: {hit.rule} at {where}: {hit.message}", verdict_reason=f"{hit.id}: {hit.message}")
        worst = d.severity if d.severity != "info" else "pass"
        ids = [f.id for f in d.findings if f.severity == worst and worst in ("fail", "warn")]
        self._set_attr("vaediag_verdict", worst)
        self._set_attr("vaediag_reason", ", ".join(dict.fromkeys(ids)))
        if self.study_pruner and new and self.reported and self.trial.should_prune():
            pruner = type(getattr(getattr(self.trial, "study", None), "pruner", None)).__name__
            self._prune(f"Trial was pruned at epoch {step} by the study's pruner ({pruner}).",
                        verdict_reason=f"the study's pruner ({pruner}) at step {step}")
        return d

    def _prune(self, message: str, *, verdict_reason: str) -> None:
        self.pruned = message
        self._set_attr("vaediag_verdict", "pruned")
        self._set_attr("vaediag_reason", verdict_reason)
        raise optuna.TrialPruned(message)

    def _set_attr(self, key: str, value: Any) -> None:
        if self._attrs.get(key, object()) != value:  # one storage write per change, not per epoch
            self.trial.set_user_attr(key, value)
            self._attrs[key] = value

    def _diagnose(self, frame, **kw: Any) -> RunDiagnosis:
        return diagnose_run(frame, rules=self.rules, kl_weight=self.kl_weight, latent_dim=self.latent_dim,
                            profile=self.profile, **kw)


def _logged(frame: "pd.DataFrame") -> list[str]:
    """The (split, term) pairs of loss and metric rows the run logged, NaN included, as ``val_psnr`` ... (the
    epoch table's column names), sorted."""
    if not len(frame):
        return []
    pairs = frame.loc[frame["split"].isin(("train", "val")) & frame["term"].isin(_OBJECTIVE_TERMS), ["split", "term"]]
    return sorted({f"{s}_{t}" for s, t in pairs.astype(str).drop_duplicates().itertuples(index=False)})


def _show(columns: list[str]) -> str:
    if not columns:
        return "no loss or metric"
    return ", ".join(c.replace("_", "/", 1) for c in columns)


class EpochPruner(_TrialPruning):
    """Report and prune from inside any training loop: hand over each epoch's metrics with :meth:`step`.

    Args:
        trial: the Optuna trial.
        objective: the term reported to the trial (``"psnr"``, ``"val/recon"``, ``"train/recon"``); default
            val PSNR when handed over, else val ``recon``. See the module docstring for directions.
        direction: ``"maximize"`` or ``"minimize"``, needed only for a term vaediag has no direction for
            (``kl``); it must agree with the study's.
        prune_on: rule ids whose ``fail`` prunes (default :data:`PRUNE_ON`).
        n_warmup_epochs: a verdict about an epoch index below this does not prune (``nonfinite`` excepted),
            like Optuna's ``n_warmup_steps``; default 3, measured on the demo data (module docstring).
        study_pruner: also ask the study's pruner (``trial.should_prune()``) after each new epoch.
        rules: a rules file or :class:`~vaediag.diagnose.rulesfile.Rules` (default: vaediag's).
        kl_weight, latent_dim: what ``vaediag check --kl-weight/--latent-dim`` take. With ``latent_dim`` a
            total KL is judged per latent dim only when the reduction is known; hand over ``kl_dim_mean``
            (KL per latent dim) or ``active_units`` for the clearest collapse evidence. A total KL alone
            counts as collapse at or below ``[collapse] kl_per_dim_max`` (0.01 nats).
        profile: ``seed``, ``generic`` or ``auto`` (default: the rules file's; a loop's frame is ``generic``).
        run: the run id in messages (default ``trial_<number>``).

    :meth:`step` raises ``optuna.TrialPruned``; the caller lets it propagate out of the objective.
    """

    def __init__(self, trial: "optuna.trial.BaseTrial", *, run: str | None = None, **kwargs: Any) -> None:
        super().__init__(trial, **kwargs)
        number = getattr(trial, "number", None)
        self.run = run if run is not None else (f"trial_{number}" if number is not None else "trial")
        self._epochs: dict[int, Mapping[str, Any]] = {}
        self._walls: dict[int, float] = {}

    def step(self, epoch: int, metrics: Mapping[str, Any]) -> RunDiagnosis:
        """Diagnose the run after ``epoch`` (0-based), report the objective, prune when the verdict says so.

        Args:
            epoch: the epoch just completed; each call's must be larger than the last's.
            metrics: its metrics by canonical term: ``{"kl": ..., "recon": ..., "psnr": ...}`` are val
                values; ``train/recon`` names the split; ``kl_weight`` and ``lr`` are bookkeeping.

        Returns:
            the engine's :class:`~vaediag.diagnose.model.RunDiagnosis` of the run so far.

        Raises:
            optuna.TrialPruned: the diagnosis fails the run (the message says why) or the study's pruner
                prunes it.
            UsageError: an unknown metric key, a value that is not a number, an epoch not after the last,
                the objective not among the metrics (the message lists them), a study direction that
                contradicts the objective.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise UsageError(f"epoch {epoch!r} is not an epoch index (an integer >= 0)")
        if self._epochs and epoch <= max(self._epochs):
            raise UsageError(f"epoch {epoch} was handed over after epoch {max(self._epochs)}: hand each epoch over once, "
                             "in order")
        if not isinstance(metrics, Mapping):
            raise UsageError(f"metrics must be a mapping of canonical term to value, got {type(metrics).__name__}")
        epochs, walls = {**self._epochs, epoch: dict(metrics)}, {**self._walls, epoch: time.time()}
        frame = frame_from_epochs(epochs, run=self.run, wall_times=walls)  # validates before anything is kept
        self._epochs, self._walls = epochs, walls
        # The loop is running: the run has not finished (milestones it has not reached are pending).
        return self._judge(self._diagnose(frame, run=self.run, finished=False), frame)


class RunDirPruner(_TrialPruning):
    """Report and prune from a run directory's logs, while the run trains (``python -m train``, Lightning ...).

    Args:
        trial: the Optuna trial.
        run_dir: the run's directory (the one holding its event files or ``metrics.csv``).
        tags: extra tag mappings for foreign logs, as ``vaediag check --tags`` takes them.
        **kwargs: as :class:`EpochPruner` (objective, direction, prune_on, n_warmup_epochs, study_pruner,
            rules, kl_weight, latent_dim, profile).

    Call :meth:`poll` as often as you like (every second, at each epoch end), and once more with
    ``final=True`` after the training process has ended: it reads the logs only when a file in the run
    directory changed, reports every epoch completed since the last call, and raises ``optuna.TrialPruned``
    when the diagnosis fails the run. Stop the training process when it does.
    """

    def __init__(self, trial: "optuna.trial.BaseTrial", run_dir: str | os.PathLike[str], *,
                 tags: Any = None, **kwargs: Any) -> None:
        super().__init__(trial, **kwargs)
        self.run_dir = Path(run_dir)
        self.tags = tags
        self._signature: tuple | None = None

    def _files(self) -> tuple:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.run_dir):
            dirnames[:] = sorted(d for d in dirnames if d != "checkpoints")  # checkpoints are no logs
            for name in sorted(filenames):
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except OSError:
                    continue
                out.append((dirpath, name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def poll(self, *, final: bool = False) -> RunDiagnosis | None:
        """Read and judge the run's whole epochs if its files changed since the last call.

        A live run's last epoch is still being written (its validation scalars arrive one by one), so it is
        judged once the next epoch has begun; ``final=True``, for the poll after the training process has
        ended, judges everything, the last epoch and a NaN that ended the run included.

        Returns:
            the latest diagnosis (the previous one when nothing changed), or None while the run has not
            completed an epoch.

        Raises:
            optuna.TrialPruned: the diagnosis fails the run, or the study's pruner prunes it.
            InputError: the run directory does not exist.
            UsageError: it holds several runs; the objective is not logged (the message lists what is).
        """
        if self.pruned is not None:
            raise optuna.TrialPruned(self.pruned)
        if not self.run_dir.is_dir():
            raise InputError(f"run directory {str(self.run_dir)!r} does not exist (or is not a directory)")
        sig = self._files()
        if sig == self._signature and not final:
            return self.diagnosis
        try:
            rs = load(self.run_dir, tags=self.tags)
        except NoRunsError:
            return None  # the run has not written its first event yet
        self._signature = sig
        if len(rs.runs) != 1:
            shown = ", ".join(list(rs.runs)[:5])
            raise UsageError(f"{str(self.run_dir)!r} holds {len(rs.runs)} runs ({shown}); give one run directory")
        ((run, info),) = rs.runs.items()
        frame = rs.frame if final else whole_epochs(rs.frame)
        if not len(frame):
            return self.diagnosis
        # A live run has not finished (milestones it has not reached are pending); after it ended, the
        # engine decides (the planned epochs, the idle time).
        return self._judge(self._diagnose(frame, run=run, info=info, finished=None if final else False), frame)


def whole_epochs(frame: "pd.DataFrame") -> "pd.DataFrame":
    """A live run's rows without its last epoch, which may be half written (rows without an epoch stay)."""
    epoch = frame["epoch"].to_numpy(dtype=float)
    if not len(epoch) or np.isnan(epoch).all():
        return frame
    return frame[~(epoch >= np.nanmax(epoch))]
