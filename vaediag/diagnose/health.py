"""Run health: is there anything to judge, is it finite, is training still moving, is it blurry.

Rules (stable ids): ``no_scalars``, ``nonfinite``, ``too_short``, ``lr_vanished``,
``val_recon_divergence``, ``converged``, ``blurry``, ``kl_sign_convention``, ``log_warning``,
``missing_terms``.

Overfitting is judged on the reconstruction term only (``val_recon_divergence``), never on a total loss:
the AntixK lineage validates with KL weight 1.0 while it trains with 0.00025, so its ``val_loss`` is the
KL's and rises while the validation reconstruction still falls.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from vaediag.diagnose.tables import values_present
from vaediag.diagnose.criteria import (Trend, blur_verdict, classify_trend, dead_model_verdict, divergence_verdict,
                                       lr_vanished_verdict)
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
    "trends",
    "main_trend",
    "check_trends",
    "TREND_SERIES",
    "check_blurry",
    "check_dead_model",
    "check_unmapped",
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
    if len(frame) and values_present(frame["term"]) & _JUDGED:
        return []
    n = len(frame) if n_scalars is None else n_scalars
    if n == 0:
        msg = "no scalars logged at all: the run died before its first logging step, or logs elsewhere"
    else:
        tags = sorted(values_present(frame["tag"]))
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
    frac = lr_vanished_verdict(first, last, vanished_ratio=vanished_ratio)
    if frac is None:
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
    train_at_best = train_last = None
    if "train_recon" in table:
        t = table["train_recon"].dropna()
        t_best, t_last = t.loc[: best_epoch], t.loc[best_epoch:]
        if len(t_best) and len(t_last):
            train_at_best, train_last = float(t_best.iloc[-1]), float(t_last.iloc[-1])
    # Both rising is not overfitting (the nonfinite/lr rules speak to instability): the criterion says no.
    if not divergence_verdict(points=len(v), best=best, best_epoch=best_epoch, last=last, last_epoch=last_epoch,
                              window=window, rise=rise, train_at_best=train_at_best, train_last=train_last):
        return []
    train_note = ""
    if train_at_best is not None and train_last is not None:
        train_note = f" while train recon fell from {fmt_sig(train_at_best)} to {fmt_sig(train_last)}"
    msg = (f"val reconstruction {fmt_sig(last)} at {human_epoch(last_epoch)} is {fmt_pct(last / best - 1)} above its "
           f"best {fmt_sig(best)} at {human_epoch(best_epoch)}{train_note}: overfitting")
    return [Finding("val_recon_divergence", "warn", run, msg, epoch=last_epoch, term="recon", value=last,
                    threshold=best * (1 + rise))]


# Series every run is judged on, in order: (column, higher is better, severity of a regression).
TREND_SERIES: tuple[tuple[str, bool], ...] = (
    ("val_recon", False),
    ("train_recon", False),
    ("val_psnr", True),
    ("val_perceptual", False),
)


def _series(table: pd.DataFrame, column: str, upto: int | None) -> tuple[list[int], list[float]]:
    if column not in table:
        return [], []
    s = table[column].dropna()
    if upto is not None:
        s = s.loc[:upto]
    s = s[np.isfinite(s)]
    return [int(e) for e in s.index], [float(v) for v in s.to_numpy()]


def trends(table: pd.DataFrame, *, upto: int | None = None, window: int, min_delta: float,
           regress_ratio: float = 0.10, noise_max: float = 0.25, patience: int = 2) -> dict[str, Trend]:
    """:func:`~vaediag.diagnose.criteria.classify_trend` of every monitored series the table has (column -> trend),
    up to epoch ``upto``."""
    out = {}
    for column, higher in TREND_SERIES:
        es, vs = _series(table, column, upto)
        if len(vs) < 2:
            continue
        out[column] = classify_trend(es, vs, higher_is_better=higher, window=window, min_delta=min_delta,
                                     regress_ratio=regress_ratio, noise_max=noise_max, patience=patience)
    return out


def main_trend(found: dict[str, Trend]) -> tuple[str, Trend] | None:
    """The trend that speaks for the run's reconstruction: val preferred, else train."""
    for column in ("val_recon", "train_recon"):
        if column in found:
            return column, found[column]
    return None


