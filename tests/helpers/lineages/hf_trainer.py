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
- ``trainer_state=True`` (HF's own record of the same logs; ``tensorboard=False`` leaves the event file out):
  src/transformers/trainer.py ``log``: ``output = {**logs, "step": self.state.global_step};
  self.state.log_history.append(output)`` (the same dict the callbacks get, before ``rewrite_logs``);
  ``_save_checkpoint``: ``self.state.save_to_json(<output_dir>/checkpoint-<global_step>/trainer_state.json)``
  after the evaluation of a save step (``save_strategy="epoch"`` here, ``save_total_limit`` keeps the last
  ones); ``save_state()`` (called by the example scripts after ``train()``): ``<output_dir>/trainer_state.json``.
  src/transformers/trainer_callback.py ``TrainerState.save_to_json``: ``json.dumps(dataclasses.asdict(self),
  indent=2, sort_keys=True) + "\n"``; fields ``epoch`` (float), ``global_step``, ``max_steps``,
  ``logging_steps``, ``eval_steps``, ``save_steps``, ``train_batch_size``, ``num_train_epochs``, ``num_input_tokens_seen``,
  ``total_flos``, ``log_history``, ``best_metric``, ``best_model_checkpoint``, ``is_local_process_zero``,
  ``is_world_process_zero``, ``is_hyper_param_search``, ``trial_name``, ``trial_params``, ``stateful_callbacks``.
  Values are Python floats (``tr_loss`` is a tensor reduced with ``.item()``; the KL/recon means here are floats).
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
                     regress_after: int | None = None, tensorboard: bool = True, trainer_state: bool = False,
                     save_total_limit: int | None = 2, save_state: bool = True) -> Truth:
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
    history: list[dict] = []  # TrainerState.log_history
    out_dir = Path(root) / "vae-out"
    saved: list[Path] = []

    def state(g: int, epoch: float) -> dict:
        return {"best_global_step": None, "best_metric": None, "best_model_checkpoint": None, "epoch": epoch,
                "eval_steps": 500, "global_step": g, "is_hyper_param_search": False, "is_local_process_zero": True,
                "is_world_process_zero": True, "log_history": [dict(h) for h in history], "logging_steps": logging_steps,
                "max_steps": total_steps, "num_input_tokens_seen": 0, "num_train_epochs": E, "save_steps": 500,
                "stateful_callbacks": {"TrainerControl": {"args": {"should_epoch_stop": False, "should_evaluate": False,
                                                                   "should_log": False, "should_save": True,
                                                                   "should_training_stop": g == total_steps},
                                                          "attributes": {}}},
                "total_flos": 0.0, "train_batch_size": 8, "trial_name": None, "trial_params": None}

    def save_to_json(path: Path, g: int, epoch: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state(g, epoch), indent=2, sort_keys=True) + "\n", encoding="utf-8")

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
            history.append({**logs, "step": g})
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
            history.append({**m, "step": g})
            evals.append((g, m))
            if trainer_state:  # save_strategy="epoch": the checkpoint after the evaluation
                ck = out_dir / f"checkpoint-{g}"
                save_to_json(ck / "trainer_state.json", g, epoch_value(g))
                (ck / "config.json").write_text(json.dumps({"latent_dim": latent_dim, "model_type": "vae"}) + "\n")
                saved.append(ck)
                while save_total_limit is not None and len(saved) > save_total_limit:
                    import shutil

                    shutil.rmtree(saved.pop(0))
    train_loss = float(np.sum(loss.astype(np.float64))) / total_steps
    end = {"train_runtime": 812.4, "train_samples_per_second": 93.1, "train_steps_per_second": 1.46,
           "total_flos": 0.0, "train_loss": train_loss, "epoch": epoch_value(total_steps)}
    log.scalars({"train/" + k: v for k, v in end.items()}, total_steps)
    history.append({**end, "step": total_steps})
    if trainer_state and save_state:
        save_to_json(out_dir / "trainer_state.json", total_steps, epoch_value(total_steps))
    path = log.write(run_dir) if tensorboard else None
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
        event_files=(path,) if path is not None else (),
        notes={"output_dir": out_dir, "checkpoints": list(saved), "global_steps": total_steps, "epoch_round": epoch_round, "logging_steps": logging_steps,
               "eval_steps": [g for g, _ in evals], "final_epoch_value": epoch_value(total_steps),
               "extra_epoch_rows": "train/epoch is also written with every eval log and the end-of-train summary",
               "identity_atol_applies_to": "train/loss only (rounded to 4 decimals)",
               "regress_after": regress_after},
    )
