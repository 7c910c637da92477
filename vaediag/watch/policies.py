"""Policies: small stateful objects that turn one epoch's metrics into a kl_weight decision.

Every policy has the same surface::

    policy = make_policy("ladder", kl_weight=1e-5, target_kl=500)
    decision = policy.update(epoch, {"kl": 1535.0, "recon": 0.111, "psnr": 23.9})
    decision.action      # "keep" | "set_kl_weight" | "switch_to_ae" | "stop"
    decision.kl_weight   # the weight to use from the next epoch on
    decision.reason      # "kl = 1535 > 500 after epoch 10: kl_weight 1e-05 -> 1e-06"
    state = policy.state_dict(); policy.load_state_dict(state)   # resumable

Conventions
-----------
* ``epoch`` is the 0-based index of the epoch that just completed (the tidy frame's convention); the
  seed's "after epoch 10" is ``epoch == 9``. Reasons speak the seed's language: "after epoch 10".
* ``metrics`` maps canonical terms of :mod:`vaediag.terms` (``kl``, ``recon``, ``psnr``, ``sharpness``,
  ``kl_weight``, ``ae_mode`` ...) to that epoch's value, on val where the run logs val. A logged
  ``kl_weight`` is the truth about the current weight and overrides what the policy last decided (a
  decision may not have been applied yet, or at all under ``--dry-run``).

Three layers, as in Lightning's early stopping: :meth:`Policy.update` checks the metrics (missing ->
error or warning, non-finite -> no change), asks the policy's pure-ish ``_propose`` for a proposal,
then the guards shared by all policies decide whether it may be applied:

* at most one change per epoch (a repeated or earlier epoch never changes anything),
* a cool-down: after a change at epoch ``c``, no other change until ``epoch - c > cooldown``,
* kl_weight within ``[min_kl_weight, max_kl_weight]`` (a proposal outside is clamped, and says so),
* a change smaller than ``min_change`` (relative) is not worth a control-file write: keep.

A declined proposal comes back as ``action="keep"`` with ``declined`` saying which guard and why, and
``proposed_kl_weight`` holding what the policy wanted. Policy state that only makes sense when the change
happens (the ladder's rung, ControlVAE's integral) is committed only when the decision is not declined.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Mapping

from vaediag.diagnose.criteria import blur_verdict, classify_trend, collapse_verdict, penalty_ratio
from vaediag.diagnose.numbers import reduce_factor
from vaediag.errors import InputError, UsageError

__all__ = [
    "ACTIONS",
    "CHANGE_ACTIONS",
    "POLICIES",
    "DEFAULTS",
    "policy_defaults",
    "Decision",
    "Policy",
    "LadderPolicy",
    "ControlVAEPolicy",
    "GECOPolicy",
    "make_policy",
    "parse_param",
    "psnr_to_mse",
    "MissingMetricWarning",
]

ACTIONS = ("keep", "set_kl_weight", "switch_to_ae", "stop")
CHANGE_ACTIONS = ("set_kl_weight", "switch_to_ae")

def policy_defaults(rules: Any = None) -> dict[str, float | None]:
    """The policies' default thresholds, read from the rules file ``vaediag check`` judges with.

    One source of truth: the ladder's milestones and cuts are the checklist's (``rules`` is a
    :class:`vaediag.diagnose.rulesfile.Rules`; default: the packaged ``default.toml``):

    * ``reduce_at`` = ``[kl] too_high_after`` (10: "After Epoch 10"), ``target_kl`` = the top of ``[kl] target``
      (500: "KL loss < 500 (if not, reduce kl-weight)");
    * ``ae_at`` = ``[recommend] blurry_after`` (30: still blurry -> Option B); ``target_psnr`` = the PSNR floor of
      the milestone at that epoch (28 dB), else of the success criteria;
    * ``stop_at`` = the epoch of the milestone that checks ``converged`` (60); no such milestone: never stop;
      ``window``/``min_delta`` = ``[converged]``;
    * ``factor``/``max_factor`` = ``[recommend] kl_reduce_factor``/``max_reduce_factor``; ``max_share``/``warn_share``
      = ``[penalty] fail_ratio``/``warn_ratio``; ``collapse_kl`` = ``[collapse] kl_total_max``;
      ``min_sharpness``/``min_grad_similarity``/``max_sharpness`` = ``[blurry]``; ``min_kl_weight``/``max_kl_weight`` = ``[watch]``.
    """
    if rules is None:
        from vaediag.diagnose.rulesfile import load_rules

        rules = load_rules()
    kl, rec, conv = rules.section("kl"), rules.section("recommend"), rules.section("converged")
    ae_at = int(rec["blurry_after"])
    stop_at = next((m.epoch for m in rules.milestones if any(c.kind == "converged" for c in m.criteria)), None)

    def psnr_floor(criteria) -> float | None:
        return next((c.min for c in criteria if c.kind == "bounds" and c.term == "psnr" and c.min is not None), None)

    target_psnr = next((psnr_floor(m.criteria) for m in rules.milestones if m.epoch == ae_at), None)
    if target_psnr is None:
        target_psnr = psnr_floor(rules.success)
    reduce_at = int(kl["too_high_after"])
    return {
        "target_kl": float(kl["target"][1]),
        "reduce_at": reduce_at,
        "ae_at": max(ae_at, reduce_at),
        "stop_at": max(stop_at if stop_at is not None else 10**9, ae_at, reduce_at),
        "factor": float(rec["kl_reduce_factor"]),
        "max_share": float(rules.section("penalty")["fail_ratio"]),
        "warn_share": float(rules.section("penalty")["warn_ratio"]),
        "max_factor": float(rec["max_reduce_factor"]),
        "collapse_kl": float(rules.section("collapse")["kl_total_max"]),
        "target_psnr": 28.0 if target_psnr is None else float(target_psnr),
        "min_sharpness": float(rules.section("blurry")["min_sharpness"]),
        "min_grad_similarity": float(rules.section("blurry")["min_grad_similarity"]),
        "max_sharpness": float(rules.section("blurry")["max_sharpness"]),
        "window": int(conv["window"]),
        "min_delta": float(conv["min_delta"]),
        "tiny_kl_weight": float(rec["tiny_kl_weight"]),
        "min_kl_weight": float(rules.section("watch")["min_kl_weight"]),
        "max_kl_weight": float(rules.section("watch")["max_kl_weight"]),
    }


# The packaged rules' values (what every policy parameter defaults to without --rules).
DEFAULTS: dict[str, Any] = policy_defaults()


def psnr_to_mse(psnr_db: float, *, data_range: float = 1.0) -> float:
    """Mean squared error that gives ``psnr_db``: ``MSE = data_range**2 * 10**(-PSNR/10)``.

    >>> f"{psnr_to_mse(28.0):.3g}"
    '0.00158'
    """
    return data_range**2 * 10.0 ** (-psnr_db / 10.0)


class MissingMetricWarning(UserWarning):
    """A policy was updated without a metric it needs and ``strict=False``: the epoch is skipped."""


@dataclass(frozen=True)
class Decision:
    """What a policy decided after one epoch.

    Attributes:
        action: one of :data:`ACTIONS`. ``keep`` also when a guard declined a proposed change.
        epoch: 0-based index of the epoch the decision was made after.
        kl_weight: the weight to use from the next epoch on (the current one for ``keep``; 0 for the AE).
        mode: ``vae`` or ``ae`` (Option B: z = mu, KL weight 0) from the next epoch on.
        reason: one line with the numbers behind it.
        declined: why a guard declined the proposal, or None.
        proposed_action / proposed_kl_weight: the declined proposal, or None.
    """

    action: str
    epoch: int
    kl_weight: float | None
    mode: str = "vae"
    reason: str = ""
    declined: str | None = None
    proposed_action: str | None = None
    proposed_kl_weight: float | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise UsageError(f"unknown decision action {self.action!r} (choose {', '.join(ACTIONS)})")

    @property
    def changes(self) -> bool:
        """True when this decision changes kl_weight or mode (and so goes to control.json)."""
        return self.action in CHANGE_ACTIONS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Argument validation: typed, at construction, quoting the value and the valid set.


def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, integer: bool = False) -> float | int:
    kind = "an integer" if integer else "a number"
    lo = "" if low is None else (f" > {low:g}" if low_open else f" >= {low:g}")
    hi = "" if high is None else f" <= {high:g}"
    valid = f"{kind}{lo}{' and' if lo and hi else ''}{hi}"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise UsageError(f"{name} must be {valid}, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{name} must be {valid}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise UsageError(f"{name} must be {valid}, got {value!r}")
    if high is not None and value > high:
        raise UsageError(f"{name} must be {valid}, got {value!r}")
    return int(value) if integer else float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be true or false, got {value!r}")
    return value


def _fmt(x: float | None) -> str:
    """Numbers in reasons: 4 significant digits, no trailing noise (1535, 0.111, 1e-05)."""
    if x is None:
        return "none"
    return f"{x:.4g}"


# --------------------------------------------------------------------------------------------------


class Policy:
    """Base class: metric checks, guards and state; subclasses implement ``_propose``.

    Args (shared by every policy, keyword-only):
        kl_weight: the weight the run starts with, when its logs do not say (they win when they do).
        min_kl_weight, max_kl_weight: bounds for any kl_weight the policy proposes.
        cooldown: epochs after a change during which no further change is made (0: every epoch).
        min_change: relative change below which a new kl_weight is not worth applying.
        strict: a missing metric raises (True) or warns and skips the epoch (False).
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()  # metrics without which the policy cannot decide
    optional: ClassVar[tuple[str, ...]] = ()  # metrics used when present (checked for finiteness)
    param_types: ClassVar[dict[str, type]] = {
        "kl_weight": float, "min_kl_weight": float, "max_kl_weight": float, "cooldown": int,
        "min_change": float, "strict": bool,
    }

    def __init__(
        self,
        *,
        kl_weight: float | None = None,
        min_kl_weight: float = DEFAULTS["min_kl_weight"],
        max_kl_weight: float = DEFAULTS["max_kl_weight"],
        cooldown: int = 0,
        min_change: float = 0.05,
        strict: bool = True,
    ) -> None:
        self.min_kl_weight = _number("min_kl_weight", min_kl_weight, low=0.0)
        self.max_kl_weight = _number("max_kl_weight", max_kl_weight, low=0.0, low_open=True)
        if self.max_kl_weight <= self.min_kl_weight:
            raise UsageError(
                f"max_kl_weight must be > min_kl_weight, got max {max_kl_weight!r} <= min {min_kl_weight!r}"
            )
        self.kl_weight = None if kl_weight is None else _number("kl_weight", kl_weight, low=0.0)
        self.cooldown = _number("cooldown", cooldown, low=0, integer=True)
        self.min_change = _number("min_change", min_change, low=0.0, high=1.0)
        self.strict = _bool("strict", strict)
        self.mode = "vae"
        self.last_epoch: int | None = None
        self.last_change_epoch: int | None = None
        self.n_changes = 0
        self._undo: tuple[int, dict[str, Any]] | None = None  # (epoch, state before the last change)

    # ---- public surface -------------------------------------------------------------------------

    def update(self, epoch: int, metrics: Mapping[str, float]) -> Decision:
        """Decide after ``epoch`` (0-based) from that epoch's ``metrics`` (canonical term -> value).

        Raises:
            InputError: a required metric is missing and ``strict`` (the message lists what is there).
        """
        epoch = _number("epoch", epoch, low=0, integer=True)
        m = {k: _as_float(v) for k, v in metrics.items()}
        if self.last_epoch is not None and epoch <= self.last_epoch:
            return self._keep(epoch, f"epoch {epoch + 1} already decided (last: epoch {self.last_epoch + 1})",
                              declined="at most one decision per epoch")
        self.last_epoch = epoch
        self._sync(m)

        missing = [k for k in self.requires if k not in m]
        if missing:
            have = ", ".join(sorted(m)) or "none"
            msg = (f"policy {self.name!r} needs metric(s) {', '.join(missing)} after epoch {epoch + 1}; "
                   f"available: {have}")
            if self.strict:
                raise InputError(msg + " (log them, or pass strict=False to skip such epochs)")
            warnings.warn(msg + "; epoch skipped", MissingMetricWarning, stacklevel=2)
            return self._keep(epoch, msg + "; no change")
        bad = [k for k in (*self.requires, *self.optional, "kl_weight") if k in m and not math.isfinite(m[k])]
        if bad:
            shown = ", ".join(f"{k} = {m[k]}" for k in bad)
            return self._keep(epoch, f"{shown} after epoch {epoch + 1}: non-finite metrics never change kl_weight")
        if self.kl_weight is None and self.mode == "vae" and self._needs_current_weight():
            have = ", ".join(sorted(m)) or "none"
            msg = (f"policy {self.name!r} does not know the current kl_weight after epoch {epoch + 1}: "
                   f"it is not logged (available: {have}) and none was given")
            if self.strict:
                raise InputError(msg + " (pass kl_weight=...)")
            warnings.warn(msg, MissingMetricWarning, stacklevel=2)
            return self._keep(epoch, msg + "; no change")

        self._observe(epoch, m)
        proposal, pending = self._propose(epoch, m)
        decision = self._guard(proposal)
        self._undo = None
        if decision.declined is None:
            if decision.changes:
                keys = (*pending, "kl_weight", "mode", "last_change_epoch", "n_changes")
                self._undo = (epoch, {k: getattr(self, k) for k in keys})
            self._commit(pending)
            if decision.changes:
                self.last_change_epoch = epoch
                self.n_changes += 1
                self.kl_weight = decision.kl_weight
                self.mode = decision.mode
        return decision

    def not_applied(self, decision: Decision) -> None:
        """Tell the policy that the change it just decided never reached the run (replayed history, a control
        file that could not be written). It forgets the state that assumed the change (the ladder's rung,
        ControlVAE's integral step, the cool-down), so it can decide again. Call it before the next update."""
        if not decision.changes:
            return
        if self._undo is None or self._undo[0] != decision.epoch:
            raise UsageError(f"not_applied() must follow the update that decided it (epoch {decision.epoch + 1})")
        for k, v in self._undo[1].items():
            setattr(self, k, v)
        self._undo = None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this policy: JSON-serialisable."""
        return {
            "policy": self.name,
            "kl_weight": self.kl_weight,
            "mode": self.mode,
            "last_epoch": self.last_epoch,
            "last_change_epoch": self.last_change_epoch,
            "n_changes": self.n_changes,
            **self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("policy") != self.name:
            raise UsageError(f"state is for policy {state.get('policy')!r}, not {self.name!r}")
        self.kl_weight = state["kl_weight"]
        self.mode = state["mode"]
        self.last_epoch = state["last_epoch"]
        self.last_change_epoch = state["last_change_epoch"]
        self.n_changes = state["n_changes"]
        self._load_extra(state)

    def params(self) -> dict[str, Any]:
        """The constructor arguments this policy runs with (for the journal and the panel)."""
        return {k: getattr(self, k) for k in self.param_types if hasattr(self, k)}

    # ---- hooks for subclasses -------------------------------------------------------------------

    def _needs_current_weight(self) -> bool:
        return True

    def _observe(self, epoch: int, m: Mapping[str, float]) -> None:
        """Update filters from finite metrics (every epoch, whatever the guards say)."""

    def _propose(self, epoch: int, m: Mapping[str, float]) -> tuple[Decision, dict[str, Any]]:
        """Return (proposal, state to commit unless a guard declines). Must not mutate self."""
        raise NotImplementedError

    def _commit(self, pending: Mapping[str, Any]) -> None:
        for k, v in pending.items():
            setattr(self, k, v)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state: Mapping[str, Any]) -> None:
        pass

    # ---- helpers --------------------------------------------------------------------------------

    def _sync(self, m: Mapping[str, float]) -> None:
        """The logs are the truth about the weight and mode the run trains with."""
        w = m.get("kl_weight")
        if w is not None and math.isfinite(w) and w >= 0:
            self.kl_weight = w
        ae = m.get("ae_mode")
        if ae is not None and math.isfinite(ae):
            self.mode = "ae" if ae >= 0.5 else "vae"

    def _keep(self, epoch: int, reason: str, *, declined: str | None = None,
              proposal: Decision | None = None) -> Decision:
        return Decision(
            "keep", epoch, self.kl_weight, self.mode, reason, declined=declined,
            proposed_action=proposal.action if proposal else None,
            proposed_kl_weight=proposal.kl_weight if proposal else None,
        )

    def _guard(self, p: Decision) -> Decision:
        if p.action == "keep":
            return p
        if p.action == "stop":
            return p
        if (self.last_change_epoch is not None and p.epoch - self.last_change_epoch <= self.cooldown):
            nxt = self.last_change_epoch + self.cooldown + 1
            why = (f"cool-down: last change after epoch {self.last_change_epoch + 1}, "
                   f"next allowed after epoch {nxt + 1} (cooldown {self.cooldown})")
            return self._keep(p.epoch, p.reason, declined=why, proposal=p)
        if p.action == "switch_to_ae":
            return p  # kl_weight 0 in AE mode is outside the VAE bounds on purpose
        w = p.kl_weight
        reason = p.reason
        if w > self.max_kl_weight or w < self.min_kl_weight:
            bound, name = (self.max_kl_weight, "max") if w > self.max_kl_weight else (self.min_kl_weight, "min")
            reason = f"{reason} (clamped to {name} kl_weight {_fmt(bound)})"
            w = bound
        cur = self.kl_weight
        # Small moves are not worth a control write, except onto a bound (else a controller parks just short).
        at_bound = w in (self.min_kl_weight, self.max_kl_weight)
        if cur is not None and cur > 0 and not at_bound and abs(w - cur) / cur < self.min_change:
            return self._keep(p.epoch, f"{reason}; change < {self.min_change:.0%} of {_fmt(cur)}: keep",
                              proposal=p)
        if cur is not None and w == cur:
            return self._keep(p.epoch, f"{reason}; already at {_fmt(cur)}: keep", proposal=p)
        return Decision("set_kl_weight", p.epoch, w, "vae", reason)


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise UsageError(f"metric values must be numbers, got {v!r}") from None


# --------------------------------------------------------------------------------------------------


class LadderPolicy(Policy):
    """The seed's escalation, rung by rung.

    Every default comes from the rules file ``vaediag check`` uses (:func:`policy_defaults`).

    1. After ``reduce_at`` epochs (default 10), KL over ``target_kl`` at a weight already at or below
       ``tiny_kl_weight`` (1e-7): a smaller weight changes nothing, switch to the autoencoder at once. KL over ``target_kl`` (500), or an effective penalty
       (kl_weight x KL) over ``max_share`` (10 %) of the reconstruction loss: kl_weight / ``factor`` (10),
       or / its smallest power that brings the penalty to ``warn_share`` (1 %) of the reconstruction loss,
       at most ``max_factor`` (the same cut as ``vaediag check``'s reduce_kl_weight). A posterior that
       collapsed onto the prior (total KL <= ``collapse_kl`` nats, or no active latent unit) means the
       penalty has won outright: the same cut as ``vaediag check``'s ``reduce_kl_weight`` on a collapse
       (``factor``, or more by the share rule), or / ``collapse_factor`` when given.
    2. After ``ae_at`` epochs (30), KL still over target, or still blurry (sharpness below
       ``min_sharpness`` or val PSNR below ``target_psnr``): switch to the autoencoder (Option B:
       z = mu, kl_weight 0).
    3. After ``stop_at`` epochs (60), val reconstruction improved by less than ``min_delta`` (relative)
       over the last ``window`` epochs: converged, stop.

    Each rung fires once, at the first epoch at or after its milestone where its condition holds.

    >>> p = LadderPolicy(kl_weight=1e-5)
    >>> p.update(9, {"kl": 1535.0, "recon": 0.111}).reason
    'kl = 1535 > 500; penalty 1e-05 x 1535 = 13.8% of recon 0.111 > 10% after epoch 10: kl_weight 1e-05 -> 1e-07 (100x: the penalty to <= 1% of recon)'
    """

    name = "ladder"
    requires = ("kl",)
    optional = ("recon", "psnr", "sharpness", "active_units")
    param_types = {
        **Policy.param_types, "target_kl": float, "reduce_at": int, "ae_at": int, "stop_at": int,
        "factor": float, "target_psnr": float, "min_sharpness": float, "window": int, "min_delta": float,
        "min_grad_similarity": float, "max_sharpness": float,
        "max_share": float, "warn_share": float, "max_factor": float, "collapse_kl": float,
        "collapse_factor": float, "tiny_kl_weight": float,
    }

    def __init__(
        self,
        *,
        target_kl: float = DEFAULTS["target_kl"],
        reduce_at: int = int(DEFAULTS["reduce_at"]),
        ae_at: int = int(DEFAULTS["ae_at"]),
        stop_at: int = int(DEFAULTS["stop_at"]),
        factor: float = DEFAULTS["factor"],
        target_psnr: float | None = DEFAULTS["target_psnr"],
        min_sharpness: float | None = DEFAULTS["min_sharpness"],
        min_grad_similarity: float = DEFAULTS["min_grad_similarity"],
        max_sharpness: float = DEFAULTS["max_sharpness"],
        window: int = int(DEFAULTS["window"]),
        min_delta: float = DEFAULTS["min_delta"],
        max_share: float | None = DEFAULTS["max_share"],
        warn_share: float = DEFAULTS["warn_share"],
        max_factor: float = DEFAULTS["max_factor"],
        collapse_kl: float | None = DEFAULTS["collapse_kl"],
        collapse_factor: float | None = None,
        tiny_kl_weight: float | None = DEFAULTS["tiny_kl_weight"],
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.target_kl = _number("target_kl", target_kl, low=0.0, low_open=True)
        self.reduce_at = _number("reduce_at", reduce_at, low=1, integer=True)
        self.ae_at = _number("ae_at", ae_at, low=1, integer=True)
        self.stop_at = _number("stop_at", stop_at, low=1, integer=True)
        if not self.reduce_at <= self.ae_at <= self.stop_at:
            raise UsageError(
                f"ladder milestones must satisfy reduce_at <= ae_at <= stop_at, got "
                f"{reduce_at!r}, {ae_at!r}, {stop_at!r}"
            )
        self.factor = _number("factor", factor, low=1.0, low_open=True)
        self.target_psnr = None if target_psnr is None else _number("target_psnr", target_psnr, low=0.0)
        self.min_sharpness = None if min_sharpness is None else _number("min_sharpness", min_sharpness, low=0.0)
        self.min_grad_similarity = _number("min_grad_similarity", min_grad_similarity, low=0.0, high=1.0)
        self.max_sharpness = _number("max_sharpness", max_sharpness, low=0.0)
        self.window = _number("window", window, low=1, integer=True)
        self.min_delta = _number("min_delta", min_delta, low=0.0)
        self.max_share = None if max_share is None else _number("max_share", max_share, low=0.0, low_open=True)
        self.warn_share = _number("warn_share", warn_share, low=0.0, low_open=True)
        self.max_factor = _number("max_factor", max_factor, low=self.factor)
        self.collapse_kl = None if collapse_kl is None else _number("collapse_kl", collapse_kl, low=0.0)
        self.collapse_factor = (None if collapse_factor is None
                                else _number("collapse_factor", collapse_factor, low=1.0, low_open=True))
        self.tiny_kl_weight = None if tiny_kl_weight is None else _number("tiny_kl_weight", tiny_kl_weight, low=0.0)
        self.rung = 0  # 0: as started, 1: kl_weight reduced, 2: autoencoder, 3: stopped
        self.recon_history: deque[float] = deque(maxlen=self.window + 1)

    def _needs_current_weight(self) -> bool:
        return self.rung < 1

    def _observe(self, epoch: int, m: Mapping[str, float]) -> None:
        if "recon" in m:
            self.recon_history.append(m["recon"])

    # The criteria are the diagnosis engine's (vaediag.diagnose.criteria), the same functions `vaediag check`
    # judges a run with; the ladder adds only its milestones and guards.

    def _blurry(self, m: Mapping[str, float]) -> str | None:
        verdict = blur_verdict(grad_similarity=m.get("grad_similarity"),
                               sharpness=m.get("sharpness") if self.min_sharpness is not None else None,
                               min_grad_similarity=self.min_grad_similarity,
                               min_sharpness=self.min_sharpness if self.min_sharpness is not None else 0.0,
                               max_sharpness=self.max_sharpness)
        if verdict is not None and verdict[0] in ("blurry", "artefacts"):
            return verdict[1]
        if self.target_psnr is not None and "psnr" in m and m["psnr"] < self.target_psnr:
            return f"psnr = {_fmt(m['psnr'])} dB < {_fmt(self.target_psnr)} dB"
        return None

    def _collapsed(self, m: Mapping[str, float]) -> str | None:
        """Why the posterior looks collapsed onto the prior, or None (only under a KL penalty)."""
        if self.mode == "ae" or not self.kl_weight:
            return None
        reasons = collapse_verdict(kl_per_dim=None, active_fraction=None,
                                   active_units=m.get("active_units"),
                                   kl_total=m["kl"] if self.collapse_kl is not None else None,
                                   kl_per_dim_max=self.collapse_kl if self.collapse_kl is not None else 0.0,
                                   active_fraction_min=0.0)
        if "active_units" in m and m["active_units"] < 1:
            return f"kl = {_fmt(m['kl'])} nats, 0 active latent units"
        if reasons:
            return f"kl = {_fmt(m['kl'])} <= {_fmt(self.collapse_kl)} nats"
        return None

    def _share(self, m: Mapping[str, float]) -> float | None:
        """Effective penalty / reconstruction loss (the seed's 13.5 %), where both are known."""
        recon = m.get("recon")
        if recon is None:
            return None
        return penalty_ratio(self.kl_weight, m["kl"], recon)

    def _converged(self) -> str | None:
        """A plateau by the engine's trend classifier: a regressing or still improving run is not converged."""
        h = list(self.recon_history)
        if len(h) <= self.window or h[0] <= 0:
            return None
        t = classify_trend(range(len(h)), h, window=self.window, min_delta=self.min_delta)
        if t.kind == "plateau":
            return (f"val recon {_fmt(h[0])} -> {_fmt(h[-1])} over the last {self.window} epochs "
                    f"({max(t.improvement, 0.0):.2%} < {self.min_delta:.0%})")
        return None

    def _propose(self, epoch: int, m: Mapping[str, float]) -> tuple[Decision, dict[str, Any]]:
        n = epoch + 1  # completed epochs: the seed's "after epoch n"
        kl, w = m["kl"], self.kl_weight
        over = kl > self.target_kl
        kl_txt = f"kl = {_fmt(kl)} {'>' if over else '<='} {_fmt(self.target_kl)}"
        if self.rung >= 3:
            return Decision("keep", epoch, w, self.mode, f"stopped after an earlier decision"), {}
        if self.mode == "ae" or self.rung == 2:
            conv = self._converged() if n >= self.stop_at else None
            if conv:
                return Decision("stop", epoch, w, self.mode, f"{conv} after epoch {n}: converged, stop"), {"rung": 3}
            return Decision("keep", epoch, w, self.mode, f"autoencoder mode after epoch {n}: keep"), {"rung": 2}
        if n >= self.ae_at:
            blur = self._blurry(m)
            if over or blur:
                why = kl_txt if over else blur
                return (Decision("switch_to_ae", epoch, 0.0, "ae",
                                 f"{why} still after epoch {n}: switch to the autoencoder (z = mu, kl_weight 0)"),
                        {"rung": 2})
        collapsed = self._collapsed(m)
        share = self._share(m)
        if n >= self.reduce_at and self.rung < 1 and collapsed:
            # The same cut as `vaediag check`'s reduce_kl_weight on a collapse, unless collapse_factor is given.
            cut = self.collapse_factor or reduce_factor(share, step=self.factor, warn_ratio=self.warn_share,
                                                        cap=self.max_factor)
            new = w / cut
            return (Decision("set_kl_weight", epoch, new, "vae",
                             f"posterior collapse ({collapsed}) after epoch {n}: the penalty has won, "
                             f"kl_weight {_fmt(w)} -> {_fmt(new)} ({cut:g}x)"),
                    {"rung": 1})
        heavy = share is not None and self.max_share is not None and share > self.max_share
        tiny = self.tiny_kl_weight is not None and 0 < w <= self.tiny_kl_weight
        if n >= self.reduce_at and self.rung < 1 and over and tiny:
            # `vaediag check`'s rule: at a weight this small a smaller one changes nothing: Option B.
            return (Decision("switch_to_ae", epoch, 0.0, "ae",
                             f"{kl_txt} at kl_weight {_fmt(w)} <= {_fmt(self.tiny_kl_weight)} after epoch {n}: a "
                             "smaller weight changes nothing, switch to the autoencoder (z = mu, kl_weight 0)"),
                    {"rung": 2})
        if n >= self.reduce_at and self.rung < 1 and (over or heavy):
            cut = reduce_factor(share, step=self.factor, warn_ratio=self.warn_share, cap=self.max_factor)
            new = w / cut
            why = [kl_txt] if over else []
            if heavy:
                why.append(f"penalty {_fmt(w)} x {_fmt(kl)} = {share:.1%} of recon {_fmt(m['recon'])} "
                           f"> {self.max_share:.0%}")
            how = f" ({cut:g}x: the penalty to <= {self.warn_share:.0%} of recon)" if cut != self.factor else ""
            return (Decision("set_kl_weight", epoch, new, "vae",
                             f"{'; '.join(why)} after epoch {n}: kl_weight {_fmt(w)} -> {_fmt(new)}{how}"),
                    {"rung": 1})
        if n >= self.stop_at:
            conv = self._converged()
            if conv:
                return Decision("stop", epoch, w, self.mode, f"{conv} after epoch {n}: converged, stop"), {"rung": 3}
        nxt = next((f" (next milestone: epoch {k})" for k in (self.reduce_at, self.ae_at, self.stop_at) if k > n), "")
        return Decision("keep", epoch, w, self.mode, f"{kl_txt} after epoch {n}: keep kl_weight {_fmt(w)}{nxt}"), {}

    def _extra_state(self) -> dict[str, Any]:
        return {"rung": self.rung, "recon_history": list(self.recon_history)}

    def _load_extra(self, state: Mapping[str, Any]) -> None:
        self.rung = int(state["rung"])
        self.recon_history = deque(state["recon_history"], maxlen=self.window + 1)


class ControlVAEPolicy(Policy):
    """PI control of kl_weight toward a KL set point (Shao et al. 2020, ControlVAE, Algorithm 1).

    ``beta(t) = Kp / (1 + exp(e(t))) - Ki * sum_{j<=t} e(j) + beta_min`` with ``e(t) = target_kl - KL(t)``,
    clamped to ``[min_kl_weight, max_kl_weight]`` (``beta_min`` is ``min_kl_weight``). KL above the set
    point makes e negative, so beta rises and the KL term is pushed down; KL below lets beta fall.

    Anti-windup by back-calculation: when beta saturates at a bound, the integral is reset to the value
    that puts beta exactly on that bound. It therefore never winds up beyond the bound, and beta leaves
    the bound at the first epoch the error changes sign. (The reference implementation guards its
    integrator with ``if W < 0 and W > 1``, which can never be true.) Taking over a running run, the
    integral starts where beta equals the run's current kl_weight (bumpless transfer); with no known
    weight it starts at 0, as in the paper.

    One update per epoch, where the paper updates per step: Kp and Ki are per epoch.
    """

    name = "controlvae"
    requires = ("kl",)
    param_types = {**Policy.param_types, "target_kl": float, "kp": float, "ki": float}

    def __init__(self, *, target_kl: float = DEFAULTS["target_kl"], kp: float = 0.01, ki: float = 1e-4,
                 **common: Any) -> None:
        super().__init__(**common)
        self.target_kl = _number("target_kl", target_kl, low=0.0, low_open=True)
        self.kp = _number("kp", kp, low=0.0)
        self.ki = _number("ki", ki, low=0.0)
        self.integral: float | None = None  # the "- Ki * sum(e)" term, None until the first update

    def _needs_current_weight(self) -> bool:
        return False  # beta is absolute; the current weight only seeds the integral when known

    def _p(self, e: float) -> float:
        # Kp / (1 + exp(e)) without overflow for |e| in the thousands of nats.
        if e >= 0:
            z = math.exp(-min(e, 700.0))
            return self.kp * z / (1.0 + z)
        return self.kp / (1.0 + math.exp(max(e, -700.0)))

    def _propose(self, epoch: int, m: Mapping[str, float]) -> tuple[Decision, dict[str, Any]]:
        n = epoch + 1
        if self.mode == "ae":
            return Decision("keep", epoch, self.kl_weight, "ae", f"autoencoder mode after epoch {n}: keep"), {}
        kl = m["kl"]
        e = self.target_kl - kl
        p = self._p(e)
        lo, hi = self.min_kl_weight, self.max_kl_weight
        integral = self.integral
        if integral is None and self.kl_weight is None:
            integral = 0.0  # the paper's start: I(0) = 0
        elif integral is None:
            # Bumpless transfer: before this step's integration, beta equals the run's current weight.
            integral = min(max(self.kl_weight, lo), hi) - lo - p
        integral -= self.ki * e
        beta = p + integral + lo
        sat = ""
        if beta > hi:
            integral, beta, sat = hi - p - lo, hi, f", saturated at max {_fmt(hi)}"
        elif beta < lo:
            integral, beta, sat = -p, lo, f", saturated at min {_fmt(lo)}"
        reason = (f"kl = {_fmt(kl)} vs set point {_fmt(self.target_kl)} after epoch {n} (e = {_fmt(e)}): "
                  f"beta = P {_fmt(p)} + I {_fmt(integral)} + {_fmt(lo)} = {_fmt(beta)}{sat}")
        cur = self.kl_weight
        if cur is not None and beta == cur:
            return Decision("keep", epoch, cur, "vae", reason + ": keep"), {"integral": integral}
        return Decision("set_kl_weight", epoch, beta, "vae", reason), {"integral": integral}

    def _extra_state(self) -> dict[str, Any]:
        return {"integral": self.integral}

    def _load_extra(self, state: Mapping[str, Any]) -> None:
        self.integral = state["integral"]


class GECOPolicy(Policy):
    """Multiplicative update of kl_weight toward a reconstruction target (after Rezende & Viola 2018, GECO).

    The constraint is the reconstruction MSE against the target ``psnr_to_mse(target_psnr)`` (28 dB is an
    MSE of 1.58e-3 for data in [0, 1]), measured in the log domain so that it is scale free:
    ``c = ln(MSE / MSE_target) = (target_psnr - psnr) * ln(10) / 10``. Its moving average
    ``c_ma <- momentum * c_ma + (1 - momentum) * c`` drives ``kl_weight <- kl_weight * exp(-alpha * c_ma)``:
    reconstructions worse than the target lower the weight, better ones raise it. One step changes the
    weight by at most ``max_factor`` either way.
    """

    name = "geco"
    requires = ("psnr",)
    param_types = {**Policy.param_types, "target_psnr": float, "alpha": float, "momentum": float,
                   "max_factor": float}

    def __init__(self, *, target_psnr: float = DEFAULTS["target_psnr"], alpha: float = 1.0,
                 momentum: float = 0.5, max_factor: float = 10.0, **common: Any) -> None:
        super().__init__(**common)
        self.target_psnr = _number("target_psnr", target_psnr, low=0.0, low_open=True)
        self.alpha = _number("alpha", alpha, low=0.0, low_open=True)
        self.momentum = _number("momentum", momentum, low=0.0, high=0.999)
        self.max_factor = _number("max_factor", max_factor, low=1.0, low_open=True)
        self.c_ma: float | None = None

    @property
    def target_mse(self) -> float:
        return psnr_to_mse(self.target_psnr)

    def _observe(self, epoch: int, m: Mapping[str, float]) -> None:
        c = (self.target_psnr - m["psnr"]) * math.log(10.0) / 10.0
        self.c_ma = c if self.c_ma is None else self.momentum * self.c_ma + (1.0 - self.momentum) * c

    def _propose(self, epoch: int, m: Mapping[str, float]) -> tuple[Decision, dict[str, Any]]:
        n = epoch + 1
        w = self.kl_weight
        if self.mode == "ae":
            return Decision("keep", epoch, w, "ae", f"autoencoder mode after epoch {n}: keep"), {}
        psnr = m["psnr"]
        f = math.exp(-self.alpha * self.c_ma)
        f = min(max(f, 1.0 / self.max_factor), self.max_factor)
        new = w * f
        cmp = "<" if psnr < self.target_psnr else ">="
        reason = (f"psnr = {_fmt(psnr)} dB {cmp} target {_fmt(self.target_psnr)} dB after epoch {n} "
                  f"(mse {_fmt(psnr_to_mse(psnr))} vs {_fmt(self.target_mse)}, avg log-ratio {self.c_ma:+.3f}): "
                  f"kl_weight {_fmt(w)} -> {_fmt(new)}")
        if w == 0:
            return Decision("keep", epoch, w, "vae", f"kl_weight is 0 after epoch {n}: a multiplicative update cannot move it"), {}
        return Decision("set_kl_weight", epoch, new, "vae", reason), {}

    def _extra_state(self) -> dict[str, Any]:
        return {"c_ma": self.c_ma}

    def _load_extra(self, state: Mapping[str, Any]) -> None:
        self.c_ma = state["c_ma"]


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (LadderPolicy, ControlVAEPolicy, GECOPolicy)}


def make_policy(name: str, *, rules: Any = None, **params: Any) -> Policy:
    """Build a policy by name with validated keyword arguments.

    ``rules`` (a :class:`vaediag.diagnose.rulesfile.Rules`, e.g. from ``--rules FILE``): parameters not given
    default to that file's thresholds (:func:`policy_defaults`) instead of the packaged ones, so ``check``
    and ``watch`` judge a run by the same file.

    Raises:
        UsageError: unknown policy or parameter, or a bad value (the message quotes it and the valid set).
    """
    cls = POLICIES.get(name)
    if cls is None:
        raise UsageError(f"unknown policy {name!r} (choose {', '.join(POLICIES)})")
    unknown = [k for k in params if k not in cls.param_types]
    if unknown:
        raise UsageError(
            f"policy {name!r} has no parameter {unknown[0]!r} (choose {', '.join(sorted(cls.param_types))})"
        )
    if rules is not None:
        defaults = policy_defaults(rules)
        params = {**{k: v for k, v in defaults.items() if k in cls.param_types}, **params}
    return cls(**params)


def parse_param(policy: str, item: str) -> tuple[str, Any]:
    """Parse a command-line ``KEY=VALUE`` for ``policy`` into a typed ``(key, value)``.

    >>> parse_param("ladder", "reduce_at=2")
    ('reduce_at', 2)
    """
    cls = POLICIES.get(policy)
    if cls is None:
        raise UsageError(f"unknown policy {policy!r} (choose {', '.join(POLICIES)})")
    key, sep, raw = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise UsageError(f"policy parameter {item!r} must look like KEY=VALUE (e.g. reduce_at=2)")
    typ = cls.param_types.get(key)
    if typ is None:
        raise UsageError(
            f"policy {policy!r} has no parameter {key!r} (choose {', '.join(sorted(cls.param_types))})"
        )
    raw = raw.strip()
    if raw.lower() in ("none", "off") and typ is float:
        return key, None
    try:
        if typ is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return key, raw.lower() in ("true", "1", "yes")
        return key, typ(raw)
    except ValueError:
        raise UsageError(f"policy parameter {key} must be {'an integer' if typ is int else typ.__name__}, "
                         f"got {raw!r}") from None
