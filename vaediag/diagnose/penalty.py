# Over 450 lines on purpose: one job (the KL penalty family); the value share and the gradient share answer one question (how much of the signal the KL takes), compute_penalty builds both into one Penalty, and each check words one.
"""The KL penalty family: how much of the training signal the KL term takes (``penalty_share``,
``kl_too_high``).

Definitions, per epoch (the seed's root-cause arithmetic):

* effective KL penalty ``P = kl_weight x KL``
* ratio to the reconstruction loss ``P / recon`` (the seed: 0.00001 x 1,535 = 0.015 against 0.111,
  13.5 % "of reconstruction signal spent on regularisation")
* reconstruction signal ``R``: the sum of the weighted reconstruction terms (``recon``, ``perceptual``,
  ``ssim_loss``, ``edge``) as logged (``*_weighted``), else the logged NLL (latent-diffusion's ``nll_loss``,
  the term that enters its total), else raw terms times the run's loss weights, else the reconstruction loss
  alone; where a run logs an NLL, it is also the "reconstruction loss" of the ratio (its per-pixel
  ``rec_loss`` is 10^5 times smaller and not in the total)
* share of the total weighted loss ``P / (R + P)``; reconstruction-to-regularisation ratio ``R / P``.

KL and reconstruction come from the same split: train where the epoch has both (the penalty is a property
of the training objective; the AntixK lineage validates with KL weight 1.0), else val.

Gradient share (when the run logged it: ``train/grad_share/<term>``, our trainer's ``--grad-share-every``
or any loop using :mod:`vaediag.integrations.gradients`): the value share says how large the KL term is,
the gradient share how hard it pushes. For each weighted term, the L2 norm of its gradient at the latent
head (``mu``, ``logvar``) over the sum of every term's norm, averaged over the epoch's measurements; read
beside the KL's value share ``P / (R + P)`` of the same epoch (:func:`gradient_summary`), e.g. "KL is
0.06% of the loss value but 31% of the gradient at the encoder head". Runs that did not log it get no
gradient summary, and nothing is said about it.

``kl_weight`` comes from, in order: the logged ``kl_weight`` scalar; the logged weighted KL over the
raw KL; the run's config.json / hparams.yaml / hparams plugin (``kl_weight``, ``kld_weight``, ``beta`` ...,
also nested like ``exp_params.kld_weight``; an autoencoder config, ``ae = true``, means 0); the
``--kl-weight`` option; last, inferred from the train total when ``loss = recon + w x KL`` holds exactly
on every logged step (the AntixK logs). Unknown: said so, and everything else is still reported.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from vaediag.diagnose.criteria import kl_band_verdict, penalty_share_verdict
from vaediag.diagnose.model import Finding, Penalty
from vaediag.diagnose.numbers import fmt_kl, fmt_pct, fmt_ratio, fmt_sig, fmt_weight, human_epoch, round_sig

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.diagnose.arithmetic import KLConvention

__all__ = [
    "KL_WEIGHT_PARAMS",
    "LATENT_DIM_PARAMS",
    "RECON_TERMS",
    "LOSS_WEIGHT_PARAMS",
    "resolve_latent_dim",
    "resolve_loss_weights",
    "find_param",
    "penalty_table",
    "compute_penalty",
    "penalty_arithmetic",
    "penalty_phrase",
    "gradient_summary",
    "gradient_sentence",
    "check_penalty_share",
    "check_gradient_share",
    "check_kl_too_high",
]

# Parameter names that hold the KL weight, most specific first (RunInfo.param matches last components). Names
# are the last evidence (vaediag.diagnose.arithmetic): a "beta" is a KL weight only in a run that logs a KL.
KL_WEIGHT_PARAMS = ("kl_weight", "kld_weight", "kl_beta", "beta", "kl_coef", "kl_coeff")
LATENT_DIM_PARAMS = ("latent_dim", "z_dim", "latent_size", "zdim", "latent_dims", "nz", "d_latent", "dim_z",
                     "z_size", "latent_size")
# The reconstruction terms of the total loss and the trainer's config field for each one's weight.
RECON_TERMS = ("recon", "perceptual", "ssim_loss", "edge")
LOSS_WEIGHT_PARAMS: dict[str, str] = {
    "recon": "w_l1",
    "perceptual": "w_perceptual",
    "ssim_loss": "w_ssim",
    "edge": "w_edge",
}


def _round_float32(x: float) -> float:
    """A logged weight went through float32 (1e-5 -> 9.99999974738e-06); 6 significant figures are exact."""
    return round_sig(x, 6) if math.isfinite(x) else x


def _finite_or_none(x: Any) -> float | None:
    """A config value as a finite float, or None (bools, None, text that is no number, inf and nan)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def find_param(params: Mapping[str, Any] | None, *names: str) -> tuple[str, Any] | None:
    """``(key, value)`` of the first of ``names`` in a run's flattened parameters (``RunInfo.params``):
    an exact dotted key first, else a key whose last component matches (``exp_params.kld_weight``), as
    ``RunInfo.param`` matches; None when no name is there."""
    flat = params or {}
    for name in names:
        if name in flat:
            return name, flat[name]
    for name in names:
        for key, value in flat.items():
            if key.rsplit(".", 1)[-1] == name:
                return key, value
    return None


