"""A hand-written training loop logging with ``torch.utils.tensorboard.SummaryWriter`` (what users write).

No library code defines these tags; the behaviour of the writer is torch's: ``add_scalar(tag, value,
global_step)`` stores ``event.step = int(global_step)`` with no check, so ``global_step=-1`` is accepted and
written as step -1 (checked with torch's SummaryWriter here: an EventAccumulator reads it back as step -1). Each
``SummaryWriter(log_dir)`` opens a NEW ``events.out.tfevents.<time>.<host>.<pid>.<n>`` file in the folder, so
re-running the script into the same directory leaves two files whose step counters both start at 0
(``restart_counter``). TensorBoard's EventAccumulator, given the folder, reads both files in name order and keeps
every event (for ``brain.Event:2`` files it purges only after a SessionLog START, which SummaryWriter does not
write), so a tag shows two interleaved step series 0..n; read the files one by one to separate the runs.

Loop: per batch ``train/recon_l1`` (L1, mean over pixels), ``train/kl`` (sum over ``d_latent`` dims, mean over
batch), ``train/loss = recon_l1 + beta * kl`` every ``log_every`` steps at the running ``global_step`` (0-based,
incremented after each batch); after each epoch an evaluation at ``global_step`` (= (e+1)*N) writes six values:
``val/loss``, ``val/kl``, ``val/recon_l1``, ``val/recon_loss/grey``, ``val/recon_loss/colour`` (group suffixes),
``val/psnr``; ``val/recon_l1`` is the sample-weighted mean of the two groups. ``val_step_minus_one`` evaluates the
untrained model first at step -1. ``dead``: reconstructions are constant (the mean image): recon stalls at the
mean-image level, PSNR about 12 dB, KL collapses to ~0. ``regress_after``: train and val recon rise 2.5x.
``config.json`` beside the events holds ``d_latent``, ``beta``, ``lr``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._common import EventLog, F32, Truth, decay, f32, kl_rise_settle, noisy, regress_factor, until


def _run(rng, log, *, epochs, N, beta, log_every, dead, regress_after, val_step_minus_one, n_grey, n_colour):
    b = F32(beta)

    def curves(t, sigma, scale=1.0):
        t = np.asarray(t, dtype=np.float64)
        if dead:
            r = f32(noisy(rng, np.full(t.shape, 0.245), sigma * 0.2))
            mse = f32(noisy(rng, np.full(t.shape, 0.063), sigma * 0.2))
            k = f32(noisy(rng, 2e-3 * np.exp(-t) + 1e-4, sigma))
        else:
            reg = regress_factor(t, regress_after)
            r = f32(noisy(rng, decay(until(t, regress_after), 0.245, 0.045, 1.8) * reg * scale, sigma))
            mse = f32(noisy(rng, decay(until(t, regress_after), 0.063, 0.0035, 1.8) * reg * reg * scale, sigma))
            k = f32(noisy(rng, kl_rise_settle(np.maximum(t, 0), 34.0), sigma))
        return r, k, mse

    def evaluate(step, t):
        rg, k, mse = curves(np.array([t, t]), 0.01, 0.95)
        grey, colour = rg[0], f32(rg[1] * F32(1.08))
        rl1 = F32(F32(F32(n_grey) * grey + F32(n_colour) * colour) / F32(n_grey + n_colour))
        vloss = F32(rl1 + F32(b * k[0]))
        psnr = F32(10.0 * np.log10(1.0 / float(mse[0])))
        m = {"val/loss": vloss, "val/kl": k[0], "val/recon_l1": rl1, "val/recon_loss/grey": grey,
             "val/recon_loss/colour": colour, "val/psnr": psnr}
        log.scalars(m, step)
        return {key: float(v) for key, v in m.items()}

    pre = evaluate(-1, 0.0) if val_step_minus_one else None
    t = (np.arange(epochs * N) + 1) / N
    rec, kl, _ = curves(t, 0.04)
    loss = f32(rec + f32(b * kl))
    gs = 0
    val = []
    for e in range(epochs):
        for _ in range(N):
            if gs % log_every == 0:
                log.scalars({"train/recon_l1": rec[gs], "train/kl": kl[gs], "train/loss": loss[gs]}, gs)
            gs += 1
        val.append(evaluate(gs, e + 1.0))
    return val, pre


def write_plain_loop(root: Path, *, epochs: int = 10, steps_per_epoch: int = 50, seed: int = 0, beta: float = 1e-3,
                     d_latent: int = 64, log_every: int = 5, lr: float = 2e-4, val_step_minus_one: bool = False,
                     restart_counter: bool = False, restart_epochs: int | None = None, dead: bool = False,
                     regress_after: int | None = None, n_grey: int = 40, n_colour: int = 216) -> Truth:
    rng = np.random.default_rng(seed)
    run_dir = Path(root) / "runs" / "vae_l1"
    N = steps_per_epoch
    kw = dict(N=N, beta=beta, log_every=log_every, dead=dead, regress_after=regress_after,
              val_step_minus_one=val_step_minus_one, n_grey=n_grey, n_colour=n_colour)
    log = EventLog()
    val, pre = _run(rng, log, epochs=epochs, **kw)
    files = [log.write(run_dir)]
    E = epochs
    notes = {"step_minus_one": pre, "dead": dead, "regress_after": regress_after, "log_every": log_every,
             "val_steps": [(e + 1) * N for e in range(epochs)]}
    if restart_counter:
        E = restart_epochs if restart_epochs is not None else max(1, epochs // 2)
        log2 = EventLog(t0=log.t + 3600.0)
        val, pre2 = _run(rng, log2, epochs=E, **kw)
        files.append(log2.write(run_dir))
        notes["restart"] = {"first_file_epochs": epochs, "second_file_epochs": E,
                            "note": "second file's steps restart at 0; Truth.epochs/final describe the latest run"}
        notes["val_steps"] = [(e + 1) * N for e in range(E)]
    (run_dir / "config.json").write_text(json.dumps({"d_latent": d_latent, "beta": beta, "lr": lr,
                                                     "epochs": epochs, "batch_size": 32}, indent=2))
    last = val[-1]
    return Truth(
        run_dir=run_dir, lineage="plain_loop", kl_weight=beta, kl_convention="sum", latent_dim=d_latent, epochs=E,
        steps_per_epoch=N,
        tags={"total": "train/loss", "kl": "train/kl", "recon": "train/recon_l1", "val_total": "val/loss",
              "val_kl": "val/kl", "val_recon": "val/recon_l1", "val_recon_grey": "val/recon_loss/grey",
              "val_recon_colour": "val/recon_loss/colour", "psnr": "val/psnr"},
        total_formula="train/loss = train/recon_l1 + beta * train/kl; val/loss = val/recon_l1 + beta * val/kl; "
                      "val/recon_l1 = (n_grey * grey + n_colour * colour) / (n_grey + n_colour)",
        final={"total": last["val/loss"], "kl": last["val/kl"], "recon": last["val/recon_l1"],
               "psnr": last["val/psnr"]},
        event_files=tuple(files),
        notes=notes,
    )
