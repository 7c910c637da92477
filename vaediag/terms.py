# Over 450 lines on purpose: one job (the tag vocabulary); every tag string the trainer writes and every alias a foreign log may use must live in one file, and the alias table and its resolver are most of it.
"""THE tag vocabulary: canonical terms, the tags the training core writes, aliases for foreign logs.

Every tag string the trainer writes is built here and nowhere else; the reader maps any tag (ours,
Lightning's, AntixK/PyTorch-VAE's, a user's) to a canonical ``(term, split)`` through :func:`resolve`.

Conventions
-----------
* Canonical terms are lower-case identifiers (``kl``, ``recon``, ``psnr`` ...). A loss term's weighted
  contribution (weight x raw value) is the term with ``_weighted`` appended (``kl_weighted``).
* ``recon`` is the pixel reconstruction loss (our centre-weighted L1; foreign MSE, L1, BCE, NLL).
* Splits are ``train``, ``val`` or ``other``. A tag with no split marker is ``train`` when it names a
  loss or metric (Lightning's ``training_step`` logs ``loss``, ``KLD`` unprefixed) and ``other`` for
  bookkeeping terms (``lr``, ``epoch``, ``kl_weight``, ...).
* Foreign loss parts (:data:`FOREIGN_LOSS_TERMS`) keep their own terms so that they never collapse
  into ours: latent-diffusion's ``LPIPSWithDiscriminator`` (``ldm/modules/losses/contperceptual.py``)
  logs ``{split}/rec_loss`` (|x - x_hat| + LPIPS: ``recon``) AND ``{split}/nll_loss``
  (``rec_loss / exp(logvar) + logvar``: ``nll``), with ``logvar``, ``kl_loss``, ``d_weight``,
  ``disc_factor``, ``g_loss`` and, on the discriminator pass, ``disc_loss``; taming's
  ``vqperceptual.py`` logs ``{split}/quant_loss`` (``vq_loss``); AntixK's VQVAE logs ``VQ_Loss``.
* Lightning's ``self.log(..., on_step=True, on_epoch=True)`` logs one metric under two names,
  ``<name>_step`` and ``<name>_epoch`` (``Metadata.forked_name`` in
  ``lightning/pytorch/trainer/connectors/logger_connector/result.py``: the suffix is appended to the
  whole logged name). Both resolve to the same term; :func:`tag_aggregation` says which is which.
* A trailing component after a known term is a group: ``val/recon_loss/grey`` is ``recon`` for the
  group ``grey`` (:func:`tag_group`).
* Gradient statistics (:data:`GRADIENT_TERMS`, written by the trainer and by any loop that uses
  :mod:`vaediag.integrations.gradients`) are tagged ``train/<kind>/<term>`` (:func:`grad_tag`):
  ``train/grad_share/kl`` is ``grad_share_kl``, never the KL itself; the term part may be any alias of a
  loss term (``grad_norm/kl_loss``), a name that is none stays unmapped.
* Sign rules: some lineages log the KL with a flipped sign (AntixK's VanillaVAE logs ``KLD`` = -KL).
  Terms in :data:`NONNEGATIVE_TERMS` are negated by the reader when a series is <= 0 throughout.
* The frame's ``epoch`` is the 0-based epoch index (Lightning's convention). The seed's "after epoch
  10" means 10 completed epochs, i.e. the val point with epoch index 9.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from vaediag.errors import InputError, TagsError
from vaediag.safeio import read_text
from vaediag.structured import loads_toml, short_repr

__all__ = [
    "STATE_TERMS",
    "SPLITS",
    "LOSS_TERMS",
    "WEIGHTED_TERMS",
    "METRIC_TERMS",
    "BOOKKEEPING_TERMS",
    "FOREIGN_LOSS_TERMS",
    "GRADIENT_KINDS",
    "GRADIENT_TERMS",
    "CANONICAL_TERMS",
    "NONNEGATIVE_TERMS",
    "TERM_INFO",
    "tag",
    "weighted",
    "grad_term",
    "grad_tag",
    "TRAIN_STEP_TAGS",
    "GRADIENT_TAGS",
    "VAL_EPOCH_TAGS",
    "CONTROL_TAGS",
    "EPOCH_TAG",
    "TRAINER_SCALAR_TAGS",
    "RECON_GRID_TAG",
    "KL_PER_DIM_HIST_TAG",
    "BACKBONE_TEXT_TAG",
    "RESUME_TEXT_TAG",
    "DECISION_TEXT_TAG",
    "TRAINER_TEXT_TAGS",
    "CUSTOM_SCALARS_TAG",
    "HPARAMS_EXPERIMENT_TAG",
    "HPARAMS_SESSION_START_TAG",
    "HPARAMS_SESSION_END_TAG",
    "HPARAMS_METRIC_TAGS",
    "Chart",
    "ChartGroup",
    "QUALITY_CHARTS",
    "board_layout",
    "TagMap",
    "tag_map_from_tables",
    "resolve",
    "split_marker",
    "tag_aggregation",
    "tag_group",
    "load_tag_map",
]

SPLITS = ("train", "val", "other")

# Loss terms the training core computes; each is logged raw and weighted.
LOSS_TERMS = ("recon", "perceptual", "ssim_loss", "edge", "kl")
WEIGHTED_TERMS = tuple(f"{t}_weighted" for t in LOSS_TERMS)

# Per-epoch quality metrics (val split).
METRIC_TERMS = (
    "psnr",
    "psnr_grey",
    "psnr_colour",
    "ssim",
    "ssim_grey",
    "ssim_colour",
    "psnr_trivial",
    "recon_spread",
    "grad_similarity",
    "sharpness",
    "active_units",
    "kl_dim_mean",
    "kl_dim_median",
    "kl_dim_max",
    "kl_dim_min",
)

# Terms that describe the optimisation rather than the model's quality.
BOOKKEEPING_TERMS = ("kl_weight", "lr", "epoch", "control_seq", "ae_mode", "hp_metric", "penalty_share")
# The bookkeeping terms carried as state (held until changed) rather than measured per epoch.
STATE_TERMS = ("kl_weight", "lr", "control_seq", "ae_mode")

# Loss parts of foreign lineages that are none of ours (see the module docstring): each keeps its own
# term so that, e.g., LDM's nll_loss (which contains rec_loss) is never read as a second recon series.
FOREIGN_LOSS_TERMS = ("nll", "logvar", "g_loss", "disc_loss", "d_weight", "disc_factor", "vq_loss")

# Each weighted loss term's gradient at the latent head (mu and logvar), measured by
# vaediag.integrations.gradients on the trainer's --grad-share-every steps (train split):
#   grad_norm_<t>   the L2 norm of d(weighted term t)/d(mu, logvar), the two concatenated
#   grad_share_<t>  that norm over the sum of every term's norm (the shares add up to 1)
#   grad_cos_kl     the cosine between the KL's gradient and the sum of the other terms' gradients
GRADIENT_KINDS = ("grad_norm", "grad_share", "grad_cos")
GRADIENT_TERMS = (tuple(f"grad_norm_{t}" for t in LOSS_TERMS) + tuple(f"grad_share_{t}" for t in LOSS_TERMS)
                  + ("grad_cos_kl",))

CANONICAL_TERMS = (("loss",) + LOSS_TERMS + WEIGHTED_TERMS + METRIC_TERMS + BOOKKEEPING_TERMS + FOREIGN_LOSS_TERMS
                   + GRADIENT_TERMS)

# A KL divergence is >= 0: a series that is <= 0 throughout was logged with a flipped sign.
NONNEGATIVE_TERMS = frozenset({"kl", "kl_weighted"})


@dataclass(frozen=True)
class TermInfo:
    """What a canonical term means and how to show it."""

    label: str
    unit: str = ""
    higher_is_better: bool | None = None


TERM_INFO: dict[str, TermInfo] = {
    "loss": TermInfo("total loss", higher_is_better=False),
    "recon": TermInfo("reconstruction loss", higher_is_better=False),
    "perceptual": TermInfo("perceptual distance", higher_is_better=False),
    "ssim_loss": TermInfo("SSIM loss (1 - SSIM)", higher_is_better=False),
    "edge": TermInfo("edge loss", higher_is_better=False),
    "kl": TermInfo("KL divergence", "nats", higher_is_better=None),
    "psnr": TermInfo("PSNR", "dB", True),
    "psnr_grey": TermInfo("PSNR (grey images)", "dB", True),
    "psnr_colour": TermInfo("PSNR (colour images)", "dB", True),
    "ssim": TermInfo("SSIM", "", True),
    "ssim_grey": TermInfo("SSIM (grey images)", "", True),
    "ssim_colour": TermInfo("SSIM (colour images)", "", True),
    "psnr_trivial": TermInfo("PSNR of each image's own mean colour (baseline for psnr)", "dB", None),
    "recon_spread": TermInfo("input dependence (recon / input spread over the val set; 0 = one output for all)",
                             "", True),
    "grad_similarity": TermInfo("gradient similarity (blur and artefacts; 1 = input's gradients)", "", True),
    "sharpness": TermInfo("sharpness ratio (recon / input gradient energy)", "", True),
    "active_units": TermInfo("active latent units", "dims", True),
    "kl_dim_mean": TermInfo("KL per latent dim, mean", "nats"),
    "kl_dim_median": TermInfo("KL per latent dim, median", "nats"),
    "kl_dim_max": TermInfo("KL per latent dim, max", "nats"),
    "kl_dim_min": TermInfo("KL per latent dim, min", "nats"),
    "kl_weight": TermInfo("KL weight (beta)"),
    "lr": TermInfo("learning rate"),
    "epoch": TermInfo("epoch"),
    "control_seq": TermInfo("applied control.json seq"),
    "ae_mode": TermInfo("autoencoder mode (1 = z = mu, KL weight 0)"),
    "hp_metric": TermInfo("Lightning hp_metric placeholder"),
    "penalty_share": TermInfo("kl_weight x KL / recon, as the Lightning callback logged it"),
    "nll": TermInfo("negative log-likelihood (reconstruction under a learned variance)", higher_is_better=False),
    "logvar": TermInfo("learned output log-variance (LDM)"),
    "g_loss": TermInfo("generator adversarial loss"),
    "disc_loss": TermInfo("discriminator loss"),
    "d_weight": TermInfo("adaptive adversarial weight (LDM/taming d_weight)"),
    "disc_factor": TermInfo("discriminator factor (0 before disc_start)"),
    "vq_loss": TermInfo("vector-quantisation loss (codebook + commitment)", higher_is_better=False),
}
for _t in LOSS_TERMS:
    TERM_INFO[f"{_t}_weighted"] = TermInfo(f"{TERM_INFO[_t].label}, weighted", higher_is_better=False)
    TERM_INFO[f"grad_norm_{_t}"] = TermInfo(f"gradient norm at the latent head: {TERM_INFO[_t].label}, weighted")
    TERM_INFO[f"grad_share_{_t}"] = TermInfo(f"share of the gradient at the latent head: {TERM_INFO[_t].label}")
TERM_INFO["grad_cos_kl"] = TermInfo("cosine of the KL's gradient with the other terms' at the latent head")


# --------------------------------------------------------------------------------------------------
# The tags the training core writes. `split/name`, built here only.


def tag(split: str, term: str) -> str:
    """The trainer's tag for ``term`` on ``split``: ``tag("val", "psnr") == "val/psnr"``."""
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r} (choose train, val)")
    if term not in CANONICAL_TERMS:
        raise ValueError(f"unknown term {term!r}")
    return f"{split}/{term}"