def plateau(table: pd.DataFrame, *, upto: int | None = None, window: int, min_delta: float, **trend_opts) -> dict | None:
    """The convergence test behind ``converged`` and the checklist's ``check = "converged"``, at epoch ``upto``.

    Returns ``{"converged", "kind", "epoch", "column", "now", "before", "improvement", "trend"}``: converged
    only on a plateau (a regressing or noisy series is not converged); improvement (>= 0 is better) is the
    relative improvement of the last ``window`` epochs. None when the reconstruction has fewer than 3 points.
    """
    found = trends(table, upto=upto, window=window, min_delta=min_delta, **trend_opts)
    hit = main_trend(found)
    if hit is None or hit[1].kind == "short":
        return None
    column, t = hit
    return {"converged": t.kind == "plateau", "kind": t.kind, "epoch": t.last_epoch, "column": column,
            "now": t.last, "before": t.best, "improvement": t.improvement, "trend": t}


def _trend_text(column: str, t: Trend) -> str:
    split, term = column.split("_", 1)
    name = {"recon": "reconstruction", "psnr": "PSNR", "perceptual": "perceptual distance"}.get(term, term)
    unit = " dB" if term == "psnr" else ""
    fmt = (lambda x: f"{x:.2f}{unit}") if term == "psnr" else (lambda x: fmt_sig(x))
    if t.kind == "regressing":
        how = (f"{t.worse_than_best:.0%} worse" if t.worse_than_best < 10 else f"{t.worse_than_best + 1:.1f}x its best")
        return (f"{split} {name} is regressing: best {fmt(t.best)} at {human_epoch(t.best_epoch)}, "
                f"{fmt(t.last)} at {human_epoch(t.last_epoch)} ({how})")
    if t.kind == "improving":
        return (f"{split} {name} is still improving: {fmt_pct(t.improvement, 2)} better over the last {t.window} "
                f"epochs ({fmt(t.last)} at {human_epoch(t.last_epoch)})")
    if t.kind == "noisy":
        return (f"{split} {name} is too noisy to call a trend (epoch-to-epoch change {fmt_pct(t.noise)} of its "
                f"level; {fmt(t.last)} at {human_epoch(t.last_epoch)})")
    if t.kind == "plateau":
        return (f"{split} {name} has levelled off: improved {fmt_pct(max(t.improvement, 0.0), 2)} over the last "
                f"{t.window} epochs (best {fmt(t.best)} at {human_epoch(t.best_epoch)}, {fmt(t.last)} at "
                f"{human_epoch(t.last_epoch)})")
    return f"{split} {name}: {t.points} point(s), too few for a trend"


def check_trends(table: pd.DataFrame, *, run: str, epochs: int, window: int, min_delta: float,
                 regress_ratio: float, regress_fail: float, noise_max: float, patience: int) -> list[Finding]:
    """``trend``: every monitored series classified (improving, plateau, regressing, noisy); a regressing
    reconstruction is a ``fail`` when its final value is ``regress_fail`` (relative) above its best, else a
    ``warn``; other series' regressions warn. ``converged`` (info) when the reconstruction has levelled off.

    A regressing run is never converged: its best epoch, best and final values are in the finding.
    """
    found = trends(table, upto=epochs - 1 if epochs else None, window=window, min_delta=min_delta,
                   regress_ratio=regress_ratio, noise_max=noise_max, patience=patience)
    out = []
    for column, t in found.items():
        if t.kind == "short":
            continue
        sev = "info"
        if t.kind == "regressing":
            sev = "fail" if column.endswith("_recon") and t.worse_than_best >= regress_fail else "warn"
        term = column.split("_", 1)[1]
        out.append(Finding("trend", sev, run, _trend_text(column, t), epoch=t.last_epoch, term=term,
                           value=t.last, threshold=t.best, key=column))
    hit = main_trend(found)
    if hit is not None and hit[1].kind == "plateau":
        column, t = hit
        split = column.split("_")[0]
        msg = (f"{split} reconstruction improved {fmt_pct(max(t.improvement, 0.0), 2)} over the last {t.window} "
               f"epochs (best {fmt_sig(t.best)} at {human_epoch(t.best_epoch)}; under {fmt_pct(min_delta)}) at "
               f"{human_epoch(t.last_epoch)}")
        out.append(Finding("converged", "info", run, msg, epoch=t.last_epoch, term="recon",
                           value=max(t.improvement, 0.0), threshold=min_delta))
    return out


