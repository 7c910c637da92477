"""The GECO policy: a multiplicative update of kl_weight toward a reconstruction (PSNR) target."""

from __future__ import annotations

import math
from typing import Any, Mapping

from vaediag.watch.policies.base import DEFAULTS, Decision, Policy, _fmt, _number

__all__ = ["GECOPolicy", "psnr_to_mse"]


def psnr_to_mse(psnr_db: float, *, data_range: float = 1.0) -> float:
    """Mean squared error that gives ``psnr_db``: ``MSE = data_range**2 * 10**(-PSNR/10)``.

    >>> f"{psnr_to_mse(28.0):.3g}"
    '0.00158'
    """
    return data_range**2 * 10.0 ** (-psnr_db / 10.0)


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
