"""The GPU-ready paths, tested on the CPU: --precision bf16, --channels-last, --compile's plumbing, fused-Adam
state across resumes, the checks every --sync-every steps, validation sharded over DDP ranks (gloo), and
bench/gpu.py. What needs a GPU to measure (speed, NCCL, pinned memory) is bench/gpu.py's business."""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap

import numpy as np
import pytest
import torch

from train.__main__ import build_parser, config_from_args
from train.config import TrainConfig, load_config_file, save_run_config
from train.device import fit_optimizer, is_compile_error
from train.losses import center_weight_map, loss_terms, ssim_loss, weighted_total
from train.loop import evaluate, load_checkpoint, resume_config, sync_every, train, train_step
from train.model import build_model
from trainhelp import ROOT, ckpt_of, read_events, run_python, steps_of, tiny_argv
from vaediag.errors import ConfigError, Interrupted

# --- config ---------------------------------------------------------------------------------------------


GPU_FIELDS = dict(precision="bf16", channels_last=True, compile=True, sync_every=5)


def test_the_new_flags_round_trip_through_argv_and_the_run_files(tmp_path):
    cfg = TrainConfig(**GPU_FIELDS, epochs=3)
    assert config_from_args(build_parser().parse_args(cfg.to_argv())) == cfg
    assert "--precision" in cfg.to_argv() and "--channels-last" in cfg.to_argv() and "--compile" in cfg.to_argv()
    save_run_config(cfg, tmp_path)
    assert load_config_file(tmp_path / "config.json") == cfg
    assert load_config_file(tmp_path / "hparams.yaml") == cfg
    # a config written before these fields existed loads with the old behaviour
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in GPU_FIELDS}
    (tmp_path / "old.json").write_text(json.dumps(old))
    c = load_config_file(tmp_path / "old.json")
    assert (c.precision, c.channels_last, c.compile, c.sync_every) == ("fp32", False, False, 0)


@pytest.mark.parametrize("field, value, match", [("precision", "fp16", "precision 'fp16' is unknown"),
                                                 ("sync_every", -1, "sync_every must be >= 0")])
def test_bad_values_of_the_new_flags(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value})


def test_sync_every_defaults_to_every_step_on_cpu_and_20_on_cuda():
    assert sync_every(TrainConfig(), torch.device("cpu")) == 1
    assert sync_every(TrainConfig(), torch.device("cuda", 0)) == 20
    assert sync_every(TrainConfig(sync_every=7), torch.device("cpu")) == 7


# --- the maths of one step ------------------------------------------------------------------------------


def _setup(crops, *, n=4):
    from train.perceptual import load_perceptual

    x = torch.from_numpy(crops[0][:n]).permute(0, 3, 1, 2).float() / 255
    perceptual, _ = load_perceptual("auto", ("relu1_2",))
    return x, perceptual, center_weight_map(64, center_weight=3.0)


def _model(channels_last=False, seed=0):
    torch.manual_seed(seed)
    m = build_model(arch="resnet", channels=3, image_size=64, latent_dim=256, base_channels=8)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def _steps(crops, *, precision="fp32", channels_last=False, steps=3):
    x, perceptual, wmap = _setup(crops)
    model = _model(channels_last)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        perceptual = perceptual.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights = TrainConfig().loss_weights(1e-3)
    torch.manual_seed(1)
    rows = []
    for _ in range(steps):
        total, raw, _ = train_step(model, x, opt, weights=weights, weight_map=wmap, perceptual=perceptual,
                                   deterministic=False, grad_clip=1.0, precision=precision)
        rows.append([float(total)] + [float(v.detach()) for v in raw.values()])
    return np.array(rows), model


@pytest.mark.slow
def test_default_step_is_the_plain_fp32_step_bit_for_bit(crops):
    # The step as it was written before --precision existed, inline: the default path must equal it exactly.
    x, perceptual, wmap = _setup(crops)
    weights = TrainConfig().loss_weights(1e-3)
    ref_model = _model()
    opt = torch.optim.Adam(ref_model.parameters(), lr=1e-3)
    torch.manual_seed(1)
    ref = []
    for _ in range(3):
        recon, mu, logvar = ref_model(x, deterministic=False)
        raw = loss_terms(recon, x, mu, logvar, weight_map=wmap, perceptual=perceptual)
        total, _ = weighted_total(raw, weights)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(ref_model.parameters(), 1.0)
        opt.step()
        ref.append([float(total.detach())] + [float(v.detach()) for v in raw.values()])
    ours, model = _steps(crops)
    assert np.array_equal(np.array(ref), ours)
    assert all(torch.equal(a, b) for a, b in zip(ref_model.state_dict().values(), model.state_dict().values()))


