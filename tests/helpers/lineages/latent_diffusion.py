"""CompVis latent-diffusion ``AutoencoderKL`` trained with ``LPIPSWithDiscriminator``.

Sources read:
- CompVis/latent-diffusion ldm/models/autoencoder.py ``AutoencoderKL.training_step``: optimizer 0:
  ``self.log("aeloss", aeloss, prog_bar=True, logger=True, on_step=True, on_epoch=True)`` (forked by Lightning
  into ``aeloss_step`` / ``aeloss_epoch``; there is no plain ``aeloss`` tag) and
  ``self.log_dict(log_dict_ae, ..., on_step=True, on_epoch=False)``; optimizer 1: ``discloss`` (same flags ->
  ``discloss_step``/``discloss_epoch``) and ``log_dict_disc``. ``validation_step`` runs the loss with both
  optimizer indices under ``split="val"`` and logs ``self.log("val/rec_loss", ...)`` plus ``log_dict(log_dict_ae)``
  (which holds val/rec_loss again, same key: averaged twice) and ``log_dict(log_dict_disc)``, all with the
  validation defaults (epoch means). No ``val/aeloss``.
- ldm/modules/losses/contperceptual.py ``LPIPSWithDiscriminator.forward`` (the CompVis/latent-diffusion copy is not
  in the search index; read the identical CompVis/stable-diffusion copy): ``rec_loss = |x - xrec| +
  perceptual_weight * LPIPS``; ``nll_loss = rec_loss / exp(logvar) + logvar``, ``sum / batch``;
  ``kl_loss = sum(posteriors.kl()) / batch`` (KL summed over C,H,W of the latent); ``g_loss = -mean(logits_fake)``;
  ``d_weight`` = adaptive weight * disc_weight, computed whenever ``self.disc_factor > 0`` even before disc_start,
  and 0 in validation (the autograd call raises there); ``disc_factor = adopt_weight(disc_factor, global_step,
  threshold=disc_start)`` = 0 before disc_start; ``loss = weighted_nll + kl_weight * kl_loss + d_weight *
  disc_factor * g_loss``; logged ``rec_loss`` is the MEAN over pixels, ``nll_loss`` the per-sample SUM ->
  nll_loss = P * (rec_loss / exp(logvar) + logvar) with P = C*H*W of the image. ``d_loss = disc_factor * hinge``.
- main.py: default logger ``TestTubeLogger(name="testtube", save_dir=logdir)`` -> events in
  ``<logdir>/testtube/version_0/tf/`` (test_tube ``get_tensorboardx_path``) and ``meta_tags.csv``; configs saved as
  ``<logdir>/configs/<now>-project.yaml`` and ``<now>-lightning.yaml``; ``LearningRateMonitor(logging_interval=
  "step")`` -> ``lr-Adam`` and ``lr-Adam-1`` (two Adam optimizers); ``scale_lr`` -> lr = accumulate * ngpu * bs *
  base_learning_rate. Lightning 1.4-era: step = global step counting batches (one per batch for both optimizers),
  ``epoch`` with each connector write, train metrics every log_every_n_steps (50).
- configs/autoencoder/autoencoder_kl_64x64x3.yaml (in the index) gives kl_weight 1e-6, disc_weight 0.5,
  base_learning_rate 4.5e-6; this generator writes the kl-f8 variant (embed_dim 4, ch_mult [1,2,4,4]) whose latent is
  4 x H/8 x W/8, with accumulate_grad_batches 1 (the repo config uses 2; not simulated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import EventLog, F32, LightningSim, Truth, decay, f32, kl_rise_settle, lightning_epoch_mean, noisy, \
    write_yaml


def write_latent_diffusion(root: Path, *, epochs: int = 4, steps_per_epoch: int = 150, seed: int = 0,
                           kl_weight: float = 1e-6, resolution: int = 256, embed_dim: int = 4,
                           disc_start: int | None = None, disc_weight: float = 0.5, perceptual_weight: float = 1.0,
                           batch_size: int = 4, val_batches: int = 5, log_every_n_steps: int = 50,
                           base_learning_rate: float = 4.5e-6, now: str = "2023-03-01T12-00-00") -> Truth:
    rng = np.random.default_rng(seed)
    N, E = steps_per_epoch, epochs
    if disc_start is None:
        disc_start = (E * N) // 2 + 7
    logdir = Path(root) / f"{now}_autoencoder_kl_32x32x4"
    run_dir = logdir / "testtube" / "version_0" / "tf"
    P = 3 * resolution * resolution
    latent_dim = embed_dim * (resolution // 8) ** 2
    w = F32(kl_weight)
    lr = 1 * 1 * batch_size * base_learning_rate

    def losses(g, t, sigma, train=True):
        """Per-batch logged values at global step(s) g (array), fractional epoch t."""
        g = np.asarray(g)
        lv = f32(-0.05 * (1 - np.exp(-t / 2.0)))                                  # learned scalar logvar
        rec = f32(noisy(rng, decay(t, 0.42, 0.13, 1.2), sigma))                   # mean(|x-xrec| + pw*LPIPS)
        nll = f32(F32(P) * f32(f32(rec / f32(np.exp(lv))) + lv))                 # sum(...)/B
        kl = f32(noisy(rng, kl_rise_settle(t, 1.6 * latent_dim, start_frac=0.1), sigma))
        df = f32(np.where(g >= disc_start, 1.0, 0.0))
        lr_ = f32(np.where(df > 0, 0.4, 0.0) + rng.normal(0, 0.05, g.shape))     # logits_real
        lf_ = f32(np.where(df > 0, -0.3, 0.0) + rng.normal(0, 0.05, g.shape))    # logits_fake
        gl = f32(-lf_ + rng.normal(0, 0.01, g.shape))                             # g_loss = -mean(logits_fake)
        dw = f32(noisy(rng, np.full(g.shape, 0.8), 0.3) * disc_weight) if train else f32(np.zeros(g.shape))
        total = f32(f32(nll + f32(w * kl)) + f32(f32(dw * df) * gl))
        hinge = f32(0.5 * (np.maximum(0, 1 - lr_) + np.maximum(0, 1 + lf_)))
        dl = f32(df * hinge)
        return {"total_loss": total, "logvar": lv, "kl_loss": kl, "nll_loss": nll, "rec_loss": rec,
                "d_weight": dw, "disc_factor": df, "g_loss": gl, "disc_loss": dl, "logits_real": lr_,
                "logits_fake": lf_}

    n = E * N
    tr = losses(np.arange(n), (np.arange(n) + 1) / N, 0.04)
    ae_keys = ("total_loss", "logvar", "kl_loss", "nll_loss", "rec_loss", "d_weight", "disc_factor", "g_loss")
    disc_keys = ("disc_loss", "logits_real", "logits_fake")

    def train_step(g):
        m = {"aeloss_step": tr["total_loss"][g]}
        m.update({f"train/{k}": tr[k][g] for k in ae_keys})
        m["discloss_step"] = tr["disc_loss"][g]
        m.update({f"train/{k}": tr[k][g] for k in disc_keys})
        return m

    def train_epoch(e):
        s = slice(e * N, (e + 1) * N)
        return {"aeloss_epoch": lightning_epoch_mean(tr["total_loss"][s], batch_size),
                "discloss_epoch": lightning_epoch_mean(tr["disc_loss"][s], batch_size)}

    val = {}
    for e in range(E):
        gv = np.full(val_batches, (e + 1) * N - 1)
        v = losses(gv, np.full(val_batches, e + 1.0), 0.02, train=False)
        m = {"val/rec_loss": lightning_epoch_mean(np.repeat(v["rec_loss"], 2), batch_size)}
        m.update({f"val/{k}": lightning_epoch_mean(v[k], batch_size) for k in ae_keys if k != "rec_loss"})
        m.update({f"val/{k}": lightning_epoch_mean(v[k], batch_size) for k in disc_keys})
        val[e] = m

    log = EventLog()
    sim = LightningSim(log, N, log_every_n_steps, hp_metric=False)
    sim.fit(E, train_step=train_step, train_epoch=train_epoch, val_epoch=lambda e: val[e],
            batch_start=lambda g: {"lr-Adam": lr, "lr-Adam-1": lr})
    path = log.write(run_dir)
    (run_dir.parent / "meta_tags.csv").write_text("key,value\n")
    cfg = {"model": {"base_learning_rate": base_learning_rate, "target": "ldm.models.autoencoder.AutoencoderKL",
                     "params": {"monitor": "val/rec_loss", "embed_dim": embed_dim,
                                "lossconfig": {"target": "ldm.modules.losses.LPIPSWithDiscriminator",
                                               "params": {"disc_start": disc_start, "kl_weight": kl_weight,
                                                          "disc_weight": disc_weight,
                                                          "perceptual_weight": perceptual_weight}},
                                "ddconfig": {"double_z": True, "z_channels": embed_dim, "resolution": resolution,
                                             "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
                                             "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}}},
           "data": {"target": "main.DataModuleFromConfig",
                    "params": {"batch_size": batch_size, "wrap": True, "num_workers": 4}}}
    write_yaml(logdir / "configs" / f"{now}-project.yaml", cfg)
    write_yaml(logdir / "configs" / f"{now}-lightning.yaml",
               {"lightning": {"callbacks": {"image_logger": {"target": "main.ImageLogger",
                                                             "params": {"batch_frequency": 1000, "max_images": 8,
                                                                        "increase_log_steps": True}}},
                              "trainer": {"benchmark": True, "accumulate_grad_batches": 1, "gpus": "0,",
                                          "max_epochs": E}}})
    last = val[E - 1]
    return Truth(
        run_dir=run_dir, lineage="latent_diffusion", kl_weight=kl_weight, kl_convention="sum", latent_dim=latent_dim,
        epochs=E, steps_per_epoch=N,
        tags={"total": "train/total_loss", "kl": "train/kl_loss", "recon": "train/rec_loss", "nll": "train/nll_loss",
              "logvar": "train/logvar", "d_weight": "train/d_weight", "disc_factor": "train/disc_factor",
              "g_loss": "train/g_loss", "disc_loss": "train/disc_loss", "aeloss": "aeloss_step",
              "aeloss_epoch": "aeloss_epoch", "discloss": "discloss_step", "discloss_epoch": "discloss_epoch",
              "val_total": "val/total_loss", "val_kl": "val/kl_loss", "val_recon": "val/rec_loss",
              "val_nll": "val/nll_loss", "lr": "lr-Adam", "epoch": "epoch"},
        total_formula="train/total_loss = train/nll_loss + kl_weight * train/kl_loss + train/d_weight * "
                      "train/disc_factor * train/g_loss; train/nll_loss = P * (train/rec_loss / exp(train/logvar) "
                      "+ train/logvar), P = 3*H*W; val: d_weight = 0",
        final={"total": float(last["val/total_loss"]), "kl": float(last["val/kl_loss"]),
               "recon": float(last["val/rec_loss"]), "nll": float(last["val/nll_loss"])},
        event_files=(path,),
        notes={"pixels_per_sample": P, "disc_start": disc_start, "logdir": str(logdir),
               "config": str(logdir / "configs" / f"{now}-project.yaml"), "kl_weight_key": "model.params.lossconfig.params.kl_weight"},
    )
