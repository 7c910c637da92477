"""A plain PyTorch VAE loop logged with ``wandb.log``, exported as W&B documents it: ``run.history()`` to CSV
and ``run.scan_history()`` to JSON lines.

Sources read (W&B documentation and client):
- docs.wandb.ai, "How can I access the data logged to my runs directly and programmatically?" and the Public
  API ``Run`` reference: ``run.history()`` returns a pandas DataFrame, one row per ``wandb.log`` call, a column
  per key ever logged (NaN where a call did not log it), plus ``_step`` (the call counter), ``_runtime``
  (seconds since the run started) and ``_timestamp`` (seconds since 1970); ``run.scan_history()`` yields the
  same rows as dicts, each with only the keys of its call. W&B's own example then writes
  ``metrics_dataframe.to_csv("metrics.csv")``: pandas writes the index as a first, unnamed column and NaN as an
  empty field (``DataFrame.to_csv`` defaults ``index=True``, ``na_rep=""``).
- wandb/sdk/wandb_history.py ``History._row_add``: ``_step`` increments once per ``wandb.log`` call.

The loop: ``wandb.log({"train/loss", "train/kl", "train/recon", "epoch"})`` every ``log_every`` steps and
``wandb.log({"val/loss", "val/kl", "val/recon", "epoch"})`` at each epoch end (separate calls, so ``_step`` is
W&B's counter, not the global step; ``global_step`` is logged too when ``global_step_key`` is set, as Lightning's
WandbLogger does with ``trainer/global_step``). Objective: ``loss = recon + beta * kl``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ._common import F32, Truth, decay, f32, kl_rise_settle, noisy

__all__ = ["write_wandb_export"]


def write_wandb_export(root: Path, *, fmt: str = "csv", name: str = "history", epochs: int = 6,
                       steps_per_epoch: int = 40, log_every: int = 10, seed: int = 0, beta: float = 0.01,
                       latent_dim: int = 32, global_step_key: str | None = None, t0: float = 1.7e9) -> Truth:
    """Write ``root/<name>.csv`` (``fmt="csv"``: ``run.history().to_csv``) or ``root/<name>.jsonl``
    (``fmt="jsonl"``: one ``scan_history()`` row per line)."""
    rng = np.random.default_rng(seed)
    N, E = steps_per_epoch, epochs
    b = F32(beta)
    rows: list[dict] = []
    clock = [t0]

    def log(d: dict) -> None:  # wandb.log(d): one history row
        clock[0] += 0.5
        rows.append({**d, "_step": len(rows), "_runtime": clock[0] - t0, "_timestamp": clock[0]})

    t = (np.arange(E * N) + 1) / N
    rec = f32(noisy(rng, decay(t, 0.30, 0.05, 1.5), 0.03))
    kl = f32(noisy(rng, kl_rise_settle(t, 40.0), 0.03))
    loss = f32(rec + f32(b * kl))
    vals = {}
    for g in range(E * N):
        e = g // N
        if (g + 1) % log_every == 0:
            d = {"train/loss": float(loss[g]), "train/kl": float(kl[g]), "train/recon": float(rec[g]), "epoch": e}
            if global_step_key:
                d[global_step_key] = g
            log(d)
        if (g + 1) % N == 0:
            vr = float(F32(decay(e + 1.0, 0.30, 0.05, 1.5) * 1.02))
            vk = float(F32(kl_rise_settle(e + 1.0, 40.0)))
            vals[e] = {"val/loss": float(F32(vr + float(b) * vk)), "val/kl": vk, "val/recon": vr}
            d = {**vals[e], "epoch": e}
            if global_step_key:
                d[global_step_key] = g
            log(d)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        keys = ["_runtime", "_step", "_timestamp"] + sorted({k for r in rows for k in r} - {"_runtime", "_step", "_timestamp"})
        path = root / f"{name}.csv"
        with open(path, "w", newline="") as fh:  # DataFrame.to_csv: index column first, NaN as ""
            w = csv.writer(fh)
            w.writerow([""] + keys)
            whole = {k for k in keys if all(isinstance(r.get(k), int) for r in rows)}  # int64 columns stay ints
            for i, r in enumerate(rows):
                w.writerow([i] + [str(r[k]) if k in whole else _pandas_cell(r.get(k)) for k in keys])
    else:
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    last = vals[E - 1]
    step_tag = global_step_key or "_step"
    return Truth(
        run_dir=root, lineage=f"wandb_{fmt}", kl_weight=beta, kl_convention="sum", latent_dim=latent_dim, epochs=E,
        steps_per_epoch=N,
        tags={"total": "train/loss", "kl": "train/kl", "recon": "train/recon", "val_total": "val/loss",
              "val_kl": "val/kl", "val_recon": "val/recon", "epoch": "epoch", "step": step_tag},
        total_formula="train/loss = train/recon + beta * train/kl",
        final={"total": last["val/loss"], "kl": last["val/kl"], "recon": last["val/recon"]},
        notes={"path": path, "rows": rows, "calls": len(rows)},
    )


def _pandas_cell(v) -> str:
    """How DataFrame.to_csv writes a cell of a float64 column (a column with a missing value is float64, ints
    included: epoch 3 is "3.0"): repr of the float; NaN (a key that call did not log) an empty field."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return repr(float(v))
