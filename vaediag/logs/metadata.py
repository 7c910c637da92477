"""A run directory's metadata files, read into its :class:`~vaediag.logs.runset.RunInfo`: ``hparams.yaml``
(Lightning), ``config.json`` (our trainer) and latent-diffusion's project config above it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from vaediag.errors import InputError, VaediagError
from vaediag.logs.runset import RunInfo
from vaediag.safeio import read_text
from vaediag.structured import loads_json, loads_yaml

__all__ = ["read_run_metadata"]


def read_run_metadata(path: Path, info: RunInfo) -> None:
    """Read hparams.yaml and config.json from a run directory into ``info`` (damage -> warnings), and a
    latent-diffusion project config above it (:mod:`vaediag.logs.projectconfig`).

    Both are read through :mod:`vaediag.safeio` (regular files only, never blocking, at most 1 MiB) and
    parsed by :mod:`vaediag.structured` (nesting, YAML aliases that expand without bound, cycles): a file
    that fails any of it is skipped with a note in ``info.warnings``; the run is still read.
    """
    _read_project_config(path, info)
    for name, loads in (("hparams.yaml", loads_yaml), ("config.json", loads_json)):
        f = path / name
        if not os.path.lexists(f):
            continue
        try:
            text = read_text(f, what=name, missing_ok=True)
            data = None if text is None else loads(text, where=name, error=InputError)
        except VaediagError as exc:
            info.warnings.append(f"{name} unreadable: {_detail(exc.message, name)}; ignored")
            continue
        if name == "hparams.yaml":
            info.hparams_yaml = data if isinstance(data, dict) else {}
        else:
            info.config = data if isinstance(data, dict) else {}


def _detail(message: str, name: str) -> str:
    """What is wrong, from a safeio/structured message about ``name``: ``"hparams.yaml '/abs/hparams.yaml' is
    a FIFO ...; pass a file"`` -> ``"a FIFO ..."`` (the warning names the run and the file already; the advice
    to pass another file does not apply to a file found in a log tree)."""
    n = re.escape(name)
    message = re.sub(rf"^(cannot read )?{n}( '.*?')?(: | is | )", "", message, count=1)
    return re.sub(r"(; pass a (text )?file| \(this is not the file you meant\))$", "", message)


def _read_project_config(path: Path, info: RunInfo) -> None:
    from vaediag.logs.projectconfig import project_config_note

    info.project_config, note = project_config_note(path)
    if note is not None:
        info.facts.append(note)