def _latest(table: pd.DataFrame, column: str, epochs: int) -> tuple[float, int] | None:
    if column not in table:
        return None
    s = table[column].loc[: max(epochs - 1, 0)].dropna() if epochs else table[column].dropna()
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return None
    return float(s.iloc[-1]), int(s.index[-1])


def check_blurry(table: pd.DataFrame, *, run: str, epochs: int, min_sharpness: float,
                 min_grad_similarity: float, max_sharpness: float) -> list[Finding]:
    """``blurry``: are the reconstructions sharp? Judged by :func:`~vaediag.diagnose.criteria.blur_verdict`:
    the gradient similarity (``grad_similarity``, bounded) when logged, else the older sharpness ratio, which
    can only say blurry (warn), suspicious (above ``max_sharpness``: noise or artefacts, warn) or cannot tell
    (info); it never passes wrong detail as sharp."""
    g = _latest(table, "grad_similarity", epochs)
    r = _latest(table, "sharpness", epochs)
    verdict = blur_verdict(grad_similarity=g[0] if g else None, sharpness=r[0] if r else None,
                           min_grad_similarity=min_grad_similarity, min_sharpness=min_sharpness,
                           max_sharpness=max_sharpness)
    if verdict is None:
        return []
    kind, why = verdict
    v, e = g if g is not None else r
    term = "grad_similarity" if g is not None else "sharpness"
    extra = ""
    for split_term, name in (("psnr_grey", "grey"), ("psnr_colour", "colour")):
        if split_term in table:
            s = table[split_term].loc[:e].dropna()
            if len(s):
                extra += f", PSNR {name} {float(s.iloc[-1]):.1f} dB"
    sev = {"sharp": "pass", "blurry": "warn", "artefacts": "warn", "unknown": "info"}[kind]
    threshold = min_grad_similarity if g is not None else min_sharpness
    return [Finding("blurry", sev, run, f"{why} at {human_epoch(e)}{extra}", epoch=e, term=term, value=v,
                    threshold=threshold, key=None if kind != "artefacts" else "artefacts")]


def check_dead_model(table: pd.DataFrame, *, run: str, epochs: int, min_spread: float, min_gain_db: float,
                     after: int) -> list[Finding]:
    """``dead_model`` (fail): reconstructions that do not depend on the input (``recon_spread``) or do not
    beat the trivial reconstruction, each image's own mean colour (``psnr_trivial``), from ``after`` completed
    epochs on. Runs that log neither cannot be judged (nothing is reported)."""
    spread = _latest(table, "recon_spread", epochs)
    trivial = _latest(table, "psnr_trivial", epochs)
    psnr = _latest(table, "psnr", epochs)
    if spread is None and trivial is None:
        return []
    e = (spread or trivial)[1]
    if epochs < after:
        return []
    reasons = dead_model_verdict(psnr=psnr[0] if psnr else None, psnr_trivial=trivial[0] if trivial else None,
                                 recon_spread=spread[0] if spread else None, min_spread=min_spread,
                                 min_gain_db=min_gain_db)
    facts = []
    if spread is not None:
        facts.append(f"reconstructions vary {fmt_pct(spread[0], 0)} as much as the inputs across images")
    if psnr is not None and trivial is not None:
        facts.append(f"val PSNR {psnr[0]:.1f} dB vs {trivial[0]:.1f} dB for each image's mean colour")
    if reasons:
        return [Finding("dead_model", "fail", run, f"the model's output does not follow its input at "
                        f"{human_epoch(e)}: " + "; ".join(reasons), epoch=e, term="recon_spread" if spread else "psnr",
                        value=spread[0] if spread else (psnr[0] if psnr else None),
                        threshold=min_spread if spread else None)]
    return [Finding("dead_model", "pass", run, f"reconstructions follow the input at {human_epoch(e)}: "
                    + ", ".join(facts), epoch=e, term="recon_spread" if spread else "psnr",
                    value=spread[0] if spread else None, threshold=min_spread if spread else None)]


