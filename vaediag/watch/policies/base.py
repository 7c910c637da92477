"""What every policy shares: :class:`Policy` (metric checks, the guards, state), :class:`Decision`, the
validation of arguments, and the default thresholds read from the rules file (:func:`policy_defaults`).

A policy subclasses :class:`Policy` and implements ``_propose`` (see :mod:`.ladder`, :mod:`.controlvae`,
:mod:`.geco`); :func:`~vaediag.watch.policies.make_policy` builds one by name.

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
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Mapping

from vaediag.errors import InputError, UsageError

__all__ = [
    "ACTIONS",
    "CHANGE_ACTIONS",
    "DEFAULTS",
    "policy_defaults",
    "Decision",
    "Policy",
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
      ``window``/``min_delta``/``regress_ratio``/``patience`` = ``[converged]``;
    * ``factor``/``max_factor`` = ``[recommend] kl_reduce_factor``/``max_reduce_factor``; ``max_share``/``warn_share``
      = ``[penalty] fail_ratio``/``warn_ratio``; ``collapse_kl``/``collapse_kl_per_dim``/``collapse_active_fraction``
      = ``[collapse] kl_total_max``/``kl_per_dim_max``/``active_fraction_min``;
      ``min_sharpness``/``min_grad_similarity``/``max_sharpness`` = ``[blurry]``; ``min_kl_weight``/``max_kl_weight`` = ``[watch]``;
    * ``profile`` = ``[profiles] default`` (auto), decided for the run as ``vaediag check`` decides it
      (:func:`vaediag.diagnose.profiles.decide_profile`); ``target_kl``/``target_psnr`` are the ``seed``
      profile's absolute numbers, which the ladder applies under that profile only (or when given).
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
        "collapse_kl_per_dim": float(rules.section("collapse")["kl_per_dim_max"]),
        "collapse_active_fraction": float(rules.section("collapse")["active_fraction_min"]),
        "target_psnr": 28.0 if target_psnr is None else float(target_psnr),
        "min_sharpness": float(rules.section("blurry")["min_sharpness"]),
        "min_grad_similarity": float(rules.section("blurry")["min_grad_similarity"]),
        "max_sharpness": float(rules.section("blurry")["max_sharpness"]),
        "window": int(conv["window"]),
        "min_delta": float(conv["min_delta"]),
        "regress_ratio": float(conv["regress_ratio"]),
        "patience": int(conv["patience"]),
        "tiny_kl_weight": float(rec["tiny_kl_weight"]),
        "min_kl_weight": float(rules.section("watch")["min_kl_weight"]),
        "max_kl_weight": float(rules.section("watch")["max_kl_weight"]),
        "profile": str(rules.section("profiles")["default"]),
    }


# The packaged rules' values (what every policy parameter defaults to without --rules).
DEFAULTS: dict[str, Any] = policy_defaults()


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
        profile: the profile that judged the epoch (``seed`` or ``generic``; see
            :mod:`vaediag.diagnose.profiles`), for policies whose criteria depend on it (the ladder), else None.
    """

    action: str
    epoch: int
    kl_weight: float | None
    mode: str = "vae"
    reason: str = ""
    declined: str | None = None
    proposed_action: str | None = None
    proposed_kl_weight: float | None = None
    profile: str | None = None

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
# Argument validation: typed, at construction, quoting the value and the valid set. The policy modules of
# this package use these helpers (and _fmt, for numbers in reasons) for their own parameters.


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
        if self.judged_by is not None:
            decision = replace(decision, profile=self.judged_by)
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

    #: Whether the policy's criteria depend on the run's profile (the ladder's do; controlvae's and geco's targets
    #: are the user's set points).
    has_profiles: ClassVar[bool] = False
    #: The profile that judges the run (``seed`` or ``generic``) once decided; None for a policy without profiles.
    judged_by: str | None = None

    def for_run(self, config: Mapping[str, Any] | None) -> str | None:
        """Tell the policy which run it judges: the run's config.json as ``vaediag check``'s reader reads it (None
        or {} when there is none). A policy with profiles decides its profile from it as check does
        (:func:`vaediag.diagnose.profiles.decide_profile`) and returns it; the others return None."""
        return None

    @classmethod
    def with_rules_defaults(cls, defaults: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments :func:`~vaediag.watch.policies.make_policy` builds the policy with: ``params``
        (the caller's) over ``defaults`` (:func:`policy_defaults` of a rules file) for the parameters it has."""
        return {**{k: v for k, v in defaults.items() if k in cls.param_types}, **params}

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
