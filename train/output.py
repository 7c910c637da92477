"""What the run prints (rank 0 only): the lines at its start, the progress bar, one line per epoch.

Information goes to stdout, warnings to stderr, each flushed, so the watchdog and a terminal see them at once.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from vaediag import terms

from train.config import TrainConfig
from train.device import sync_every
from train.prepare import Prepared

__all__ = ["Out", "PERCEPTUAL_OFF", "say_how_it_runs", "cadence_clause", "device_line", "resume_line",
           "progress_bar", "epoch_line"]

#: What a run without a perceptual trunk says at its start (on stderr).
PERCEPTUAL_OFF = ("WARNING: the perceptual loss is DISABLED (--perceptual-weights none): reconstructions will be "
                  "judged by pixels, SSIM and edges only; the logs record it under "
                  f"{terms.BACKBONE_TEXT_TAG}")


class Out:
    """Prints for rank 0; the other ranks' calls print nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def info(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)

    def warn(self, msg: str) -> None:
        if self.enabled:
            print(msg, file=sys.stderr, flush=True)


def say_how_it_runs(out: Out, prep: Prepared, *, resumed: bool) -> tuple[str, str | None]:
    """Print the perceptual trunk and its cadence, the device and, after a resume, where it went on (with
    the notes of the resume). Returns the cadence clause and the resume line, for the event log."""
    cfg, device = prep.cfg, prep.device
    if prep.perceptual is None:
        out.warn(PERCEPTUAL_OFF)
    else:
        out.info(f"perceptual backbone: {prep.backbone.description}")
    cadence = cadence_clause(cfg.perceptual_every) if prep.perceptual is not None else ""
    if cadence:
        out.info("perceptual term" + cadence)
    placements = {prep.train_set.placement, prep.val_set.placement}
    out.info(device_line(cfg, device, placements, sync_every(cfg, device)))
    line = None
    if resumed:
        line = resume_line(cfg, prep.state, prep.changed, prep.runtime_changed)
        out.info(line)
        for note in prep.notes:
            out.info(note)
    return cadence, line


def cadence_clause(every: int) -> str:
    """How the perceptual term is computed under ``--perceptual-every`` (a clause; '' for every step)."""
    if every <= 1:
        return ""
    return (f"; computed on one step in {every} (global step % {every} == 0) at {every} x its weight, so its "
            f"expected contribution is unchanged; train/perceptual is logged on those steps only")


def device_line(cfg: TrainConfig, device: torch.device, placements: set[str], checks_every: int) -> str:
    """Where and how the steps run: device, precision, memory format, compile, Adam's kernel, where the images
    are, the checks' cadence."""
    how = [f"precision {cfg.precision}"] + (["channels_last"] if cfg.channels_last else []) + \
        (["torch.compile"] if cfg.compile else [])
    return (f"device {device}: {', '.join(how)}, Adam{' (fused)' if device.type == 'cuda' else ''}, "
            f"images on the {'/'.join(sorted(placements))}, checks every {checks_every} step(s)")


def resume_line(cfg: TrainConfig, state: Any, changed: dict[str, tuple[Any, Any]],
                runtime_changed: dict[str, tuple[Any, Any]]) -> str:
    """Where a resumed run goes on, and what its command changed (overrides, and how the steps run)."""
    msg = (f"resumed {cfg.resume} at step {state.global_step} (epoch {state.epoch}, "
           f"batch {state.batch_in_epoch})")
    if changed:
        msg += "; overrides: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
    if runtime_changed:
        msg += "; runs as: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in runtime_changed.items())
    return msg


def progress_bar(enabled: bool) -> Any:
    """A transient rich progress bar for the epoch's steps, or None (not a terminal, --quiet, not rank 0)."""
    if not enabled:
        return None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=True)


def epoch_line(epoch: int, epochs: int, step: int, train_last: dict[str, float], val: dict[str, float],
               seconds: float) -> str:
    """The one line each epoch ends with: its step, the last train loss, the val loss and metrics, its seconds."""
    parts = [f"epoch {epoch + 1}/{epochs}", f"step {step}"]
    if "loss" in train_last:
        parts.append(f"loss {train_last['loss']:.4f}")
    parts.append(f"val loss {val['loss']:.4f}")
    parts.append(f"kl {val['kl']:.4g}")
    if "perceptual" in val:
        parts.append(f"perceptual {val['perceptual']:.3f}")
    parts.append(f"psnr {val['psnr']:.2f} dB")
    parts.append(f"ssim {val['ssim']:.3f}")
    parts.append(f"{seconds:.1f} s")
    return " | ".join(parts)
