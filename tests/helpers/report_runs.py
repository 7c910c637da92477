"""The seed's three runs (and a supervised run) written as real event files, for the report tests.

The curves follow the seed's write-up: run 1 (kl_weight 1e-4) ends with KL 160-180 and PSNR 19-22 dB;
run 2 (kl_weight 1e-5) with KL 1,535-1,660, PSNR 23.9 dB, SSIM 0.645, perceptual 0.532, recon 0.111;
run 3 (kl_weight 1e-7, re-weighted reconstruction terms, edge loss) as the seed expected it: KL 100-500,
PSNR 30-35 dB, SSIM 0.85-0.90, perceptual 0.15-0.25, recon 0.03-0.05, converged by epoch 60.
"""

from __future__ import annotations

import math
from pathlib import Path

import tbwrite
from vaediag.terms import LOSS_TERMS, tag

STEPS_PER_EPOCH = 2


def _curve(start: float, end: float, n: int, *, rate: float = 5.0, wiggle: float = 0.0):
    """An exponential approach from start to end over n epochs, with a small deterministic wiggle."""
    return [end + (start - end) * math.exp(-rate * i / max(1, n - 1)) + wiggle * math.sin(1.7 * i)
            for i in range(n)]


# name -> (epochs, config, curves of the val metrics and raw losses)
SEED_RUNS = {
    "run1": dict(
        epochs=40, t0=1.70e9,
        config=dict(kl_weight=1e-4, latent_dim=512, ae=False, w_l1=1.0, w_perceptual=0.8, w_ssim=0.3,
                    w_edge=0.0, center_weight=3.0, epochs=40, train_npy="data/train.npy", val_npy="data/val.npy"),
        kl=(40.0, 170.0, 3.0, 8.0), recon=(0.30, 0.16, 4.0, 0.0), perceptual=(1.0, 0.82, 4.0, 0.0),
        psnr=(15.0, 21.0, 3.0, 0.8), ssim=(0.30, 0.52, 3.0, 0.0), sharpness=(0.2, 0.35, 3.0, 0.0),
    ),
    "run2": dict(
        epochs=200, t0=1.71e9,
        config=dict(kl_weight=1e-5, latent_dim=1024, ae=False, w_l1=1.0, w_perceptual=0.8, w_ssim=0.3,
                    w_edge=0.0, center_weight=3.0, epochs=200, train_npy="data/train.npy", val_npy="data/val.npy"),
        kl=(900.0, 1600.0, 4.0, 60.0), recon=(0.30, 0.111, 5.0, 0.0), perceptual=(1.0, 0.532, 5.0, 0.0),
        psnr=(16.0, 23.9, 5.0, 0.0), ssim=(0.35, 0.645, 5.0, 0.0), sharpness=(0.3, 0.55, 5.0, 0.0),
    ),
    "run3": dict(
        epochs=60, t0=1.72e9,
        config=dict(kl_weight=1e-7, latent_dim=1024, ae=False, w_l1=1.0, w_perceptual=1.2, w_ssim=0.5,
                    w_edge=0.1, center_weight=3.0, epochs=100, train_npy="data/train.npy", val_npy="data/val.npy"),
        kl=(600.0, 300.0, 6.0, 10.0), recon=(0.20, 0.04, 8.0, 0.0), perceptual=(0.8, 0.20, 8.0, 0.0),
        psnr=(20.0, 32.5, 8.0, 0.0), ssim=(0.5, 0.87, 8.0, 0.0), sharpness=(0.5, 0.92, 8.0, 0.0),
    ),
}