@pytest.mark.slow
def test_bf16_on_cpu_trains_within_a_tolerance_of_fp32(crops):
    fp32, _ = _steps(crops)
    bf16, model = _steps(crops, precision="bf16")
    assert np.isfinite(bf16).all()
    # measured: at most 0.4 % apart per term over these steps (bf16 keeps 8 bits of mantissa)
    np.testing.assert_allclose(bf16, fp32, rtol=2e-2)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: weights stay fp32


@pytest.mark.slow
def test_channels_last_gives_the_same_losses_within_1e_5(crops):
    plain, m1 = _steps(crops)
    cl, m2 = _steps(crops, channels_last=True)
    np.testing.assert_allclose(cl, plain, rtol=1e-5, atol=1e-5)
    conv = next(p for p in m2.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)


def test_the_loss_terms_of_a_bf16_forward_are_reduced_in_fp32(crops):
    x, perceptual, wmap = _setup(crops, n=2)
    model = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recon, mu, logvar = model(x)
        assert recon.dtype == torch.bfloat16
        d = perceptual(recon, x)  # the trunk in bf16, its distance summed in fp32
    raw = loss_terms(recon, x, mu, logvar, weight_map=wmap, perceptual=None)
    assert d.dtype == torch.float32 and raw["kl"].dtype == torch.float32 and raw["ssim_loss"].dtype == torch.float32


def test_ssim_with_the_cached_window_equals_pytorch_msssims_own(crops):
    from pytorch_msssim import ssim

    x, _, _ = _setup(crops, n=2)
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    assert torch.equal(ssim_loss(y, x), 1.0 - ssim(y, x, data_range=1.0, size_average=True))
    from train.losses import ssim_window

    assert ssim_window(x) is ssim_window(y)  # built once per device and channel count


def test_a_batch_in_channels_last_holds_the_same_values(crops):
    from train.data import ImageSet, grey_mask, to_nchw

    nchw = to_nchw(crops[0])
    ds = ImageSet(images=torch.from_numpy(nchw), grey=torch.from_numpy(grey_mask(nchw)), path="x")
    assert ds.place(torch.device("cpu")) is ds  # on the CPU nothing moves
    idx = torch.tensor([3, 0, 5])
    a, b = ds.batch(idx, torch.device("cpu")), ds.batch(idx, torch.device("cpu"), channels_last=True)
    assert torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last) and b.dtype == torch.float32


# --- optimizer state across devices and formats ---------------------------------------------------------


def test_a_resumed_optimizer_runs_the_way_this_run_runs():
    # Written channels_last and fused (CPU fused Adam exists in torch >= 2.4, so this runs here), loaded into a
    # plain contiguous run: the moments take the parameters' strides, fused is off, steps live on the CPU.
    src = _model(channels_last=True)
    opt = torch.optim.Adam(src.parameters(), lr=1e-3, fused=True)
    src(torch.rand(2, 3, 64, 64))[0].mean().backward()
    opt.step()
    saved = opt.state_dict()
    assert saved["param_groups"][0]["fused"] is True

    dst = _model()
    dst.load_state_dict(src.state_dict())
    opt2 = torch.optim.Adam(dst.parameters(), lr=1e-3)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["fused"] is True  # what load_state_dict does by itself
    fit_optimizer(opt2, torch.device("cpu"))
    assert opt2.param_groups[0]["fused"] is False
    for p in dst.parameters():
        st = opt2.state[p]
        assert st["exp_avg"].stride() == p.stride() and st["exp_avg_sq"].stride() == p.stride()
        assert st["step"].device.type == "cpu" and st["step"].dtype == torch.float32
    dst(torch.rand(2, 3, 64, 64))[0].mean().backward()
    opt2.step()  # and it steps


