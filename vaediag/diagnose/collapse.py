"""Posterior collapse (``kl_collapse``): the KL per latent dimension near 0, few active units.

A collapsed posterior matches the prior, so the decoder ignores z and the model reconstructs an average.
The KL usually starts low, rises in the first epochs as the encoder learns, and may then be pushed back
down by the penalty; the rule therefore judges only from ``after`` completed epochs on.

Evidence, strongest first: the logged KL per dimension (``kl_dim_mean``) or the KL divided by the latent
size; the fraction of active units (``active_units`` / latent size: dims with Var_x(mu_d) > 0.01); the
total KL when the latent size is unknown. The verdict is :func:`~vaediag.diagnose.criteria.collapse_verdict`'s
(the watchdog's ladder calls the same function); this module reads the numbers from the epoch table and
words the finding.
"""

from __future__ import annotations

import math

import pandas as pd

from vaediag.diagnose.criteria import collapse_verdict
from vaediag.diagnose.model import Finding
from vaediag.diagnose.numbers import fmt_kl, fmt_pct, fmt_sig, human_epoch
from vaediag.diagnose.tables import value_at

__all__ = ["check_kl_collapse"]


def check_kl_collapse(
    table: pd.DataFrame,
    *,
    run: str,
    epochs: int,
    latent_dim: int | None,
    after: int,
    kl_per_dim_max: float,
    active_fraction_min: float,
    kl_total_max: float,
    autoencoder: bool = False,
    per_dim_divisor: float | None = None,
) -> list[Finding]:
    """``kl_collapse``: fail when the posterior has collapsed at the latest completed epoch, else pass.

    Args:
        table: the run's epoch table.
        epochs: completed epochs.
        latent_dim: latent size, or None.
        after: judge from this many completed epochs on.
        kl_per_dim_max: KL per dimension (nats) at or below this is collapse.
        active_fraction_min: active units / latent size below this is collapse.
        kl_total_max: total KL at or below this is collapse when the latent size is unknown.
        autoencoder: an autoencoder has no posterior to collapse: nothing is reported.
        per_dim_divisor: divide the KL by this for the KL per dim (the run's convention: its latent size for
            a KL summed over dims, 1 for one averaged per dim). 0 means the reduction is unknown: no KL per
            dim is derived, and the total KL is judged against ``kl_per_dim_max``, which holds as collapse
            under either reduction. None: the latent size decides (a KL summed over dims).
    """
    if autoencoder or epochs < after or epochs == 0:
        return []
    last = epochs - 1
    kl = value_at(table, "kl", last)
    per_dim, per_dim_source = _kl_per_dim(table, last, kl, latent_dim, per_dim_divisor)
    if per_dim_divisor == 0 and per_dim is None:
        kl_total_max = min(kl_total_max, kl_per_dim_max)  # reduction unknown: what is collapse either way
    active = value_at(table, "active_units", last)
    if per_dim is None and active is None and kl is None:
        return []

    per_dim_known = per_dim is not None and math.isfinite(per_dim[0])
    kl_known = kl is not None and math.isfinite(kl[0])
    active_known = active is not None and math.isfinite(active[0])
    frac = active[0] / latent_dim if active_known and latent_dim else None
    verdict = collapse_verdict(kl_per_dim=per_dim[0] if per_dim_known else None,
                               kl_total=kl[0] if kl_known else None,
                               active_fraction=frac, active_units=active[0] if active_known else None,
                               kl_per_dim_max=kl_per_dim_max, kl_total_max=kl_total_max,
                               active_fraction_min=active_fraction_min)
    fired = {r.kind for r in verdict}

    facts, reasons, (epoch, value, threshold, term) = _collapse_evidence(
        last=last, per_dim=per_dim if per_dim_known else None, per_dim_source=per_dim_source,
        kl=kl if kl_known else None, active=active if active_known else None, frac=frac, latent_dim=latent_dim,
        fired=fired, kl_per_dim_max=kl_per_dim_max, kl_total_max=kl_total_max,
        active_fraction_min=active_fraction_min, reduction_unknown=per_dim_divisor == 0)
    if not facts:
        return []
    if reasons:
        msg = f"posterior collapse at {human_epoch(epoch)}: " + "; ".join(reasons) + _kl_fall(table, last, kl)
        return [Finding("kl_collapse", "fail", run, msg, epoch=epoch, term=term, value=value, threshold=threshold)]
    return [Finding("kl_collapse", "pass", run, f"no posterior collapse at {human_epoch(epoch)}: " + ", ".join(facts),
                    epoch=epoch, term=term, value=value, threshold=threshold)]