def weighted(term: str) -> str:
    """The weighted variant of a loss term: ``weighted("kl") == "kl_weighted"``."""
    if term not in LOSS_TERMS:
        raise ValueError(f"{term!r} is not a loss term (choose {', '.join(LOSS_TERMS)})")
    return f"{term}_weighted"


def grad_term(kind: str, term: str) -> str:
    """The canonical term of a gradient statistic: ``grad_term("grad_share", "kl") == "grad_share_kl"``."""
    name = f"{kind}_{term}"
    if kind not in GRADIENT_KINDS or name not in GRADIENT_TERMS:
        raise ValueError(f"unknown gradient statistic {kind!r} of {term!r} (kinds: {', '.join(GRADIENT_KINDS)}; "
                         f"terms: {', '.join(LOSS_TERMS)}; grad_cos of kl only)")
    return name


def grad_tag(kind: str, term: str, split: str = "train") -> str:
    """The tag of a gradient statistic of a loss term: ``grad_tag("grad_share", "kl") == "train/grad_share/kl"``.

    ``term`` may be any name without a ``/`` (a callback's own loss term): the reader maps
    ``<kind>/<alias of a loss term>`` to ``<kind>_<term>`` (``grad_norm/kl_loss`` is ``grad_norm_kl``) and
    leaves other names unmapped, never reading them as the loss term itself.
    """
    if kind not in GRADIENT_KINDS:
        raise ValueError(f"unknown gradient statistic {kind!r} (choose {', '.join(GRADIENT_KINDS)})")
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r} (choose train, val)")
    if not isinstance(term, str) or not term or "/" in term:
        raise ValueError(f"a term name must be non-empty text without '/', got {term!r}")
    return f"{split}/{kind}/{term}"


