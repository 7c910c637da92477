"""Training throughput on whatever device is here: fp32 vs bf16, channels_last on/off, torch.compile on/off,
and the share of a step each loss term takes.

    python -m bench gpu                 # CUDA when present (batch 32 at 64 px, 40 timed steps), else the CPU
    python -m bench gpu --quick         # a look in under a minute, on a CPU too (one thread; compile skipped)
    python -m bench gpu --image-size 128 --batch-size 64 --json results.json
    python -m bench gpu --no-compile    # skip the torch.compile variants (their first steps compile: minutes)

Every variant times the loop's own ``train_step`` (forward, every loss term of the seed's recipe, backward,
clip, Adam: fused on CUDA) on the default model, with the ST-LPIPS term on one step in ``--perceptual-every``
at that many times its weight, exactly as ``python -m train`` runs it; batches are gathered from uint8 images
kept where the loop keeps them (``ImageSet.place``: GPU memory on CUDA) and converted per step. The clock
starts after ``--warmup`` steps (for compile variants: the compiler's time, reported apart) and stops after
``--steps`` steps (rounded up to whole perceptual cycles, so every variant times the same mix) and one device
synchronisation per perceptual cycle: the step itself never waits for the GPU, as in the loop. Images/s =
batch / seconds per step of the median cycle.

On CUDA it also runs a few steps under ``torch.cuda.set_sync_debug_mode("warn")`` and counts the calls that made
the host wait for the GPU (the step should make none). The loss-term table times forward + backward of the model and of each term alone on the model's output, in
fp32 and bf16, and the Adam step, and gives each one's share of their sum; the perceptual term's share is also
given per average step (it runs on one step in N).

Prints a table and writes everything as JSON: to ``--json PATH``, else to ``bench/_data/gpu.json``. Without CUDA
it says so and measures the CPU: those numbers say what a CPU does, nothing about a GPU. ``make bench`` (``python -m bench``) runs it only where CUDA is present.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["main", "skip_in_all", "VARIANTS"]

# (name, precision, channels_last, compile)
VARIANTS = (
    ("fp32", "fp32", False, False),
    ("bf16", "bf16", False, False),
    ("fp32 channels_last", "fp32", True, False),
    ("bf16 channels_last", "bf16", True, False),
    ("fp32 compile", "fp32", False, True),
    ("bf16 channels_last compile", "bf16", True, True),
)


def skip_in_all() -> str | None:
    """Why ``python -m bench`` (all benchmarks) leaves this one out here, or None to run it."""
    import torch

    if torch.cuda.is_available():
        return None
    return "no CUDA device here; `python -m bench gpu --quick` measures the CPU in under a minute"


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _default_json() -> Path:
    return Path(__file__).resolve().parent / "_data" / "gpu.json"


class _Setup:
    """Model, data, loss weights and perceptual trunk for one device and configuration."""

    def __init__(self, args: argparse.Namespace, device: Any) -> None:
        import torch

        from train.config import TrainConfig
        from train.data import ImageSet, build_demo_arrays, grey_mask, to_nchw
        from train.losses import center_weight_map
        from train.perceptual import load_perceptual

        self.args, self.device = args, device
        self.cfg = TrainConfig(perceptual_every=args.perceptual_every, batch_size=args.batch_size,
                               base_channels=args.base_channels, latent_dim=args.latent_dim,
                               image_size=args.image_size, channels=3)
        arr, _, _ = build_demo_arrays(n_train=max(4 * args.batch_size, 16), n_val=1, size=args.image_size, seed=0)
        nchw = to_nchw(arr)
        self.data = ImageSet(images=torch.from_numpy(nchw), grey=torch.from_numpy(grey_mask(nchw)),
                             path="<memory>").place(device)
        self.perceptual, self.backbone = load_perceptual("auto", self.cfg.layers)
        self.perceptual = self.perceptual.to(device)
        self.weight_map = center_weight_map(args.image_size, center_weight=self.cfg.center_weight, device=device)
        g = torch.Generator().manual_seed(0)
        self.indices = [torch.randint(len(self.data), (args.batch_size,), generator=g).to(self.data.images.device)
                        for _ in range(8)]

    def model(self, channels_last: bool) -> tuple[Any, Any]:
        import torch

        from train.loop import make_optimizer
        from train.model import build_model

        torch.manual_seed(0)
        cfg = self.cfg
        model = build_model(arch=cfg.arch, channels=3, image_size=cfg.image_size, latent_dim=cfg.latent_dim,
                            base_channels=cfg.base_channels)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(self.device, memory_format=fmt)
        self.perceptual.to(memory_format=fmt)  # back to contiguous after a channels_last variant
        return model, make_optimizer(model, cfg, self.device)


def _stepper(setup: _Setup, precision: str, channels_last: bool, compile_: bool) -> Callable[[], None]:
    """One training step of the loop per call, the perceptual term on one call in ``perceptual_every``."""
    import torch

    from train.loop import perceptual_factor, train_step

    device, cfg = setup.device, setup.cfg
    model, optimizer = setup.model(channels_last)
    run_model = torch.compile(model) if compile_ else model
    counter = [0]

    def step() -> None:
        i = counter[0]
        counter[0] += 1
        x = setup.data.batch(setup.indices[i % len(setup.indices)], device, channels_last=channels_last)
        weights = cfg.loss_weights(cfg.kl_weight)
        factor = perceptual_factor(i, every=cfg.perceptual_every)
        weights["perceptual"] *= factor
        train_step(run_model, x, optimizer, weights=weights, weight_map=setup.weight_map,
                   perceptual=setup.perceptual if factor else None, deterministic=False, grad_clip=cfg.grad_clip,
                   precision=precision)

    return step


def _variant(setup: _Setup, precision: str, channels_last: bool, compile_: bool) -> dict[str, Any]:
    """Time one variant: images/s over the timed steps (the perceptual cycle included)."""
    import torch

    args, device, cfg = setup.args, setup.device, setup.cfg
    step = _stepper(setup, precision, channels_last, compile_)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    for _ in range(args.warmup):  # the compile variants compile here
        step()
    _sync(device)
    out["warmup_s"] = time.perf_counter() - t0
    # `steps` is whole perceptual cycles (the same mix of steps in every variant), each timed on its own: the
    # median cycle stands for the variant, so a burst of other work on a shared machine counts once at most.
    every = cfg.perceptual_every
    cycles, cpu_cycles = [], []
    for _ in range(args.steps // every):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(every):
            step()
        _sync(device)
        cycles.append(time.perf_counter() - t0)
        cpu_cycles.append(time.process_time() - c0)
    seconds = statistics.median(cycles) / every
    out.update(steps=args.steps, cycles=len(cycles), total_s=sum(cycles), ms_per_step=1000 * seconds,
               images_per_s=args.batch_size / seconds, cpu_s_per_step=statistics.median(cpu_cycles) / every)
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _sync_audit(setup: _Setup, precision: str) -> dict[str, Any]:
    """CUDA only: run two perceptual cycles of steps under ``torch.cuda.set_sync_debug_mode("warn")`` and count
    the operations that made the host wait for the GPU (the loop's steps should make none; its checks do)."""
    import warnings

    import torch

    step = _stepper(setup, precision, False, False)
    for _ in range(setup.cfg.perceptual_every):
        step()
    torch.cuda.synchronize(setup.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(2 * setup.cfg.perceptual_every):
                step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"steps": 2 * setup.cfg.perceptual_every, "synchronizing_calls": len(syncs), "first": syncs[:3]}


def _median_ms(fn: Callable[[], Any], device: Any, repeat: int) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _terms(setup: _Setup, precision: str, repeat: int) -> dict[str, float]:
    """ms of forward + backward: the model, each loss term alone on its output, and the Adam step."""
    import torch

    from train.losses import center_weighted_l1, edge_loss, kl_divergence, ssim_loss
    from train.loop import autocast

    device = setup.device
    model, optimizer = setup.model(False)
    x = setup.data.batch(setup.indices[0], device)
    with torch.no_grad(), autocast(device, precision):
        recon0, mu0, lv0 = model(x)
    recon0, mu0, lv0 = recon0.float(), mu0.float(), lv0.float()

    def model_run() -> None:
        with autocast(device, precision):
            r, mu, lv = model(x)
        (r.float().mean() + mu.float().mean() + lv.float().mean()).backward()

    def term(fn: Callable[[Any], Any]) -> Callable[[], None]:
        def run() -> None:
            r = recon0.detach().clone().requires_grad_(True)
            fn(r).backward()
        return run

    def perceptual(r: Any) -> Any:
        with autocast(device, precision):
            return setup.perceptual(r, x)

    def kl_run() -> None:
        mu, lv = mu0.detach().clone().requires_grad_(True), lv0.detach().clone().requires_grad_(True)
        kl_divergence(mu, lv).backward()

    def adam() -> None:
        optimizer.step()

    model_run()  # gradients for the optimizer step
    return {
        "model": _median_ms(model_run, device, repeat),
        "recon": _median_ms(term(lambda r: center_weighted_l1(r, x, setup.weight_map)), device, repeat),
        "perceptual": _median_ms(term(perceptual), device, repeat),
        "ssim_loss": _median_ms(term(lambda r: ssim_loss(r, x)), device, repeat),
        "edge": _median_ms(term(lambda r: edge_loss(r, x)), device, repeat),
        "kl": _median_ms(kl_run, device, repeat),
        "adam": _median_ms(adam, device, repeat),
    }


def _shares(ms: dict[str, float], every: int) -> dict[str, dict[str, float]]:
    """Each part's share of the sum, on a step that computes the perceptual term and on the average step."""
    total = sum(ms.values())
    avg = dict(ms, perceptual=ms["perceptual"] / every)
    avg_total = sum(avg.values())
    return {k: {"ms": ms[k], "share_perceptual_step": ms[k] / total, "share_average_step": avg[k] / avg_total}
            for k in ms}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quick", action="store_true", help="small batch, one perceptual cycle, one thread on a CPU "
                                                        "(compile is skipped there anyway)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=0, help="images per step (default: 32 on CUDA, 8 on a CPU, "
                                                             "4 with --quick)")
    p.add_argument("--steps", type=int, default=0, help="timed steps per variant (default: 40 on CUDA, 8 on a "
                                                        "CPU, 4 with --quick)")
    p.add_argument("--warmup", type=int, default=0, help="untimed steps first (default: 8 on CUDA, 1 on a CPU)")
    p.add_argument("--perceptual-every", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice; 1 gives "
                                                          "steadier CPU-seconds on a shared machine)")
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--latent-dim", type=int, default=256)
    p.add_argument("--repeat", type=int, default=0, help="repeats per loss-term timing (default: 10 on CUDA, 3 "
                                                         "on a CPU, 1 with --quick)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--compile", dest="compile", action="store_true", default=None,
                       help="time the torch.compile variants (default: yes on CUDA, no on a CPU)")
    group.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--json", metavar="PATH", help="where to write the results (default: bench/_data/gpu.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv or [])

    import torch

    cuda = torch.cuda.is_available()
    threads = args.threads or (1 if args.quick and (not cuda or args.device == "cpu") else 0)
    if threads:
        torch.set_num_threads(threads)
    if args.device == "cuda" and not cuda:
        print("Error: --device cuda but CUDA is not available to this torch; use --device cpu or auto", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda and args.device != "cpu" else "cpu")
    on_gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (32 if on_gpu else 4 if args.quick else 8)
    args.steps = args.steps or (40 if on_gpu and not args.quick else 4 if args.quick else 8)
    every = args.perceptual_every = max(1, args.perceptual_every)
    args.steps = -(-args.steps // every) * every
    args.warmup = args.warmup or (8 if on_gpu else 1)
    args.repeat = args.repeat or (1 if args.quick else 10 if on_gpu else 3)
    compile_ = args.compile if args.compile is not None else on_gpu
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True  # as the loop sets them
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        n = torch.get_num_threads()
        where = f"CPU ({platform.processor() or platform.machine()}, {n} thread{'s' if n != 1 else ''})"
        print("note: no CUDA device here: these are CPU numbers, they say nothing about a GPU "
              "(bf16 on a CPU runs at whatever its bf16 support allows)")

    setup = _Setup(args, device)
    print(f"train_step on {where}, torch {torch.__version__}: {args.image_size} px, batch {args.batch_size}, "
          f"resnet (base {args.base_channels}, latent {args.latent_dim}), ST-LPIPS on 1 step in "
          f"{args.perceptual_every}; {args.steps} timed steps per variant (median of "
          f"{args.steps // args.perceptual_every} cycles); images {setup.data.placement}")
    results: dict[str, Any] = {
        "device": str(device), "device_name": where, "torch": torch.__version__, "image_size": args.image_size,
        "batch_size": args.batch_size, "steps": args.steps, "perceptual_every": args.perceptual_every,
        "base_channels": args.base_channels, "latent_dim": args.latent_dim, "quick": args.quick,
        "variants": {}, "skipped": {}, "terms": {},
    }
    print(f"  {'variant':28s} {'images/s':>10s} {'ms/step':>9s} {'vs fp32':>8s} {'warm-up s':>10s}"
          + (f" {'peak GiB':>9s}" if on_gpu else f" {'CPU-s/step':>10s}"))
    base = None
    for name, precision, channels_last, comp in VARIANTS:
        if comp and not compile_:
            why = ("--no-compile" if args.compile is False else
                   "on a CPU the first compile takes minutes; --compile to time it anyway")
            results["skipped"][name] = why
            print(f"  {name:28s} skipped ({why})")
            continue
        try:
            r = _variant(setup, precision, channels_last, comp)
        except Exception as exc:  # a variant the device cannot run (compile without a compiler, ...)
            line = " ".join(str(exc).split())[:200] or type(exc).__name__
            results["skipped"][name] = f"failed: {type(exc).__name__}: {line}"
            print(f"  {name:28s} failed: {type(exc).__name__}: {line}")
            continue
        base = base or r["images_per_s"]
        r["speedup_vs_fp32"] = r["images_per_s"] / base
        results["variants"][name] = r
        # On a shared CPU the wall clock includes other people's work; CPU-seconds of this process do not.
        peak = f" {r['peak_memory_gib']:9.2f}" if on_gpu else f" {r['cpu_s_per_step']:10.2f}"
        print(f"  {name:28s} {r['images_per_s']:10.1f} {r['ms_per_step']:9.1f} {r['speedup_vs_fp32']:7.2f}x "
              f"{r['warmup_s']:10.1f}{peak}", flush=True)

    if on_gpu:
        try:
            audit = _sync_audit(setup, "bf16")
        except Exception as exc:  # an audit that cannot run must not cost the numbers above
            audit = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
            print(f"sync audit failed: {audit['error']}")
        else:
            print(f"host waits for the GPU in {audit['steps']} steps (bf16, torch.cuda.set_sync_debug_mode): "
                  f"{audit['synchronizing_calls']}" + (f"; first: {audit['first'][0]}" if audit["first"] else ""))
        results["sync_audit"] = audit
    else:
        results["sync_audit"] = "needs CUDA"

    for precision in ("fp32", "bf16"):
        ms = _terms(setup, precision, args.repeat)
        shares = _shares(ms, args.perceptual_every)
        results["terms"][precision] = shares
        print(f"forward + backward per part, {precision} (median of {args.repeat}); share of a step with the "
              f"perceptual term / of the average step:")
        for k, v in shares.items():
            print(f"  {k:12s} {v['ms']:9.2f} ms  {100 * v['share_perceptual_step']:5.1f} %  "
                  f"{100 * v['share_average_step']:5.1f} %")

    path = Path(args.json) if args.json else _default_json()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")
    except OSError as exc:
        print(f"Error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