@pytest.mark.slow
def test_resume_may_change_how_the_steps_run_without_an_override(tmp_path, tiny_cfg, capsys):
    first = train(tiny_cfg)
    capsys.readouterr()
    again = train(resume_config(first.checkpoint, epochs=2, precision="bf16", channels_last=True, sync_every=2))
    out = capsys.readouterr().out
    assert "runs as: precision 'fp32' -> 'bf16', channels_last False -> True, sync_every 0 -> 2" in out, out
    overrides = out.split("overrides:")[1].split(";")[0]
    assert "epochs 1 -> 2" in overrides and "precision" not in overrides
    assert again.global_step == 4 and np.isfinite(again.val["loss"])
    assert load_config_file(first.run_dir / "config.json").precision == "bf16"
    # and back: a channels_last bf16 checkpoint resumes as plain fp32
    third = train(resume_config(again.checkpoint, epochs=3, precision="fp32", channels_last=False))
    assert third.global_step == 6 and np.isfinite(third.val["loss"])


@pytest.mark.slow
def test_bf16_and_channels_last_train_end_to_end(tiny_cfg):
    result = train(tiny_cfg.replace(precision="bf16", channels_last=True))
    assert result.global_step == 2 and all(np.isfinite(v) for v in result.val.values())
    assert load_checkpoint(result.checkpoint)["config"]["precision"] == "bf16"


# --- --compile ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compile_wraps_the_training_model(tiny_cfg, monkeypatch):
    wrapped = []

    def fake_compile(model, **kw):
        wrapped.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = train(tiny_cfg.replace(compile=True))
    assert result.global_step == 2 and len(wrapped) == 1 and isinstance(wrapped[0], torch.nn.Module)


def test_a_compiler_failure_is_one_line(tiny_cfg, monkeypatch):
    class BackendCompilerFailed(RuntimeError):
        pass

    BackendCompilerFailed.__module__ = "torch._dynamo.exc"

    def broken(*a, **kw):
        raise BackendCompilerFailed("backend='inductor' raised:\nCppCompileError: C++ compile error\nmore lines")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: broken)
    # Step 0 measures the gradient shares (--grad-share-every) on the uncompiled module: step 1 compiles.
    with pytest.raises(ConfigError, match=r"^--compile failed at step 1 \(BackendCompilerFailed: backend='inductor' "
                                          r"raised: CppCompileError: C\+\+ compile error more lines\); train without "
                                          r"it: --no-compile"):
        train(tiny_cfg.replace(compile=True))
    assert not is_compile_error(RuntimeError("a plain error")) and is_compile_error(BackendCompilerFailed())


# --- checks every --sync-every steps --------------------------------------------------------------------


@pytest.mark.slow
def test_checks_fall_every_sync_every_steps_and_at_the_epoch_ends(tiny_cfg, monkeypatch):
    import train.loop as loop

    seen = []
    real = loop._Run.settle

    def settle(self, failure, *, stop_here=True):
        seen.append(self.state.global_step)
        return real(self, failure, stop_here=stop_here)

    monkeypatch.setattr(loop._Run, "settle", settle)
    train(tiny_cfg.replace(batch_size=2, sync_every=3))  # 8 steps
    # epoch start (0), steps 3 and 6, the epoch's end (8: after the last step, after validation)
    assert seen == [0, 3, 6, 8, 8]


@pytest.mark.parametrize("every, stops_after", [(0, 1), (3, 3)])
def test_a_signal_stops_the_run_at_the_next_check(tmp_path, tiny_cfg, monkeypatch, every, stops_after):
    import train.loop as loop

    calls = []
    real = loop.train_step

    def step_with_a_signal(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives during step 0
        return real(*a, **kw)

    monkeypatch.setattr(loop, "train_step", step_with_a_signal)
    cfg = tiny_cfg.replace(batch_size=2, sync_every=every)
    with pytest.raises(Interrupted, match=f"SIGINT: stopped after step {stops_after}; checkpoint"):
        train(cfg)
    ckpt = load_checkpoint(ckpt_of(tmp_path))
    assert (ckpt["state"]["global_step"], ckpt["state"]["batch_in_epoch"]) == (stops_after, stops_after)
    assert steps_of(read_events(ckpt["run_dir"]), "train/loss") == list(range(stops_after))  # all logged


# --- DDP (gloo, two processes) --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The scripts import the repository, the test helpers and this module (for eval_setup).
_CHILD_PATH = os.pathsep.join(str(ROOT / p) for p in (".", "tests/helpers", "tests/train"))


def _torchrun(script, args, tmp_path, timeout=240):
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    return run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                       "--master_port", str(_free_port()), str(path), *args],
                      env={"OMP_NUM_THREADS": "1", "PYTHONPATH": _CHILD_PATH}, timeout=timeout)