EPOCH_TAG = "epoch"  # logged with every train step and every val point, like Lightning
RECON_GRID_TAG = "val/recon_grid"  # image: inputs (top row) over reconstructions (bottom row)
KL_PER_DIM_HIST_TAG = "val/kl_per_dim"  # histogram of KL per latent dim
BACKBONE_TEXT_TAG = "meta/perceptual_backbone"  # text: which perceptual backbone ran
RESUME_TEXT_TAG = "meta/resume"  # text: a resume and the config values the command line overrode

TRAIN_STEP_TAGS: tuple[str, ...] = tuple(
    tag("train", t) for t in ("loss",) + LOSS_TERMS + WEIGHTED_TERMS + ("kl_weight", "lr")
)
VAL_EPOCH_TAGS: tuple[str, ...] = tuple(
    tag("val", t) for t in ("loss",) + LOSS_TERMS + WEIGHTED_TERMS + METRIC_TERMS
)
# Logged once per epoch on the train split: what control.json made the loop apply.
CONTROL_TAGS: tuple[str, ...] = (tag("train", "control_seq"), tag("train", "ae_mode"))
# Logged on the --grad-share-every steps (train): each term's gradient norm and share at the latent head.
GRADIENT_TAGS: tuple[str, ...] = tuple(grad_tag(k, t) for k in ("grad_norm", "grad_share") for t in LOSS_TERMS) + (
    grad_tag("grad_cos", "kl"),)
