"""The project config latent-diffusion's ``main.py`` saves beside its logs.

``main.py`` writes ``<logdir>/configs/<now>-project.yaml`` (the model, its loss config with ``kl_weight``,
``disc_weight``, ``embed_dim``...) and logs through ``TestTubeLogger(name="testtube", save_dir=logdir)``,
so the event files sit in ``<logdir>/testtube/version_0/tf/``, up to three levels below the config. Without
it the KL weight of such a run is unknown (the arithmetic cannot prove a weight of 1e-6 against a total of
~1e3 in float32). The file is used only when it is what it claims: a ``configs/*-project.yaml`` holding a
``model`` with ``params`` (the newest by name when several are there, as each restart writes one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaediag.errors import InputError, VaediagError
from vaediag.logs.notes import Note, NoteKind
from vaediag.safeio import read_text
from vaediag.structured import loads_yaml

__all__ = ["find_project_config", "project_config_note", "read_project_config", "MAX_LEVELS"]

MAX_LEVELS = 3  # tf/ -> version_0/ -> testtube/ -> logdir


def find_project_config(run_dir: Path) -> Path | None:
    """The newest ``configs/*-project.yaml`` in the run directory or up to :data:`MAX_LEVELS` above it."""
    d = Path(run_dir)
    for _ in range(MAX_LEVELS + 1):
        cfg_dir = d / "configs"
        try:
            found = sorted(p for p in cfg_dir.glob("*-project.yaml") if p.is_file()) if cfg_dir.is_dir() else []
        except OSError:
            found = []
        if found:
            return found[-1]
        if d.parent == d:
            break
        d = d.parent
    return None


def project_config_note(run_dir: Path) -> tuple[dict[str, Any], Note | None]:
    """``(config, note)``: the project config's content ({} when none or not a model config) and a note
    saying where the parameters came from (``project_config``) or why the file was ignored
    (``project_config_ignored``); None when there is no such file."""
    path = find_project_config(run_dir)
    if path is None:
        return {}, None
    try:  # safeio: regular files only, capped; structured: no alias bombs, no runaway nesting
        data = loads_yaml(read_text(path, what="project config"), where=path.name, error=InputError)
    except VaediagError as exc:
        return {}, Note(NoteKind.PROJECT_CONFIG_IGNORED, None, f"{path.name} ignored: {exc.message}")
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("params"), dict):
        return {}, None
    return data, Note(NoteKind.PROJECT_CONFIG, None,
                      f"parameters from the project config {path} (latent-diffusion's main.py)")


def read_project_config(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """:func:`project_config_note` with the note's text."""
    data, note = project_config_note(run_dir)
    return data, None if note is None else note.message
