"""The diagnosis criteria, defined once, in plain Python (no pandas): numbers in, a verdict out.

``vaediag check``, ``vaediag report`` and every watchdog policy judge a run through these functions, with
thresholds from one rules file (``vaediag/rules/default.toml``). The rule families (:mod:`.health`,
:mod:`.penalty`, :mod:`.collapse`) turn their verdicts into findings; the policies turn them into decisions.

Every criterion is scale-free unless its name says otherwise: a share, a ratio, a trend relative to the
series' own best value, a count of latent units. Absolute bands (the seed's "KL 100-500") belong to a
profile (``[profiles]`` in the rules file): :func:`kl_band_verdict` takes the band as arguments, and only the
``seed`` profile calls it. Each function is the pure comparison against its thresholds; what a caller
does with the verdict (a finding and its wording, a decision) is the caller's.

    >>> t = classify_trend([0, 1, 2, 3, 4, 5], [0.05, 0.042, 0.08, 0.11, 0.13, 0.142])
    >>> t.kind, t.best_epoch, round(t.worse_than_best, 2)
    ('regressing', 1, 2.38)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "TREND_KINDS",
    "Trend",
    "classify_trend",
    "penalty_ratio",
    "penalty_share_verdict",
    "kl_band_verdict",
    "divergence_verdict",
    "lr_vanished_verdict",
    "CollapseReason",
    "collapse_verdict",
    "dead_model_verdict",
    "blur_verdict",
]

TREND_KINDS = ("improving", "plateau", "regressing", "noisy", "short")


@dataclass(frozen=True)
class Trend:
    """What a monitored series did (lower is better; a higher-is-better series is judged on its negation).

    Attributes:
        kind: ``improving`` (still setting new bests: the last ``window`` epochs beat everything before by
            at least ``min_delta``), ``plateau`` (no such improvement, and the end is near the best),
            ``regressing`` (the last epoch at or near the best is ``patience`` or more epochs before the end
            and the end is clearly worse than the best), ``noisy`` (the epoch-to-epoch noise is larger than
            any movement: too noisy to say) or ``short`` (fewer than 3 points, or flat over fewer than
            ``window`` + 1 points).
        best, best_epoch: the best value and its epoch.
        last, last_epoch: the final value and its epoch.
        first: the first value.
        improvement: relative improvement of the last ``window`` epochs over the best before them
            (``(before - recent) / |before|``); >= 0 means better, never shown as a negative "better".
        worse_than_best: ``(last - best) / |best|`` (0 at the best).
        noise: median absolute epoch-to-epoch change relative to the series' median level.
        window: the window actually used (shortened for short runs).
    """

    kind: str
    best: float
    best_epoch: int
    last: float
    last_epoch: int
    first: float
    improvement: float
    worse_than_best: float
    noise: float
    window: int
    points: int


def _finite(epochs: Sequence[int], values: Sequence[float]) -> tuple[list[int], list[float]]:
    es, vs = [], []
    for e, v in zip(epochs, values):
        v = float(v)
        if math.isfinite(v):
            es.append(int(e))
            vs.append(v)
    return es, vs


def classify_trend(
    epochs: Sequence[int],
    values: Sequence[float],
    *,
    higher_is_better: bool = False,
    window: int = 10,
    min_delta: float = 0.01,
    regress_ratio: float = 0.10,
    patience: int = 2,
    noise_max: float = 0.25,
) -> Trend:
    """Classify one series (see :class:`Trend`); non-finite points are skipped.

    Args:
        epochs, values: the series, in epoch order.
        higher_is_better: PSNR-like series (judged on the negation).
        window: epochs of "recent" history; shortened to a third of the run (at least 1) for short runs.
        min_delta: relative improvement over the window below which the series has stopped improving.
        regress_ratio: final value this far (relative) above the best, with the last epoch within
            ``best * (1 + regress_ratio / 2)`` at least ``patience`` epochs before the end (every later point
            is above that line), is a regression.
        noise_max: median epoch-to-epoch change (relative to the median level) above which a series that
            neither regressed nor improved by more than its noise is ``noisy``.
    """
    es, vs = _finite(epochs, values)
    sign = -1.0 if higher_is_better else 1.0
    b = [sign * v for v in vs]
    n = len(b)
    if n < 3:
        last = vs[-1] if vs else math.nan
        return Trend("short", min(vs, default=math.nan) if not higher_is_better else max(vs, default=math.nan),
                     es[b.index(min(b))] if b else -1, last, es[-1] if es else -1, vs[0] if vs else math.nan,
                     0.0, 0.0, 0.0, window, n)
    w = window if n > window else max(1, n // 3)
    i_best = min(range(n), key=lambda i: (b[i], i))
    best, last = b[i_best], b[-1]
    scale = abs(best) or max(abs(x) for x in b) or 1.0
    before, recent = min(b[: n - w]), min(b[n - w:])
    improvement = (before - recent) / (abs(before) or scale)
    worse = (last - best) / scale
    diffs = sorted(abs(b[i + 1] - b[i]) for i in range(n - 1))
    level = sorted(abs(x) for x in b)[n // 2] or scale
    noise = diffs[len(diffs) // 2] / level
    # The rise is measured from the last epoch at (or near) the best, not the first: a series that sits at its
    # best for 40 epochs and then gets 60 % worse has regressed, although its first best is far back.
    near = best + abs(best) * regress_ratio / 2
    i_near = max(i for i in range(n) if b[i] <= near)
    tail = b[i_near + 1:]
    regressing = (
        es[-1] - es[i_near] >= patience
        and worse > regress_ratio
        and len(tail) > 0
    )
    if regressing:
        kind = "regressing"
    elif improvement >= min_delta and (improvement >= noise or noise <= noise_max):
        kind = "improving"
    elif noise > noise_max:
        kind = "noisy"  # neither a clear regression nor an improvement larger than the noise
    elif n > window:
        kind = "plateau"
    else:
        kind = "short"  # flat so far, but a plateau needs a whole window of history
    shown = (lambda x: -x) if higher_is_better else (lambda x: x)
    return Trend(kind, shown(best), es[i_best], shown(last), es[-1], vs[0], improvement, worse, noise, w, n)


def penalty_ratio(kl_weight: float | None, kl: float, recon: float) -> float | None:
    """``kl_weight x KL / recon``: the seed's "share of the reconstruction signal"; None when unknown or
    undefined (no weight, recon <= 0 or not finite).

    >>> round(penalty_ratio(1e-5, 1535.0, 0.111), 4)
    0.1383
    """
    if kl_weight is None or not (math.isfinite(kl) and math.isfinite(recon)) or recon <= 0:
        return None
    return kl_weight * kl / recon


def penalty_share_verdict(ratio: float | None, *, warn_ratio: float, fail_ratio: float | None) -> str | None:
    """``fail`` (the penalty above ``fail_ratio`` of the reconstruction loss: the KL term takes signal from
    reconstruction), ``warn`` (above ``warn_ratio``), ``pass`` (negligible), or None when the ratio is unknown or
    not finite. ``fail_ratio`` None: never ``fail``.

    >>> penalty_share_verdict(0.138, warn_ratio=0.01, fail_ratio=0.10)
    'fail'
    """
    if ratio is None or not math.isfinite(ratio):
        return None
    if fail_ratio is not None and ratio > fail_ratio:
        return "fail"
    if ratio > warn_ratio:
        return "warn"
    return "pass"


def kl_band_verdict(kl: float, *, low: float, high: float) -> str | None:
    """Where a KL stands against an absolute band (a profile's, e.g. the seed's 100-500): ``above`` (KL > ``high``:
    too high), ``within`` (``low`` <= KL <= ``high``) or ``below`` (KL < ``low``: not too high; whether that is a
    collapse is :func:`collapse_verdict`'s to say); None when the KL is NaN (an infinite one is above or below).

    >>> kl_band_verdict(1535.0, low=100.0, high=500.0)
    'above'
    """
    if math.isnan(kl):
        return None
    if kl > high:
        return "above"
    return "within" if kl >= low else "below"


def divergence_verdict(
    *,
    points: int,
    best: float,
    best_epoch: int,
    last: float,
    last_epoch: int,
    window: int,
    rise: float,
    train_at_best: float | None = None,
    train_last: float | None = None,
) -> bool:
    """Whether the val reconstruction diverges from its best (overfitting): at least ``window`` + 1 points, the
    best ``window`` or more epochs before the last, the last more than ``rise`` (relative) above a positive best,
    and the train reconstruction (at the best epoch and now, where both are known) still falling; both rising is
    instability, not overfitting.

    >>> divergence_verdict(points=12, best=0.08, best_epoch=5, last=0.12, last_epoch=11, window=5, rise=0.1,
    ...                    train_at_best=0.09, train_last=0.06)
    True
    """
    if points < window + 1:
        return False
    if best <= 0 or last_epoch - best_epoch < window or last <= best * (1 + rise):
        return False
    if train_at_best is not None and train_last is not None and train_last >= train_at_best:
        return False
    return True


def lr_vanished_verdict(first: float, last: float, *, vanished_ratio: float) -> float | None:
    """``last / first`` when the learning rate has decayed below ``vanished_ratio`` of its first (positive) value:
    training has effectively stopped; None otherwise.

    >>> lr_vanished_verdict(1.0, 0.0001, vanished_ratio=0.001)
    0.0001
    """
    if first <= 0:
        return None
    frac = last / first
    return frac if frac < vanished_ratio else None


@dataclass(frozen=True)
class CollapseReason:
    """One reason the posterior has collapsed: which test fired, on what value, against what threshold.

    ``kind``: ``kl_per_dim`` (KL per dim <= ``kl_per_dim_max``), ``kl_total`` (total KL <= ``kl_total_max``, where
    the KL per dim is unknown), ``active_fraction`` (fewer than ``active_fraction_min`` of the units active) or
    ``no_active`` (no active unit, where the latent size is unknown). ``text`` is a plain wording; ``vaediag
    check`` words its finding with its own number formats from the same fields.
    """

    kind: str
    value: float
    threshold: float

    @property
    def text(self) -> str:
        if self.kind == "kl_per_dim":
            return f"KL per dim {self.value:.2g} <= {self.threshold:.2g} nats"
        if self.kind == "kl_total":
            return f"total KL {self.value:.2g} <= {self.threshold:.2g} nats: every latent dim is at the prior"
        if self.kind == "active_fraction":
            return f"only {self.value:.0%} of the latent units active (< {self.threshold:.0%})"
        return "no active latent unit"


def collapse_verdict(
    *,
    kl_per_dim: float | None,
    active_fraction: float | None,
    active_units: float | None,
    kl_total: float | None,
    kl_per_dim_max: float,
    kl_total_max: float,
    active_fraction_min: float,
) -> list[CollapseReason]:
    """Reasons the posterior has collapsed (empty: not collapsed, or nothing to judge).

    ``kl_per_dim`` is used where the run's KL convention makes it known; without it, a total KL at or below
    ``kl_total_max`` is collapse (the callers pass ``kl_per_dim_max`` there when the reduction is unknown: a
    sum over dims that small bounds every dim). ``active_fraction`` (active units / latent size) where the latent
    size is known; else only ``active_units == 0`` counts.

    >>> [r.kind for r in collapse_verdict(kl_per_dim=0.0015, active_fraction=50 / 2048, active_units=50,
    ...                                   kl_total=3.0, kl_per_dim_max=0.01, kl_total_max=0.5,
    ...                                   active_fraction_min=0.05)]
    ['kl_per_dim', 'active_fraction']
    """
    reasons = []
    if kl_per_dim is not None and math.isfinite(kl_per_dim):
        if kl_per_dim <= kl_per_dim_max:
            reasons.append(CollapseReason("kl_per_dim", kl_per_dim, kl_per_dim_max))
    elif kl_total is not None and math.isfinite(kl_total) and kl_total <= kl_total_max:
        reasons.append(CollapseReason("kl_total", kl_total, kl_total_max))
    if active_fraction is not None and math.isfinite(active_fraction):
        if active_fraction < active_fraction_min:
            reasons.append(CollapseReason("active_fraction", active_fraction, active_fraction_min))
    elif active_fraction is None and active_units is not None and active_units == 0:
        reasons.append(CollapseReason("no_active", 0.0, active_fraction_min))
    return reasons


def dead_model_verdict(
    *,
    psnr: float | None,
    psnr_trivial: float | None,
    recon_spread: float | None,
    min_spread: float,
    min_gain_db: float,
) -> list[str]:
    """Reasons the model's reconstructions are not a function of its input (empty: alive, or unknown).

    ``recon_spread``: how much reconstructions vary across inputs relative to the inputs (0: one image for
    every input). ``psnr_trivial``: the PSNR of each image's own mean colour, in the same per-image PSNR.
    """
    reasons = []
    if recon_spread is not None and math.isfinite(recon_spread) and recon_spread < min_spread:
        reasons.append(f"reconstructions vary {recon_spread:.1%} as much across inputs as the inputs do "
                       f"(< {min_spread:.0%}): the output barely depends on the input")
    if (psnr is not None and psnr_trivial is not None and math.isfinite(psnr) and math.isfinite(psnr_trivial)
            and psnr < psnr_trivial + min_gain_db):
        reasons.append(f"val PSNR {psnr:.1f} dB does not beat each image's own mean colour ({psnr_trivial:.1f} dB"
                       + (f" + {min_gain_db:g} dB" if min_gain_db else "") + ")")
    return reasons


def blur_verdict(
    *,
    grad_similarity: float | None,
    sharpness: float | None,
    min_grad_similarity: float,
    min_sharpness: float,
    max_sharpness: float,
) -> tuple[str, str] | None:
    """``(verdict, why)``: ``sharp``, ``blurry``, ``artefacts`` (more gradient energy than the input: noise or
    texture, not detail) or ``unknown``; None when neither measure is logged.

    The gradient similarity (bounded, 1 only when the reconstruction's gradients equal the input's) decides
    when logged; the older sharpness ratio (gradient energy of reconstruction over input) can only say
    blurry (too little energy) or suspicious (too much), never that wrong detail is sharp.
    """
    if grad_similarity is not None and math.isfinite(grad_similarity):
        if grad_similarity >= min_grad_similarity:
            return "sharp", f"gradient similarity {grad_similarity:.2f} (at least {min_grad_similarity:.2f})"
        return "blurry", (f"gradient similarity {grad_similarity:.2f} < {min_grad_similarity:.2f}: the "
                          "reconstructions' edges do not match the input's")
    if sharpness is not None and math.isfinite(sharpness):
        if sharpness < min_sharpness:
            return "blurry", (f"sharpness ratio {sharpness:.2g} (reconstructions keep {sharpness:.0%} of the input's "
                              f"gradient energy; below {min_sharpness:.2g})")
        if sharpness > max_sharpness:
            return "artefacts", (f"sharpness ratio {sharpness:.2g}: more gradient energy than the input (above "
                                 f"{max_sharpness:.2g}) means noise or artefacts, not sharpness")
        return "unknown", (f"sharpness ratio {sharpness:.2g} is within {min_sharpness:.2g}-{max_sharpness:.2g}, but "
                           "this ratio cannot tell true detail from wrong detail (log val/grad_similarity)")
    return None
