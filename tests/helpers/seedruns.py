"""Synthetic runs of vaediag's trainer, written as REAL event files: the one writer of the seed's runs.

``write_trainer_run`` logs what ``train/loop.py`` logs, with tag strings from ``vaediag.terms``: every loss
term raw and weighted plus the total, ``kl_weight`` and ``lr`` per train step; every loss term and metric
per epoch on val; the ``epoch`` tag with each step; ``config.json`` and ``hparams.yaml`` with the
trainer's config (``train.config.TrainConfig``'s defaults under the run's own values). Curves are given per
epoch (a list, or a function of the epoch index); each epoch's train steps average to the curve's value
exactly (a symmetric +-2 % wiggle across the steps). A picture per epoch on request, as the trainer logs
``val/recon_grid``.

``SEED`` holds the seed's three runs (shared/seed), with the numbers its write-up gives:

* run1: kl_weight 1e-4, the original weights (perceptual 0.8, SSIM 0.3, no edge); KL 160-180, PSNR 19-22.
* run2: kl_weight 1e-5; KL 1,660 at epoch 10 down to 1,535 at epoch 200, recon 0.111, PSNR 23.9 dB,
  SSIM 0.645, perceptual 0.532; blurry.
* run3: kl_weight 1e-7 with the seed's recipe (1.0 / 1.2 / 0.5 / 0.1), 60 epochs as the seed expects it:
  KL ~300, perceptual 0.35 at epoch 10 and 0.2 at 30, PSNR 29 at 30 and 32.5 at 60, sharp, converged.

``write_seed`` writes the three under one root (as ``run1``..``run3`` for the diagnosis and check tests, as
``ear_vae/version_0``..``2`` for the report tests); ``write_seed_run`` writes one of them, cut short or changed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import tbwrite
from train.config import TrainConfig
from vaediag.terms import LOSS_TERMS, tag

Curve = Sequence[float] | Callable[[int], float]

STEPS_PER_EPOCH = 2

# A trainer run's config.json: TrainConfig's defaults (read, never copied: a copy went stale when fields were
# added), with what the loop fills in at start (the data's channels, the perceptual backbone that ran).
TRAINER_CONFIG = {**TrainConfig().to_dict(), "channels": 3, "perceptual_backbone": "stlpips-vgg16"}


def approach(start: float, end: float, *, rate: float = 5.0, n: int) -> Callable[[int], float]:
    """Exponential approach from ``start`` (epoch 0) to ``end`` (reached at epoch n - 1, up to e^-rate)."""

    def f(e: int) -> float:
        x = e / max(1, n - 1)
        return end + (start - end) * (math.exp(-rate * x) - math.exp(-rate)) / (1 - math.exp(-rate))

    return f


def _at(c: Curve, e: int) -> float:
    return float(c(e) if callable(c) else c[e])


def write_trainer_run(
    run_dir: Path,
    *,
    epochs: int,
    curves: Mapping[str, Curve],
    config: Mapping | None = None,
    steps_per_epoch: int = STEPS_PER_EPOCH,
    val: bool = True,
    train_epochs: int | None = None,
    extra_train: Mapping[str, Curve] | None = None,
    t0: float = 1.7e9,
    grid_tag: str | None = None,
) -> Path:
    """Write one run like the trainer's (module docstring). ``curves`` maps canonical terms to per-epoch
    values: loss terms (``recon``, ``perceptual``, ``ssim_loss``, ``edge``, ``kl``) go to train and val,
    metrics (``psnr``, ``sharpness``, ``active_units`` ...) to val only; ``kl_weight`` and ``lr`` default
    to the config's. ``train_epochs`` > ``epochs`` logs train steps of an epoch still running. ``grid_tag``
    logs a picture under that tag at each val step, as the trainer logs ``val/recon_grid`` (:func:`grid_png`)."""
    cfg = {**TRAINER_CONFIG, **(config or {})}
    weights = {"recon": cfg["w_l1"], "perceptual": cfg["w_perceptual"], "ssim_loss": cfg["w_ssim"],
               "edge": cfg["w_edge"], "kl": cfg["kl_weight"]}
    kl_w = curves.get("kl_weight", lambda e: 0.0 if cfg["ae"] else cfg["kl_weight"])
    lr = curves.get("lr", lambda e: cfg["lr"])
    series: dict[str, list[tuple[int, float]]] = {}
    epoch_of: dict[int, float] = {}

    def put(t: str, step: int, v: float) -> None:
        series.setdefault(t, []).append((step, v))

    n_train = train_epochs if train_epochs is not None else epochs
    for e in range(n_train):
        w_e = _at(kl_w, e)
        for k in range(steps_per_epoch):
            step = e * steps_per_epoch + k
            wiggle = 1.0 + (0.02 if k % 2 == 0 else -0.02) * (1 if steps_per_epoch % 2 == 0 or k < steps_per_epoch - 1 else 0)
            total = 0.0
            for term in LOSS_TERMS:
                if term not in curves:
                    continue
                raw = _at(curves[term], e) * wiggle
                w = w_e if term == "kl" else weights[term]
                put(tag("train", term), step, raw)
                put(tag("train", f"{term}_weighted"), step, w * raw)
                total += w * raw
            put(tag("train", "loss"), step, total)
            put(tag("train", "kl_weight"), step, w_e)
            put(tag("train", "lr"), step, _at(lr, e))
            for t, c in (extra_train or {}).items():
                put(t, step, _at(c, e))
            epoch_of[step] = float(e)
    if val:
        for e in range(epochs):
            step = (e + 1) * steps_per_epoch - 1
            w_e = _at(kl_w, e)
            total = 0.0
            for term, c in curves.items():
                if term in ("kl_weight", "lr"):
                    continue
                v = _at(c, e)
                put(tag("val", term), step, v)
                if term in LOSS_TERMS:
                    w = w_e if term == "kl" else weights[term]
                    put(tag("val", f"{term}_weighted"), step, w * v)
                    total += w * v
            put(tag("val", "loss"), step, total)
    cfg_out = {**cfg, "epochs": max(cfg["epochs"], epochs)} if "epochs" not in (config or {}) else cfg
    hp = {k: v for k, v in cfg_out.items()}
    images = [(grid_tag, (e + 1) * steps_per_epoch - 1, grid_png(t0, e)) for e in range(epochs)] if grid_tag else []
    return tbwrite.write_run(run_dir, series, epochs=epoch_of, t0=t0, hparams_yaml=hp, config=cfg_out, images=images)


def grid_png(t0: float, epoch: int) -> bytes:
    """The picture a run started at ``t0`` logs at ``epoch``: distinct bytes per run and epoch."""
    return tbwrite.png_bytes(8, 16, seed=int(t0) % 100_000 * 1000 + epoch)



# A trainer run that is doing well, per epoch: the base of the synthetic runs of the rule tables.
HEALTHY = dict(recon=0.05, perceptual=0.2, ssim_loss=0.12, edge=0.02, psnr=31.0, sharpness=0.9, active_units=200.0)


def healthy_curves(n: int, **over) -> dict:
    """Curves for :func:`write_trainer_run`: KL 300 and :data:`HEALTHY`, with ``over`` replacing or adding
    terms (a number is a flat curve; a list or a function of the epoch is used as it is)."""
    c = {"kl": 300.0, **HEALTHY}
    c.update(over)
    return {k: (v if callable(v) or isinstance(v, list) else (lambda e, v=v: v)) for k, v in c.items()}

def _seed_run1() -> dict:
    n = 50
    return dict(
        epochs=n,
        config=dict(kl_weight=1e-4, latent_dim=1024, w_perceptual=0.8, w_ssim=0.3, w_edge=0.0, epochs=n),
        curves=dict(
            kl=approach(160.0, 180.0, n=n, rate=3.0), recon=approach(0.20, 0.13, n=n), perceptual=approach(0.95, 0.80, n=n),
            ssim_loss=approach(0.6, 0.48, n=n), edge=approach(0.10, 0.07, n=n), psnr=approach(19.0, 22.0, n=n, rate=3.0),
            psnr_grey=approach(18.0, 20.5, n=n), psnr_colour=approach(19.5, 22.5, n=n), ssim=approach(0.40, 0.52, n=n),
            sharpness=approach(0.25, 0.35, n=n), active_units=lambda e: 700.0,
        ),
    )


def _seed_run2() -> dict:
    n = 200
    kl_tail = approach(1660.0, 1535.0, n=n - 9, rate=3.0)
    return dict(
        epochs=n,
        config=dict(kl_weight=1e-5, latent_dim=1024, w_perceptual=0.8, w_ssim=0.3, w_edge=0.0, epochs=n),
        curves=dict(
            kl=lambda e: 900.0 + 760.0 * e / 9 if e < 9 else kl_tail(e - 9),
            recon=approach(0.30, 0.111, n=n, rate=8.0), perceptual=approach(1.0, 0.532, n=n, rate=6.0),
            ssim_loss=approach(0.6, 0.355, n=n), edge=approach(0.10, 0.05, n=n), psnr=approach(16.0, 23.9, n=n, rate=8.0),
            psnr_grey=approach(15.0, 21.5, n=n), psnr_colour=approach(17.0, 24.8, n=n), ssim=approach(0.35, 0.645, n=n),
            sharpness=approach(0.30, 0.50, n=n), active_units=lambda e: 1000.0,
        ),
    )


def _seed_run3() -> dict:
    n = 60

    def psnr(e: int) -> float:  # 25 dB after epoch 10, 29 after 30, 32.5 from epoch 50 on (converged)
        pts = [(0, 18.0), (9, 25.0), (29, 29.0), (49, 32.5), (59, 32.5)]
        return _interp(pts, e)

    def recon(e: int) -> float:
        return _interp([(0, 0.20), (9, 0.08), (29, 0.05), (49, 0.040), (59, 0.0399)], e)

    def perceptual(e: int) -> float:
        return _interp([(0, 0.8), (9, 0.35), (29, 0.20), (49, 0.18), (59, 0.18)], e)

    return dict(
        epochs=n,
        config=dict(kl_weight=1e-7, latent_dim=1024, epochs=100),
        curves=dict(
            kl=lambda e: _interp([(0, 600.0), (9, 350.0), (29, 300.0), (59, 290.0)], e), recon=recon,
            perceptual=perceptual, ssim_loss=lambda e: 1 - _interp([(0, 0.5), (29, 0.85), (59, 0.88)], e),
            edge=lambda e: 0.5 * recon(e), psnr=psnr, psnr_grey=lambda e: psnr(e) - 1.0,
            psnr_colour=lambda e: psnr(e) + 0.5, ssim=lambda e: _interp([(0, 0.5), (29, 0.85), (59, 0.88)], e),
            sharpness=lambda e: _interp([(0, 0.5), (9, 0.80), (29, 0.90), (59, 0.92)], e),
            active_units=lambda e: 1000.0,
        ),
    )


def _interp(pts: list[tuple[int, float]], e: int) -> float:
    for (e0, v0), (e1, v1) in zip(pts, pts[1:]):
        if e0 <= e <= e1:
            return v0 + (v1 - v0) * (e - e0) / (e1 - e0)
    return pts[-1][1]


SEED = {"run1": _seed_run1(), "run2": _seed_run2(), "run3": _seed_run3()}


def write_seed(root: Path, names: Sequence[str] = ("run1", "run2", "run3"), *,
               run_dirs: Sequence[str] | None = None) -> Path:
    """The seed's runs under ``root``: in ``root/<name>`` (run ids ``run1``, ``run2``, ``run3``), or in
    ``root/<run_dirs[i]>``; returns ``root``."""
    for i, name in enumerate(names):
        write_seed_run(root / (run_dirs[i] if run_dirs else name), name, t0=1.70e9 + i * 1e6)
    return root


def write_seed_run(run_dir: Path, name: str, *, epochs: int | None = None, t0: float = 1.70e9,
                   config: Mapping | None = None, curves: Mapping[str, Curve | None] | None = None,
                   grid_tag: str | None = None) -> Path:
    """One of the seed's runs: ``epochs`` cuts it short (the curves stay the full run's), ``config`` and
    ``curves`` change or add fields and curves (a curve given as None is not logged), ``grid_tag`` as in
    :func:`write_trainer_run`."""
    spec = SEED[name]
    merged = {**spec["curves"], **(curves or {})}
    return write_trainer_run(run_dir, epochs=epochs or spec["epochs"], config={**spec["config"], **(config or {})},
                             curves={k: c for k, c in merged.items() if c is not None}, t0=t0, grid_tag=grid_tag)