def _origin(key: str, config: Mapping[str, Any] | None) -> str:
    """Where a parameter found by :func:`find_param` came from, for messages."""
    config = config or {}
    return "config.json" if key in config or key.split(".")[0] in config else "run params"


def resolve_latent_dim(params: Mapping[str, Any] | None = None) -> int | None:
    """The latent size from the run's parameters (``latent_dim``, ``z_dim``, ...), or None."""
    hit = find_param(params, *LATENT_DIM_PARAMS)
    if hit is None:
        return None
    v = _finite_or_none(hit[1])
    return int(v) if v is not None and v >= 1 and float(v).is_integer() else None


def resolve_loss_weights(params: Mapping[str, Any] | None = None) -> dict[str, float] | None:
    """Weights of the reconstruction terms from the trainer's config fields (``w_l1``, ...), or None.

    Only runs made by vaediag's trainer carry these; a term whose field is missing is left out.
    """
    out = {}
    for term, key in LOSS_WEIGHT_PARAMS.items():
        hit = find_param(params, key)
        if hit is not None and _finite_or_none(hit[1]) is not None:
            out[term] = float(hit[1])
    return out or None


def penalty_table(
    table: pd.DataFrame,
    *,
    kl_weight: float | None = None,
    latent_dim: int | None = None,
    loss_weights: Mapping[str, float] | None = None,
    per_dim_divisor: float | None = None,
) -> pd.DataFrame:
    """Per-epoch KL penalty of one run (definitions: module docstring).

    Args:
        table: the run's :func:`~vaediag.diagnose.tables.epoch_table`.
        kl_weight: a fixed weight to use where the table has no logged ``kl_weight``.
        latent_dim: latent size, for ``kl_per_dim`` of a KL summed over dims.
        per_dim_divisor: divide the KL by this for ``kl_per_dim`` (the run's convention,
            :meth:`KLConvention.per_dim_divisor`); overrides ``latent_dim``.
        loss_weights: weights of the reconstruction terms (``{"recon": 1.0, "perceptual": 1.2, ...}``),
            used when the weighted terms are not logged.

    Returns:
        Indexed by epoch; columns ``split`` (train or val: where KL and recon were read), ``kl_weight``,
        ``kl``, ``penalty``, ``recon``, ``ratio`` (penalty / recon), ``recon_signal``, ``total``,
        ``share`` (penalty / total), ``recon_to_reg`` (recon_signal / penalty), ``kl_per_dim``.
        Rows where neither split has both KL and recon are left out.
    """
    cols = ["split", "kl_weight", "kl", "penalty", "recon", "ratio", "recon_signal", "total", "share",
            "recon_to_reg", "kl_per_dim"]
    divisor = per_dim_divisor if per_dim_divisor is not None else latent_dim
    idx = table.index
    split, kl, recon, signal = _kl_and_recon(table, loss_weights)
    keep = split.notna()
    if "kl_weight" in table:
        w = table["kl_weight"].astype(float).map(_round_float32)
        if kl_weight is not None:
            w = w.fillna(kl_weight)
    else:
        w = pd.Series(np.nan if kl_weight is None else float(kl_weight), index=idx)
    penalty = w * kl
    with np.errstate(divide="ignore", invalid="ignore"):
        out = pd.DataFrame(
            {
                "split": split,
                "kl_weight": w,
                "kl": kl,
                "penalty": penalty,
                "recon": recon,
                "ratio": (penalty / recon).where(recon > 0),  # a negative NLL (learned variance): undefined
                "recon_signal": signal,
                "total": signal + penalty,
                "share": penalty / (signal + penalty),
                "recon_to_reg": signal / penalty,
                "kl_per_dim": kl / divisor if divisor else np.nan,
            },
            index=idx,
        )[cols]
    out = out[keep]
    out.index.name = "epoch"
    return out