TRAINER_SCALAR_TAGS: tuple[str, ...] = (TRAIN_STEP_TAGS + VAL_EPOCH_TAGS + CONTROL_TAGS + (EPOCH_TAG,)
                                        + GRADIENT_TAGS)

# Text: each control.json the loop applied, at the step it took effect: what changed and the watchdog's reason.
DECISION_TEXT_TAG = "watchdog/decision"
# Logged by the Lightning callback (vaediag.integrations.lightning) after each decision, at the epoch's own step:
# the weight the epoch trained with, and its kl_weight x KL / recon (the seed's "13.5 % of the signal").
WATCHDOG_KL_WEIGHT_TAG = "watchdog/kl_weight"
WATCHDOG_PENALTY_SHARE_TAG = "watchdog/penalty_share"
TRAINER_TEXT_TAGS: tuple[str, ...] = (BACKBONE_TEXT_TAG, RESUME_TEXT_TAG, DECISION_TEXT_TAG)

# TensorBoard's own plugins read these tags by these names (tensorboard.plugins.custom_scalar.metadata and
# tensorboard.plugins.hparams.metadata). None of them is a scalar: the reader keeps the hparams session's
# values as run metadata and skips the layout.
CUSTOM_SCALARS_TAG = "custom_scalars__config__"  # the Custom Scalars layout (a layout_pb2.Layout)
HPARAMS_EXPERIMENT_TAG = "_hparams_/experiment"  # the HParams columns: config fields and metric tags
HPARAMS_SESSION_START_TAG = "_hparams_/session_start_info"  # this run's config values
HPARAMS_SESSION_END_TAG = "_hparams_/session_end_info"  # how the run ended (success or failure)

# The HParams tab's metric columns. They name scalar tags the trainer logs anyway: TensorBoard shows the last
# value of each in the run (for val, the last epoch's; for kl_weight, the last logged step's), so no value is
# written twice. The same list for every run (a column a run lacks, perceptual when the term is off, stays
# empty), because TensorBoard takes the columns from the first run of a log directory that declares them.
HPARAMS_METRIC_TAGS: tuple[str, ...] = tuple(
    tag("val", t) for t in ("loss",) + LOSS_TERMS + ("psnr", "ssim", "grad_similarity", "active_units")
) + (tag("train", "kl_weight"),)


# --------------------------------------------------------------------------------------------------
# The Custom Scalars layout: which trainer tags TensorBoard draws together.


@dataclass(frozen=True)
class Chart:
    """One chart: a title and the tags drawn on it."""

    title: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ChartGroup:
    """A category of charts; ``closed``: shown collapsed until opened."""

    title: str
    charts: tuple[Chart, ...]
    closed: bool = False


# Quality metrics (val) drawn together, by family; every METRIC_TERMS entry is in exactly one chart.
QUALITY_CHARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PSNR (dB): all, grey, colour images; own-mean-colour baseline",
     ("psnr", "psnr_grey", "psnr_colour", "psnr_trivial")),
    ("SSIM: all, grey, colour images", ("ssim", "ssim_grey", "ssim_colour")),
    ("input dependence and blur (1 = like the input)", ("grad_similarity", "recon_spread", "sharpness")),
    ("active latent units", ("active_units",)),
    ("KL per latent dim (nats): mean, median, max, min", ("kl_dim_mean", "kl_dim_median", "kl_dim_max", "kl_dim_min")),
)

