"""For the report tests: a run under the watchdog (real event files and journal), run directory names that
break markdown, and the CLI called in-process. The seed's runs are seedruns.py's."""

from __future__ import annotations

import math
from pathlib import Path

from seedruns import SEED, write_trainer_run


def run_cli(*argv: str) -> int:
    """``vaediag`` in-process (the CLI boundary: exit code, messages on stderr), restoring sys.argv."""
    import sys

    from vaediag.cli import main

    saved = sys.argv[:]
    try:
        return main(list(argv))
    finally:
        sys.argv = saved


# Run directory names with every character that can break a markdown table or format a line.
SPECIAL_NAMES = ("a|b*c*", "x_[y](z)`q`<b>&amp;~~s~~$m$")


def write_supervised_run(run_dir: Path, *, epochs: int = 40, start_kl_weight: float = 1e-5,
                         grid_tag: str | None = None) -> Path:
    """A run under the watchdog: the real ladder policy decides after every epoch from the run's own val
    metrics, each decision goes to a real ``watchdog.jsonl`` (the watchdog's Journal), and a change shows
    in the logged kl_weight from the next epoch, as the training loop applies control.json."""
    from vaediag.watch.journal import Journal, decision_record
    from vaediag.watch.policies import LadderPolicy

    policy = LadderPolicy(kl_weight=start_kl_weight)
    # KL sits at ~1,550 under the first weight; once the weight drops it relaxes towards ~300.
    kl, recon, psnr, sharp = [], [], [], []
    kl_weights = []
    current = start_kl_weight
    changed_at = None
    seq = 0
    run_dir.mkdir(parents=True, exist_ok=True)
    with Journal(run_dir / "watchdog.jsonl") as journal:
        for e in range(epochs):
            kl_weights.append(current)
            if changed_at is None:
                kl.append(1500.0 + 40.0 * math.sin(e))
            else:
                kl.append(300.0 + 1200.0 * math.exp(-(e - changed_at) / 3.0))
            recon.append(0.04 + 0.2 * math.exp(-e / 6.0))
            psnr.append(32.0 - 12.0 * math.exp(-e / 6.0))
            sharp.append(0.9 - 0.5 * math.exp(-e / 6.0))
            d = policy.update(e, {"kl": kl[-1], "recon": recon[-1], "psnr": psnr[-1], "sharpness": sharp[-1]})
            if d.changes:
                seq += 1
                current = d.kl_weight
                changed_at = e + 1
            rec = decision_record(d, metrics={"kl": kl[-1], "psnr": psnr[-1]}, policy=policy, applied=d.changes,
                                  seq=seq if d.changes else None, via="control" if d.changes else None)
            journal.append(rec)
    ssim = [0.87 - 0.4 * math.exp(-e / 6.0) for e in range(epochs)]
    curves = {"kl": kl, "recon": recon, "perceptual": [0.2 + 2 * r for r in recon], "psnr": psnr, "ssim": ssim,
              "sharpness": sharp, "ssim_loss": [1.0 - s for s in ssim], "edge": [0.5 * r for r in recon],
              "psnr_grey": [p - 1.5 for p in psnr], "psnr_colour": [p + 0.8 for p in psnr],
              "ssim_grey": [s - 0.04 for s in ssim], "ssim_colour": [s + 0.02 for s in ssim], "kl_weight": kl_weights}
    config = dict(SEED["run3"]["config"], kl_weight=start_kl_weight, epochs=epochs)
    return write_trainer_run(run_dir, epochs=epochs, curves=curves, config=config, t0=1.73e9, grid_tag=grid_tag)
