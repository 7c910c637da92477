"""Number formatting shared by the rules' messages and the renderers.

The seed writes its arithmetic the way a person does: weights as plain decimals (``0.00001``, never
``1e-05``), KL values with thousands separators (``1,535``), small losses to a few significant figures
(``0.015``, ``0.111``). Messages are built with these helpers so a reader can redo every sum by hand.

    >>> fmt_weight(1e-5), fmt_sig(1535, 4), fmt_sig(0.01535, 2), fmt_kl(1535.2), fmt_ratio(93333.3)
    ('0.00001', '1,535', '0.015', '1,535', '93,000:1')
"""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = [
    "round_sig",
    "fmt_sig",
    "fmt_weight",
    "fmt_kl",
    "fmt_pct",
    "fmt_ratio",
    "fmt_value",
    "fmt_loss_weight",
    "human_epoch",
    "reduce_factor",
]


def round_sig(x: float, n: int) -> float:
    """``x`` rounded to ``n`` significant figures: ``round_sig(0.01535, 2) == 0.015``."""
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{n - 1}e}")


def fmt_sig(x: float | None, n: int = 3) -> str:
    """``x`` to ``n`` significant figures in plain notation with thousands separators.

    >>> fmt_sig(93333.3, 2), fmt_sig(0.00003, 1), fmt_sig(0.111, 3), fmt_sig(23.912, 3)
    ('93,000', '0.00003', '0.111', '23.9')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    r = round_sig(x, n)
    decimals = max(0, n - 1 - math.floor(math.log10(abs(r))))
    s = f"{r:,.{decimals}f}"
    # The seed writes 0.0003, not 0.00030: trailing zeros after the point carry no information here.
    return s.rstrip("0").rstrip(".") if "." in s else s


def fmt_weight(w: float | None) -> str:
    """A loss weight as a plain decimal, as the seed writes it: ``1e-07 -> '0.0000001'``."""
    if w is None or (isinstance(w, float) and math.isnan(w)):
        return "unknown"
    if not math.isfinite(w):
        return str(w)
    # Logged weights went through float32 (1e-5 comes back as 9.99999974738e-06): 6 figures are exact.
    s = format(Decimal(repr(round_sig(float(w), 6))).normalize(), "f")
    return s


def fmt_kl(x: float | None) -> str:
    """A KL value: whole nats with separators from 100 up (``1,535``), else 3 significant figures."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isfinite(x) and abs(x) >= 100:
        return f"{round(x):,}"
    return fmt_sig(x, 3)


def fmt_pct(fraction: float | None, decimals: int = 1) -> str:
    """A fraction as a percentage: ``0.135 -> '13.5%'``; under 1 %, two significant figures (``0.073%``)."""
    if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
        return "n/a"
    if not math.isfinite(fraction):
        return "inf%"
    pct = fraction * 100
    if pct != 0 and abs(pct) < 1:
        return f"{fmt_sig(pct, 2)}%"
    return f"{pct:.{decimals}f}%"


def fmt_ratio(x: float | None) -> str:
    """A ratio ``x:1`` to 2 significant figures, as the seed writes ``93,000:1``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf:1"
    return f"{fmt_sig(x, 2)}:1"


def fmt_loss_weight(w: float) -> str:
    """A reconstruction-term weight with at least one decimal: ``1 -> '1.0'``, ``0.05 -> '0.05'``."""
    s = f"{w:.1f}"
    return s if float(s) == float(w) else fmt_weight(w)


def fmt_value(x: float | None, term: str | None = None) -> str:
    """A metric value for tables: KL in whole nats, PSNR to 0.1 dB, weights as decimals, else 3 s.f."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if term in ("kl", "kl_weighted") or (term or "").startswith("kl_dim"):
        return fmt_kl(x)
    if term in ("kl_weight", "lr"):
        return fmt_weight(x) if x == 0 or abs(x) >= 1e-9 else f"{x:.1e}"
    if term in ("psnr", "psnr_grey", "psnr_colour"):
        return f"{x:.1f}" if math.isfinite(x) else fmt_sig(x)
    if term in ("active_units", "epoch", "control_seq", "ae_mode"):
        return f"{x:.0f}" if math.isfinite(x) else fmt_sig(x)
    return fmt_sig(x, 3)


def human_epoch(index: int | float | None) -> str:
    """The seed's way to name a 0-based epoch index: index 9 is ``epoch 10`` (10 completed epochs)."""
    if index is None or (isinstance(index, float) and math.isnan(index)):
        return "epoch ?"
    return f"epoch {int(index) + 1}"


def reduce_factor(ratio: float | None, *, step: float = 10.0, warn_ratio: float = 0.01, cap: float = 1000.0) -> float:
    """How many times to cut kl_weight: ``step``, or its smallest power that brings the penalty ratio
    (kl_weight x KL / reconstruction) to at most ``warn_ratio`` at the current KL, never beyond ``cap``.

    The seed's first 10x step left 13.5 % of the signal to the KL; its fix was 100x:

    >>> reduce_factor(0.138)
    100.0
    >>> reduce_factor(0.05), reduce_factor(None), reduce_factor(0.9, cap=100.0)
    (10.0, 10.0, 100.0)
    """
    factor = step
    if ratio is None or not math.isfinite(ratio) or ratio <= 0 or step <= 1:
        return factor
    while ratio / factor > warn_ratio and factor * step <= cap * (1 + 1e-9):
        factor *= step
    return factor
