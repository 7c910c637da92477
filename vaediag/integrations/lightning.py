# Over 450 lines on purpose: one job (the watchdog as one Lightning Callback); its hooks, the weight it reads and writes on the module and the gradient-share measurement share the callback's state.
"""A Lightning callback that steers a LightningModule's KL weight with vaediag's watchdog.

    from vaediag.integrations.lightning import KLWatchdogCallback

    trainer = L.Trainer(max_epochs=40, callbacks=[KLWatchdogCallback("ladder")])   # default logger: TensorBoard
    trainer.fit(model)        # model.kl_weight is read, and changed between epochs when the policy decides

What it does, after each epoch's validation (the sanity check and mid-epoch validations are skipped):

1. flushes the Trainer's loggers and reads what the module logged from the logger's own files
   (``TensorBoardLogger`` event files or ``CSVLogger``'s ``metrics.csv``) with the reader ``vaediag check``
   uses: any tag names the reader maps (``val_kl``, ``val/recon_loss``, ``train_loss_epoch`` ...), plus
   ``tags=`` for names it does not (the ``--tags`` mappings, as a dict or a TOML file);
2. turns them into the epoch's metrics by canonical term (the val value, else the epoch's train mean), as
   ``vaediag watch`` does (:class:`~vaediag.watch.tracker.EpochTracker`), and asks the same policy objects
   (``ladder``, ``controlvae``, ``geco``; thresholds from the same rules file, ``rules=`` to use another);
3. applies the decision to the module: ``set_kl_weight`` writes the attribute ``kl_weight_attr`` (a float
   attribute, a dotted path such as ``hparams.beta``, or a one-element tensor buffer, filled in place);
   ``switch_to_ae`` (the seed's Option B) sets the weight to 0 and the module's ``ae_mode_attr`` flag to
   True where the module has one (its forward should then use z = mu); ``stop`` sets ``trainer.should_stop``,
   so training ends cleanly after the epoch;
4. journals every decision in ``watchdog.jsonl`` beside the logger's run (``via: lightning``), under the
   run's ``watchdog.lock`` (one watchdog per run: a ``vaediag watch --follow --apply`` on the same run is
   refused), and logs ``watchdog/kl_weight`` (the weight the epoch trained with), ``watchdog/penalty_share``
   (kl_weight x KL / recon of the epoch, where both are logged) and the decision as text
   (``watchdog/decision``, TensorBoard only) to the Trainer's loggers.

Its state (the policy's rung, integral, history) goes into the checkpoint (:meth:`state_dict`); on resume the
weight and mode it had decided are put back on the module, since a plain float attribute is not part of the
module's state_dict.

The gradient share (what the optimiser feels, beside what the loss value says): a module that leaves its
*weighted* loss terms in ``self.loss_terms`` (``{"recon": recon, "kl": self.kl_weight * kl}``) and its latent
head in ``self.latent_head`` (``(mu, logvar)``) in ``training_step`` gets, every ``grad_share_every`` optimizer
steps (default 100; 0: off), each term's gradient norm and share at the head logged before the backward pass
(``train/grad_norm/<term>``, ``train/grad_share/<term>``, ``train/grad_cos/kl``:
:func:`vaediag.integrations.gradients.term_gradients`), and ``vaediag check`` reports "KL is x % of the loss
value but y % of the gradient at the encoder head". A module without those attributes gets a one-time note.

Under DDP the decision is made on rank 0 (the rank whose logger writes files) and broadcast, so every rank
applies the same weight.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - the older package name
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]
    except ImportError:
        raise ModuleNotFoundError("vaediag.integrations.lightning needs Lightning: pip install 'vaediag[lightning]' "
                                  "(or pip install lightning)", name="lightning") from None

from vaediag.diagnose.criteria import penalty_ratio
from vaediag.errors import InputError, UsageError
from vaediag.terms import (DECISION_TEXT_TAG, WATCHDOG_KL_WEIGHT_TAG, WATCHDOG_PENALTY_SHARE_TAG, TagMap,
                           load_tag_map, tag_map_from_tables)
from vaediag.watch.inprocess import KLWatchdog
from vaediag.watch.journal import Journal
from vaediag.watch.lock import RunLock
from vaediag.watch.policies import MissingMetricWarning, Policy, make_policy

__all__ = ["KLWatchdogCallback"]

# The loggers whose files vaediag reads (by class name, so both `lightning` and `pytorch_lightning` match).
_READABLE_LOGGERS = ("TensorBoardLogger", "CSVLogger")
_STATE_VERSION = 1


def _tag_map(tags: Mapping[str, Any] | str | os.PathLike[str] | TagMap | None) -> TagMap | None:
    """``tags=``: a TagMap, a ``--tags`` TOML file, or a dict ``{"tag": "term"}`` / ``{"tag": {"term", "split"}}``."""
    if tags is None or isinstance(tags, TagMap):
        return tags
    if isinstance(tags, (str, os.PathLike)):
        return load_tag_map(tags)
    if not isinstance(tags, Mapping):
        raise UsageError(f"tags must be a dict of tag -> term or a TOML file, got {type(tags).__name__}")
    return tag_map_from_tables({"tags": tags}, where="tags: ", error=UsageError)


def _float_attributes(module: Any) -> list[str]:
    """The module's float-valued attributes (and hparams), for the message when the named one is missing."""
    names = [k for k, v in vars(module).items()
             if not k.startswith("_") and (isinstance(v, float) or _is_scalar_tensor(v))]
    names += [f"{k} (buffer)" for k, v in getattr(module, "_buffers", {}).items() if _is_scalar_tensor(v)]
    hp = getattr(module, "hparams", None)
    if isinstance(hp, Mapping):
        names += [f"hparams.{k}" for k, v in hp.items() if isinstance(v, float)]
    return sorted(set(names))


