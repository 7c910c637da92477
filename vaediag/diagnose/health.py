"""Run health: is there anything to judge, is it finite, is training still moving, is it blurry.

Rules (stable ids): ``no_scalars``, ``nonfinite``, ``too_short``, ``lr_vanished``,
``val_recon_divergence``, ``converged``, ``blurry``, ``kl_sign_convention``, ``log_warning``,
``missing_terms``.

Overfitting is judged on the reconstruction term only (``val_recon_divergence``), never on a total loss:
the AntixK lineage validates with KL weight 1.0 while it trains with 0.00025, so its ``val_loss`` is the
KL's and rises while the validation reconstruction still falls.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from vaediag.diagnose.model import Finding
from vaediag.diagnose.numbers import fmt_pct, fmt_sig, fmt_weight, human_epoch
from vaediag.diagnose.tables import VALUE_TERMS

__all__ = [
    "check_no_scalars",
    "check_nonfinite",
    "check_too_short",
    "check_lr_vanished",
    "check_val_recon_divergence",
    "plateau",
    "check_converged",
    "check_blurry",
    "check_kl_sign_convention",
    "check_log_warnings",
    "check_missing_terms",
    "REQUIRED_TERMS",
]

# What the penalty, collapse and checklist rules cannot do without.
REQUIRED_TERMS = ("kl", "recon")

_JUDGED = frozenset(VALUE_TERMS)


def check_no_scalars(frame: pd.DataFrame, *, run: str, n_scalars: int | None = None) -> list[Finding]:
    """``no_scalars`` (warn): the run logged no loss or metric scalar (a run that died at start-up).

    Bookkeeping alone (``hp_metric``, ``lr``, ``epoch``) does not count as something to judge.
    """
    judged = frame["term"].isin(_JUDGED) if len(frame) else pd.Series([], dtype=bool)
    if len(frame) and bool(judged.any()):
        return []
    n = len(frame) if n_scalars is None else n_scalars
    if n == 0:
        msg = "no scalars logged at all: the run died before its first logging step, or logs elsewhere"
    else:
        tags = sorted(map(str, frame["tag"].unique()))
        msg = (f"no loss or metric scalars: only {n} bookkeeping value(s) ({', '.join(tags[:5])}); "
               "the run died before its first logging step")
    return [Finding("no_scalars", "warn", run, msg, value=float(n))]


def check_nonfinite(frame: pd.DataFrame, *, run: str) -> list[Finding]:
    """``nonfinite`` (fail): NaN or inf in a loss or metric; one finding per tag, at its first bad step."""
    if len(frame) == 0:
        return []
    v = frame["value"].to_numpy()
    bad = ~np.isfinite(v) & frame["term"].isin(_JUDGED | {"lr", "kl_weight"}).to_numpy()
    if not bad.any():
        return []
    rows = frame.loc[bad, ["tag", "term", "step", "epoch", "value"]]
    out = []
    for tag, g in rows.groupby("tag", observed=True, sort=True):
        first = g.sort_values("step").iloc[0]
        total = int((frame["tag"] == tag).sum())
        epoch = None if pd.isna(first["epoch"]) else int(first["epoch"])
        where = f"step {int(first['step']):,}" + (f" ({human_epoch(epoch)})" if epoch is not None else "")
        msg = (f"{tag} is {first['value']} from {where}: {len(g):,} of {total:,} values non-finite "
               "(the run diverged; restart from the last finite checkpoint with a lower learning rate)")
        out.append(Finding("nonfinite", "fail", run, msg, epoch=epoch, term=str(first["term"]),
                           value=float(first["value"]), key=str(tag)))
    return out


def check_too_short(epochs: int, *, run: str, min_epochs: int) -> list[Finding]:
    """``too_short`` (warn): fewer than ``min_epochs`` completed epochs: trends cannot be judged."""
    if epochs >= min_epochs:
        return []
    msg = (f"only {epochs} completed epoch{'s' if epochs != 1 else ''}: too short to judge trends "
           f"(needs {min_epochs})")
    return [Finding("too_short", "warn", run, msg, value=float(epochs), threshold=float(min_epochs))]


def check_lr_vanished(table: pd.DataFrame, *, run: str, vanished_ratio: float) -> list[Finding]:
    """``lr_vanished`` (warn): the learning rate decayed below ``vanished_ratio`` of its first value."""
    if "lr" not in table:
        return []
    s = table["lr"].dropna()
    s = s[np.isfinite(s)]
    if len(s) < 2:
        return []
    first, last = float(s.iloc[0]), float(s.iloc[-1])
    if first <= 0:
        return []
    frac = last / first
    if frac >= vanished_ratio:
        return []
    msg = (f"learning rate {fmt_weight(last) if last >= 1e-12 else f'{last:.1e}'} at {human_epoch(int(s.index[-1]))} is "
           f"{fmt_pct(frac, 3)} of its first value {fmt_weight(first)} (below {fmt_pct(vanished_ratio, 3)}): "
           "training has effectively stopped; further epochs change little")
    return [Finding("lr_vanished", "warn", run, msg, epoch=int(s.index[-1]), term="lr", value=last,
                    threshold=vanished_ratio * first)]


def check_val_recon_divergence(table: pd.DataFrame, *, run: str, window: int, rise: float) -> list[Finding]:
    """``val_recon_divergence`` (warn): val reconstruction ``rise`` above its best for ``window`` epochs
    while the train reconstruction still falls. Judged on ``recon`` only (module docstring)."""
    if "val_recon" not in table:
        return []
    v = table["val_recon"].dropna()
    v = v[np.isfinite(v)]
    if len(v) < window + 1:
        return []
    best_epoch = int(v.idxmin())
    best = float(v.min())
    last_epoch, last = int(v.index[-1]), float(v.iloc[-1])
    if best <= 0 or last_epoch - best_epoch < window or last <= best * (1 + rise):
        return []
    train_note = ""
    if "train_recon" in table:
        t = table["train_recon"].dropna()
        t_best, t_last = t.loc[: best_epoch], t.loc[best_epoch:]
        if len(t_best) and len(t_last):
            if float(t_last.iloc[-1]) >= float(t_best.iloc[-1]):
                return []  # both rising: not overfitting (the nonfinite/lr rules speak to instability)
            train_note = (f" while train recon fell from {fmt_sig(float(t_best.iloc[-1]))} to "
                          f"{fmt_sig(float(t_last.iloc[-1]))}")
    msg = (f"val reconstruction {fmt_sig(last)} at {human_epoch(last_epoch)} is {fmt_pct(last / best - 1)} above its "
           f"best {fmt_sig(best)} at {human_epoch(best_epoch)}{train_note}: overfitting")
    return [Finding("val_recon_divergence", "warn", run, msg, epoch=last_epoch, term="recon", value=last,
                    threshold=best * (1 + rise))]


def plateau(table: pd.DataFrame, *, upto: int | None = None, window: int, min_delta: float) -> dict | None:
    """The plateau test behind ``converged``, at epoch ``upto`` (default: the last).

    Returns ``{"converged", "epoch", "column", "now", "before", "improvement"}``: improvement is the relative
    fall of the reconstruction loss (val preferred) over the last ``window`` epochs; converged when below
    ``min_delta``. None when fewer than ``window + 1`` epochs are logged.
    """
    for column in ("val_recon", "train_recon"):
        if column not in table:
            continue
        s = table[column].dropna()
        if upto is not None:
            s = s.loc[:upto]
        s = s[np.isfinite(s)]
        if len(s) < window + 1:
            continue
        now_epoch = int(s.index[-1])
        before = s.loc[: now_epoch - window]
        if len(before) == 0:
            continue
        b = float(before.min())  # best before the window: a noisy dip counts as reached
        n = float(s.loc[now_epoch - window + 1:].min())
        if b <= 0:
            continue
        improvement = (b - n) / b
        return {"converged": improvement < min_delta, "epoch": now_epoch, "column": column, "now": n,
                "before": b, "improvement": improvement}
    return None


def check_converged(table: pd.DataFrame, *, run: str, epochs: int, window: int, min_delta: float) -> list[Finding]:
    """``converged`` (info): the reconstruction loss improved by less than ``min_delta`` over ``window``
    epochs; the run can stop (or needs a change to get further)."""
    p = plateau(table, upto=epochs - 1 if epochs else None, window=window, min_delta=min_delta)
    if p is None:
        return []
    split = p["column"].split("_")[0]
    if not p["converged"]:
        return []
    msg = (f"{split} reconstruction improved {fmt_pct(max(p['improvement'], 0.0), 2)} over the last "
           f"{window} epochs (best {fmt_sig(p['now'])} vs {fmt_sig(p['before'])} before; under {fmt_pct(min_delta)}) "
           f"at {human_epoch(p['epoch'])}")
    return [Finding("converged", "info", run, msg, epoch=p["epoch"], term="recon", value=p["improvement"],
                    threshold=min_delta)]


def check_blurry(table: pd.DataFrame, *, run: str, epochs: int, min_sharpness: float) -> list[Finding]:
    """``blurry`` (warn): the sharpness ratio (gradient energy of recon / of input) below ``min_sharpness``."""
    if "sharpness" not in table:
        return []
    s = table["sharpness"].loc[: max(epochs - 1, 0)].dropna() if epochs else table["sharpness"].dropna()
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return []
    v, e = float(s.iloc[-1]), int(s.index[-1])
    extra = ""
    for split_term, name in (("psnr_grey", "grey"), ("psnr_colour", "colour")):
        if split_term in table:
            g = table[split_term].loc[:e].dropna()
            if len(g):
                extra += f", PSNR {name} {float(g.iloc[-1]):.1f} dB"
    if v >= min_sharpness:
        return [Finding("blurry", "pass", run, f"sharpness ratio {fmt_sig(v, 2)} at {human_epoch(e)} (at least "
                        f"{fmt_sig(min_sharpness, 2)}){extra}", epoch=e, term="sharpness", value=v,
                        threshold=min_sharpness)]
    msg = (f"sharpness ratio {fmt_sig(v, 2)} at {human_epoch(e)} (reconstructions keep "
           f"{fmt_pct(v, 0)} of the input's gradient energy; below {fmt_sig(min_sharpness, 2)}){extra}")
    return [Finding("blurry", "warn", run, msg, epoch=e, term="sharpness", value=v, threshold=min_sharpness)]


def check_kl_sign_convention(notes: Iterable[str], *, run: str) -> list[Finding]:
    """``kl_sign_convention`` (info): the reader negated a KL series logged as -KL (AntixK's ``KLD``)."""
    out = []
    for note in notes:
        if "sign flipped" in note or "-KL" in note:
            tag = note.split("'")[1] if note.count("'") >= 2 else None
            out.append(Finding("kl_sign_convention", "info", run,
                               f"{note}; KL values here are positive (KL >= 0)", term="kl", key=tag))
    return out


def check_log_warnings(warnings: Iterable[str], *, run: str) -> list[Finding]:
    """``log_warning`` (warn): damage the reader found in this run's files; its numbers may be incomplete."""
    return [Finding("log_warning", "warn", run, w, key=str(i)) for i, w in enumerate(warnings)]


def check_missing_terms(
    table: pd.DataFrame,
    *,
    run: str,
    frame: pd.DataFrame | None = None,
    required: Iterable[str] = REQUIRED_TERMS,
) -> list[Finding]:
    """``missing_terms`` (warn): a term the diagnosis needs (KL, reconstruction) has no per-epoch value.

    With the run's ``frame``, a term that is logged but not aligned to epochs (no ``epoch`` tag, no val
    split) is told apart from one that is not logged at all: the fix is ``--steps-per-epoch N``.
    """
    missing = [t for t in required if t not in table]
    if not missing:
        return []
    names = {"kl": "the KL term", "recon": "the reconstruction loss"}
    what = " and ".join(names.get(t, t) for t in missing)
    unaligned = []
    if frame is not None and len(frame):
        logged = set(map(str, frame.loc[frame["epoch"].isna(), "term"].dropna().unique()))
        unaligned = [t for t in missing if t in logged]
    if unaligned and len(unaligned) == len(missing):
        msg = (f"{what} logged but not aligned to epochs (no epoch tag, no val split): "
               "pass --steps-per-epoch N")
    else:
        msg = f"{what} not logged (no tag maps to {', '.join(missing)}; map yours with --tags FILE)"
    return [Finding("missing_terms", "warn", run, msg, key=",".join(missing))]
