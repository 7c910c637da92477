"""What ``--grad-share-every`` costs: training steps with and without the per-term gradient measurement, at the
default cadence, on the demo's model, in one run (goal: under 3 % of the training time).

    python -m bench grad_share                     # the demo's model and recipe, the default cadence
    python -m bench grad_share --every 10 --pairs 2

The steps are the loop's own ``train_step`` with the hook the loop passes on a measured step
(``vaediag.integrations.gradients.term_gradients`` of the weighted terms at ``(mu, logvar)``, then the tags
to log) on the demo's model and recipe (``vaediag.commands.demo.demo_config``: residual model, 16 base
channels, latent 2048, batch 8, 64 px crops, the perceptual term with the trunk to relu3_3 on every 4th step).
Times are CPU-seconds of this process (``time.process_time()``, one torch thread), so other work on a shared
machine does not skew them. Two measures, in one run:

* direct: the median extra time of a measured step over a plain step of the same kind (a measured step always
  computes the perceptual term: ``train.loop.grad_share_due``), over ``every`` average steps (the average
  over a perceptual cycle): the share of the training time the measurement adds at that cadence. It decides
  the exit status (1 when over the goal).
* A/B: ``--pairs`` pairs of windows of ``every`` consecutive steps, each window once with its due step
  measured and once without, interleaved; the ratio of the totals (the whole window, logging included).
  Printed as a check on the direct figure; at the default cadence one measurement is about 1 % of a window,
  less than the step-to-step noise of a shared machine, so a single pair can read below 1.

Measured on this project's 2-core machine (shared, under load): an average step 239 ms, a measured step adds
261 ms (1.09 average steps), so 1.09 % of the training time at the default 100 (the goal holds from every 37
steps on); A/B over one pair of 100-step windows 23.86 vs 24.16 CPU-s (0.988: noise).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

__all__ = ["main", "GOAL_OVERHEAD"]

GOAL_OVERHEAD = 0.03


def main(argv: list[str] | None = None) -> int:
    from train.config import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m bench grad_share", description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=TrainConfig().grad_share_every,
                        help="the cadence to cost (default: the config's, %(default)s)")
    parser.add_argument("--repeat", type=int, default=7, help="measured and plain steps timed each (default: 7)")
    parser.add_argument("--pairs", type=int, default=1, help="A/B pairs of windows of EVERY steps (default: 1)")
    args = parser.parse_args(argv or [])
    if args.every < 1:
        parser.error(f"--every must be >= 1, got {args.every}")

    import torch

    from train.data import build_demo_arrays
    from train.losses import center_weight_map
    from train.loop import grad_share_due, perceptual_factor, train_step
    from train.model import build_model
    from train.perceptual import load_perceptual
    from vaediag.commands.demo import DEMO_BATCH, DEMO_SIZE, demo_config
    from vaediag.integrations.gradients import term_gradients

    torch.set_num_threads(1)
    cfg = demo_config()
    bs, size, p_every = DEMO_BATCH, DEMO_SIZE, cfg.perceptual_every
    train_u8, _, _ = build_demo_arrays(n_train=bs * 4, n_val=8, size=size, seed=0)
    images = torch.from_numpy(train_u8).permute(0, 3, 1, 2).float() / 255
    batches = [images[i:i + bs] for i in range(0, len(images), bs)]
    torch.manual_seed(0)
    model = build_model(arch=cfg.arch, channels=3, image_size=size, latent_dim=cfg.latent_dim,
                        base_channels=cfg.base_channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    weight_map = center_weight_map(size, center_weight=cfg.center_weight)
    perceptual, backbone = load_perceptual(cfg.perceptual_weights, cfg.layers)

    def step(s: int, measure: bool) -> float:
        """One loop step at global step ``s`` (the perceptual term on its steps); CPU-seconds."""
        weights = cfg.loss_weights(cfg.kl_weight)
        factor = perceptual_factor(s, every=p_every)
        weights["perceptual"] *= factor
        tags: list[dict[str, float]] = []
        hook = (lambda weighted, head: tags.append(term_gradients(weighted, head).scalars())) if measure else None
        t = time.process_time()
        train_step(model, batches[s % len(batches)], optimizer, weights=weights, weight_map=weight_map,
                   perceptual=perceptual if factor else None, deterministic=False, grad_clip=cfg.grad_clip,
                   before_backward=hook)
        return time.process_time() - t

    print(f"train_step at {size} px, batch {bs}, the demo's {cfg.arch} model ({cfg.base_channels} base channels, latent "
          f"{cfg.latent_dim}), kl_weight {cfg.kl_weight:g}, the perceptual term every {p_every} steps; CPU-s of this "
          f"process, 1 thread")
    print(f"perceptual: {backbone.description}")
    step(0, True)  # warm-up: allocator, kernels, the measurement's first call
    step(1, False)
    plain_p, measured_p, cycle = [], [], []
    for r in range(args.repeat):  # interleaved, so drift hits both
        s = r * p_every  # a perceptual step, as every measured step is
        measured_p.append(step(s, True))
        plain_p.append(step(s, False))
        cycle.append(sum(step(s + k, False) for k in range(1, p_every)))
    t_p, t_m = statistics.median(plain_p), statistics.median(measured_p)
    avg = (t_p + statistics.median(cycle)) / p_every  # the average step over a perceptual cycle
    extra = max(0.0, t_m - t_p)
    direct = extra / (args.every * avg)
    print(f"  average step     {1000 * avg:8.1f} ms   (a step with the perceptual term {1000 * t_p:.1f} ms; "
          f"median of {args.repeat})")
    print(f"  measured step    {1000 * t_m:8.1f} ms   the measurement adds {1000 * extra:.1f} ms = "
          f"{extra / avg:.2f} average steps")
    print(f"  direct           at --grad-share-every {args.every}: {100 * direct:.2f} % of the training time "
          f"(goal < {100 * GOAL_OVERHEAD:.0f} %); the goal holds from every {math.ceil(extra / avg / GOAL_OVERHEAD)} "
          "steps on")

    if args.pairs:
        on, off = 0.0, 0.0
        start = 0
        for pair in range(args.pairs):
            window = range(start, start + args.every)
            for measure in ((True, False) if pair % 2 == 0 else (False, True)):
                t = sum(step(s, measure and grad_share_due(s, every=args.every, perceptual_every=p_every))
                        for s in window)
                on, off = (on + t, off) if measure else (on, off + t)
            start += args.every
        print(f"  A/B              {args.pairs} pair(s) of {args.every}-step windows: {on:.2f} CPU-s with the "
              f"measurement, {off:.2f} without: ratio {on / off:.3f}")
    return 0 if direct < GOAL_OVERHEAD else 1


if __name__ == "__main__":
    raise SystemExit(main())