_BOOKKEEPING_CHARTS: tuple[tuple[str, str], ...] = (
    ("learning rate", tag("train", "lr")),
    ("KL weight in effect (beta)", tag("train", "kl_weight")),
    ("control.json seq applied (-1 = none)", tag("train", "control_seq")),
    ("autoencoder mode (1 = z = mu, KL weight 0)", tag("train", "ae_mode")),
    ("epoch (0-based)", EPOCH_TAG),
)


def board_layout(loss_terms: tuple[str, ...] | list[str] = LOSS_TERMS,
                 metric_terms: tuple[str, ...] | list[str] = METRIC_TERMS, *,
                 gradients: bool = True) -> tuple[ChartGroup, ...]:
    """The trainer's Custom Scalars layout for a run that logs ``loss_terms`` and the val ``metric_terms``.

    Categories: each loss term raw (train and val on one chart), each weighted with the total (the sum of
    the weighted terms) first, the quality metrics by family, with ``gradients`` the terms' gradients at the
    latent head (shares on one chart, norms on another, the KL's cosine with the rest), and the bookkeeping
    tags (closed). A term the run does not log gets no chart (no perceptual chart with the term off); a
    quality chart keeps only the metrics the run logs.

    >>> [g.title for g in board_layout()]
    ['loss terms (raw)', 'loss terms (weighted)', 'quality (val)', 'gradient at the latent head (train)', 'bookkeeping']
    >>> board_layout(["recon", "kl"])[0].charts[1]
    Chart(title='kl: KL divergence', tags=('train/kl', 'val/kl'))
    """
    bad = [t for t in loss_terms if t not in LOSS_TERMS] + [t for t in metric_terms if t not in METRIC_TERMS]
    if bad:
        raise ValueError(f"unknown term(s) {bad} (loss terms: {', '.join(LOSS_TERMS)}; metrics: "
                         f"{', '.join(METRIC_TERMS)})")
    logged = [t for t in LOSS_TERMS if t in loss_terms]  # in the vocabulary's order

    def both(term: str) -> Chart:
        return Chart(f"{term}: {TERM_INFO[term].label}", (tag("train", term), tag("val", term)))

    raw_charts = tuple(both(t) for t in logged)
    weighted_charts = (both("loss"),) + tuple(both(weighted(t)) for t in logged)
    quality = tuple(Chart(title, tuple(tag("val", t) for t in ts if t in metric_terms))
                    for title, ts in QUALITY_CHARTS if any(t in metric_terms for t in ts))
    books = tuple(Chart(title, (t,)) for title, t in _BOOKKEEPING_CHARTS)
    groups = [ChartGroup("loss terms (raw)", raw_charts), ChartGroup("loss terms (weighted)", weighted_charts),
              ChartGroup("quality (val)", quality)]
    if gradients:
        charts = [Chart("share of the gradient at (mu, logvar): each term's norm / the sum of norms",
                        tuple(grad_tag("grad_share", t) for t in logged)),
                  Chart("gradient norm at (mu, logvar) of each weighted term", tuple(grad_tag("grad_norm", t) for t in logged))]
        if "kl" in logged:
            charts.append(Chart("cosine of the KL's gradient with the other terms' (< 0: it pulls against them)",
                                (grad_tag("grad_cos", "kl"),)))
        groups.append(ChartGroup("gradient at the latent head (train)", tuple(charts)))
    return (*groups, ChartGroup("bookkeeping", books, closed=True))


# --------------------------------------------------------------------------------------------------
# Resolving any tag to (term, split).

# Normalised base name (lower case, after split markers are stripped) -> canonical term.
_ALIASES: dict[str, str] = {}


def _alias(term: str, *names: str) -> None:
    for n in names:
        _ALIASES[n] = term


_alias("kl", "kl", "kld", "kl_div", "kl_divergence", "kl_loss", "kld_loss", "loss/kl", "kl_term",
       "latent_loss", "kl_raw")
_alias("recon", "recon", "rec", "reconstruction", "reconstruction_loss", "recon_loss", "rec_loss",
       "mse", "mse_loss", "l1", "l1_loss", "bce", "bce_loss", "loss/recon",
       "loss/rec", "loss/reconstruction", "recons_loss", "recon_raw", "l2", "l2_loss")