_EVAL_SCRIPT = """
    import sys, torch, torch.distributed as dist
    from test_train_gpu import eval_setup
    from train.distributed import Dist
    from train.loop import evaluate
    dist.init_process_group("gloo")
    d = Dist(rank=dist.get_rank(), world=dist.get_world_size())
    model, val_set, kw = eval_setup(sys.argv[1])
    out = {bs: evaluate(model, val_set, batch_size=bs, d=d, **kw) for bs in (3, 8, 2)}
    if d.is_main:  # the single process, in this process (same threads, so the same kernels' sums)
        single = {bs: evaluate(model, val_set, batch_size=bs, **kw) for bs in (3, 8, 2)}
        torch.save({"ddp": out, "single": single}, sys.argv[2])
    dist.destroy_process_group()
"""


def eval_setup(val_npy):
    """A seeded model with perturbed weights (an untrained one outputs flat grey), the val set, evaluate's kw."""
    from train.data import load_pair
    from train.perceptual import load_perceptual

    _, val_set = load_pair(val_npy, val_npy)
    model = _model()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    perceptual, _ = load_perceptual("auto", ("relu1_2",))
    kw = dict(weights=TrainConfig().loss_weights(1e-3), weight_map=center_weight_map(64, center_weight=3.0),
              perceptual=perceptual, device=torch.device("cpu"), grid_images=4)
    return model, val_set, kw


@pytest.mark.slow
def test_the_runs_val_feature_cache_is_as_big_as_its_flag_and_0_keeps_nothing(tmp_path, npy, monkeypatch):
    """--val-feature-cache-mb sets the loop's cache (0 = off, for a run at the edge of its device memory); the
    val numbers are the same either way, and a resume may change it (how the steps run, not what)."""
    import train.loop as loop
    from train.__main__ import main as train_main
    from trainhelp import run_of

    made = []

    class Recorded(loop.ValFeatureCache):
        def __init__(self, budget: int) -> None:
            super().__init__(budget)
            made.append(self)

    monkeypatch.setattr(loop, "ValFeatureCache", Recorded)
    vals = []
    for version, mb in enumerate((0, 256)):
        assert train_main(tiny_argv(tmp_path, npy, epochs=2, val_feature_cache_mb=mb)) == 0
        assert made[-1].budget == mb * 2**20 and (len(made[-1]) == 0) == (mb == 0)
        vals.append({t: [v for _, v, _ in rows] for t, rows in read_events(run_of(tmp_path, version))["scalars"].items()
                     if t.startswith("val/")})
    assert vals[0] == vals[1] and vals[0]["val/perceptual"]
    assert train_main(["--resume", str(ckpt_of(tmp_path, 1)), "--epochs", "3", "--val-feature-cache-mb", "0"]) == 0
    assert made[-1].budget == 0


