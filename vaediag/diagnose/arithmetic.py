# Over 450 lines on purpose: one job (the loss's own arithmetic: the fit of the logged total and, from it, the run's KL convention); the convention's order of evidence reads the fit, so the two stay together.
"""The loss's own arithmetic, before any parameter name: what the logged total is made of, and what that says
about the KL term (its weight, whether the logged KL is already weighted, how it is reduced over dims).

:func:`fit_total` fits the logged total of a split against the logged loss terms on every step they share and
keeps the smallest set of terms whose weighted sum reproduces the total to float32 precision on all of them
(``train_loss = 1 × train_recon_loss + 1 × train_kl`` for pl_bolts; ``loss = 1 × Reconstruction_Loss +
0.00025 × KLD`` for AntixK). :func:`read_kl_convention` turns the fit, the logged ``kl_weight``, the user's
``--kl-weight`` / ``--latent-dim`` and, last, parameter names into one :class:`KLConvention`, and says where
they disagree.

Order of evidence for the KL weight: the user's ``--kl-weight``; a logged ``kl_weight`` scalar or
``kl_weighted`` / ``kl`` tags; the fitted coefficient of the KL tag in the training total; the run's parameters
(``kl_weight``, ``kld_weight``, ``kl_coeff``, ``beta`` ..., only in a run that logs a KL). A fitted coefficient of
1 with a parameter weight that is not 1 means the logged KL already includes the weight (pl_bolts logs
``train_kl = kl_coeff * KL``): the penalty is the logged value itself and the raw KL is it divided by the weight.

How the KL is reduced over latent dims (summed, or averaged per dim) cannot be read from a total. It is known for
vaediag's trainer (summed), and guessed from the lineage's tag signature for pl_bolts (averaged per dim),
latent-diffusion and AntixK/PyTorch-VAE (summed); the guess is said as one. Unknown otherwise: then no KL per
dim is derived from the total (collapse is judged on what holds under either reduction).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from vaediag.diagnose.numbers import fmt_weight, round_sig
from vaediag.diagnose.tables import values_present
from vaediag.terms import tag_aggregation

__all__ = ["LossFit", "KLConvention", "fit_total", "read_kl_convention", "PART_TERMS", "MODEL_KINDS"]

# Terms that can be parts of a logged total (raw or weighted); products with a logged weight are added below.
PART_TERMS = ("recon", "perceptual", "ssim_loss", "edge", "kl", "recon_weighted", "perceptual_weighted",
              "ssim_loss_weighted", "edge_weighted", "kl_weighted", "nll", "g_loss", "vq_loss")
MODEL_KINDS = ("vae", "ae", "vq", "no_kl")
_TOL = 1e-4  # max |total - fit| relative to max |total|: float32 logging leaves ~1e-7
_MAX_ROWS = 4000  # rows used to search subsets; the chosen fit is then checked on every shared step
_MAX_PARTS = 5
# A run that logs thousands of tags of one term (per-sample losses: sample/17/loss) is fitted on its most
# logged ones: at most this many totals per split, and, past _MAX_PART_TAGS candidate parts, the
# _PER_TERM most logged tags of each term (a real run has a handful; the search is exponential in them).
_MAX_TOTALS = 8
_MAX_PART_TAGS = 16
_PER_TERM = 2


@dataclass(frozen=True)
class LossFit:
    """The logged total of one split as a weighted sum of logged terms, exact on every shared step.

    Attributes:
        split: train or val.
        total: the total's tag.
        parts: tag (or ``a×b`` for a product of logged tags) -> fitted coefficient (6 significant figures).
        terms: the same keys -> canonical term (of the last factor for a product).
        steps: steps the identity was checked on.
        residual: max |total - fit| relative to max |total|.
    """

    split: str
    total: str
    parts: dict[str, float]
    terms: dict[str, str]
    steps: int
    residual: float

    @property
    def formula(self) -> str:
        parts = " + ".join(f"{_coef(c)}{k}" for k, c in self.parts.items())
        return f"{self.total} = {parts}"

    def coefficient(self, term: str) -> tuple[str, float] | None:
        """``(key, coefficient)`` of the part whose term is ``term``, or None."""
        for k, t in self.terms.items():
            if t == term:
                return k, self.parts[k]
        return None


def _coef(c: float) -> str:
    return "" if c == 1 else f"{fmt_weight(c)} × "


@dataclass
class KLConvention:
    """What the run's logs say about its KL term (decided once per run, stored on the diagnosis).

    Attributes:
        model: ``vae`` (a KL term in the objective), ``ae`` (a KL weight of 0, or autoencoder mode),
            ``vq`` (no KL; a vector-quantisation loss) or ``no_kl`` (no KL logged at all).
        kl_weight: the weight of the raw KL in the objective, or None when unknown.
        kl_weight_source: where it came from, in words.
        logged: ``raw`` (the KL tag is the divergence), ``weighted`` (it already includes the weight) or None.
        reduction: ``sum`` (over latent dims, mean over the batch), ``mean_per_dim``, or None (unknown).
        reduction_source: why (``vaediag's trainer``, ``guess from the pl_bolts tag signature`` ...).
        latent_dim: the latent size, or None; latent_dim_source says from where.
        fit: the training total's :class:`LossFit`, when one holds.
        val_fit: the validation total's, when one holds (it may use another KL weight: AntixK validates with 1.0).
        notes: sentences for the user: the evidence and every disagreement between config and arithmetic.
        disagreements: the subset of notes where config and the logs' arithmetic disagree.
    """

    model: str = "vae"
    kl_weight: float | None = None
    kl_weight_source: str | None = None
    logged: str | None = None
    reduction: str | None = None
    reduction_source: str | None = None
    latent_dim: int | None = None
    latent_dim_source: str | None = None
    fit: LossFit | None = None
    val_fit: LossFit | None = None
    notes: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)

    @property
    def has_kl(self) -> bool:
        return self.model in ("vae", "ae")

    def raw_scale(self) -> float:
        """Factor from the logged KL to the raw KL (1 unless the logged KL already includes the weight)."""
        if self.logged == "weighted" and self.kl_weight:
            return 1.0 / self.kl_weight
        return 1.0

    def per_dim_divisor(self) -> float | None:
        """Divide the raw KL by this for the KL per latent dim; None when the reduction is unknown."""
        if self.reduction == "mean_per_dim":
            return 1.0
        if self.reduction == "sum" and self.latent_dim:
            return float(self.latent_dim)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kl_weight": self.kl_weight,
            "kl_weight_source": self.kl_weight_source,
            "kl_logged": self.logged,
            "reduction": self.reduction,
            "reduction_source": self.reduction_source,
            "latent_dim": self.latent_dim,
            "latent_dim_source": self.latent_dim_source,
            "total_formula": self.fit.formula if self.fit else None,
            "total_formula_steps": self.fit.steps if self.fit else None,
            "val_total_formula": self.val_fit.formula if self.val_fit else None,
            "notes": list(self.notes),
            "disagreements": list(self.disagreements),
        }


def _wide(rows: pd.DataFrame) -> pd.DataFrame:
    """step x tag values of some rows (last value per (tag, step))."""
    d = pd.DataFrame({"tag": rows["tag"].astype(object).to_numpy(), "step": rows["step"].to_numpy(),
                      "value": rows["value"].to_numpy(dtype=np.float64)})
    return d.drop_duplicates(["tag", "step"], keep="last").pivot(index="step", columns="tag", values="value")


def fit_total(frame: pd.DataFrame, split: str) -> LossFit | None:
    """The smallest exact decomposition of ``split``'s logged total (term ``loss``) into its logged terms.

    Candidates are the split's loss-term tags with the total's Lightning aggregation suffix (``_step`` with
    ``_step``), weighted tags instead of their raw twins where both are logged, and the products a lineage
    logs its weights for (``kl_weight × KL``; latent-diffusion's ``d_weight × disc_factor × g_loss``). Returns
    None when no total is logged, fewer than 3 steps are shared, or no subset of at most 5 parts reproduces
    the total to 1e-4 of its size on every shared step.
    """
    if len(frame) == 0:
        return None
    sub = frame[(frame["split"] == split) & frame["term"].notna()]
    if len(sub) == 0:
        return None
    terms = sub["term"].astype(object)
    tag_term = dict(zip(sub["tag"].astype(object), terms))
    totals = sorted(t for t, term in tag_term.items() if term == "loss")
    n_rows: dict[str, int] = {}
    if len(totals) > _MAX_TOTALS or len(tag_term) > _MAX_PART_TAGS:
        tags, counts = np.unique(sub["tag"].astype(object).to_numpy(), return_counts=True)
        n_rows = dict(zip(tags.tolist(), counts.tolist()))
    if len(totals) > _MAX_TOTALS:
        totals = sorted(sorted(totals, key=lambda t: (-n_rows[t], t))[:_MAX_TOTALS])
    scalars = {t: term for t, term in tag_term.items() if term in ("kl_weight", "d_weight", "disc_factor")}
    parts_of: dict[str | None, dict[str, str]] = {}  # aggregation -> candidate parts (once, not per total)
    best: LossFit | None = None
    for total in totals:
        agg = tag_aggregation(total)
        if agg not in parts_of:
            parts = {t: term for t, term in tag_term.items() if term in PART_TERMS and tag_aggregation(t) == agg}
            weighted = {term[: -len("_weighted")] for term in parts.values() if term.endswith("_weighted")}
            parts_of[agg] = _most_logged({t: term for t, term in parts.items() if term not in weighted}, n_rows)
        parts = parts_of[agg]
        if not parts:
            continue
        keep = [total, *parts, *scalars]
        wide = _wide(sub[sub["tag"].astype(object).isin(keep).to_numpy()])
        wide = wide[wide[total].notna()]
        cols: dict[str, np.ndarray] = {}
        col_terms: dict[str, str] = {}
        for t, term in parts.items():
            cols[t] = wide[t].to_numpy()
            col_terms[t] = term
        by_term = {term: t for t, term in scalars.items()}
        for t, term in parts.items():
            if term == "kl" and "kl_weight" in by_term:
                cols[f"{by_term['kl_weight']}×{t}"] = wide[by_term["kl_weight"]].to_numpy() * wide[t].to_numpy()
                col_terms[f"{by_term['kl_weight']}×{t}"] = "kl"
            if term == "g_loss" and "d_weight" in by_term and "disc_factor" in by_term:
                k = f"{by_term['d_weight']}×{by_term['disc_factor']}×{t}"
                cols[k] = wide[by_term["d_weight"]].to_numpy() * wide[by_term["disc_factor"]].to_numpy() * wide[t].to_numpy()
                col_terms[k] = "g_loss"
        fit = _search(split, total, wide[total].to_numpy(), cols, col_terms)
        if fit is not None and (best is None or fit.steps > best.steps):
            best = fit
    return best


def _most_logged(parts: dict[str, str], n_rows: dict[str, int]) -> dict[str, str]:
    """``parts``, or past :data:`_MAX_PART_TAGS` of them the :data:`_PER_TERM` most logged tags per term."""
    if len(parts) <= _MAX_PART_TAGS:
        return parts
    by_term: dict[str, list[str]] = {}
    for t, term in parts.items():
        by_term.setdefault(term, []).append(t)
    keep = {t for tags in by_term.values() for t in sorted(tags, key=lambda t: (-n_rows.get(t, 0), t))[:_PER_TERM]}
    return {t: term for t, term in parts.items() if t in keep}


def _search(split: str, total: str, y: np.ndarray, cols: dict[str, np.ndarray], col_terms: dict[str, str]) -> LossFit | None:
    names = list(cols)
    results = []
    for k in range(1, min(_MAX_PARTS, len(names)) + 1):
        for combo in itertools.combinations(names, k):
            if len({col_terms[c] for c in combo}) < k:
                continue  # two forms of one term (a raw KL and kl_weight × KL) never both
            X = np.column_stack([cols[c] for c in combo])
            ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
            if ok.sum() < 3:
                continue
            Xs, ys = X[ok], y[ok]
            if len(ys) > _MAX_ROWS:
                idx = np.linspace(0, len(ys) - 1, _MAX_ROWS).astype(int)
                Xs, ys = Xs[idx], ys[idx]
            coef, *_ = np.linalg.lstsq(Xs, ys, rcond=None)
            if not np.isfinite(coef).all():
                continue
            coef = np.array([round_sig(float(c), 6) for c in coef])
            scale = float(np.abs(y[ok]).max()) or 1.0
            resid = float(np.abs(y[ok] - X[ok] @ coef).max()) / scale
            results.append((resid, k, combo, coef, int(ok.sum())))
    if not results:
        return None
    r_min = min(r[0] for r in results)
    if r_min > _TOL:
        return None
    # The fewest parts whose fit is as exact as the best one (a term worth 1e-6 of the total still counts
    # when leaving it out makes the fit measurably worse than float32 noise).
    floor = max(10 * r_min, 1e-6)
    # Among equally exact fits, the one whose coefficients are round numbers (1, 0.5, 0.00025, 1e-06: weights
    # people write) over one that absorbs a small term into an odd coefficient (1.02028 × g_loss).
    resid, _, combo, coef, n = min((r for r in results if r[0] <= floor),
                                   key=lambda r: (sum(not _round(c) for c in r[3]), r[1], r[0]))
    if any(abs(c) < 1e-12 for c in coef):
        return None
    coef, resid = _snap(np.column_stack([cols[c] for c in combo]), y, coef, resid)
    return LossFit(split, total, {c: float(v) for c, v in zip(combo, coef)}, {c: col_terms[c] for c in combo}, n, resid)


def _snap(X: np.ndarray, y: np.ndarray, coef: np.ndarray, resid: float) -> tuple[np.ndarray, float]:
    """Each coefficient at the fewest significant figures that keep the identity as exact (the residual at most
    twice the fit's, or float32 noise) and move it by at most 1 % of itself: the logged numbers cannot tell
    0.499998 from 0.5 (a trainer that rounds its logged loss to 4 decimals, float32 sums), and people write
    0.5. A coefficient the numbers pin to more digits keeps them (0.4999 stays); the 1 % bounds the guess where
    a term is too small in the total to pin its coefficient (0.00025085 -> 0.00025, never 0.0003)."""
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
    Xs, ys = X[ok], y[ok]
    scale = float(np.abs(ys).max()) or 1.0
    limit = max(2 * resid, 1e-6)
    out = coef.copy()
    for i, c in enumerate(coef):
        for sig in range(1, 6):
            short = round_sig(float(c), sig)
            if short == 0 or abs(short - c) > 1e-2 * abs(c):
                continue
            trial = out.copy()
            trial[i] = short
            r = float(np.abs(ys - Xs @ trial).max()) / scale
            if r <= limit:
                out = trial
                break
    return out, float(np.abs(ys - Xs @ out).max()) / scale


def _round(c: float) -> bool:
    """True for a coefficient that 2 significant figures write exactly (to 1e-4)."""
    return abs(round_sig(c, 2) - c) <= 1e-4 * abs(c)


def _lineage(tags: set[str], params: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(reduction, why) guessed from a lineage's tag signature; (None, None) when no lineage matches."""
    low = {t.lower() for t in tags}
    if {"train_kl", "train_recon_loss", "train_loss"} <= low or {"train_kl_step", "train_recon_loss_step"} <= low:
        if any(k.rsplit(".", 1)[-1] == "kl_coeff" for k in params):
            return "mean_per_dim", ("guess from the pl_bolts VAE signature (train_kl, train_recon_loss, kl_coeff): its "
                                    "KL is averaged over latent dims")
    if any(t.endswith("kl_loss") for t in low) and any(t.endswith("nll_loss") for t in low) and any(
            t.endswith("rec_loss") for t in low):
        return "sum", "guess from the latent-diffusion signature (kl_loss, nll_loss, rec_loss): its KL is summed over the latent"
    if "kld" in low and "reconstruction_loss" in low:
        return "sum", "guess from the AntixK/PyTorch-VAE signature (KLD, Reconstruction_Loss): KL summed over dims"
    return None, None


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-30)


def read_kl_convention(
    frame: pd.DataFrame,
    *,
    params: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    kl_weight: float | None = None,
    latent_dim: int | None = None,
    ours: bool = False,
) -> KLConvention:
    """Decide, once per run, what its KL term is (see the module docstring for the order of evidence).

    Args:
        frame: the run's rows of the tidy frame.
        params: its flattened parameters; config: its config.json.
        kl_weight, latent_dim: the user's ``--kl-weight`` / ``--latent-dim`` (they always win).
        ours: the run was made by vaediag's trainer (its KL is summed over dims, its weight logged).
    """
    from vaediag.diagnose.penalty import KL_WEIGHT_PARAMS, find_param

    params = params or {}
    config = config or {}
    conv = KLConvention()
    terms = values_present(frame["term"]) if len(frame) else set()
    tags = values_present(frame["tag"]) if len(frame) else set()
    has_kl = bool(terms & {"kl", "kl_weighted"})
    _read_latent_dim(conv, params, latent_dim)
    if "loss" in terms:  # no logged total, nothing to fit (and no pandas work for an empty run)
        conv.fit = fit_total(frame, "train")
        conv.val_fit = fit_total(frame, "val")
    if conv.fit is not None:
        conv.notes.append(f"the logged total holds exactly on all {conv.fit.steps:,} shared train steps: "
                          f"{conv.fit.formula}")

    if not has_kl and not ours:  # (vaediag's trainer always has a KL term: one not logged is a logging gap)
        conv.model = "vq" if "vq_loss" in terms else "no_kl"
        hit = find_param(params, *KL_WEIGHT_PARAMS)
        what = "a VQ-VAE (a vector-quantisation loss, no KL)" if conv.model == "vq" else "a model without a KL term"
        conv.notes.append(f"no KL is logged: {what}; no KL weight applies (if it is a VAE, map its KL tag with --tags)"
                          + (f" (parameter {hit[0]} = {hit[1]} is not a KL weight here)" if hit else ""))
        if kl_weight is not None:
            conv.notes.append(f"--kl-weight {fmt_weight(kl_weight)} ignored: the run logs no KL")
        return conv

    _read_kl_weight(conv, frame, params, kl_weight)
    _read_model(conv, frame, config, params, terms)
    _read_reduction(conv, tags, params, ours)
    return conv


def _read_latent_dim(conv: KLConvention, params: Mapping[str, Any], latent_dim: int | None) -> None:
    """The latent size: the user's ``--latent-dim``, then the run's parameters."""
    from vaediag.diagnose.penalty import LATENT_DIM_PARAMS, _finite_or_none, find_param

    if latent_dim is not None:
        conv.latent_dim, conv.latent_dim_source = int(latent_dim), "--latent-dim"
    else:
        hit = find_param(params, *LATENT_DIM_PARAMS)
        v = _finite_or_none(hit[1]) if hit else None
        if hit and v is not None and v >= 1 and float(v).is_integer():
            conv.latent_dim, conv.latent_dim_source = int(v), f"parameter {hit[0]}"


def _read_kl_weight(conv: KLConvention, frame: pd.DataFrame, params: Mapping[str, Any],
                    kl_weight: float | None) -> None:
    """The KL weight and whether the logged KL is raw or weighted: the user, the logged weight, the arithmetic of
    the logged total, then parameter names; every disagreement between them noted."""
    from vaediag.diagnose.penalty import KL_WEIGHT_PARAMS, _finite_or_none, find_param

    param_hit = find_param(params, *KL_WEIGHT_PARAMS)
    param_w = _finite_or_none(param_hit[1]) if param_hit else None
    if param_hit and isinstance(param_hit[1], bool):
        param_w = None
    logged_w = _logged_weight(frame)
    kl_part = conv.fit.coefficient("kl") if conv.fit else None
    fit_c = kl_part[1] if kl_part and "×" not in kl_part[0] and conv.fit.terms[kl_part[0]] == "kl" else None
    weighted_tag = bool(conv.fit and any(t == "kl_weighted" for t in conv.fit.terms.values()))

    if kl_weight is not None:
        conv.kl_weight, conv.kl_weight_source = float(kl_weight), "--kl-weight"
        claimed = float(kl_weight)
    elif logged_w is not None:
        conv.kl_weight, conv.kl_weight_source = logged_w
        claimed = logged_w[0]
    elif param_w is not None:
        conv.kl_weight, conv.kl_weight_source = param_w, f"parameter {param_hit[0]}"
        claimed = param_w
    else:
        claimed = None

    if fit_c is not None:
        _weigh_against_fit(conv, claimed, fit_c)
    elif weighted_tag or logged_w is not None:
        conv.logged = "raw"
    elif param_w is not None and claimed is not None:
        conv.notes.append(f"the KL weight {fmt_weight(claimed)} comes from the parameter's name alone "
                          "(no logged total to check it against)")
        conv.logged = "raw"
    _note_param_disagreement(conv, param_hit, param_w)


def _weigh_against_fit(conv: KLConvention, claimed: float | None, fit_c: float) -> None:
    """The claimed weight against the KL's coefficient in the fit of the logged total (``fit_c``): a coefficient
    of 1 beside a claimed weight means the KL is logged weighted; another coefficient overrides a claim that
    is not ``--kl-weight``; with no claim the coefficient is the weight."""
    if claimed is not None and not _close(claimed, 1.0) and _close(fit_c, 1.0):
        conv.logged = "weighted"
        conv.notes.append(f"the KL enters the total with coefficient 1 while the weight is {fmt_weight(claimed)} "
                          f"({conv.kl_weight_source}): the logged KL already includes the weight, so the "
                          f"penalty is the logged value and the raw KL is it / {fmt_weight(claimed)}")
    elif claimed is not None and not _close(claimed, fit_c):
        msg = (f"{conv.kl_weight_source} says the KL weight is {fmt_weight(claimed)}, but the logged total uses "
               f"{fmt_weight(fit_c)} × KL on every step")
        conv.disagreements.append(msg)
        if conv.kl_weight_source == "--kl-weight":
            conv.notes.append(msg + ": --kl-weight is used, as you asked")
            conv.logged = "raw"
        else:
            conv.notes.append(msg + ": the arithmetic is used")
            conv.kl_weight, conv.kl_weight_source = fit_c, f"the logged total ({conv.fit.formula})"
            conv.logged = "raw"
    else:
        conv.logged = "raw"
        if conv.kl_weight is None:
            conv.kl_weight, conv.kl_weight_source = fit_c, f"the logged total ({conv.fit.formula})"
            if _close(fit_c, 1.0):
                conv.notes.append("the KL enters the total with coefficient 1: a weight of 1, or a KL logged "
                                  "already weighted (the penalty is the logged KL either way)")


def _note_param_disagreement(conv: KLConvention, param_hit: tuple[str, Any] | None, param_w: float | None) -> None:
    """A parameter's weight that the arithmetic of the logged total contradicts, noted once.

    A logged kl_weight may differ from the configured start on purpose (annealing, a watchdog's decision):
    only the arithmetic of the total contradicts a parameter.
    """
    if param_w is not None and conv.kl_weight is not None and (conv.kl_weight_source or "").startswith("the logged total") \
            and not _close(param_w, conv.kl_weight) and conv.logged != "weighted":
        msg = f"parameter {param_hit[0]} = {fmt_weight(param_w)} disagrees with the weight used, {fmt_weight(conv.kl_weight)} ({conv.kl_weight_source})"
        if msg not in conv.disagreements and not any(fmt_weight(param_w) in d for d in conv.disagreements):
            conv.disagreements.append(msg)
            conv.notes.append(msg)


def _read_model(conv: KLConvention, frame: pd.DataFrame, config: Mapping[str, Any], params: Mapping[str, Any],
                terms: set) -> None:
    """An autoencoder (ae in the config, ae_mode logged, or a KL weight of 0) has no KL penalty."""
    from vaediag.diagnose.penalty import find_param

    ae_cfg = config.get("ae") is True or (find_param(params, "ae", "autoencoder") or (None, None))[1] is True
    ae_logged = "ae_mode" in terms and float(frame.loc[frame["term"] == "ae_mode", "value"].iloc[-1]) >= 0.5
    if ae_cfg or ae_logged or conv.kl_weight == 0:
        conv.model = "ae"
        if conv.kl_weight is None:
            conv.kl_weight, conv.kl_weight_source = 0.0, "autoencoder config (ae = true): no KL penalty"


def _read_reduction(conv: KLConvention, tags: set, params: Mapping[str, Any], ours: bool) -> None:
    """Whether the KL is summed or averaged over latent dims (vaediag's trainer sums; others by lineage)."""
    if ours:
        conv.reduction, conv.reduction_source = "sum", "vaediag's trainer sums the KL over latent dims"
    else:
        conv.reduction, conv.reduction_source = _lineage(tags, params)
    if conv.reduction is None:
        conv.notes.append("whether the KL is summed or averaged over latent dims cannot be read from the logs: "
                          "no KL per dim is derived from it")
    elif not ours:
        conv.notes.append(f"KL reduction: {conv.reduction.replace('_', ' ')} ({conv.reduction_source})")


def _logged_weight(frame: pd.DataFrame) -> tuple[float, str] | None:
    """The latest logged ``kl_weight`` scalar, else the ratio of logged ``kl_weighted`` to ``kl``."""
    if len(frame) == 0:
        return None
    w = frame[frame["term"] == "kl_weight"]
    w = w[np.isfinite(w["value"].to_numpy())]
    if len(w):
        latest = w.sort_values("step", kind="stable")
        return round_sig(float(latest["value"].iloc[-1]), 6), "logged kl_weight"
    for split in ("train", "val"):
        kw = frame[(frame["term"] == "kl_weighted") & (frame["split"] == split)]
        k = frame[(frame["term"] == "kl") & (frame["split"] == split)]
        if len(kw) and len(k):
            both = pd.merge(kw[["step", "value"]], k[["step", "value"]], on="step", suffixes=("_w", "_k"))
            both = both[(both["value_k"] != 0) & np.isfinite(both["value_k"]) & np.isfinite(both["value_w"])]
            if len(both):
                return round_sig(float(both["value_w"].iloc[-1] / both["value_k"].iloc[-1]), 6), \
                    f"logged {split} kl_weighted / kl"
    return None