# LDM: nll_loss = rec_loss / exp(logvar) + logvar, the likelihood term that enters the total.
_alias("nll", "nll", "nll_loss", "neg_log_likelihood", "w_nll_loss", "weighted_nll_loss")
_alias("logvar", "logvar", "log_var", "output_logvar")
_alias("g_loss", "g_loss", "gen_loss", "generator_loss", "adv_loss", "gan_loss")
_alias("disc_loss", "disc_loss", "discloss", "d_loss", "discriminator_loss")
_alias("d_weight", "d_weight")
_alias("disc_factor", "disc_factor")
_alias("vq_loss", "vq_loss", "vqloss", "quant_loss", "quantization_loss", "quantisation_loss",
       "commitment_loss", "commit_loss", "codebook_loss", "embedding_loss", "vq_commit_loss")
_alias("perceptual", "perceptual", "perceptual_loss", "p_loss", "lpips", "lpips_loss", "vgg_loss",
       "loss/perceptual", "loss/lpips")
_alias("ssim_loss", "ssim_loss", "loss/ssim", "dssim")
_alias("edge", "edge", "edge_loss", "grad_loss", "gradient_loss", "loss/edge")
_alias("loss", "loss", "total_loss", "loss/total", "total", "train_loss_total")
_alias("psnr", "psnr")
_alias("ssim", "ssim")
_alias("sharpness", "sharpness")
_alias("active_units", "active_units", "au")
_alias("kl_weight", "kl_weight", "kld_weight", "beta", "kl_beta", "kl_coef", "kl_coeff")
_alias("lr", "lr", "learning_rate")
_alias("epoch", "epoch")
_alias("hp_metric", "hp_metric")
_alias("penalty_share", "penalty_share")
for _t in CANONICAL_TERMS:
    _ALIASES.setdefault(_t, _t)
for _t in LOSS_TERMS:
    _ALIASES.setdefault(f"{_t}_w", f"{_t}_weighted")

# Split markers, longest first so "validation/" wins over "val".
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("validation/", "val"), ("validation_", "val"), ("valid/", "val"), ("valid_", "val"),
    ("val/", "val"), ("val_", "val"), ("eval/", "val"), ("eval_", "val"),
    ("training/", "train"), ("train/", "train"), ("train_", "train"),
    ("test/", "other"), ("test_", "other"),
)
_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("/validation", "val"), ("_validation", "val"), ("/val", "val"), ("_val", "val"),
    ("/train", "train"), ("_train", "train"),
)
_PREFIX_STRINGS = tuple(p for p, _ in _PREFIXES)
_SUFFIX_STRINGS = tuple(x for x, _ in _SUFFIXES)
# Lightning appends _step / _epoch for on_step and on_epoch logging of the same metric.
_AGGREGATION_SUFFIXES = ("_step", "_epoch")
_LR_RE = re.compile(r"^lr[-_/].+|^lr$|.*learning_rate.*")
# A reconstruction loss named with its pixel loss: recon_l1, recon_mse, recon_loss_l1, rec_bce, ...
_RECON_KIND_RE = re.compile(
    r"^(?:recons?|rec|reconstruction)(?:_loss)?[_-](?:l1|l2|mse|mae|bce|bce_logits|ce|huber|smooth_l1|charbonnier)$"
)

_GRADIENT_PREFIXES = tuple(f"{k}/" for k in GRADIENT_KINDS)
_GRADIENT_SET = frozenset(GRADIENT_TERMS)

# Without a split marker these are bookkeeping: "other", not "train".
_UNSPLIT_DEFAULT_OTHER = frozenset(BOOKKEEPING_TERMS) | {"logvar", "d_weight", "disc_factor"}


@dataclass(frozen=True)
class TagMap:
    """User mappings from a ``--tags`` TOML file: exact tags first, then glob patterns.

    File shape::

        [tags]
        "my/kl_term" = "kl"                                  # split inferred from the tag
        "eval/kl_term" = { term = "kl", split = "val" }

        [patterns]
        "*/beta_*" = "kl_weight"
    """

    exact: tuple[tuple[str, str, str | None], ...] = ()  # (tag, term, split or None)
    patterns: tuple[tuple[str, str, str | None], ...] = ()  # (glob, term, split or None)

    def lookup(self, raw: str) -> tuple[str, str | None] | None:
        for name, term, split in self.exact:
            if raw == name:
                return term, split
        for pat, term, split in self.patterns:
            if fnmatch.fnmatchcase(raw, pat):
                return term, split
        return None