def check_pictures(info, frame: pd.DataFrame, *, run: str) -> list[Finding]:
    """``pictures`` (info): the run logs images; which tag, how many, the latest epoch and the file holding it.

    Counted by the scalar read (``RunInfo.image_tags``); no picture is decoded here. The tag is the one the
    report shows (:func:`vaediag.logs.images.picture_tag`: the reconstruction grid ``val/recon_grid``, then
    a tag that names reconstructions), its epoch by the report's rule too (:class:`StepEpochs`).
    """
    from vaediag.logs.images import StepEpochs, picture_tag  # the rule the report's pictures use too

    tags = dict(getattr(info, "image_tags", None) or {})
    tag = picture_tag(tags)
    if tag is None:
        return []
    n, step = tags[tag]
    epoch = StepEpochs(frame)(step)
    when = f"{human_epoch(epoch)} (step {step})" if epoch is not None else f"step {step}"
    files = list(getattr(info, "event_files", []) or [])
    where = files[0].name if len(files) == 1 else f"{len(files)} event files of {getattr(info, 'path', run)}"
    others = f"; also {', '.join(sorted(set(tags) - {tag})[:5])}" if len(tags) > 1 else ""
    return [Finding("pictures", "info", run, f"{n} image{'s' if n != 1 else ''} logged as {tag!r}, the latest at {when}, "
                    f"in {where}{others}: `vaediag report` shows inputs beside reconstructions", key=tag,
                    value=float(n))]


def check_unmapped(info, *, run: str) -> list[Finding]:
    """``unmapped_tags`` (info): scalar tags that map to no term, so nothing judged them (``--tags`` maps them)."""
    tags = list(getattr(info, "unmapped_tags", None) or [])
    not_read = int(getattr(info, "unmapped_not_read", 0) or 0)  # past the reader's limit: counted only
    n = len(tags) + not_read
    if not n:
        return []
    shown = ", ".join(tags[:12]) + (f" and {n - 12} more" if n > 12 else "")
    msg = f"{n} tag{'s' if n != 1 else ''} not mapped to any term, ignored: {shown} (map them with --tags FILE)"
    if not_read:
        msg += f"; the scalars of {not_read:,} of them were not read (vaediag reads at most {_max_unmapped():,} per load)"
    return [Finding("unmapped_tags", "info", run, msg, value=float(n))]


def _max_unmapped() -> int:
    from vaediag.logs.decode import MAX_UNMAPPED_TAGS

    return MAX_UNMAPPED_TAGS


def check_kl_sign_convention(facts: Iterable[Any], *, run: str) -> list[Finding]:
    """``kl_sign_convention`` (info): the reader negated a KL series logged as -KL (AntixK's ``KLD``).

    ``facts``: the run's structured notes (:class:`vaediag.logs.Note`); kinds ``kl_sign_flipped`` and
    ``kl_sign_contradicted`` (the tail's later evidence against an earlier flip) become findings.
    """
    from vaediag.logs.notes import NoteKind

    kinds = (NoteKind.KL_SIGN_FLIPPED, NoteKind.KL_SIGN_CONTRADICTED)
    return [Finding("kl_sign_convention", "info", run, f"{n.message}; KL values here are positive (KL >= 0)",
                    term="kl", key=n.tag)
            for n in facts if getattr(n, "kind", None) in kinds]


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