def _kl_and_recon(table: pd.DataFrame, loss_weights: Mapping[str, float] | None
                  ) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """Per epoch, the split read (train where both have the epoch, else val; None: neither has KL and recon), its
    KL, its objective's reconstruction term and its weighted reconstruction signal."""
    idx = table.index
    split = pd.Series(None, index=idx, dtype=object)
    kl = pd.Series(np.nan, index=idx)
    recon = pd.Series(np.nan, index=idx)
    signal = pd.Series(np.nan, index=idx)
    for name in ("val", "train"):  # train last: it wins where both splits have the epoch
        k = f"{name}_kl"
        r = _objective_recon(table, name)
        if k not in table or r is None:
            continue
        ok = table[k].notna() & r.notna()
        split[ok] = name
        kl[ok] = table.loc[ok, k]
        recon[ok] = r[ok]
        signal[ok] = _recon_signal(table, name, loss_weights)[ok]
    return split, kl, recon, signal


def _objective_recon(table: pd.DataFrame, split: str) -> pd.Series | None:
    """The reconstruction term of one split's objective, per epoch: the logged NLL where the run logs one
    (latent-diffusion's ``nll_loss = sum(rec / exp(logvar) + logvar) / batch`` is what enters its total; its
    ``rec_loss`` is a per-pixel mean logged beside it, 10^5 times smaller), else the reconstruction loss."""
    r, n = f"{split}_recon", f"{split}_nll"
    if n in table:
        return table[n].where(table[n].notna(), table[r]) if r in table else table[n]
    return table[r] if r in table else None


def _recon_signal(table: pd.DataFrame, split: str, loss_weights: Mapping[str, float] | None) -> pd.Series:
    """Weighted reconstruction signal of one split: logged weighted terms, else the logged NLL (the term in the
    total, :func:`_objective_recon`), else raw x weights, else recon."""
    weighted = [f"{split}_{t}_weighted" for t in RECON_TERMS if f"{split}_{t}_weighted" in table]
    if weighted:
        return table[weighted].sum(axis=1, min_count=1)
    if f"{split}_nll" in table:
        return _objective_recon(table, split)
    if loss_weights:
        parts = [table[f"{split}_{t}"] * w for t, w in loss_weights.items() if f"{split}_{t}" in table]
        if parts:
            return pd.concat(parts, axis=1).sum(axis=1, min_count=1)
    return table[f"{split}_recon"]