def _split_markers(name: str) -> tuple[str, str | None]:
    low = name.lower()
    # (The tuple tests are the loops' necessary condition, in C: most tags carry no marker.)
    if low.startswith(_PREFIX_STRINGS):
        for prefix, split in _PREFIXES:
            if low.startswith(prefix) and len(low) > len(prefix):
                return low[len(prefix):], split
    if low.endswith(_SUFFIX_STRINGS):
        for suffix, split in _SUFFIXES:
            if low.endswith(suffix) and len(low) > len(suffix):
                return low[: -len(suffix)], split
    return low, None


def _base_term(base: str) -> str | None:
    if base in _ALIASES:
        return _ALIASES[base]
    if base.endswith(_AGGREGATION_SUFFIXES):
        for agg in _AGGREGATION_SUFFIXES:
            if base.endswith(agg) and base[: -len(agg)] in _ALIASES:
                return _ALIASES[base[: -len(agg)]]
    # Lightning's LearningRateMonitor: lr-Adam, lr-AdamW/pg1, ... (the substring tests are the patterns'
    # necessary conditions: a million per-sample tags skip the regular expressions)
    if (base.startswith("lr") or "learning_rate" in base) and _LR_RE.match(base):
        return "lr"
    if base.startswith("rec") and _RECON_KIND_RE.match(base):
        return "recon"
    # "grad_share/kl", "grad_norm/recon_loss": a gradient statistic of a loss term, never the term itself.
    if base.startswith(_GRADIENT_PREFIXES):
        kind, _, rest = base.partition("/")
        term = _base_term(rest) if rest else None  # "grad_norm/recon_loss/grey": the group rule holds too
        name = f"{kind}_{term}"
        return name if name in _GRADIENT_SET else None
    # "loss/kl", "losses/kl_loss": the last path component names the term.
    if "/" in base:
        head, last = base.rsplit("/", 1)
        term = _base_term(last)
        if term is None:
            # "recon_loss/grey": a trailing group after a known term (see tag_group).
            term = _grouped_term(head, last)
        return term
    return None


def _grouped_term(head: str, group: str) -> str | None:
    term = _base_term(head)
    if term is not None and f"{term}_{group}" in CANONICAL_TERMS:
        return f"{term}_{group}"  # psnr/grey -> psnr_grey, our own per-group metric
    return term


@lru_cache(maxsize=65536)
def tag_group(raw: str) -> str | None:
    """The group a tag names after its term (``val/recon_loss/grey`` -> ``"grey"``), else None.

    A group is a trailing path component that names no term while the path before it does.

    >>> tag_group("val/recon_loss/colour"), tag_group("val/recon_loss")
    ('colour', None)
    """
    base, _ = _split_markers(raw)
    if "/" not in base:
        return None
    head, last = base.rsplit("/", 1)
    if not last or _base_term(last) is not None or _base_term(head) is None:
        return None
    return last


@lru_cache(maxsize=65536)
def tag_aggregation(raw: str) -> str | None:
    """``"step"`` or ``"epoch"`` for a Lightning forked metric name, else None.

    Lightning logs ``self.log(name, on_step=True, on_epoch=True)`` twice, as ``f"{name}_step"`` and
    ``f"{name}_epoch"`` (``Metadata.forked_name`` in its ``logger_connector/result.py``), the suffix
    appended to the whole name. Both resolve to the term of ``name``; consumers pick one tag per
    (term, split): the ``_epoch`` tag is the epoch's mean, the ``_step`` tag a per-step value. A tag
    only counts as forked when the name without the suffix resolves to the same term (``global_step``
    is not a forked ``global``).

    >>> tag_aggregation("loss_epoch"), tag_aggregation("val/kl_step"), tag_aggregation("loss")
    ('epoch', 'step', None)
    """
    for kind in ("step", "epoch"):
        suffix = f"_{kind}"
        if raw.lower().endswith(suffix) and len(raw) > len(suffix):
            stem = raw[: -len(suffix)]
            term = resolve(stem)[0]
            if term is not None and term == resolve(raw)[0]:
                return kind
    return None


def split_marker(raw: str, tag_map: TagMap | None = None) -> str | None:
    """The split a tag's name marks (prefix, suffix or path component; or a --tags split), else None.

    :func:`resolve` gives unmarked tags a default split; this says whether the split was marked.
    """
    if tag_map is not None:
        hit = tag_map.lookup(raw)
        if hit is not None and hit[1] is not None:
            return hit[1]
    base, split = _split_markers(raw)
    if split is None and "/" in base:
        for part in base.split("/")[:-1]:
            split = _component_split(part)
            if split is not None:
                break
    return split


