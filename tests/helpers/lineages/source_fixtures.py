"""The small tree of metrics logs committed under tests/fixtures/sources (the README's `vaediag check` example
on logs that are not event files). Written by the lineage generators; tests/logs/test_logs_sources.py checks
that the committed files are byte for byte what this writes.

    PYTHONPATH=tests/helpers python -m lineages.source_fixtures tests/fixtures/sources     # regenerate
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from lineages import write_hf_trainer, write_lightning, write_wandb_export


def write_all(root: Path) -> Path:
    """lightning/lightning_logs/version_0 (CSVLogger), hf/vae-out (trainer_state.json and its last checkpoint),
    wandb/history.csv (run.history().to_csv)."""
    root = Path(root)
    write_lightning(root / "lightning", epochs=6, logger="csv", post_fit_test=False)
    write_hf_trainer(root / "hf", epochs=4, steps_per_epoch=20, logging_steps=5, tensorboard=False,
                     trainer_state=True, save_total_limit=1)
    write_wandb_export(root / "wandb", epochs=5, steps_per_epoch=40)
    return root


if __name__ == "__main__":
    out = Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    write_all(out)
    print("\n".join(str(p.relative_to(out)) for p in sorted(out.rglob("*")) if p.is_file()))