def penalty_arithmetic(kl_weight: float | None, kl: float, recon: float, *, autoencoder: bool = False) -> list[str]:
    """The seed's three lines, with its rounding: penalty to 2 significant figures, and the ratio from
    the numbers as written, so a reader can redo it by hand (the unrounded ratio follows when it differs).

    >>> penalty_arithmetic(1e-5, 1535.0, 0.111)[0]
    'Effective KL penalty = 0.00001 × 1,535 = 0.015'
    >>> penalty_arithmetic(1e-5, 1535.0, 0.111)[2]
    'Ratio = 13.5% of reconstruction signal spent on regularisation (13.8% unrounded)'
    """
    recon_line = f"Reconstruction loss  = {fmt_sig(recon, 3)}"
    if kl_weight is None:
        return [
            f"Effective KL penalty = unknown × {fmt_kl(kl)} (kl_weight not logged and not in the run's config; "
            "pass --kl-weight W)",
            recon_line,
            "Ratio = unknown",
        ]
    penalty = kl_weight * kl
    shown = round_sig(penalty, 2)
    suffix = " (autoencoder: the KL is not penalised)" if autoencoder else ""
    lines = [f"Effective KL penalty = {fmt_weight(kl_weight)} × {fmt_kl(kl)} = {fmt_sig(shown, 2)}{suffix}", recon_line]
    recon_shown = round_sig(recon, 3)
    if not recon_shown or not math.isfinite(recon_shown):
        lines.append("Ratio = n/a (reconstruction loss is zero or not finite)")
        return lines
    as_written = shown / recon_shown
    exact = penalty / recon
    ratio = f"Ratio = {fmt_pct(as_written)} of reconstruction signal spent on regularisation"
    if fmt_pct(as_written) != fmt_pct(exact):
        ratio += f" ({fmt_pct(exact)} unrounded)"
    lines.append(ratio)
    return lines


def compute_penalty(
    table: pd.DataFrame,
    *,
    convention: "KLConvention",
    params: Mapping[str, Any] | None = None,
    epochs: int | None = None,
) -> Penalty:
    """The run's :class:`~vaediag.diagnose.model.Penalty`: weight, table, latest epoch and arithmetic.

    The weight and its source come from the run's :class:`~vaediag.diagnose.arithmetic.KLConvention` (the
    user's ``--kl-weight``, the logs, the arithmetic of the total, then parameter names). ``epochs``
    (completed epochs) picks the latest row among completed epochs when there is one.
    """
    from vaediag.diagnose.arithmetic import KLConvention  # noqa: F401 (the type, for readers)

    w, source = convention.kl_weight, convention.kl_weight_source
    latent = convention.latent_dim
    ae = convention.model == "ae"
    pt = penalty_table(table, kl_weight=w, latent_dim=latent, loss_weights=resolve_loss_weights(params) or
                       convention_loss_weights(convention), per_dim_divisor=convention.per_dim_divisor() or 0.0)
    note = None
    gradient = gradient_summary(table, pt, epochs=epochs, autoencoder=ae)
    if not convention.has_kl:
        note = "no KL term: nothing to penalise"
        return Penalty(kl_weight=None, kl_weight_source=None, latent_dim=latent, table=pt.iloc[:0], note=note)
    if w is None:
        note = (
            "kl_weight unknown: not logged, no logged total it can be fitted from, not in the run's config or "
            "hparams; pass --kl-weight W to get the effective penalty"
        )
    if len(pt) == 0:
        missing = [t for t in ("kl", "recon") if t not in table]
        note = (note + "; " if note else "") + (
            f"no epoch logs both KL and reconstruction (missing: {', '.join(missing) or 'a shared epoch'})"
        )
        return Penalty(kl_weight=w, kl_weight_source=source, latent_dim=latent, table=pt, note=note,
                       gradient=gradient)
    latest = _latest_row(pt, epochs)
    arithmetic = penalty_arithmetic(latest["kl_weight"] if w is not None else None, latest["kl"], latest["recon"],
                                    autoencoder=ae and (latest["kl_weight"] == 0))
    latest["context"] = _latest_context(latest, table, convention)
    latest_w = latest["kl_weight"]
    return Penalty(
        kl_weight=float(latest_w) if w is not None and math.isfinite(latest_w) else w,
        kl_weight_source=source,
        latent_dim=latent,
        table=pt,
        latest=latest,
        arithmetic=arithmetic,
        note=note,
        gradient=gradient,
    )


def _latest_row(pt: pd.DataFrame, epochs: int | None) -> dict[str, Any]:
    """The penalty table's latest row as a dict with its ``epoch``: among completed epochs when there are any,
    the latest with a known penalty when there is one."""
    rows = pt
    if epochs:
        done = pt[pt.index < epochs]
        if len(done):
            rows = done
    known = rows[rows["penalty"].notna()]
    last_epoch = int((known if len(known) else rows).index[-1])
    r = pt.loc[last_epoch]
    return {"epoch": last_epoch, **{k: (r[k] if k == "split" else float(r[k])) for k in pt.columns}}