@pytest.mark.slow
def test_validation_sharded_over_two_ranks_equals_the_single_process(tmp_path, npy):
    # 8 val images: batches of 3 (rank 0 takes batches 0 and 2, rank 1 batch 1), of 8 (rank 1 has none), of 2.
    proc = _torchrun(_EVAL_SCRIPT, [str(npy[1]), str(tmp_path / "ddp.pt")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(tmp_path / "ddp.pt", weights_only=False)
    for bs in (3, 8, 2):
        val, kl_dims, grid = saved["single"][bs]
        dval, dkl, dgrid = saved["ddp"][bs]
        assert set(dval) == set(val)
        for k, v in val.items():
            if k == "recon_spread":  # its per-pixel float64 sums are added per rank first
                assert dval[k] == pytest.approx(v, rel=1e-12), (bs, k)
            else:
                assert dval[k] == v, (bs, k, dval[k], v)
        assert torch.equal(dkl, kl_dims) and torch.equal(dgrid, grid)


_SIGNAL_SCRIPT = """
    import os, signal, sys
    import train.loop as loop
    real, calls = loop.train_step, []

    def step(*a, **kw):
        calls.append(1)
        if len(calls) == 1 and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGINT)  # rank 1 alone sees a signal, during its step 0
        return real(*a, **kw)

    loop.train_step = step
    from train.__main__ import main
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_signal_on_one_rank_stops_both_at_the_next_check(tmp_path, npy):
    # 16 images over 2 ranks, batch 2: 4 steps per epoch; checks after step 3 and at the epoch's end.
    argv = tiny_argv(tmp_path, npy, epochs=2, device="cpu", batch_size=2, sync_every=3)
    proc = _torchrun(_SIGNAL_SCRIPT, argv, tmp_path)
    assert proc.returncode != 0
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("Interrupted: ")]
    assert any(ln.startswith("Interrupted: SIGINT: stopped after step 3") for ln in ours), proc.stderr[-3000:]
    assert any(ln.startswith("Interrupted: stopped by another rank: stopped after step 3") for ln in ours), ours
    ckpt = load_checkpoint(ckpt_of(tmp_path))
    assert (ckpt["state"]["global_step"], ckpt["state"]["batch_in_epoch"]) == (3, 3)
    assert steps_of(read_events(ckpt["run_dir"]), "train/loss") == [0, 1, 2]


# --- bench/gpu.py ---------------------------------------------------------------------------------------


def test_bench_gpu_is_left_out_of_make_bench_without_cuda():
    from bench import __main__ as bench_main
    from bench.gpu import skip_in_all

    assert "gpu" in bench_main._modules()
    if not torch.cuda.is_available():
        assert "no CUDA device here" in skip_in_all()


@pytest.mark.slow
def test_bench_gpu_runs_on_cpu_and_writes_json(tmp_path, capsys, monkeypatch):
    from bench.gpu import main

    assert main(["--quick", "--device", "cpu", "--image-size", "32", "--batch-size", "2", "--base-channels", "8",
                 "--latent-dim", "64", "--perceptual-every", "2", "--steps", "2",
                 "--json", str(tmp_path / "bench_gpu.json")]) == 0
    out = capsys.readouterr().out
    assert "no CUDA device here" in out and "images/s" in out and "skipped (on a CPU the first compile" in out
    res = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert set(res["variants"]) == {"fp32", "bf16", "fp32 channels_last", "bf16 channels_last"}
    assert all(v["images_per_s"] > 0 for v in res["variants"].values())
    assert set(res["terms"]["fp32"]) == {"model", "recon", "perceptual", "ssim_loss", "edge", "kl", "adam"}
    shares = [v["share_average_step"] for v in res["terms"]["bf16"].values()]
    assert sum(shares) == pytest.approx(1.0)


@pytest.mark.parametrize("precision, channels_last", [("fp32", False), ("bf16", True)])
def test_val_targets_perceptual_features_are_computed_once_with_the_same_numbers(npy, precision, channels_last,
                                                                                monkeypatch):
    """The loop's ValFeatureCache: from the second validation on, the trunk runs on the reconstructions alone
    (half the perceptual term's cost every epoch) and every val number is the uncached one, bit for bit; a
    cache over its budget keeps nothing and changes nothing."""
    from train.evaluate import ValFeatureCache
    from train.perceptual import PerceptualDistance

    model, val_set, kw = eval_setup(npy[1])
    kw.update(precision=precision, channels_last=channels_last, batch_size=3)  # 8 images: batches 0, 1, 2
    runs = []
    real = PerceptualDistance._taps
    monkeypatch.setattr(PerceptualDistance, "_taps", lambda self, x: runs.append(len(x)) or real(self, x))
    plain = evaluate(model, val_set, **kw)
    assert sum(runs) == 2 * 8  # targets and reconstructions
    cache = ValFeatureCache()
    for epoch in range(3):
        runs.clear()
        cached = evaluate(model, val_set, features=cache, **kw)
        assert sum(runs) == (16 if epoch == 0 else 8)  # the targets' half once, then the reconstructions' only
        assert cached[0] == plain[0]  # every val scalar, exactly
        assert torch.equal(cached[1], plain[1]) and torch.equal(cached[2], plain[2])
    assert len(cache) == 3 and cache.nbytes > 0
    other = {**kw, "batch_size": 4}  # the same cache asked about other batches: never the wrong features
    assert evaluate(model, val_set, features=cache, **other)[0] == evaluate(model, val_set, **other)[0]
    none_kept = ValFeatureCache(budget=0)
    runs.clear()
    assert evaluate(model, val_set, features=none_kept, **kw)[0] == plain[0]
    assert len(none_kept) == 0 and sum(runs) == 16
