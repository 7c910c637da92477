"""Where and how the steps run: the device, bf16 autocast, the checks' cadence, Adam's kernel, and what a
``torch.compile`` failure looks like.

On a GPU (ARCHITECTURE, issue 11): ``--precision bf16`` runs the model's forward pass and the VGG trunk under
bfloat16 autocast (the loss terms are reduced in fp32; bf16 keeps fp32's exponent range, so no grad scaler),
``--channels-last`` keeps model, trunk and batches in channels_last memory format, ``--compile`` wraps the model
(or its DDP wrapper) in ``torch.compile``, Adam is the fused kernel on CUDA (plain on the CPU), the uint8 data
sit in GPU memory (or, too large, on the host, each batch pinned) and become float per batch there. The step
itself never waits for the GPU: the losses stay on the device until a check (``--sync-every`` steps: 1 on CPU,
20 on CUDA, and each epoch end), which moves them to the host in one transfer and agrees between the
processes, in one all_reduce, whether any saw a signal, a non-finite loss or a failed write. A signal
therefore stops the run at the next check. ``python -m bench gpu`` measures what each of these buys.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from vaediag.errors import ConfigError

from train.config import TrainConfig
from train.distributed import Dist

__all__ = ["resolve_device", "autocast", "in_precision", "sync_every", "make_optimizer", "fit_optimizer",
           "is_compile_error"]


def resolve_device(spec: str, d: Dist) -> torch.device:
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if spec == "cuda":
            raise ConfigError(f"--device cuda was requested but CUDA is not available to torch {torch.__version__} "
                              f"here; use --device cpu (or auto)")
        return torch.device("cpu")
    torch.cuda.set_device(d.local_rank)
    torch.backends.cuda.matmul.allow_tf32 = True  # conv VAEs gain speed and lose nothing visible
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", d.local_rank)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context of the forward passes: bfloat16 autocast on ``device``'s type for ``bf16``, nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def in_precision(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, device: torch.device,
                 precision: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``fn`` (the perceptual distance) called under :func:`autocast`; ``fn`` itself for fp32."""
    if fn is None or precision == "fp32":
        return fn

    def run(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return fn(recon, x)

    return run


def sync_every(cfg: TrainConfig, device: torch.device) -> int:
    """Steps between the loop's checks (``--sync-every``; 0 = 1 on the CPU, 20 on CUDA)."""
    return cfg.sync_every or (1 if device.type == "cpu" else 20)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam; the fused CUDA kernel on CUDA (one launch for every parameter), the plain one on the CPU."""
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


def fit_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """After loading a checkpoint's optimizer state: run it the way this run runs, whatever wrote it.

    ``load_state_dict`` takes the saved groups' ``fused`` flag and keeps the saved tensors' strides; a run
    resumed on another device or memory format must use its own: fused on CUDA only, ``step`` counters on
    the parameter's device when fused (on the CPU otherwise, where the plain Adam reads them without a
    GPU synchronisation), moment buffers in the parameter's memory format."""
    fused = device.type == "cuda"
    for group in optimizer.param_groups:
        group["fused"] = fused
        group["foreach"] = None
        for param in group["params"]:
            st = optimizer.state.get(param)
            if not st:
                continue
            for k, v in list(st.items()):
                if not isinstance(v, torch.Tensor):
                    continue
                if k == "step":
                    st[k] = v.to(device=param.device if fused else "cpu", dtype=torch.float32)
                elif v.shape == param.shape and v.stride() != param.stride():
                    st[k] = torch.empty_like(param).copy_(v)


def is_compile_error(exc: BaseException) -> bool:
    """An error raised by torch.compile's machinery (dynamo, inductor, or the compiler they call)."""
    mod = type(exc).__module__ or ""
    if mod.startswith(("torch._dynamo", "torch._inductor")):
        return True
    return isinstance(exc, ImportError) and "triton" in str(exc)