def _latest_context(latest: Mapping[str, Any], table: pd.DataFrame, convention: "KLConvention") -> str:
    """Where the latest penalty was read: its epoch and split, the weight and its source, how the KL and the
    reconstruction loss were taken."""
    last_epoch = latest["epoch"]
    if convention.kl_weight is not None and math.isfinite(latest["kl_weight"]):
        context = (
            f"{human_epoch(last_epoch)}, {latest['split']} split; kl_weight {fmt_weight(latest['kl_weight'])} "
            f"({convention.kl_weight_source})"
        )
    else:
        context = f"{human_epoch(last_epoch)}, {latest['split']} split; kl_weight unknown"
    if convention.logged == "weighted":
        context += "; KL shown raw: the logged KL already included the weight"
    nll = f"{latest['split']}_nll"
    if nll in table and pd.notna(table[nll].get(last_epoch)):
        context += "; reconstruction loss = the logged NLL, the term that enters the total"
    return context


# Terms whose gradient shares a run may log, in the vocabulary's order (the KL last: it is compared with the rest).
_GRAD_TERMS = ("recon", "perceptual", "ssim_loss", "edge", "kl")
# "but" where the gradient share and the value share differ by at least this factor, "and" where they are alike.
_CONTRAST = 2.0


def gradient_summary(table: pd.DataFrame, pt: pd.DataFrame, *, epochs: int | None = None,
                     autoencoder: bool = False) -> dict[str, Any] | None:
    """The KL's gradient share at the latent head beside its value share, at the latest epoch that measured
    it (among completed epochs when one did); None when the run logged no ``grad_share`` of the KL.

    Args:
        table: the run's epoch table (``train_grad_share_<term>``, ``train_grad_norm_<term>``,
            ``train_grad_cos_kl``, ``train_<term>_weighted``: each the epoch's mean).
        pt: the run's :func:`penalty_table` (the KL's value share ``share`` per epoch).
        epochs: completed epochs.
        autoencoder: the run ended as an autoencoder (KL weight 0): said in the sentence.

    Returns:
        ``{"epoch", "split", "kl_grad_share", "kl_value_share", "cosine", "shares", "norms",
        "value_shares", "sentence"}``: shares and norms by term (those measured at that epoch), the
        value share of each weighted term of the total (``value_shares``, where the weighted terms are
        logged), the cosine of the KL's gradient with the other terms' (None when not logged).
    """
    col = "train_grad_share_kl"
    if col not in table:
        return None
    s = table[col]
    known = s[s.notna()]
    if len(known) == 0:
        return None
    if epochs:
        done = known[known.index < epochs]
        if len(done):
            known = done
    epoch = int(known.index[-1])
    row = table.loc[epoch]

    def at(column: str) -> float | None:  # 7 significant figures: event files hold float32
        v = row.get(column) if column in table else None
        return None if v is None or pd.isna(v) else float(f"{float(v):.7g}")

    shares = {t: v for t in _GRAD_TERMS if (v := at(f"train_grad_share_{t}")) is not None}
    norms = {t: v for t in _GRAD_TERMS if (v := at(f"train_grad_norm_{t}")) is not None}
    weighted = {t: v for t in _GRAD_TERMS if (v := at(f"train_{t}_weighted")) is not None}
    total = math.fsum(weighted.values())
    value_shares = {t: v / total for t, v in weighted.items()} if "kl" in weighted and total > 0 else {}
    kl_value = None  # the penalty's own share P / (R + P) at that epoch, else the logged weighted terms'
    if epoch in pt.index and not pd.isna(pt.loc[epoch, "share"]):
        kl_value = float(pt.loc[epoch, "share"])
    elif "kl" in value_shares:
        kl_value = value_shares["kl"]
    out = {"epoch": epoch, "split": "train", "kl_grad_share": at(col), "kl_value_share": kl_value,
           "cosine": at("train_grad_cos_kl"), "shares": shares, "norms": norms, "value_shares": value_shares}
    out["sentence"] = gradient_sentence(out, autoencoder=autoencoder)
    return out


