"""A VAE trained with ``transformers.Trainer`` and its TensorBoard callback, with the KL and reconstruction terms
added to the logs by a Trainer subclass (the pattern TRL trainers use: average ``self._metrics[mode]`` and merge
them into ``logs`` in an overridden ``log`` before calling ``super().log``).

Sources read (huggingface/transformers):
- src/transformers/integrations/integration_utils.py ``rewrite_logs``: ``eval_*`` -> ``eval/*``, ``test_*`` ->
  ``test/*``, everything else -> ``train/*``; ``TensorBoardCallback.on_log``: ``add_scalar(k, v,
  state.global_step)`` for ints/floats; ``on_train_begin``: ``add_text("args", args.to_json_string())``.
- src/transformers/trainer.py ``log``: ``logs["epoch"] = self.state.epoch`` (versions up to ~4.40 wrote
  ``round(self.state.epoch, 2)``; knob ``epoch_round``) -> ``train/epoch`` is written with EVERY log call,
  eval logs included; the inner loop sets ``self.state.epoch = epoch + (step + 1) / steps_in_epoch``, so the
  last step of epoch e reads e+1.0 exactly and a 12-epoch run ends at train/epoch == 12.0 (floor+1 gives 13).
  ``_maybe_log_save_evaluate``: ``logs["loss"] = round(tr_loss_scalar / (global_step - _globalstep_last_logged),
  4)`` (the train loss is ROUNDED to 4 decimals, a window mean), ``grad_norm``, ``learning_rate``.
  ``evaluate``: ``eval_loss`` (mean of per-batch losses) + ``eval_runtime``, ``eval_samples_per_second``,
  ``eval_steps_per_second``. End of ``train``: ``train_runtime``, ``train_samples_per_second``,
  ``train_steps_per_second``, ``total_flos``, ``train_loss`` (run mean, unrounded) -> ``train/train_*`` tags.
- Default ``logging_dir``: ``<output_dir>/runs/<datetime>_<hostname>``.
Objective: loss = recon + beta * kl (kl summed over latent dims, mean over batch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._common import EventLog, F32, Truth, decay, f32, kl_rise_settle, noisy, regress_factor, until


def write_hf_trainer(root: Path, *, epochs: int = 12, steps_per_epoch: int = 37, seed: int = 0, beta: float = 0.5,
                     latent_dim: int = 32, logging_steps: int = 10, learning_rate: float = 5e-5,
                     per_device_eval_batch_size: int = 64, eval_batches: int = 6, epoch_round: int | None = None,
                     regress_after: int | None = None) -> Truth:
    rng = np.random.default_rng(seed)
    run_dir = Path(root) / "vae-out" / "runs" / "Mar01_12-00-00_host"
    N, E = steps_per_epoch, epochs
    total_steps = N * E
    b = F32(beta)

    def batches(t, sigma, scale=1.0):
        r = f32(noisy(rng, decay(until(t, regress_after), 0.9, 0.21, 2.0) * regress_factor(t, regress_after) * scale, sigma))
        k = f32(noisy(rng, kl_rise_settle(t, 3.2), sigma))
        return r, k, f32(r + f32(b * k))

    t = (np.arange(total_steps) + 1) / N
    rec, kl, loss = batches(t, 0.05)
    gn = noisy(rng, decay(t, 8.0, 1.5, 1.0), 0.2)

    def epoch_value(gstep):  # state.epoch after global step gstep (1-based), as Trainer.log writes it
        e, s = divmod(gstep - 1, N)
        v = e + (s + 1) / N
        return round(v, epoch_round) if epoch_round is not None else v

    log = EventLog()
    args = {"output_dir": "vae-out", "num_train_epochs": E, "logging_steps": logging_steps,
            "eval_strategy": "epoch", "learning_rate": learning_rate, "report_to": ["tensorboard"],
            "per_device_eval_batch_size": per_device_eval_batch_size, "logging_dir": "vae-out/runs/Mar01_12-00-00_host"}
    log.text("args", 0, json.dumps(args, indent=2))
    rows, evals = [], []
    last_logged = 0
    tr_loss = F32(0.0)
    window_kl, window_rec = [], []
    for g in range(1, total_steps + 1):
        tr_loss = F32(tr_loss + loss[g - 1])
        window_kl.append(float(kl[g - 1]))
        window_rec.append(float(rec[g - 1]))
        if g % logging_steps == 0:
            lr = learning_rate * (1 - g / total_steps)        # linear schedule
            logs = {"loss": round(float(tr_loss) / (g - last_logged), 4), "grad_norm": float(gn[g - 1]),
                    "learning_rate": lr}
            logs.update({"kl": sum(window_kl) / len(window_kl), "recon": sum(window_rec) / len(window_rec)})
            logs["epoch"] = epoch_value(g)
            log.scalars({"train/" + k: v for k, v in logs.items()}, g)
            rows.append((g, logs))
            tr_loss, last_logged = F32(0.0), g
            window_kl, window_rec = [], []
        if g % N == 0:  # eval_strategy="epoch"
            r, k, lo = batches(np.full(eval_batches, g / N), 0.02, 0.95)
            m = {"eval_loss": float(np.repeat(lo, per_device_eval_batch_size).mean()),
                 "eval_runtime": 1.9, "eval_samples_per_second": 201.3, "eval_steps_per_second": 3.15,
                 "eval_kl": sum(map(float, k)) / len(k), "eval_recon": sum(map(float, r)) / len(r)}
            m["epoch"] = epoch_value(g)
            log.scalars({("eval/" + k[5:] if k.startswith("eval_") else "train/" + k): v for k, v in m.items()}, g)
            evals.append((g, m))
    train_loss = float(np.sum(loss.astype(np.float64))) / total_steps
    end = {"train_runtime": 812.4, "train_samples_per_second": 93.1, "train_steps_per_second": 1.46,
           "total_flos": 0.0, "train_loss": train_loss, "epoch": epoch_value(total_steps)}
    log.scalars({"train/" + k: v for k, v in end.items()}, total_steps)
    path = log.write(run_dir)
    last = evals[-1][1]
    return Truth(
        run_dir=run_dir, lineage="hf_trainer", kl_weight=beta, kl_convention="sum", latent_dim=latent_dim,
        epochs=E, steps_per_epoch=N,
        tags={"total": "train/loss", "kl": "train/kl", "recon": "train/recon", "val_total": "eval/loss",
              "val_kl": "eval/kl", "val_recon": "eval/recon", "epoch": "train/epoch", "lr": "train/learning_rate",
              "grad_norm": "train/grad_norm", "train_loss_run_mean": "train/train_loss"},
        total_formula="train/loss = round(train/recon + beta * train/kl, 4) (window means); "
                      "eval/loss = eval/recon + beta * eval/kl",
        final={"total": float(F32(last["eval_loss"])), "kl": float(F32(last["eval_kl"])),
               "recon": float(F32(last["eval_recon"]))},
        identity_atol=5e-5,
        event_files=(path,),
        notes={"global_steps": total_steps, "epoch_round": epoch_round, "logging_steps": logging_steps,
               "eval_steps": [g for g, _ in evals], "final_epoch_value": epoch_value(total_steps),
               "extra_epoch_rows": "train/epoch is also written with every eval log and the end-of-train summary",
               "identity_atol_applies_to": "train/loss only (rounded to 4 decimals)",
               "regress_after": regress_after},
    )