def _is_scalar_tensor(v: Any) -> bool:
    return type(v).__module__.startswith("torch") and hasattr(v, "numel") and v.numel() == 1 \
        and getattr(v, "is_floating_point", lambda: False)()


def _resolve(module: Any, path: str) -> tuple[Any, str]:
    """(owner, last name) of a dotted attribute path, or raise AttributeError."""
    *heads, last = path.split(".")
    owner = module
    for h in heads:
        owner = owner[h] if isinstance(owner, Mapping) else getattr(owner, h)
    if isinstance(owner, Mapping):
        if last not in owner:
            raise AttributeError(path)
    elif not hasattr(owner, last):
        raise AttributeError(path)
    return owner, last


def _get(owner: Any, name: str) -> Any:
    return owner[name] if isinstance(owner, Mapping) else getattr(owner, name)


class KLWatchdogCallback(Callback):
    """Steer ``pl_module.<kl_weight_attr>`` between epochs with a vaediag policy (see the module docstring).

    Args:
        policy: ``"ladder"`` (the seed's escalation), ``"controlvae"``, ``"geco"``, or a
            :class:`~vaediag.watch.policies.Policy` instance.
        kl_weight_attr: the module's KL-weight attribute (default ``kl_weight``; dotted paths such as
            ``hparams.beta`` work). Its value at the start of fit is the policy's starting weight unless
            ``kl_weight=`` is given.
        ae_mode_attr: the module's autoencoder flag, set to True on ``switch_to_ae`` (optional on the module).
        tags: tag -> term mappings for names the reader does not know (dict or ``--tags`` TOML file).
        rules: a rules TOML file (as ``--rules``) the policy takes its defaults from.
        profile: the ladder's profile (``auto``, ``seed``, ``generic``; default: the rules file's, auto), decided
            for the run as ``vaediag check`` decides it (:mod:`vaediag.diagnose.profiles`): auto is ``seed`` only
            for vaediag's trainer's runs, so a LightningModule's run is judged by the ``generic`` profile (the
            scale-free criteria, without the seed's absolute KL limit and PSNR floor) unless ``profile="seed"``.
        run_dir: where to read the logs and write the journal (default: the first TensorBoardLogger or
            CSVLogger's ``log_dir``).
        dry_run: decide and journal only; the module is never changed and training never stopped.
        grad_share_every: the gradient-share cadence in optimizer steps (0: off; see the module docstring).
        loss_terms_attr, latent_head_attr: where ``training_step`` leaves the weighted loss terms and the head.
        **params: the policy's parameters (``target_kl``, ``reduce_at``, ``target_psnr``, ``cooldown``,
            ``strict`` ...), validated at once.

    Raises:
        UsageError: an unknown policy or parameter (at construction); the module has no ``kl_weight_attr``
            (at fit start: the message lists its float attributes); the Trainer has no logger whose files
            vaediag reads and no ``run_dir`` was given.
    """

    def __init__(
        self,
        policy: str | Policy = "ladder",
        *,
        kl_weight_attr: str = "kl_weight",
        ae_mode_attr: str = "ae_mode",
        tags: Mapping[str, Any] | str | os.PathLike[str] | TagMap | None = None,
        rules: str | os.PathLike[str] | None = None,
        profile: str | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        dry_run: bool = False,
        grad_share_every: int = 100,
        loss_terms_attr: str = "loss_terms",
        latent_head_attr: str = "latent_head",
        **params: Any,
    ) -> None:
        super().__init__()
        for name, value in (("kl_weight_attr", kl_weight_attr), ("ae_mode_attr", ae_mode_attr),
                            ("loss_terms_attr", loss_terms_attr), ("latent_head_attr", latent_head_attr)):
            if not isinstance(value, str) or not value or any(not p.isidentifier() for p in value.split(".")):
                raise UsageError(f"{name} must be an attribute name such as 'kl_weight' or 'hparams.beta', "
                                 f"got {value!r}")
        if isinstance(grad_share_every, bool) or not isinstance(grad_share_every, int) or grad_share_every < 0:
            raise UsageError(f"grad_share_every must be an int >= 0 (0: off), got {grad_share_every!r}")
        if isinstance(policy, Policy):
            if params or rules is not None or profile is not None:
                raise UsageError("pass parameters, rules and profile to the policy, not to KLWatchdogCallback, when "
                                 "giving a Policy instance")
            pol = policy
        else:
            loaded = None
            if rules is not None:
                from vaediag.diagnose.rulesfile import load_rules

                loaded = load_rules(rules)
            if profile is not None:
                params["profile"] = profile  # make_policy says so when the policy has no profiles
            pol = make_policy(policy, rules=loaded, **params)
        self._kl_weight_given = "kl_weight" in params or (isinstance(policy, Policy) and policy.kl_weight is not None)
        self.watchdog = KLWatchdog(pol, via="lightning")
        self.kl_weight_attr = kl_weight_attr
        self.ae_mode_attr = ae_mode_attr
        self.tags = _tag_map(tags)
        self.run_dir: Path | None = Path(run_dir) if run_dir is not None else None
        self._run_dir_given = run_dir is not None
        self.dry_run = bool(dry_run)
        self.grad_share_every = grad_share_every
        self.loss_terms_attr = loss_terms_attr
        self.latent_head_attr = latent_head_attr
        self._grad_share_noted = False
        self._grad_share_step: int | None = None
        self._lock: RunLock | None = None
        self._tail = None
        self._tracker = None
        self._restored = False
        self._warned_no_ae_flag = False
        self._judged = False

    # ---- properties ---------------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self.watchdog.policy

    @property
    def state_key(self) -> str:
        return self._generate_state_key(policy=self.policy.name, kl_weight_attr=self.kl_weight_attr)

    # ---- the module's weight ------------------------------------------------------------------------

    def _owner(self, pl_module: Any, path: str) -> tuple[Any, str]:
        try:
            return _resolve(pl_module, path)
        except (AttributeError, KeyError, TypeError):
            floats = ", ".join(_float_attributes(pl_module)) or "none"
            raise UsageError(
                f"KLWatchdogCallback: {type(pl_module).__name__} has no attribute {path!r} to steer; its float "
                f"attributes: {floats} (pass kl_weight_attr='<name>')") from None

    def _read_weight(self, pl_module: Any) -> float:
        owner, name = self._owner(pl_module, self.kl_weight_attr)
        v = _get(owner, name)
        if _is_scalar_tensor(v):
            v = float(v.detach().reshape(()).item())
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise UsageError(f"KLWatchdogCallback: {type(pl_module).__name__}.{self.kl_weight_attr} must be a finite "
                             f"number >= 0 (a float or a one-element tensor), got {v!r}")
        return float(v)

    def _write_weight(self, pl_module: Any, value: float) -> None:
        owner, name = self._owner(pl_module, self.kl_weight_attr)
        cur = _get(owner, name)
        if _is_scalar_tensor(cur):
            import torch

            with torch.no_grad():
                cur.fill_(value)
        elif isinstance(owner, Mapping):
            owner[name] = float(value)  # type: ignore[index]
        else:
            setattr(owner, name, float(value))

    def _write_ae_mode(self, pl_module: Any, on: bool) -> bool:
        """Set the module's autoencoder flag; False when the module has none."""
        try:
            owner, name = _resolve(pl_module, self.ae_mode_attr)
        except (AttributeError, KeyError, TypeError):
            return False
        cur = _get(owner, name)
        if type(cur).__module__.startswith("torch") and hasattr(cur, "fill_"):
            cur.fill_(bool(on))
        elif isinstance(owner, Mapping):
            owner[name] = bool(on)  # type: ignore[index]
        else:
            setattr(owner, name, bool(on))
        return True

    # ---- Lightning hooks ----------------------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        start = self._read_weight(pl_module)  # fails fast, listing the float attributes, when it is missing
        if not self._kl_weight_given and self.policy.kl_weight is None:
            self.policy.kl_weight = start
        if not trainer.is_global_zero:
            return
        run_dir = self.run_dir if self._run_dir_given else self._logger_dir(trainer)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        from vaediag.logs import Tail
        from vaediag.watch.tracker import EpochTracker

        self._lock = RunLock.acquire(run_dir, mode="lightning callback")
        try:
            self.watchdog.journal = Journal(run_dir)
        except BaseException:
            self._lock.release()
            self._lock = None
            raise
        self._tail = Tail(run_dir, tags=self.tags)
        self._tracker = EpochTracker()
        try:
            self.watchdog.journal.event(
                "start", policy=self.policy.name, params=self.policy.params(), dry_run=self.dry_run,
                run_dir=str(run_dir), lock=str(self._lock.path), via="lightning", module=type(pl_module).__name__,
                kl_weight_attr=self.kl_weight_attr, kl_weight=start)
        except BaseException:
            self._close("exit", error="could not journal the start")
            raise
        if self._lock.stale_note:
            self._note(self._lock.stale_note)

    def _logger_dir(self, trainer: Any) -> Path:
        loggers = list(getattr(trainer, "loggers", []) or [])
        for lg in loggers:
            if type(lg).__name__ in _READABLE_LOGGERS and getattr(lg, "log_dir", None):
                return Path(lg.log_dir)
        have = ", ".join(type(lg).__name__ for lg in loggers) or "no logger"
        raise UsageError(f"KLWatchdogCallback reads what the module logged from the logger's files: give the Trainer "
                         f"a TensorBoardLogger or CSVLogger (it has {have}), or pass run_dir= to a folder where "
                         f"those logs are written")

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # After every restore path: FSDP and DeepSpeed restore the callbacks' state after on_fit_start.
        if not self._restored:
            return
        # Restored from a checkpoint: the module's float attribute was not in its state_dict, the policy's was.
        if not self.dry_run:
            self._write_weight(pl_module, self.watchdog.kl_weight)
            if self.watchdog.mode == "ae":
                self._write_ae_mode(pl_module, True)
        if self.watchdog.journal is not None:
            self.watchdog.journal.event("resume", kl_weight=self.watchdog.kl_weight, mode=self.watchdog.mode,
                                        last_epoch=self.policy.last_epoch, applied=not self.dry_run)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        every = self.grad_share_every
        step = trainer.global_step
        if not every or step % every or not trainer.is_global_zero or step == self._grad_share_step:
            return  # (with gradient accumulation several micro-batches share a step: measure the first)
        self._grad_share_step = step
        terms = getattr(pl_module, self.loss_terms_attr, None)
        head = getattr(pl_module, self.latent_head_attr, None)
        if not isinstance(terms, Mapping) or head is None:
            if not self._grad_share_noted:
                self._grad_share_noted = True
                self._note(f"no gradient share: {type(pl_module).__name__} leaves no {self.loss_terms_attr!r} dict "
                           f"of weighted loss terms and {self.latent_head_attr!r} (mu, logvar) in training_step "
                           f"(grad_share_every=0 turns this off)")
            return
        from vaediag.errors import GradientError
        from vaediag.integrations.gradients import term_gradients

        try:
            scalars = term_gradients(terms, head).scalars(split="train")
        except GradientError as exc:
            raise UsageError(f"KLWatchdogCallback: gradient share at step {trainer.global_step}: {exc.message}") from None
        for lg in getattr(trainer, "loggers", []) or []:
            lg.log_metrics(scalars, step=self._step(trainer))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not self._fitting(trainer):
            return
        # Step-based validation (check_val_every_n_epoch=None) is not tied to epoch ends: decide at each one (an
        # epoch is still decided once, at its first validation). Otherwise skip mid-epoch validations.
        if getattr(trainer, "check_val_every_n_epoch", 1) is not None and not self._end_of_epoch(trainer):
            return
        self._decide(trainer, pl_module, final=False)

    # A fit that never validates is decided on its train means. Lightning logs an epoch's on_epoch train metrics
    # after the callbacks' on_train_epoch_end, so epoch e is read at the start of epoch e + 1 (still before it
    # trains) and the last one at the end of training (journalled, with nothing left to apply it to).

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch > 0 and self._validates(trainer) is False:
            self._decide(trainer, pl_module, final=True)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._validates(trainer) is False:
            self._decide(trainer, pl_module, final=True, ended=True)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # Lightning does not call the callbacks' teardown after an exception: release the run here, or a re-run
        # of fit in the same process (a notebook) finds it "already watched".
        self._close("exit", error=f"{type(exception).__name__}: {exception}")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        self._close("end", epochs=trainer.current_epoch, kl_weight=self.watchdog.kl_weight, mode=self.watchdog.mode)

    def _close(self, event: str, **fields: Any) -> None:
        """Journal the end, close the journal, release the lock; a second call does nothing."""
        try:
            if self.watchdog.journal is not None:
                self.watchdog.journal.event(event, **fields)
        finally:
            if self.watchdog.journal is not None:
                self.watchdog.close()
                self.watchdog.journal = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            self._tail = None  # a later fit with this callback reads its own run afresh
            self._tracker = None
            self._restored = False
            self._judged = False

    def state_dict(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "watchdog": self.watchdog.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("version") != _STATE_VERSION or "watchdog" not in state_dict:
            raise UsageError(f"KLWatchdogCallback: checkpoint state {sorted(state_dict)!r} is not a version "
                             f"{_STATE_VERSION} watchdog state")
        self.watchdog.load_state_dict(state_dict["watchdog"])
        self._restored = True  # written back to the module in on_train_start

    # ---- deciding -------------------------------------------------------------------------------------

    @staticmethod
    def _fitting(trainer: Any) -> bool:
        """False for trainer.validate()/test() after a fit: only fit epochs are decided."""
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        return fn is None or str(getattr(fn, "value", fn)) == "fit"

    @staticmethod
    def _step(trainer: Any) -> int:
        """The step Lightning logs at (optimizer steps taken), so our rows sit beside the module's own."""
        try:
            return int(trainer.fit_loop.epoch_loop._batches_that_stepped)
        except AttributeError:  # pragma: no cover - other Lightning versions
            return int(trainer.global_step)

    @staticmethod
    def _end_of_epoch(trainer: Any) -> bool:
        """False for a validation in the middle of an epoch (``val_check_interval`` < 1)."""
        try:
            return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
        except AttributeError:  # pragma: no cover - other Lightning versions
            return True

    @staticmethod
    def _validates(trainer: Any) -> bool | None:
        """Whether this fit runs validation at all (None: cannot tell)."""
        try:
            limit = trainer.limit_val_batches
            if limit == 0:
                return False
            return bool(trainer.fit_loop.epoch_loop.val_loop._data_source.is_defined())
        except AttributeError:  # pragma: no cover - other Lightning versions
            return None

    def _note(self, text: str) -> None:
        if self.watchdog.journal is not None:
            self.watchdog.journal.event("note", text=text)
        warnings.warn(f"vaediag: {text}", stacklevel=3)

    def _poll(self, trainer: Any, *, final: bool) -> list:
        """Flush the loggers, read the new rows, return the epochs completed since the last call."""
        for lg in getattr(trainer, "loggers", []) or []:
            try:
                lg.save()
            except Exception as exc:  # a logger that cannot flush: the next epoch reads it
                self._note(f"cannot flush {type(lg).__name__}: {exc}")
        assert self._tail is not None and self._tracker is not None
        self._tracker.feed(self._tail.poll())
        self._tracker.feed(None)  # validation has ended: the epoch's val point is whole
        return self._tracker.ready(final=final)

    def _missing_hint(self, exc: InputError) -> InputError:
        unmapped = list(getattr(self._tail, "unmapped_tags", []) or [])
        extra = ""
        if unmapped:
            shown = ", ".join(unmapped[:8]) + (" ..." if len(unmapped) > 8 else "")
            extra = (f"; logged tags no term names: {shown} (map one with tags={{'{unmapped[0]}': 'kl'}}, "
                     f"or log it as val_kl)")
        return InputError(f"KLWatchdogCallback: {exc.message}{extra}")

    def _decide(self, trainer: Any, pl_module: Any, *, final: bool, ended: bool = False) -> None:
        made: list[dict[str, Any]] = []
        error: BaseException | None = None
        if trainer.is_global_zero and self._tracker is not None:
            try:
                made = self._decide_here(trainer, pl_module, final=final, ended=ended)
            except Exception as exc:  # every rank must hear of it, or the others wait in broadcast for ever
                error = exc
        if getattr(trainer, "world_size", 1) > 1:
            made, text = trainer.strategy.broadcast((made, None if error is None else str(error)), src=0)
            if error is None and text is not None:
                raise UsageError(f"KLWatchdogCallback on rank 0: {text}")
        if error is not None:
            raise error
        for rec in made:
            self._apply(trainer, pl_module, rec, ended=ended)

    def _decide_here(self, trainer: Any, pl_module: Any, *, final: bool, ended: bool) -> list[dict[str, Any]]:
        """Decide (rank 0) every epoch completed since the last call. Several at once (a validation every few
        epochs, a resume): each is judged and journalled, and only the latest one's change is applied, as the
        watchdog does with a backlog."""
        ready = [em for em in self._poll(trainer, final=final)
                 if self.policy.last_epoch is None or em.epoch > self.policy.last_epoch]  # not decided before a resume
        if ready and not self._judged:
            self._judged = True
            self.watchdog.judge(self.run_dir)  # the run's profile, decided as check decides it (journalled)
        current = self._read_weight(pl_module) if self.watchdog.mode == "vae" else 0.0  # what they trained with
        made = []
        for i, em in enumerate(ready):
            latest = i == len(ready) - 1
            m = dict(em.metrics)
            if "kl_weight" not in m and self.watchdog.mode == "vae":
                m["kl_weight"] = current
            extra = ({"note": "training had already ended"} if ended else {} if latest else
                     {"note": f"superseded by the decision after epoch {ready[-1].epoch + 1}"})
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MissingMetricWarning)
                try:
                    d = self.watchdog.step(em.epoch, m, apply=latest and not (self.dry_run or ended), **extra)
                except InputError as exc:
                    raise self._missing_hint(exc) from None
            for w in caught:
                self._note(str(w.message))
            if not latest:
                self.policy.not_applied(d)  # it never reaches the module: the policy must not believe it did
                continue
            penalty_share = penalty_ratio(m.get("kl_weight"), m["kl"], m["recon"]) if "kl" in m and "recon" in m else None
            made.append({"epoch": em.epoch, "decision": d.to_dict(), "share": penalty_share,
                         "trained_kl_weight": m.get("kl_weight")})
        return made

    def _apply(self, trainer: Any, pl_module: Any, rec: Mapping[str, Any], *, ended: bool = False) -> None:
        d = rec["decision"]
        action, epoch = d["action"], rec["epoch"]
        if not (self.dry_run or ended):
            if action in ("set_kl_weight", "switch_to_ae"):
                self._write_weight(pl_module, float(d["kl_weight"] or 0.0))
            if action == "switch_to_ae" and not self._write_ae_mode(pl_module, True) and not self._warned_no_ae_flag:
                self._warned_no_ae_flag = True
                if trainer.is_global_zero:
                    self._note(f"switch to the autoencoder: {self.kl_weight_attr} is 0 from now on, but "
                               f"{type(pl_module).__name__} has no {self.ae_mode_attr!r} flag, so z is still sampled; "
                               f"give it one (z = mu when set) for the seed's Option B")
            if action == "stop":
                trainer.should_stop = True
        if not trainer.is_global_zero:
            return
        step = self._step(trainer)
        # The weight the epoch trained with, beside the epoch's own rows: what check's penalty arithmetic needs.
        scalars = {}
        if rec.get("trained_kl_weight") is not None:
            scalars[WATCHDOG_KL_WEIGHT_TAG] = float(rec["trained_kl_weight"])
        if rec["share"] is not None and math.isfinite(rec["share"]):
            scalars[WATCHDOG_PENALTY_SHARE_TAG] = float(rec["share"])
        applied = ("" if action == "keep" else " (dry run: not applied)" if self.dry_run
                   else " (not applied: training had ended)" if ended else " (applied)")
        text = f"after epoch {epoch + 1}: {action}{applied}: {d['reason']}"
        if d.get("declined"):
            text += f" [declined: {d['declined']}]"
        for lg in getattr(trainer, "loggers", []) or []:
            if scalars:
                lg.log_metrics(scalars, step=step)
            experiment = getattr(lg, "experiment", None) if type(lg).__name__ == "TensorBoardLogger" else None
            if experiment is not None and hasattr(experiment, "add_text"):
                experiment.add_text(DECISION_TEXT_TAG, text, global_step=step)
