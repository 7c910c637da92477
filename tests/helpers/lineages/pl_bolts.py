"""pl_bolts ``VAE`` (Lightning-Universe/lightning-bolts).

Source read: Lightning-Universe/lightning-bolts src/pl_bolts/models/autoencoders/basic_vae/basic_vae_module.py,
``VAE.step``, ``training_step``, ``validation_step``, ``__init__`` (``self.save_hyperparameters()``), ``cli_main``.

- ``recon_loss = F.mse_loss(x_hat, x, reduction="mean")`` (mean over batch AND pixels)
- ``kl = kl_divergence(q, p).mean(); kl *= self.kl_coeff`` -> the logged KL is already weighted and is a mean
  over batch AND latent dims (kl_convention "weighted", underlying KL "mean_per_dim")
- ``loss = kl + recon_loss``
- ``training_step``: ``self.log_dict({f"train_{k}": v}, on_step=True, on_epoch=False)`` -> tags
  ``train_recon_loss``, ``train_kl``, ``train_loss`` (no _step suffix: not forked), every log_every_n_steps (50).
- ``validation_step``: ``self.log_dict({f"val_{k}": v})`` with Lightning's defaults in validation
  (on_step=False, on_epoch=True) -> ``val_recon_loss``, ``val_kl``, ``val_loss`` once per epoch, the
  batch-size-weighted mean over validation batches.
- default logger (``Trainer.from_argparse_args``): TensorBoardLogger -> ``lightning_logs/version_0`` with
  ``hparams.yaml`` (all init args, kwargs flattened in) and ``hp_metric`` = -1 at step 0; ``epoch`` with every
  connector write. Step/epoch placement: see ``_common.LightningSim``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import EventLog, F32, LightningSim, Truth, decay, f32, kl_rise_settle, lightning_epoch_mean, noisy, \
    regress_factor, until, write_yaml


def write_pl_bolts(root: Path, *, epochs: int = 10, steps_per_epoch: int = 100, seed: int = 0,
                   kl_coeff: float = 0.1, latent_dim: int = 256, enc_out_dim: int = 512, input_height: int = 32,
                   lr: float = 1e-4, batch_size: int = 256, val_batches: int = 8, log_every_n_steps: int = 50,
                   regress_after: int | None = None) -> Truth:
    rng = np.random.default_rng(seed)
    run_dir = Path(root) / "lightning_logs" / "version_0"
    N, E = steps_per_epoch, epochs
    kc = F32(kl_coeff)

    def recon_at(t, sigma):
        return noisy(rng, decay(until(t, regress_after), 0.060, 0.012, 2.0) * regress_factor(t, regress_after), sigma)

    def klpd_at(t, sigma):  # KL per latent dim, mean over batch and dims
        return noisy(rng, kl_rise_settle(t, 0.08), sigma)

    t_train = (np.arange(E * N) + 1) / N
    recon = f32(recon_at(t_train, 0.04))
    kl = f32(f32(klpd_at(t_train, 0.04)) * kc)          # kl *= self.kl_coeff (float32)
    loss = f32(kl + recon)                                # loss = kl + recon_loss

    val = {}
    for e in range(E):
        tv = np.full(val_batches, e + 1.0)
        r = f32(recon_at(tv, 0.02)) * F32(0.9)
        k = f32(f32(klpd_at(tv, 0.02)) * kc)
        lo = f32(k + r)
        val[e] = {"val_recon_loss": lightning_epoch_mean(r, batch_size),
                  "val_kl": lightning_epoch_mean(k, batch_size),
                  "val_loss": lightning_epoch_mean(lo, batch_size)}

    log = EventLog()
    sim = LightningSim(log, N, log_every_n_steps)
    sim.fit(E, train_step=lambda g: {"train_recon_loss": recon[g], "train_kl": kl[g], "train_loss": loss[g]},
            val_epoch=lambda e: val[e])
    path = log.write(run_dir)
    write_yaml(run_dir / "hparams.yaml", {
        "input_height": input_height, "enc_type": "resnet18", "first_conv": False, "maxpool1": False,
        "enc_out_dim": enc_out_dim, "kl_coeff": kl_coeff, "latent_dim": latent_dim, "lr": lr,
        "dataset": "cifar10", "batch_size": batch_size, "num_workers": 8, "data_dir": ".",
        "max_epochs": E, "log_every_n_steps": log_every_n_steps,
    })
    last = val[E - 1]
    return Truth(
        run_dir=run_dir, lineage="pl_bolts", kl_weight=kl_coeff, kl_convention="weighted", latent_dim=latent_dim,
        epochs=E, steps_per_epoch=N,
        tags={"total": "train_loss", "kl": "train_kl", "recon": "train_recon_loss", "val_total": "val_loss",
              "val_kl": "val_kl", "val_recon": "val_recon_loss", "epoch": "epoch", "hp_metric": "hp_metric"},
        total_formula="train_loss = train_recon_loss + train_kl, where train_kl = kl_coeff * KL.mean() over batch "
                      "and latent dims (same for val_*)",
        final={"total": float(last["val_loss"]), "kl": float(last["val_kl"]), "recon": float(last["val_recon_loss"])},
        event_files=(path,),
        notes={"underlying_kl": "mean_per_dim", "val_rows_step": [(e + 1) * N - 1 for e in range(E)],
               "regress_after": regress_after, "log_every_n_steps": log_every_n_steps},
    )
