"""The run's directories: ``version_N`` claimed with an atomic mkdir, its checkpoint directory, and the
handshake file that tells the watchdog where the run went.

``<logdir>/<name>/version_N/`` (N = the next free number of the log tree; nothing is ever deleted or
overwritten) holds the event files, ``config.json`` and ``hparams.yaml``; its checkpoints go beside it in
``version_N/checkpoints/`` (Lightning's name), or with an explicit ``--checkpoint-dir DIR`` in
``DIR/<project>/<name>/version_N/`` (a directory already there, another run's, is never written into:
``version_N_2``, ``_3``, ... instead, said in one line). When ``VAEDIAG_RUN_DIR_FILE`` is set, rank 0 writes the
absolute run directory + newline to that file (temp + rename) right after creating it, before the first step.
"""

from __future__ import annotations

import os
from pathlib import Path

from vaediag.atomic import atomic_write
from vaediag.errors import InputError
from vaediag.sanitize import path_text
from vaediag.watch.control import RUN_CHECKPOINT_DIR, RUN_DIR_FILE_ENV

from train.config import TrainConfig

__all__ = ["CHECKPOINT_SUBDIR", "run_version", "new_version_dirs", "announce_run_dir"]

#: The folder of a run directory that holds its checkpoints (the default layout, Lightning's name).
CHECKPOINT_SUBDIR = RUN_CHECKPOINT_DIR


def run_version(p: Path) -> int:
    name = p.name
    return int(name[len("version_"):]) if name.startswith("version_") and name[len("version_"):].isdigit() else -1


def new_version_dirs(cfg: TrainConfig) -> tuple[Path, Path, str | None]:
    """Claim ``version_N`` (the next free N of the log tree, nothing else) with an atomic mkdir, never reusing
    one, and make its checkpoint directory. Returns ``(run_dir, ckpt_dir, note)``.

    By default the checkpoints live beside the run, in ``version_N/checkpoints``. An explicit
    ``checkpoint_dir`` gives ``DIR/<project>/<name>/version_N``; that directory is made with an exclusive
    mkdir too, and when it already exists (another logdir of the same basename sharing DIR, or a tree left
    from runs whose logs are gone) the run takes ``version_N_2``, ``version_N_3``, ... instead and ``note``
    says so: another run's last.pt is never overwritten, and its versions never push this logdir's on.
    """
    base = Path(cfg.logdir) / cfg.name
    ckpt_base = Path(cfg.checkpoint_dir) / cfg.project / cfg.name if cfg.checkpoint_dir else None
    base.mkdir(parents=True, exist_ok=True)
    if ckpt_base is not None:
        ckpt_base.mkdir(parents=True, exist_ok=True)  # before a version is claimed: a bad --checkpoint-dir leaves none
    n = max((run_version(p) for p in base.iterdir()), default=-1) + 1
    while True:
        run_dir = base / f"version_{n}"
        try:
            run_dir.mkdir()  # atomic: of two runs racing for N, exactly one succeeds
            break
        except FileExistsError:
            n += 1
    if ckpt_base is None:
        ckpt_dir = run_dir / CHECKPOINT_SUBDIR
        ckpt_dir.mkdir()
        return run_dir.resolve(), ckpt_dir.resolve(), None
    wanted = ckpt_base / f"version_{n}"
    ckpt_dir, k = wanted, 1
    while True:
        try:
            ckpt_dir.mkdir()  # exclusive: a directory that exists is someone else's
            break
        except FileExistsError:
            k += 1
            ckpt_dir = ckpt_base / f"version_{n}_{k}"
    note = None
    if k > 1:
        note = (f"warning: checkpoint directory {wanted.resolve()} already exists (another run's: a logdir of the same "
                f"name '{cfg.project}' sharing --checkpoint-dir, or older runs); it is left alone and this run's "
                f"checkpoints go to {ckpt_dir.resolve()}")
    return run_dir.resolve(), ckpt_dir.resolve(), note


def announce_run_dir(run_dir: Path) -> None:
    """Print the run directory and, for the watchdog, write it to ``$VAEDIAG_RUN_DIR_FILE``."""
    target = os.environ.get(RUN_DIR_FILE_ENV)
    if target:
        p = Path(target)
        try:
            atomic_write(p, f"{run_dir}\n")
        except OSError as exc:
            raise InputError(f"cannot write the run directory to ${RUN_DIR_FILE_ENV}={target}: {exc}") from None
    print(f"run directory: {path_text(run_dir)}", flush=True)  # a name as typed: escapes visible
