"""The ControlVAE policy: PI control of kl_weight toward a KL set point, with working anti-windup."""

from __future__ import annotations

import math
from typing import Any, Mapping

from vaediag.watch.policies.base import DEFAULTS, Decision, Policy, _fmt, _number

__all__ = ["ControlVAEPolicy"]


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
