"""AntixK/PyTorch-VAE ``VQVAE`` through the same ``VAEXperiment`` (no KL term at all).

Sources read (AntixK/PyTorch-VAE): models/vq_vae.py ``VectorQuantizer.forward``:
``commitment_loss = F.mse_loss(quantized.detach(), latents)``, ``embedding_loss = F.mse_loss(quantized,
latents.detach())`` (numerically equal in the forward pass), ``vq_loss = commitment_loss * self.beta +
embedding_loss``; ``VQVAE.loss_function``: ``loss = recons_loss + vq_loss`` -> ``{'loss', 'Reconstruction_Loss',
'VQ_Loss'}``. experiment.py: train on_step every 50 steps, ``val_*`` epoch means. configs/vq_vae.yaml:
``beta: 0.25``, ``embedding_dim: 64``, ``num_embeddings: 512``, ``LR: 0.005`` and ``scheduler_gamma: 0.0``,
which ``configure_optimizers`` turns into ``ExponentialLR(gamma=0.0)``: ``lr-Adam`` is 0 from the second epoch on
and the model stops learning (curves go flat after epoch 0). Knob ``scheduler_gamma`` changes that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import EventLog, F32, LightningSim, Truth, decay, f32, lightning_epoch_mean, noisy, regress_factor, \
    until, write_yaml


def write_vqvae(root: Path, *, epochs: int = 6, steps_per_epoch: int = 200, seed: int = 0, beta: float = 0.25,
                embedding_dim: int = 64, num_embeddings: int = 512, latent_hw: int = 4, LR: float = 0.005,
                scheduler_gamma: float = 0.0, batch_size: int = 64, val_batches: int = 8,
                log_every_n_steps: int = 50, regress_after: int | None = None) -> Truth:
    rng = np.random.default_rng(seed)
    run_dir = Path(root) / "logs" / "VQVAE" / "version_0"
    N, E = steps_per_epoch, epochs
    bt = F32(beta)

    def progress(t):  # learning stops once the learning rate is 0 (gamma 0: after the first epoch)
        t = np.asarray(t, dtype=np.float64)
        return np.minimum(t, 1.0) if scheduler_gamma == 0.0 else t

    def batches(t, sigma, scale=1.0):
        p = progress(t)
        r = f32(noisy(rng, decay(until(p, regress_after), 0.08, 0.015, 1.2) * regress_factor(t, regress_after) * scale, sigma))
        mse = f32(noisy(rng, 0.02 + 0.3 * np.exp(-p / 0.4) * (1 - np.exp(-p / 0.05)), sigma))
        vq = f32(f32(mse * bt) + mse)  # commitment * beta + embedding (equal values in forward)
        return r, vq

    rec, vq = batches((np.arange(E * N) + 1) / N, 0.04)
    loss = f32(rec + vq)
    val = {}
    for e in range(E):
        r, v = batches(np.full(val_batches, e + 1.0), 0.02, 0.95)
        val[e] = {"val_loss": lightning_epoch_mean(f32(r + v), batch_size),
                  "val_Reconstruction_Loss": lightning_epoch_mean(r, batch_size),
                  "val_VQ_Loss": lightning_epoch_mean(v, batch_size)}

    log = EventLog()
    sim = LightningSim(log, N, log_every_n_steps)
    sim.fit(E, train_step=lambda g: {"loss": loss[g], "Reconstruction_Loss": rec[g], "VQ_Loss": vq[g]},
            val_epoch=lambda e: val[e], epoch_start=lambda e: {"lr-Adam": LR * scheduler_gamma ** e})
    path = log.write(run_dir)
    (run_dir / "hparams.yaml").write_text("{}\n")
    for d in ("Samples", "Reconstructions", "checkpoints"):
        (run_dir / d).mkdir(exist_ok=True)
    write_yaml(Path(root) / "configs" / "vq_vae.yaml", {
        "model_params": {"name": "VQVAE", "in_channels": 3, "embedding_dim": embedding_dim,
                         "num_embeddings": num_embeddings, "img_size": 64, "beta": beta},
        "data_params": {"data_path": "Data/", "train_batch_size": batch_size, "val_batch_size": batch_size,
                        "patch_size": 64, "num_workers": 4},
        "exp_params": {"LR": LR, "weight_decay": 0.0, "scheduler_gamma": scheduler_gamma, "kld_weight": 0.00025,
                       "manual_seed": 1265},
        "trainer_params": {"gpus": [1], "max_epochs": E},
        "logging_params": {"save_dir": "logs/", "name": "VQVAE"},
    })
    last = val[E - 1]
    return Truth(
        run_dir=run_dir, lineage="vqvae", kl_weight=None, kl_convention=None,
        latent_dim=embedding_dim * latent_hw * latent_hw, epochs=E, steps_per_epoch=N,
        tags={"total": "loss", "recon": "Reconstruction_Loss", "vq": "VQ_Loss", "val_total": "val_loss",
              "val_recon": "val_Reconstruction_Loss", "val_vq": "val_VQ_Loss", "lr": "lr-Adam", "epoch": "epoch",
              "hp_metric": "hp_metric"},
        total_formula="loss = Reconstruction_Loss + VQ_Loss, VQ_Loss = (1 + beta) * mse(quantized, latents); "
                      "same for val_*; no KL",
        final={"total": float(last["val_loss"]), "recon": float(last["val_Reconstruction_Loss"]),
               "vq": float(last["val_VQ_Loss"])},
        event_files=(path,),
        notes={"beta": beta, "config_kld_weight_unused": 0.00025, "lr_zero_after_epoch0": scheduler_gamma == 0.0},
    )
