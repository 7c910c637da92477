"""Formatting for the report: numbers, changes, verdicts and configuration as markdown cell and prose text.

The numbers' text comes from :mod:`vaediag.diagnose.numbers` (the same as ``vaediag check``); everything here
turns a value the comparison already holds into words, and computes nothing about the runs.
"""

from __future__ import annotations

import math

from vaediag.diagnose.compare import LOSS_WEIGHT_ORDER, ConfigDifference, DataCaveat, RunConfig, RunView
from vaediag.render.markdown import MISSING, escape
from vaediag.sanitize import visible
from vaediag.terms import TERM_INFO

_STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "pending": "⏳ pending", "n/a": "n/a", "not reached": "not reached"}
_MODE_LABEL = {"vae": "VAE", "ae": "AE (z = mu)", "vq": "VQ-VAE (no KL)", "no_kl": "no KL term"}
_SEVERITY_MARK = {"fail": "❌ fail", "warn": "⚠️ warn", "info": "ℹ️ info", "pass": "✅ pass"}


def _val(x: float | None, term: str | None = None) -> str:
    """A value for a cell: ``—`` when not logged, ``NaN``/``inf`` spelled out (a diverged run is news)."""
    from vaediag.diagnose.numbers import fmt_value

    if x is None:
        return MISSING
    if not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return fmt_value(x, term)


def _unit(term: str) -> str:
    u = TERM_INFO[term].unit if term in TERM_INFO else ""
    return f" {u}" if u == "dB" else ""


def _weight_or_missing(w: float | None) -> str:
    from vaediag.diagnose.numbers import fmt_weight

    if w is None or (isinstance(w, float) and math.isnan(w)):
        return MISSING
    return fmt_weight(float(w))  # rounds a float32 read-back (9.999999747e-06) to 0.00001 itself


def _pct(x: float | None) -> str:
    from vaediag.diagnose.numbers import fmt_pct, fmt_sig

    if x is None or not math.isfinite(x):
        return MISSING
    # Tiny shares (0.0009 %) matter here: they are the point of the seed's fix, so keep 2 significant figures.
    return fmt_pct(x, 1) if x >= 0.001 else f"{fmt_sig(100 * x, 2)}%"


def _factor(a: float, b: float) -> str:
    """``a`` relative to ``b`` as "N× lower/higher"."""
    from vaediag.diagnose.numbers import fmt_sig

    if a == b:
        return "unchanged"
    if a <= 0 or b <= 0:
        return f"{'up' if a > b else 'down'} from {fmt_sig(b, 3)}"
    r = a / b
    if 1 / 1.5 < r < 1.5:  # small changes read better as percentages than as "1.1× higher"
        return f"{fmt_sig(abs(r - 1) * 100, 2)}% {'higher' if r > 1 else 'lower'}"
    return f"{fmt_sig(r, 2)}× higher" if r > 1 else f"{fmt_sig(1 / r, 2)}× lower"


def _change(term: str, base: float | None, value: float | None) -> str:
    """How ``value`` compares with ``base``, in the metric's own terms (dB, points, factors)."""
    from vaediag.diagnose.numbers import fmt_sig

    if base is None or value is None or not (math.isfinite(base) and math.isfinite(value)):
        return MISSING
    if term.startswith("psnr"):
        d = value - base
        return f"{'+' if d >= 0 else '−'}{fmt_sig(abs(d), 3) if abs(d) >= 0.1 else f'{abs(d):.2f}'} dB"
    if term.startswith("ssim") and term != "ssim_loss":
        d = value - base
        rel = f" ({'+' if d >= 0 else '−'}{fmt_sig(abs(d) / base * 100, 2)}%)" if base else ""
        return f"{'+' if d >= 0 else '−'}{fmt_sig(abs(d), 2)}{rel}"
    return _factor(value, base)