@lru_cache(maxsize=65536)
def resolve(raw: str, tag_map: TagMap | None = None) -> tuple[str | None, str]:
    """Map a logged tag to ``(canonical term or None, split)``.

    >>> resolve("val_KLD")
    ('kl', 'val')
    >>> resolve("lr-Adam")
    ('lr', 'other')
    >>> resolve("train/recon_weighted")
    ('recon_weighted', 'train')
    """
    if tag_map is not None:
        hit = tag_map.lookup(raw)
        if hit is not None:
            term, split = hit
            if split is None:
                split = _split_markers(raw)[1] or ("other" if term in _UNSPLIT_DEFAULT_OTHER else "train")
            return term, split
    base, split = _split_markers(raw)
    term = _base_term(base)
    if split is None and "/" in base:
        # A split marker in the middle ("loss_val/kl", "vae/val/kl"): the first path component that
        # carries one decides.
        for part in base.split("/")[:-1]:
            split = _component_split(part)
            if split is not None:
                break
    if term is None:
        return None, split or "other"
    if split is None:
        split = "other" if term in _UNSPLIT_DEFAULT_OTHER else "train"
    return term, split


_COMPONENT_SPLITS = {"val": "val", "valid": "val", "validation": "val", "eval": "val", "train": "train",
                     "training": "train", "test": "other"}


def _component_split(part: str) -> str | None:
    if part in _COMPONENT_SPLITS:
        return _COMPONENT_SPLITS[part]
    for sep in ("_", "-"):
        head, _, tail = part.rpartition(sep)
        if head and tail in _COMPONENT_SPLITS:
            return _COMPONENT_SPLITS[tail]
        head, _, tail = part.partition(sep)
        if tail and head in _COMPONENT_SPLITS:
            return _COMPONENT_SPLITS[head]
    return None


def load_tag_map(path: str | Path) -> TagMap:
    """Read a ``--tags`` TOML file (shape in :class:`TagMap`). Raises TagsError with the key at fault."""
    p = Path(path)
    # safeio: a FIFO, a device or a file over 1 MiB is refused at once (InputError), never read.
    text = read_text(p, what="tags file", missing_ok=True)
    if text is None:
        raise InputError(f"tags file {str(p)!r} does not exist; pass a TOML file with a [tags] table")
    data = loads_toml(text, where=f"tags file {p}", error=TagsError)
    unknown = set(data) - {"tags", "patterns"}
    if unknown:
        raise TagsError(f"tags file {p}: unknown table(s) {sorted(unknown)} (choose tags, patterns)")
    for section in ("tags", "patterns"):
        if not isinstance(data.get(section, {}), dict):
            raise TagsError(f"tags file {p}: {section} must be a [{section}] table of \"tag\" = \"term\" lines")

    return tag_map_from_tables(data, where=f"tags file {p}: ", error=TagsError)


def tag_map_from_tables(data: Mapping[str, Any], *, where: str = "", error: type[Exception] = TagsError) -> TagMap:
    """A :class:`TagMap` from ``{"tags": {tag: term or {term, split}}, "patterns": {...}}``: the ``--tags`` file's
    tables, or the same mappings given in code (the Lightning callback's ``tags=``). Raises ``error`` with
    ``where`` and the key at fault for a value that is not a term, or an unknown term or split."""

    def entry(section: str, key: str, value: object) -> tuple[str, str | None]:
        if isinstance(value, str):
            term, split = value, None
        elif isinstance(value, Mapping) and "term" in value and set(value) <= {"term", "split"}:
            term, split = value["term"], value.get("split")
        else:
            raise error(f"{where}[{section}] {short_repr(key)} must be a term name or {{term = ..., split = ...}}")
        if term not in CANONICAL_TERMS:
            raise error(f"{where}[{section}] {short_repr(key)} maps to unknown term {short_repr(term)} "
                        f"(choose {', '.join(CANONICAL_TERMS)})")
        if split is not None and split not in SPLITS:
            raise error(f"{where}[{section}] {short_repr(key)} has unknown split {short_repr(split)} "
                        f"(choose {', '.join(SPLITS)})")
        return term, split

    exact = tuple((str(k), *entry("tags", k, v)) for k, v in data.get("tags", {}).items())
    patterns = tuple((str(k), *entry("patterns", k, v)) for k, v in data.get("patterns", {}).items())
    return TagMap(exact=exact, patterns=patterns)