def write_seed_run(run_dir: Path, spec: dict, *, grey_colour: bool = True, kl_weights: list[float] | None = None,
                   curves: dict | None = None, grid_tag: str | None = None) -> Path:
    """One run with every tag our trainer writes (train per step, val per epoch) as a real event file.

    ``kl_weights`` (one per epoch) overrides the config's constant weight, as a supervised run logs it;
    ``curves`` overrides the computed per-epoch curves (same keys); ``grid_tag`` logs a picture under
    that tag at each epoch's last step, as the trainer logs ``val/recon_grid`` (:func:`grid_png`).
    """
    n = spec["epochs"]
    cfg = spec["config"]
    weights = {"recon": cfg["w_l1"], "perceptual": cfg["w_perceptual"], "ssim_loss": cfg["w_ssim"],
               "edge": cfg["w_edge"], "kl": cfg["kl_weight"]}
    kl_weights = kl_weights or [cfg["kl_weight"]] * n
    curves = dict(curves) if curves else {
        k: _curve(*spec[k][:2], n, rate=spec[k][2], wiggle=spec[k][3])
        for k in ("kl", "recon", "perceptual", "psnr", "ssim", "sharpness")}
    curves["ssim_loss"] = [1.0 - s for s in curves["ssim"]]
    curves["edge"] = [0.5 * r for r in curves["recon"]]
    series: dict[str, list] = {}

    def put(t: str, step: int, v: float) -> None:
        series.setdefault(t, []).append((step, v))

    for e in range(n):
        weights["kl"] = kl_weights[e]
        for k in range(STEPS_PER_EPOCH):
            step = e * STEPS_PER_EPOCH + k
            total = 0.0
            for term in LOSS_TERMS:
                raw = curves[term][e] * (1.02 if k == 0 else 1.0)
                put(tag("train", term), step, raw)
                put(tag("train", f"{term}_weighted"), step, weights[term] * raw)
                total += weights[term] * raw
            put(tag("train", "loss"), step, total)
            put(tag("train", "kl_weight"), step, kl_weights[e])
            put(tag("train", "lr"), step, 2e-4)
        step = (e + 1) * STEPS_PER_EPOCH - 1
        total = 0.0
        for term in LOSS_TERMS:
            put(tag("val", term), step, curves[term][e])
            put(tag("val", f"{term}_weighted"), step, weights[term] * curves[term][e])
            total += weights[term] * curves[term][e]
        put(tag("val", "loss"), step, total)
        put(tag("val", "psnr"), step, curves["psnr"][e])
        put(tag("val", "ssim"), step, curves["ssim"][e])
        put(tag("val", "sharpness"), step, curves["sharpness"][e])
        if grey_colour:
            put(tag("val", "psnr_grey"), step, curves["psnr"][e] - 1.5)
            put(tag("val", "psnr_colour"), step, curves["psnr"][e] + 0.8)
            put(tag("val", "ssim_grey"), step, curves["ssim"][e] - 0.04)
            put(tag("val", "ssim_colour"), step, curves["ssim"][e] + 0.02)
    images = [(grid_tag, (e + 1) * STEPS_PER_EPOCH - 1, grid_png(spec["t0"], e)) for e in range(n)] if grid_tag else []
    return tbwrite.write_run(run_dir, series, epochs=tbwrite.epoch_map(n, steps_per_epoch=STEPS_PER_EPOCH),
                             t0=spec["t0"], config=cfg, hparams_yaml=cfg, images=images)


def grid_png(t0: float, epoch: int) -> bytes:
    """The picture a run started at ``t0`` logs at ``epoch``: distinct bytes per run and epoch."""
    return tbwrite.png_bytes(8, 16, seed=int(t0) % 100_000 * 1000 + epoch)


def run_cli(*argv: str) -> int:
    """``vaediag`` in-process (the CLI boundary: exit code, messages on stderr), restoring sys.argv."""
    import sys

    from vaediag.cli import main

    saved = sys.argv[:]
    try:
        return main(list(argv))
    finally:
        sys.argv = saved


# Run directory names with every character that can break a markdown table or format a line.
SPECIAL_NAMES = ("a|b*c*", "x_[y](z)`q`<b>&amp;~~s~~$m$")


def write_supervised_run(run_dir: Path, *, epochs: int = 40, start_kl_weight: float = 1e-5,
                         grid_tag: str | None = None) -> Path:
    """A run under the watchdog: the real ladder policy decides after every epoch from the run's own val
    metrics, each decision goes to a real ``watchdog.jsonl`` (the watchdog's Journal), and a change shows
    in the logged kl_weight from the next epoch, as the training loop applies control.json."""
    from vaediag.watch.journal import Journal, decision_record
    from vaediag.watch.policies import LadderPolicy

    policy = LadderPolicy(kl_weight=start_kl_weight)
    # KL sits at ~1,550 under the first weight; once the weight drops it relaxes towards ~300.
    kl, recon, psnr, sharp = [], [], [], []
    kl_weights = []
    current = start_kl_weight
    changed_at = None
    seq = 0
    run_dir.mkdir(parents=True, exist_ok=True)
    with Journal(run_dir / "watchdog.jsonl") as journal:
        for e in range(epochs):
            kl_weights.append(current)
            if changed_at is None:
                kl.append(1500.0 + 40.0 * math.sin(e))
            else:
                kl.append(300.0 + 1200.0 * math.exp(-(e - changed_at) / 3.0))
            recon.append(0.04 + 0.2 * math.exp(-e / 6.0))
            psnr.append(32.0 - 12.0 * math.exp(-e / 6.0))
            sharp.append(0.9 - 0.5 * math.exp(-e / 6.0))
            d = policy.update(e, {"kl": kl[-1], "recon": recon[-1], "psnr": psnr[-1], "sharpness": sharp[-1]})
            if d.changes:
                seq += 1
                current = d.kl_weight
                changed_at = e + 1
            rec = decision_record(d, metrics={"kl": kl[-1], "psnr": psnr[-1]}, policy=policy, applied=d.changes,
                                  seq=seq if d.changes else None, via="control" if d.changes else None)
            journal.append(rec)
    spec = dict(epochs=epochs, t0=1.73e9, config=dict(SEED_RUNS["run3"]["config"], kl_weight=start_kl_weight,
                                                     epochs=epochs))
    curves = {"kl": kl, "recon": recon, "perceptual": [0.2 + 2 * r for r in recon], "psnr": psnr,
              "ssim": [0.87 - 0.4 * math.exp(-e / 6.0) for e in range(epochs)], "sharpness": sharp}
    return write_seed_run(run_dir, spec, kl_weights=kl_weights, curves=curves, grid_tag=grid_tag)