def _delta_text(column: str, best: float, other: float) -> str:
    from vaediag.diagnose.numbers import fmt_sig

    term = column.split("_", 1)[1]
    if term == "psnr":
        return f"{fmt_sig(best - other, 3)} dB {'higher' if best >= other else 'lower'}"
    return _factor(best, other)


def _judgement(verdict: str) -> str:
    if verdict == "n/a":
        return "n/a (autoencoder: the KL is not penalised)"
    if verdict == "met":
        return "✅ met"
    if verdict == "missing":
        return "not logged"
    if verdict == "nonfinite":
        return "❌ not finite"
    return f"❌ {'too low' if verdict == 'low' else 'too high'}"


def _config(c: RunConfig) -> dict[str, str]:
    """Configuration cells of the run table (kl_weight, latent dim, mode, loss weights)."""
    w = _weight_or_missing(c.kl_weight)
    if c.kl_weight_logged is not None:
        w = f"{_weight_or_missing(c.kl_weight_logged[0])} → {_weight_or_missing(c.kl_weight_logged[1])}"
    weights = c.loss_weights
    return {
        "kl_weight": w,
        "source": c.kl_weight_source,
        "latent": str(c.latent_dim) if c.latent_dim else MISSING,
        "mode": _MODE_LABEL.get(c.model, "VAE"),
        "weights": " / ".join(_num_plain(weights.get(k)) for k in LOSS_WEIGHT_ORDER) if weights else MISSING,
    }


def _num_plain(x: float | None) -> str:
    from vaediag.diagnose.numbers import fmt_loss_weight

    return MISSING if x is None else fmt_loss_weight(x)


# What the summary calls each loss term's weight.
_WEIGHT_NAMES = {"recon": "L1", "perceptual": "perceptual", "ssim_loss": "SSIM", "edge": "edge"}


def _difference(d: ConfigDifference) -> str:
    """A configuration difference as a short phrase with both values."""
    if d.key == "kl_weight":
        rel = f", {_factor(d.ours, d.theirs)}" if d.ours > 0 and d.theirs > 0 else ""
        return f"kl_weight {_weight_or_missing(d.ours)} vs {_weight_or_missing(d.theirs)}{rel}"
    if d.key == "mode":
        return f"mode {_MODE_LABEL.get(d.ours, 'VAE')} vs {_MODE_LABEL.get(d.theirs, 'VAE')}"
    if d.key == "latent_dim":
        return f"latent dim {d.ours} vs {d.theirs}"
    return f"{_WEIGHT_NAMES[d.key]} weight {_num_plain(d.ours)} vs {_num_plain(d.theirs)}"


def _caveat(a: RunView, b: RunView, caveat: DataCaveat) -> str:
    """Why ``a`` and ``b`` may not compare on equal terms, as a sentence."""
    if caveat.kind == "data":
        return (f"{a.label} and {b.label} were trained on different data ({escape(caveat.ours)} vs "
                f"{escape(caveat.theirs)}), so the gap is not the settings' alone.")
    return (f"{a.label} and {b.label} come from different folders ({escape(caveat.ours)}, {escape(caveat.theirs)}), "
            "so the gap may come from different data or code rather than settings.")


def _sentence(text: str) -> str:
    """``text`` ending with a full stop (finding messages and reasons come without one)."""
    t = text.rstrip()
    return t if t.endswith((".", "!", "?", ")")) and not t.endswith("e.g.)") else t + "."


def _code(text: str, lang: str = "") -> list[str]:
    """A fenced code block; the fence is longer than any backtick run inside, so nothing escapes it.
    Control characters other than the line breaks show as visible escapes (the file holds none)."""
    text = visible(text, newlines=True)
    longest = 0
    run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", *text.splitlines(), fence]


def _epoch_cell(epoch: int | None) -> str:
    return MISSING if epoch is None else str(int(epoch) + 1)


def _rule_title(rule: str) -> str:
    if rule == "success":
        return "Success criteria"
    tail = rule.split("_", 1)[1]
    return f"After epoch {tail}" if tail.isdigit() else rule