def gradient_sentence(g: Mapping[str, Any], *, autoencoder: bool = False) -> str:
    """``KL is 0.06% of the loss value but 31.0% of the gradient at the encoder head (mu, logvar), epoch 12``.

    >>> gradient_sentence({"epoch": 11, "kl_grad_share": 0.31, "kl_value_share": 0.0006})
    'KL is 0.06% of the loss value but 31.0% of the gradient at the encoder head (mu, logvar), epoch 12'
    """
    grad, value = g["kl_grad_share"], g.get("kl_value_share")
    where = f"the gradient at the encoder head (mu, logvar), {human_epoch(g['epoch'])}"
    if autoencoder and grad == 0:
        return f"autoencoder: the KL is not penalised, 0% of the loss value and of {where}"
    if value is None or not math.isfinite(value):
        return f"KL is {fmt_pct(grad)} of {where}; its share of the loss value is unknown (kl_weight unknown)"
    lo, hi = sorted((grad, value))
    contrast = hi > 0 and (lo == 0 or hi / lo >= _CONTRAST)
    return f"KL is {fmt_pct(value)} of the loss value {'but' if contrast else 'and'} {fmt_pct(grad)} of {where}"


def check_gradient_share(penalty: Penalty, *, run: str, kl_share_warn: float) -> list[Finding]:
    """``gradient_share``: the KL's share of the gradient at the latent head, beside its value share.

    info with the numbers; warn when the KL's share is above ``kl_share_warn`` (its gradient outweighs
    the reconstruction terms' at the encoder's output). Nothing for a run that did not log it.
    """
    g = penalty.gradient
    if not g:
        return []
    kl_grad_share = g["kl_grad_share"]
    msg = g["sentence"]
    parts = [f"{t} {fmt_pct(v)}" for t, v in g["shares"].items() if t != "kl"]
    if parts:
        msg += f" (the others: {', '.join(parts)})"
    if g.get("cosine") is not None and math.isfinite(g["cosine"]):
        msg += f"; cosine of the KL's gradient with theirs {g['cosine']:.2f}"
    if math.isfinite(kl_grad_share) and kl_grad_share > kl_share_warn:
        return [Finding("gradient_share", "warn", run, msg + f"; above {fmt_pct(kl_share_warn)}: the KL's pull on the "
                        "encoder outweighs the reconstruction terms'", epoch=g["epoch"], term="kl", value=kl_grad_share,
                        threshold=kl_share_warn)]
    return [Finding("gradient_share", "info", run, msg, epoch=g["epoch"], term="kl",
                    value=kl_grad_share if math.isfinite(kl_grad_share) else None, threshold=kl_share_warn)]


def convention_loss_weights(convention: "KLConvention") -> dict[str, float] | None:
    """Weights of the reconstruction terms as the fitted training total uses them (raw tags only)."""
    fit = convention.fit
    if fit is None:
        return None
    out = {}
    for key, term in fit.terms.items():
        if term in RECON_TERMS and "×" not in key:
            out[term] = fit.parts[key]
    return out or None


def penalty_phrase(latest: Mapping[str, Any]) -> str:
    """``effective KL penalty 0.00001 × 1,535 = 0.015 is 13.5% of the reconstruction loss 0.111``: the
    seed's rounding (penalty to 2 figures, ratio of the numbers as written)."""
    shown = round_sig(latest["penalty"], 2)
    recon = round_sig(latest["recon"], 3)
    as_written = shown / recon if recon else latest["ratio"]
    return (
        f"effective KL penalty {fmt_weight(latest['kl_weight'])} × {fmt_kl(latest['kl'])} = {fmt_sig(shown, 2)} "
        f"is {fmt_pct(as_written)} of the reconstruction loss {fmt_sig(latest['recon'], 3)}"
    )


