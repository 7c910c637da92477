"""AntixK/PyTorch-VAE ``VanillaVAE`` run through ``VAEXperiment`` (and the same for BetaVAE-style weights).

Sources read (AntixK/PyTorch-VAE):
- models/vanilla_vae.py ``VanillaVAE.loss_function``: ``recons_loss = F.mse_loss(recons, input)``;
  ``kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1), dim=0)`` (summed over
  latent dims, mean over batch); ``loss = recons_loss + kld_weight * kld_loss``; returns
  ``{'loss', 'Reconstruction_Loss', 'KLD': -kld_loss}`` -> the logged KLD is NEGATIVE.
- experiment.py (commit 8bf7be5) ``training_step``: ``M_N = self.params['kld_weight']`` and
  ``self.log_dict({key: val.item() ...}, sync_dist=True)`` (training defaults: on_step only, every 50 steps);
  ``validation_step``: ``M_N = 1.0`` (!) and ``self.log_dict({f"val_{key}": ...})`` (epoch means). So val_loss
  = val_Reconstruction_Loss + 1.0 * KL, not the training objective. ``configure_optimizers``: Adam + ExponentialLR
  (``scheduler_gamma``).
- run.py: ``TensorBoardLogger(save_dir='logs/', name=model_params.name)`` -> ``logs/VanillaVAE/version_0``,
  ``LearningRateMonitor()`` -> ``lr-Adam`` at each epoch start (written by the callback: no ``epoch`` key),
  ``Samples/`` and ``Reconstructions/`` folders made beside the events; VAEXperiment never calls
  save_hyperparameters, so ``hparams.yaml`` is ``{}`` and ``hp_metric`` -1 sits at step 0.
- configs/vae.yaml: ``exp_params.kld_weight: 0.00025``, ``LR: 0.005``, ``scheduler_gamma: 0.95``.
The tag set matches tests/fixtures/realworld (carmesaure+constellationProject, YitongTseo+prot_2_face).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import EventLog, F32, LightningSim, Truth, decay, f32, kl_rise_settle, lightning_epoch_mean, noisy, \
    regress_factor, until, write_yaml


def write_antixk(root: Path, *, epochs: int = 6, steps_per_epoch: int = 200, seed: int = 0,
                 kld_weight: float = 0.00025, latent_dim: int = 128, LR: float = 0.005, scheduler_gamma: float = 0.95,
                 batch_size: int = 64, val_batches: int = 8, log_every_n_steps: int = 50, name: str = "VanillaVAE",
                 regress_after: int | None = None) -> Truth:
    rng = np.random.default_rng(seed)
    run_dir = Path(root) / "logs" / name / "version_0"
    N, E = steps_per_epoch, epochs
    w = F32(kld_weight)

    def batches(t, sigma, scale=1.0):
        r = f32(noisy(rng, decay(until(t, regress_after), 0.05, 0.011, 1.5) * regress_factor(t, regress_after) * scale, sigma))
        k = f32(noisy(rng, kl_rise_settle(t, 26.0, start_frac=0.3, overshoot=0.1), sigma))  # kld_loss >= 0
        return r, k

    rec, kld = batches((np.arange(E * N) + 1) / N, 0.05)
    loss = f32(rec + f32(w * kld))

    val = {}
    for e in range(E):
        r, k = batches(np.full(val_batches, e + 1.0), 0.02, 0.9)
        vloss = f32(r + f32(F32(1.0) * k))  # M_N = 1.0 in validation_step
        val[e] = {"val_loss": lightning_epoch_mean(vloss, batch_size),
                  "val_Reconstruction_Loss": lightning_epoch_mean(r, batch_size),
                  "val_KLD": lightning_epoch_mean(-k, batch_size)}

    log = EventLog()
    sim = LightningSim(log, N, log_every_n_steps)
    sim.fit(E, train_step=lambda g: {"loss": loss[g], "Reconstruction_Loss": rec[g], "KLD": -kld[g]},
            val_epoch=lambda e: val[e], epoch_start=lambda e: {"lr-Adam": LR * scheduler_gamma ** e})
    path = log.write(run_dir)
    (run_dir / "hparams.yaml").write_text("{}\n")
    for d in ("Samples", "Reconstructions", "checkpoints"):
        (run_dir / d).mkdir(exist_ok=True)
    write_yaml(Path(root) / "configs" / "vae.yaml", {
        "model_params": {"name": name, "in_channels": 3, "latent_dim": latent_dim},
        "data_params": {"data_path": "Data/", "train_batch_size": batch_size, "val_batch_size": batch_size,
                        "patch_size": 64, "num_workers": 4},
        "exp_params": {"LR": LR, "weight_decay": 0.0, "scheduler_gamma": scheduler_gamma, "kld_weight": kld_weight,
                       "manual_seed": 1265},
        "trainer_params": {"gpus": [1], "max_epochs": E},
        "logging_params": {"save_dir": "logs/", "name": name},
    })
    last = val[E - 1]
    return Truth(
        run_dir=run_dir, lineage="antixk", kl_weight=kld_weight, kl_convention="sum", latent_dim=latent_dim,
        epochs=E, steps_per_epoch=N,
        tags={"total": "loss", "kl": "KLD", "recon": "Reconstruction_Loss", "val_total": "val_loss",
              "val_kl": "val_KLD", "val_recon": "val_Reconstruction_Loss", "lr": "lr-Adam", "epoch": "epoch",
              "hp_metric": "hp_metric"},
        total_formula="loss = Reconstruction_Loss - kld_weight * KLD (KLD is logged as -KL); "
                      "val_loss = val_Reconstruction_Loss - 1.0 * val_KLD (validation uses M_N = 1.0)",
        final={"total": float(last["val_loss"]), "kl": float(-last["val_KLD"]),
               "recon": float(last["val_Reconstruction_Loss"])},
        event_files=(path,),
        notes={"kld_sign": -1, "val_kl_weight": 1.0, "config": str(Path(root) / "configs" / "vae.yaml"),
               "regress_after": regress_after},
    )
