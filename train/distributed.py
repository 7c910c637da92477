"""The processes of a run under ``torchrun``, and how they agree.

:class:`Dist` says which process this is; :func:`init_distributed` joins the process group (NCCL on CUDA, gloo
on the CPU). The loop's own collectives are small: :func:`agree` maxes a few numbers over every process in
one all_reduce, so every rank takes the same branch (stop on a signal, a non-finite step, a failed write), and
:func:`together` runs a function on every rank and makes every rank raise when any of them failed, so no rank
is left waiting in a collective for one that has gone.

Why torchrun DDP and not Lightning Fabric (or Accelerate): DDP already works here and is tested (gloo on CPU,
NCCL on CUDA), it costs no dependency, and the loop's linear shape, its checkpoint format (loadable with
``weights_only=True``) and its agreement between ranks stay as they are. What Fabric adds beyond that (FSDP,
multi-node launchers, plugins) is not needed for a model of a few million parameters that fits one GPU
many times over; its precision and compile switches are the trainer's ``--precision``, ``--channels-last`` and
``--compile`` (train/device.py).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from vaediag.errors import VaediagError

__all__ = ["Dist", "init_distributed", "agree", "any_rank", "step_code", "step_of", "failure_code", "elsewhere",
           "together", "leave"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_spec: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def _collective_device(d: Dist) -> torch.device:
    """Where the small tensors of this loop's own collectives live (NCCL needs CUDA, gloo takes CPU)."""
    if d.enabled and dist.get_backend() == "nccl":
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def agree(d: Dist, *values: float) -> list[float]:
    """Each value maxed over every process (one all_reduce), so all ranks take the same branch; in a single
    process, the values themselves."""
    if not d.enabled:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device(d))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank when any rank saw a signal (so all stop at the same step)."""
    return agree(d, 1.0 if flag else 0.0)[0] > 0


# A step travels through MAX as _STEP_BASE - step, so the earliest bad step of any rank wins.
_STEP_BASE = float(2**52)


def step_code(step: int | None) -> float:
    return 0.0 if step is None else _STEP_BASE - step


def step_of(code: float) -> int | None:
    return None if code <= 0 else int(_STEP_BASE - code)


def failure_code(exc: BaseException | None) -> float:
    return float(getattr(exc, "exit_code", 1) or 1) if exc is not None else 0.0


def elsewhere(code: float) -> VaediagError:
    """What a rank raises when another one failed (that one prints why)."""
    return VaediagError("stopped: another process of this run failed (its message says why)", exit_code=int(code))


def together(d: Dist, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on every process; when it raises a VaediagError on any of them, every process raises, so
    no rank is left waiting in a collective for one that has gone."""
    failure: VaediagError | None = None
    result = None
    try:
        result = fn()
    except VaediagError as exc:
        failure = exc
    worst = agree(d, failure_code(failure))[0]
    if failure is not None:
        raise failure
    if worst:
        raise elsewhere(worst)
    return result


def leave(d: Dist, *, agreed: bool) -> None:
    """Leave the process group at the end of :func:`train.loop.train` (nothing in a single process).

    ``agreed``: every rank ends here at the same point (a result, or an error all of them raise). Then no rank
    tears its process group down while another may still communicate: the last collective can complete on
    one rank before its peer is done with it, and a peer whose connections close under it can be aborted by
    gloo ("terminate called ..."). Whatever still holds the process group (a DDP wrapper in a traceback's
    reference cycle) goes now, while the interpreter is whole: gloo objects freed during interpreter shutdown
    abort the process ("terminate called without an active exception", SIGABRT) after its work is done.
    """
    if not (d.enabled and dist.is_initialized()):
        return
    if agreed:
        try:
            dist.barrier()
        except Exception:
            pass
    gc.collect()
    dist.destroy_process_group()
    gc.collect()
