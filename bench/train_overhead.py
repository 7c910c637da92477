"""Training-step cost at 64 px: what logging adds (goal: under 3 %), and what each loss term costs.

    python -m bench train_overhead                       # defaults: batch 16, the default model, all VGG layers
    python -m bench train_overhead --steps 40 --device cuda --batch-size 64

1. Logging overhead, measured two ways in one run:

   * A/B: the loop's own ``train_step`` with the loop's ``StepLogger`` writing every per-step scalar
     (total, each term raw and weighted, kl_weight, lr, epoch) to a real ``SummaryWriter``, against the
     same ``train_step`` with no logger; interleaved blocks (on/off, then off/on) so drift in a shared
     machine's load hits both; medians of per-block ms/step. On a busy CPU the noise of this ratio can
     exceed the overhead itself, hence
   * direct: the time spent inside the logger (``log`` + ``flush``, transfer to host included) per step,
     over the step time. This one decides the exit status (1 when over the goal).

   Per epoch: ``evaluate`` with every metric, the grid and the histogram written, against a val pass that
   computes the loss terms only, expressed against an epoch of the demo's size.

2. Cost of each loss term: forward + backward of the term alone on a batch of reconstructions, next to
   the model's own forward + backward, so the perceptual term's share is plain.

Data are real crops (``train.data.build_demo_arrays``), built in memory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Callable

__all__ = ["main", "GOAL_OVERHEAD"]

GOAL_OVERHEAD = 0.03


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device, *, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    _sync(device)
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench train_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per mode in the A/B comparison (default: 20)")
    parser.add_argument("--block", type=int, default=5, help="steps per interleaved block (default: 5)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default: 16)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv or [])

    import torch
    from torch.utils.tensorboard import SummaryWriter

    from train.config import TrainConfig
    from train.data import ImageSet, build_demo_arrays, grey_mask, to_nchw
    from train.losses import center_weight_map, center_weighted_l1, edge_loss, kl_divergence, loss_terms, ssim_loss
    from train.loop import StepLogger, evaluate, train_step
    from train.model import ConvVAE
    from train.perceptual import load_perceptual
    from vaediag import terms

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    cfg = TrainConfig()  # the default model and the seed's weights
    bs = args.batch_size
    train_arr, val_arr, _ = build_demo_arrays(n_train=max(64, bs * 4), n_val=32, size=64, seed=0)

    def imageset(arr):
        nchw = to_nchw(arr)
        return ImageSet(images=torch.from_numpy(nchw), grey=torch.from_numpy(grey_mask(nchw)), path="<memory>")

    train_set, val_set = imageset(train_arr), imageset(val_arr)
    torch.manual_seed(0)
    model = ConvVAE(channels=3, image_size=64, latent_dim=cfg.latent_dim, base_channels=cfg.base_channels).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    perceptual, backbone = load_perceptual("auto", cfg.layers)
    perceptual = perceptual.to(device)
    weight_map = center_weight_map(64, center_weight=cfg.center_weight, device=device)
    weights = cfg.loss_weights(cfg.kl_weight)
    g = torch.Generator().manual_seed(0)
    batches = [train_set.batch(torch.randint(len(train_set), (bs,), generator=g), device) for _ in range(8)]

    def step(i: int):
        return train_step(model, batches[i % len(batches)], optimizer, weights=weights, weight_map=weight_map,
                          perceptual=perceptual, deterministic=False, grad_clip=cfg.grad_clip)

    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"train step at 64 px, batch {bs}, latent {cfg.latent_dim}, base channels {cfg.base_channels}, "
          f"device {device}{threads}")
    print(f"perceptual: {backbone.description}")

    # --- 1. logging overhead -----------------------------------------------------------------------
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        writer = SummaryWriter(log_dir=tmp)
        logger = StepLogger(writer, list(terms.LOSS_TERMS), flush_every=1 if device.type == "cpu" else 20)
        logger_seconds, logged_steps = 0.0, 0
        counter = [0]

        def block(log: bool) -> float:
            nonlocal logger_seconds, logged_steps
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.block):
                i = counter[0]
                counter[0] += 1
                total, raw, weighted = step(i)
                if log:
                    t = time.perf_counter()
                    logger.log(i, 0, total, raw, weighted, kl_weight=weights["kl"], lr=1e-4)
                    logger_seconds += time.perf_counter() - t
                    logged_steps += 1
            if log:
                t = time.perf_counter()
                logger.flush()
                logger_seconds += time.perf_counter() - t
            _sync(device)
            return (time.perf_counter() - t0) / args.block

        step(0)  # warm-up: allocator, kernels, thread pools
        on, off = [], []
        for b in range(max(1, args.steps // args.block)):
            order = (True, False) if b % 2 == 0 else (False, True)
            for log in order:
                (on if log else off).append(block(log))
        writer.close()
    ms_on, ms_off = 1000 * statistics.median(on), 1000 * statistics.median(off)
    direct_ms = 1000 * logger_seconds / max(1, logged_steps)
    direct = direct_ms / ms_off
    print(f"  logging on : {ms_on:8.1f} ms/step  (median of {len(on)} blocks of {args.block})")
    print(f"  logging off: {ms_off:8.1f} ms/step")
    print(f"  A/B ratio  : {ms_on / ms_off:.3f}  (noise of a shared machine included)")
    print(f"  direct     : {direct_ms:.3f} ms/step inside the logger ({len(logger.tags) + 3} scalars) = "
          f"{100 * direct:.3f} % of a step  (goal < {100 * GOAL_OVERHEAD:.0f} %)")

    # --- per epoch: validation metrics beyond the val loss ----------------------------------------------
    def val_losses_only():
        with torch.no_grad():
            model.eval()
            for s in range(0, len(val_set), bs):
                x = val_set.batch(torch.arange(s, min(s + bs, len(val_set))), device)
                r, mu, lv = model(x, deterministic=True)
                torch.stack(list(loss_terms(r, x, mu, lv, weight_map=weight_map, perceptual=perceptual).values())).tolist()
            model.train()

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        writer = SummaryWriter(log_dir=tmp)

        def val_full():
            val, kl_dims, grid = evaluate(model, val_set, weights=weights, weight_map=weight_map, perceptual=perceptual,
                                          device=device, batch_size=bs, grid_images=8)
            for term, v in val.items():
                writer.add_scalar(terms.tag("val", term), v, 0)
            writer.add_histogram(terms.KL_PER_DIM_HIST_TAG, kl_dims.numpy(), 0)
            writer.add_image(terms.RECON_GRID_TAG, grid, 0, dataformats="CHW")
            writer.flush()

        t_loss = _timed(val_losses_only, device, repeat=3)
        t_full = _timed(val_full, device, repeat=3)
        writer.close()
    demo_epoch_steps = 10
    extra = max(0.0, t_full - t_loss)
    print(f"validation of {len(val_set)} images: losses only {1000 * t_loss:.0f} ms; with metrics, grid, histogram "
          f"{1000 * t_full:.0f} ms; the metrics add {1000 * extra:.0f} ms = "
          f"{100 * extra / (demo_epoch_steps * ms_off / 1000 + t_loss):.2f} % of a {demo_epoch_steps}-step epoch")

    # --- 2. cost of each loss term ------------------------------------------------------------------------
    x = batches[0]
    with torch.no_grad():
        recon0, mu0, lv0 = model(x)

    def term_cost(fn) -> float:
        def run():
            r = recon0.detach().clone().requires_grad_(True)
            fn(r).backward()
        return 1000 * _timed(run, device, repeat=3)

    def model_cost() -> float:
        def run():
            r, mu, lv = model(x)
            (r.mean() + mu.mean() + lv.mean()).backward()
        return 1000 * _timed(run, device, repeat=3)

    def kl_cost() -> float:
        def run():
            mu, lv = mu0.detach().clone().requires_grad_(True), lv0.detach().clone().requires_grad_(True)
            kl_divergence(mu, lv).backward()
        return 1000 * _timed(run, device, repeat=3)

    costs = {
        "model (encoder + decoder)": model_cost(),
        "recon (centre-weighted L1)": term_cost(lambda r: center_weighted_l1(r, x, weight_map)),
        "perceptual (ST-LPIPS VGG16)": term_cost(lambda r: perceptual(r, x)),
        "ssim_loss": term_cost(lambda r: ssim_loss(r, x)),
        "edge": term_cost(lambda r: edge_loss(r, x)),
        "kl": kl_cost(),
    }
    print(f"forward + backward per term (batch {bs}, median of 3):")
    for name, ms in costs.items():
        print(f"  {name:28s} {ms:9.2f} ms")
    loss_ms = sum(v for k, v in costs.items() if not k.startswith("model"))
    p = costs["perceptual (ST-LPIPS VGG16)"]
    print(f"  perceptual = {100 * p / loss_ms:.1f} % of the loss terms, {p / max(loss_ms - p, 1e-9):.0f}x the rest "
          f"together, {100 * p / (loss_ms + costs['model (encoder + decoder)']):.0f} % of model + losses")
    return 0 if direct < GOAL_OVERHEAD else 1


if __name__ == "__main__":
    raise SystemExit(main())
