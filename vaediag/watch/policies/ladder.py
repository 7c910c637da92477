"""The ladder policy: the seed's escalation (reduce kl_weight, then the autoencoder, then stop), judged by
the same criteria and thresholds as ``vaediag check``."""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

from vaediag.diagnose.criteria import blur_verdict, classify_trend, collapse_verdict, penalty_ratio
from vaediag.diagnose.numbers import reduce_factor
from vaediag.errors import UsageError
from vaediag.watch.policies.base import DEFAULTS, Decision, Policy, _fmt, _number

__all__ = ["LadderPolicy"]


class LadderPolicy(Policy):
    """The seed's escalation, rung by rung.

    Every default comes from the rules file ``vaediag check`` uses (:func:`policy_defaults`).

    1. After ``reduce_at`` epochs (default 10), KL over ``target_kl`` at a weight already at or below
       ``tiny_kl_weight`` (1e-7): a smaller weight changes nothing, switch to the autoencoder at once. KL over ``target_kl`` (500), or an effective penalty
       (kl_weight x KL) over ``max_share`` (10 %) of the reconstruction loss: kl_weight / ``factor`` (10),
       or / its smallest power that brings the penalty to ``warn_share`` (1 %) of the reconstruction loss,
       at most ``max_factor`` (the same cut as ``vaediag check``'s reduce_kl_weight). A posterior that
       collapsed onto the prior (``vaediag check``'s criterion: KL per latent dim <= ``collapse_kl_per_dim``
       where the run logs ``kl_dim_mean``, else total KL <= ``collapse_kl`` nats; or fewer than
       ``collapse_active_fraction`` of the latent units active, or none) means the
       penalty has won outright: the same cut as ``vaediag check``'s ``reduce_kl_weight`` on a collapse
       (``factor``, or more by the share rule), or / ``collapse_factor`` when given.
    2. After ``ae_at`` epochs (30), KL still over target, or still blurry (sharpness below
       ``min_sharpness`` or val PSNR below ``target_psnr``): switch to the autoencoder (Option B:
       z = mu, kl_weight 0).
    3. After ``stop_at`` epochs (60), val reconstruction improved by less than ``min_delta`` (relative)
       over the last ``window`` epochs: converged, stop; never a run whose reconstruction is ``regress_ratio``
       worse than its best of ``patience`` or more epochs ago (a regression: check says lower_learning_rate).

    Each rung fires once, at the first epoch at or after its milestone where its condition holds.

    >>> p = LadderPolicy(kl_weight=1e-5)
    >>> p.update(9, {"kl": 1535.0, "recon": 0.111}).reason
    'kl = 1535 > 500; penalty 1e-05 x 1535 = 13.8% of recon 0.111 > 10% after epoch 10: kl_weight 1e-05 -> 1e-07 (100x: the penalty to <= 1% of recon)'
    """

    name = "ladder"
    requires = ("kl",)
    optional = ("recon", "nll", "psnr", "sharpness", "active_units", "kl_dim_mean")
    param_types = {
        **Policy.param_types, "target_kl": float, "reduce_at": int, "ae_at": int, "stop_at": int,
        "factor": float, "target_psnr": float, "min_sharpness": float, "window": int, "min_delta": float,
        "min_grad_similarity": float, "max_sharpness": float, "regress_ratio": float, "patience": int,
        "max_share": float, "warn_share": float, "max_factor": float, "collapse_kl": float,
        "collapse_kl_per_dim": float, "collapse_active_fraction": float, "latent_dim": int,
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
        regress_ratio: float = DEFAULTS["regress_ratio"],
        patience: int = int(DEFAULTS["patience"]),
        max_share: float | None = DEFAULTS["max_share"],
        warn_share: float = DEFAULTS["warn_share"],
        max_factor: float = DEFAULTS["max_factor"],
        collapse_kl: float | None = DEFAULTS["collapse_kl"],
        collapse_kl_per_dim: float = DEFAULTS["collapse_kl_per_dim"],
        collapse_active_fraction: float = DEFAULTS["collapse_active_fraction"],
        latent_dim: int | None = None,
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
        self.regress_ratio = _number("regress_ratio", regress_ratio, low=0.0)
        self.patience = _number("patience", patience, low=0, integer=True)
        self.max_share = None if max_share is None else _number("max_share", max_share, low=0.0, low_open=True)
        self.warn_share = _number("warn_share", warn_share, low=0.0, low_open=True)
        self.max_factor = _number("max_factor", max_factor, low=self.factor)
        self.collapse_kl = None if collapse_kl is None else _number("collapse_kl", collapse_kl, low=0.0)
        self.collapse_kl_per_dim = _number("collapse_kl_per_dim", collapse_kl_per_dim, low=0.0)
        self.collapse_active_fraction = _number("collapse_active_fraction", collapse_active_fraction, low=0.0,
                                                high=1.0)
        self.latent_dim = None if latent_dim is None else _number("latent_dim", latent_dim, low=1, integer=True)
        self.collapse_factor = (None if collapse_factor is None
                                else _number("collapse_factor", collapse_factor, low=1.0, low_open=True))
        self.tiny_kl_weight = None if tiny_kl_weight is None else _number("tiny_kl_weight", tiny_kl_weight, low=0.0)
        self.rung = 0  # 0: as started, 1: kl_weight reduced, 2: autoencoder, 3: stopped
        self.recon_history: deque[float] = deque(maxlen=self.window + 1)
        # The whole run's best reconstruction and the last epoch at (or near) it, kept incrementally: a run that
        # regressed and then flattened looks like a plateau in the last window alone (check judges the whole run).
        self.best_recon: float | None = None
        self.near_best_epoch: int | None = None

    def _needs_current_weight(self) -> bool:
        return self.rung < 1

    def _observe(self, epoch: int, m: Mapping[str, float]) -> None:
        if "recon" in m:
            r = m["recon"]
            self.recon_history.append(r)
            if self.best_recon is None or r < self.best_recon:
                self.best_recon, self.near_best_epoch = r, epoch
            elif r <= self.best_recon + abs(self.best_recon) * self.regress_ratio / 2:
                self.near_best_epoch = epoch

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
        """Why the posterior looks collapsed onto the prior, or None (only under a KL penalty). ``vaediag check``'s
        evidence: the KL per latent dim (logged ``kl_dim_mean``), the fraction of active units (``latent_dim``, or
        the logged KL summed over dims / its mean per dim, as the trainer logs them), else the total KL."""
        if self.mode == "ae" or not self.kl_weight:
            return None
        kl, per_dim, active = m["kl"], m.get("kl_dim_mean"), m.get("active_units")
        latent = self.latent_dim
        if latent is None and per_dim is not None and per_dim > 0 and kl > 0:
            latent = max(1, round(kl / per_dim))
        fraction = active / latent if active is not None and latent else None
        reasons = collapse_verdict(kl_per_dim=per_dim, active_fraction=fraction, active_units=active,
                                   kl_total=kl if self.collapse_kl is not None else None,
                                   kl_per_dim_max=self.collapse_kl_per_dim,
                                   kl_total_max=self.collapse_kl if self.collapse_kl is not None else 0.0,
                                   active_fraction_min=self.collapse_active_fraction)
        if active is not None and active < 1:
            return f"kl = {_fmt(kl)} nats, 0 active latent units"
        if reasons:
            return f"kl = {_fmt(kl)} nats: " + "; ".join(r.text for r in reasons)
        return None

    @staticmethod
    def _recon(m: Mapping[str, float]) -> float | None:
        """The reconstruction term of the objective: a logged NLL (latent-diffusion's nll_loss, which enters its
        total) over its per-pixel reconstruction loss, as ``vaediag check``'s penalty share reads it."""
        return m.get("nll", m.get("recon"))

    def _share(self, m: Mapping[str, float]) -> float | None:
        """Effective penalty / reconstruction loss (the seed's 13.5 %), where both are known."""
        recon = self._recon(m)
        if recon is None:
            return None
        return penalty_ratio(self.kl_weight, m["kl"], recon)

    def _converged(self, epoch: int) -> str | None:
        """A plateau by the engine's trend classifier: a regressing or still improving run is not converged. The
        regression is judged on the whole run (its best so far, as ``vaediag check`` does), the plateau on the
        last ``window`` epochs."""
        h = list(self.recon_history)
        if len(h) <= self.window or h[0] <= 0:
            return None
        best = self.best_recon
        if (best is not None and self.near_best_epoch is not None and epoch - self.near_best_epoch >= self.patience
                and (h[-1] - best) / (abs(best) or 1.0) > self.regress_ratio):
            return None  # regressing since the best: not converged (check says lower_learning_rate)
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
            conv = self._converged(epoch) if n >= self.stop_at else None
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
                why.append(f"penalty {_fmt(w)} x {_fmt(kl)} = {share:.1%} of recon {_fmt(self._recon(m))} "
                           f"> {self.max_share:.0%}")
            how = f" ({cut:g}x: the penalty to <= {self.warn_share:.0%} of recon)" if cut != self.factor else ""
            return (Decision("set_kl_weight", epoch, new, "vae",
                             f"{'; '.join(why)} after epoch {n}: kl_weight {_fmt(w)} -> {_fmt(new)}{how}"),
                    {"rung": 1})
        if n >= self.stop_at:
            conv = self._converged(epoch)
            if conv:
                return Decision("stop", epoch, w, self.mode, f"{conv} after epoch {n}: converged, stop"), {"rung": 3}
        nxt = next((f" (next milestone: epoch {k})" for k in (self.reduce_at, self.ae_at, self.stop_at) if k > n), "")
        return Decision("keep", epoch, w, self.mode, f"{kl_txt} after epoch {n}: keep kl_weight {_fmt(w)}{nxt}"), {}

    def _extra_state(self) -> dict[str, Any]:
        return {"rung": self.rung, "recon_history": list(self.recon_history), "best_recon": self.best_recon,
                "near_best_epoch": self.near_best_epoch}

    def _load_extra(self, state: Mapping[str, Any]) -> None:
        self.rung = int(state["rung"])
        self.recon_history = deque(state["recon_history"], maxlen=self.window + 1)
        self.best_recon = state.get("best_recon")
        self.near_best_epoch = state.get("near_best_epoch")