def _collapse_evidence(*, last: int, per_dim: tuple[float, int] | None, per_dim_source: str,
                       kl: tuple[float, int] | None, active: tuple[float, int] | None, frac: float | None,
                       latent_dim: int | None, fired: set[str], kl_per_dim_max: float, kl_total_max: float,
                       active_fraction_min: float, reduction_unknown: bool,
                       ) -> tuple[list[str], list[str], tuple[int, float | None, float | None, str]]:
    """The finite readings worded: ``(facts, reasons, (epoch, value, threshold, term))``.

    The facts are what the run shows; the reasons, which of them is collapse (``fired``: the verdict's kinds);
    the strongest reading gives the finding its epoch, value, threshold and term.
    """
    reasons, facts = [], []
    epoch, value, threshold, term = last, None, None, "kl"
    if per_dim is not None:
        facts.append(f"KL per dim {fmt_sig(per_dim[0], 2)} nats ({per_dim_source})")
        epoch, value, threshold, term = per_dim[1], per_dim[0], kl_per_dim_max, "kl_dim_mean"
        if "kl_per_dim" in fired:
            reasons.append(f"KL per dim {fmt_sig(per_dim[0], 2)} <= {fmt_sig(kl_per_dim_max, 2)} nats")
    elif kl is not None:
        facts.append(f"KL {fmt_kl(kl[0])} nats (" + ("reduction over dims unknown" if reduction_unknown
                                                   else "latent size unknown") + ")")
        epoch, value, threshold = kl[1], kl[0], kl_total_max
        if "kl_total" in fired:
            reasons.append(f"total KL {fmt_kl(kl[0])} <= {fmt_sig(kl_total_max, 2)} nats")
    if active is not None:
        if latent_dim:
            facts.append(f"{active[0]:.0f}/{latent_dim} active units ({fmt_pct(frac)})")
            if "active_fraction" in fired:
                reasons.append(f"only {active[0]:.0f} of {latent_dim} latent units active ({fmt_pct(frac)} < "
                               f"{fmt_pct(active_fraction_min)})")
                if value is None or not reasons[:-1]:
                    epoch, value, threshold, term = active[1], frac, active_fraction_min, "active_units"
        else:
            facts.append(f"{active[0]:.0f} active units")
            if "no_active" in fired:
                reasons.append("no active latent unit")
                epoch, value, threshold, term = active[1], 0.0, active_fraction_min, "active_units"
    return facts, reasons, (epoch, value, threshold, term)


def _kl_per_dim(table: pd.DataFrame, last: int, kl: tuple[float, int] | None, latent_dim: int | None,
                per_dim_divisor: float | None) -> tuple[tuple[float, int] | None, str]:
    """The KL per dimension at ``last`` (value, epoch) and where it comes from: logged, or the KL over a divisor."""
    per_dim = value_at(table, "kl_dim_mean", last)
    source = "logged KL per dim"
    divisor = latent_dim if per_dim_divisor is None else per_dim_divisor
    if per_dim is None and kl is not None and divisor:
        per_dim = (kl[0] / divisor, kl[1])
        source = f"KL / {int(divisor)} dims" if divisor != 1 else "KL averaged per dim"
    return per_dim, source


def _kl_fall(table: pd.DataFrame, last: int, kl: tuple[float, int] | None) -> str:
    """The clause "; the KL fell from P at epoch E" when the KL once stood over 10x its latest value, else ""."""
    if "kl" not in table or kl is None:
        return ""
    s = table["kl"].loc[: last].dropna()
    if len(s) and float(s.max()) > 10 * max(kl[0], 1e-12):
        return f"; the KL fell from {fmt_kl(float(s.max()))} at {human_epoch(int(s.idxmax()))}"
    return ""