def check_penalty_share(penalty: Penalty, *, run: str, warn_ratio: float, fail_ratio: float) -> list[Finding]:
    """``penalty_share``: the effective KL penalty as a fraction of the reconstruction loss.

    fail above ``fail_ratio``, warn above ``warn_ratio``, else pass; info when the weight is unknown.
    """
    lt = penalty.latest
    if not lt:
        return []
    epoch = lt["epoch"]
    if penalty.kl_weight is None or not math.isfinite(lt.get("penalty", math.nan)):
        return [
            Finding("penalty_share", "info", run, penalty.note or "kl_weight unknown: penalty not computed",
                    epoch=epoch, term="kl", value=None, threshold=fail_ratio)
        ]
    ratio = lt["ratio"]
    if not math.isfinite(ratio):
        return [Finding("penalty_share", "info", run, "reconstruction loss is zero, negative or not finite: ratio "
                        "undefined",
                        epoch=epoch, term="kl", value=None, threshold=fail_ratio)]
    msg = (
        f"{penalty_phrase(lt)} at {human_epoch(epoch)} ({fmt_pct(lt['share'], 2)} of the total loss; "
        f"reconstruction : regularisation = {fmt_ratio(lt['recon_to_reg'])})"
    )
    sev = penalty_share_verdict(ratio, warn_ratio=warn_ratio, fail_ratio=fail_ratio)
    tail = {"fail": f"; above {fmt_pct(fail_ratio)}: the KL term takes signal from reconstruction",
            "warn": f"; above {fmt_pct(warn_ratio)}", "pass": f"; at most {fmt_pct(warn_ratio)}: negligible"}[sev]
    return [Finding("penalty_share", sev, run, msg + tail, epoch=epoch, term="kl", value=ratio, threshold=fail_ratio)]


def check_kl_too_high(
    table: pd.DataFrame,
    *,
    run: str,
    epochs: int,
    target: tuple[float, float],
    too_high_after: int,
    expected: float | None = None,
    autoencoder: bool = False,
) -> list[Finding]:
    """``kl_too_high``: KL above the target band at or after ``too_high_after`` completed epochs.

    The KL rises early in training, so earlier epochs are not judged. An autoencoder does not penalise
    the KL, so its KL is not judged either (info).
    """
    del expected  # the plan arithmetic uses it; accepted so the [kl] section passes as keywords
    if "kl" not in table or epochs < too_high_after:
        return []
    last = epochs - 1
    s = table["kl"].loc[: last].dropna()
    if len(s) == 0:
        return []
    lo, hi = target
    kl = float(s.iloc[-1])
    at = int(s.index[-1])
    if autoencoder:
        return [Finding("kl_too_high", "info", run,
                        f"KL = {fmt_kl(kl)} at {human_epoch(at)}: autoencoder mode, the KL is not penalised",
                        epoch=at, term="kl", value=kl, threshold=hi)]
    if not math.isfinite(kl):
        return []  # the nonfinite rule reports it
    where = kl_band_verdict(kl, low=lo, high=hi)
    if where != "above":
        # A low KL is not too high; collapse is kl_collapse's to judge.
        return [Finding("kl_too_high", "pass", run,
                        f"KL = {fmt_kl(kl)} at {human_epoch(at)} is {where} the target {fmt_kl(lo)}-{fmt_kl(hi)}: "
                        "not too high",
                        epoch=at, term="kl", value=kl, threshold=hi)]
    judged = s.loc[too_high_after - 1:]
    above = [kl_band_verdict(float(v), low=lo, high=hi) == "above" for v in judged.to_numpy()]
    epochs_above = [int(e) for e, a in zip(judged.index, above) if a]
    since = epochs_above[0] if epochs_above else at
    run_of = ""
    # Only "since" when it stayed over from then on.
    if epochs_above and all(a for e, a in zip(judged.index, above) if e >= since) and since != at:
        run_of = f"; over it since {human_epoch(since)} (KL {fmt_kl(float(judged.loc[since]))})"
    msg = (
        f"KL = {fmt_kl(kl)} at {human_epoch(at)} is above the target {fmt_kl(lo)}-{fmt_kl(hi)}, "
        f"{kl / hi:.1f}x its upper bound{run_of}"
    )
    return [Finding("kl_too_high", "fail", run, msg, epoch=at, term="kl", value=kl, threshold=hi)]
