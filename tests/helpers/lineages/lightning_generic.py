"""A generic PyTorch Lightning VAE, as users write it, logged by Lightning's TensorBoardLogger (or its CSVLogger).

Sources read (Lightning-AI/pytorch-lightning, src/lightning/pytorch/):
- trainer/connectors/logger_connector/result.py ``_Metadata.forked_name``: a metric logged with
  ``on_step=True, on_epoch=True`` is "forked" and written as ``f"{name}_step"`` per step and ``f"{name}_epoch"``
  per epoch; otherwise under its bare name. Defaults: training_step on_step=True/on_epoch=False, validation
  and test on_step=False/on_epoch=True. Epoch values are ``_ResultMetric`` batch-size-weighted float32 means.
- trainer/connectors/logger_connector/logger_connector.py ``log_metrics``: adds ``epoch = current_epoch`` and
  uses ``step = _batches_that_stepped`` (see _common.LightningSim for the loops it relies on).
- trainer/trainer.py ``_run`` -> ``_log_hyperparams`` for every stage: ``hp_metric`` -1 at step 0 is written again
  by ``trainer.validate()`` and ``trainer.test()``.
- After ``fit``, ``current_epoch`` is ``fit_loop.epoch_progress.current.completed == max_epochs`` and
  ``_batches_that_stepped == max_epochs * N``: a post-fit validate/test writes its rows at step max_epochs*N with
  ``epoch = max_epochs`` (one more than the last training epoch index, max_epochs-1). Users who set
  ``trainer.fit_loop.epoch_progress.current.completed = k`` before ``validate`` (seen in public code) rely on it.

The module: ``training_step`` logs ``self.log("train/loss"|"train/kl"|"train/recon", ..., on_step=True,
on_epoch=True)``; ``validation_step`` logs ``self.log("kl"|"recon"|"loss", ...)`` WITHOUT a prefix
(``unprefixed_val=True``; False -> ``val/kl`` etc.); ``test_step`` logs ``f"{test_prefix}kl"`` etc.
Objective: ``loss = recon + beta * kl`` with recon = BCE summed over pixels / batch and kl summed over latent dims,
mean over batch (convention "sum").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import EventLog, F32, LightningSim, Truth, decay, f32, kl_rise_settle, lightning_epoch_mean, noisy, \
    regress_factor, until, write_yaml


def write_lightning(root: Path, *, epochs: int = 8, steps_per_epoch: int = 60, seed: int = 0, beta: float = 1.0,
                    latent_dim: int = 16, batch_size: int = 128, val_batches: int = 5, log_every_n_steps: int = 10,
                    unprefixed_val: bool = True, post_fit_validate: bool = True, post_fit_test: bool = True,
                    test_prefix: str = "test_", regress_after: int | None = None, logger: str = "tensorboard") -> Truth:
    """``logger``: ``"tensorboard"`` (TensorBoardLogger: the event file) or ``"csv"`` (CSVLogger: metrics.csv with
    the same log_metrics calls, lightning_csv.py); hparams.yaml either way."""
    rng = np.random.default_rng(seed)
    run_dir = Path(root) / "lightning_logs" / "version_0"
    N, E = steps_per_epoch, epochs
    b = F32(beta)

    def batches(t, sigma, scale=1.0):
        r = f32(noisy(rng, decay(until(t, regress_after), 210.0, 78.0, 1.5) * regress_factor(t, regress_after) * scale, sigma))
        k = f32(noisy(rng, kl_rise_settle(t, 26.0), sigma))
        return r, k, f32(r + f32(b * k))

    rec, kl, loss = batches((np.arange(E * N) + 1) / N, 0.03)
    vnames = ("kl", "recon", "loss") if unprefixed_val else ("val/kl", "val/recon", "val/loss")

    def eval_metrics(t, names):
        r, k, lo = batches(np.full(val_batches, t), 0.015, 0.97)
        return {names[0]: lightning_epoch_mean(k, batch_size), names[1]: lightning_epoch_mean(r, batch_size),
                names[2]: lightning_epoch_mean(lo, batch_size)}

    val = {e: eval_metrics(e + 1.0, vnames) for e in range(E)}

    def train_epoch(e):
        s = slice(e * N, (e + 1) * N)
        return {"train/loss_epoch": lightning_epoch_mean(loss[s], batch_size),
                "train/kl_epoch": lightning_epoch_mean(kl[s], batch_size),
                "train/recon_epoch": lightning_epoch_mean(rec[s], batch_size)}

    log = EventLog()
    sim = LightningSim(log, N, log_every_n_steps)
    sim.fit(E, train_step=lambda g: {"train/loss_step": loss[g], "train/kl_step": kl[g], "train/recon_step": rec[g]},
            train_epoch=train_epoch, val_epoch=lambda e: val[e])
    post = []
    if post_fit_validate:
        m = eval_metrics(float(E), vnames)
        step, ep = sim.evaluate(m)
        post.append({"kind": "validate", "step": step, "epoch": ep, "metrics": {k: float(v) for k, v in m.items()}})
    if post_fit_test:
        tn = tuple(f"{test_prefix}{n}" for n in ("kl", "recon", "loss"))
        m = eval_metrics(float(E), tn)
        step, ep = sim.evaluate(m)
        post.append({"kind": "test", "step": step, "epoch": ep, "metrics": {k: float(v) for k, v in m.items()}})
    if logger == "csv":
        from .lightning_csv import write_csv_logger

        path = write_csv_logger(run_dir, sim.calls)
        event_files: tuple = ()
    else:
        path = log.write(run_dir)
        event_files = (path,)
    write_yaml(run_dir / "hparams.yaml", {"latent_dim": latent_dim, "beta": beta, "lr": 1e-3,
                                          "batch_size": batch_size})
    last = val[E - 1]
    return Truth(
        run_dir=run_dir, lineage="lightning", kl_weight=beta, kl_convention="sum", latent_dim=latent_dim,
        epochs=E, steps_per_epoch=N,
        tags={"total": "train/loss_step", "kl": "train/kl_step", "recon": "train/recon_step",
              "total_epoch": "train/loss_epoch", "kl_epoch": "train/kl_epoch", "recon_epoch": "train/recon_epoch",
              "val_total": vnames[2], "val_kl": vnames[0], "val_recon": vnames[1], "epoch": "epoch",
              "hp_metric": "hp_metric"},
        total_formula=f"train/loss_step = train/recon_step + beta * train/kl_step (likewise _epoch and "
                      f"{vnames[2]} = {vnames[1]} + beta * {vnames[0]}); kl summed over latent dims, mean over batch",
        final={"total": float(last[vnames[2]]), "kl": float(last[vnames[0]]), "recon": float(last[vnames[1]])},
        event_files=event_files,
        notes={"log_file": path, "logger": logger, "post_fit_rows": post, "val_rows_step": [(e + 1) * N - 1 for e in range(E)],
               "unprefixed_val": unprefixed_val, "log_every_n_steps": log_every_n_steps,
               "regress_after": regress_after},
    )
