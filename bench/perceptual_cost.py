"""What the ST-LPIPS perceptual term costs per training step, before and after its cadence, and a shallower trunk.

    python -m bench perceptual_cost                    # demo scale: batch 8, 16 base channels, latent 2048
    python -m bench perceptual_cost --base-channels 32 --latent-dim 256 --batch-size 32   # the default config's model

Times are CPU-seconds of this process (``time.process_time()``) with ``torch.set_num_threads(1)``, medians of
``--repeat`` calls of the loop's own ``train_step`` (forward, every loss term, backward, clip, Adam step) on
real 64 px crops, so other work on a shared machine does not skew them:

* a step without the perceptual term, with the full trunk (relu1_2 .. relu5_3, the default) and with the trunk
  cut after relu3_3 (``--perceptual-layers relu1_2,relu2_2,relu3_3``);
* the perceptual term's share of a step, and of the average step when it runs every N-th step
  (``--perceptual-every N``, default 4: ``t0 + (t_p - t0) / N`` per step on average);
* how well the shallow trunk ranks distortions like the full one: Spearman's rank correlation of the two
  distances over val crops x distortions (Gaussian blur, noise, JPEG-like blocking, a shift).
"""

from __future__ import annotations

import argparse
import statistics
import time

__all__ = ["main"]

SHALLOW = ("relu1_2", "relu2_2", "relu3_3")


def _cpu_median(fn, repeat: int) -> float:
    fn()  # warm-up: allocator, kernels
    out = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return statistics.median(out)


def _spearman(a, b) -> float:
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _distortions(x):
    """(name, distorted batch) pairs of the val crops: blur, noise, blocking, a shift."""
    import torch
    import torch.nn.functional as F

    def blur(s):
        k = torch.arange(-4, 5, dtype=torch.float32)
        g = torch.exp(-k**2 / (2 * s * s))
        g = (g / g.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
        y = F.conv2d(F.pad(x, (4, 4, 0, 0), mode="reflect"), g, groups=3)
        return F.conv2d(F.pad(y, (0, 0, 4, 4), mode="reflect"), g.transpose(2, 3), groups=3)

    gen = torch.Generator().manual_seed(0)
    out = [(f"blur {s}", blur(s)) for s in (0.5, 1.0, 2.0)]
    out += [(f"noise {s}", (x + s * torch.randn(x.shape, generator=gen)).clamp(0, 1)) for s in (0.03, 0.1)]
    out.append(("blocks 4", F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="nearest")))
    out.append(("shift 1", torch.roll(x, 1, dims=3)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench perceptual_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--latent-dim", type=int, default=2048)
    parser.add_argument("--perceptual-every", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5, help="timed steps per variant (default: 5)")
    parser.add_argument("--val-images", type=int, default=32, help="val crops for the rank agreement (default: 32)")
    args = parser.parse_args(argv or [])

    import torch

    from train.config import PERCEPTUAL_LAYERS, TrainConfig
    from train.data import build_demo_arrays
    from train.losses import center_weight_map
    from train.loop import train_step
    from train.model import build_model
    from train.perceptual import load_perceptual

    torch.set_num_threads(1)
    cfg = TrainConfig()
    train_u8, val_u8, _ = build_demo_arrays(n_train=max(8, args.batch_size), n_val=args.val_images, size=64, seed=0)
    x = torch.from_numpy(train_u8[: args.batch_size]).permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    model = build_model(arch="resnet", channels=3, image_size=64, latent_dim=args.latent_dim,
                        base_channels=args.base_channels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    wmap = center_weight_map(64, center_weight=cfg.center_weight)
    full, backbone = load_perceptual("auto", PERCEPTUAL_LAYERS)
    shallow, _ = load_perceptual("auto", SHALLOW)
    weights = cfg.loss_weights(cfg.kl_weight)

    def step(p):
        return lambda: train_step(model, x, opt, weights=weights, weight_map=wmap, perceptual=p, deterministic=False,
                                  grad_clip=cfg.grad_clip)

    print(f"train_step at 64 px, batch {args.batch_size}, resnet model ({args.base_channels} base channels, latent "
          f"{args.latent_dim}), the seed's loss weights; CPU-s of this process, 1 thread, median of {args.repeat}")
    print(f"perceptual: {backbone.description}")
    t0 = _cpu_median(step(None), args.repeat)
    t_full = _cpu_median(step(full), args.repeat)
    t_shallow = _cpu_median(step(shallow), args.repeat)
    n = args.perceptual_every
    print(f"  no perceptual term        {1000 * t0:7.1f} ms per step")
    for name, t in (("ST-LPIPS, full trunk", t_full), ("ST-LPIPS to relu3_3", t_shallow)):
        p = t - t0
        avg = t0 + p / n
        print(f"  {name:25s} {1000 * t:7.1f} ms per step, the term {100 * p / t:4.1f} % of it; every {n}th step: "
              f"{1000 * avg:6.1f} ms per step on average, the term {100 * (p / n) / avg:4.1f} %, "
              f"{t_full / avg:.2f}x the steps per CPU-s of the full trunk every step")
    print(f"  relu3_3 trunk vs full: the term costs {100 * (1 - (t_shallow - t0) / (t_full - t0)):.0f} % less")

    v = torch.from_numpy(val_u8).permute(0, 3, 1, 2).float() / 255
    d_full, d_shallow = [], []
    with torch.no_grad():
        for _, y in _distortions(v):
            d_full += full.per_image(y, v).tolist()
            d_shallow += shallow.per_image(y, v).tolist()
    print(f"  rank agreement (Spearman) of the relu3_3 distance with the full one over {len(d_full)} val crop x "
          f"distortion pairs: {_spearman(d_full, d_shallow):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
