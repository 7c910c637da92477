"""The watchdog's profile for a run, decided as ``vaediag check`` decides it: from the run's config.json, read
by check's own reader (:func:`vaediag.logs.reader.read_run_metadata`), through
:func:`vaediag.diagnose.profiles.decide_profile`. ``vaediag watch`` (supervisor and follower), ``KLWatchdog``
and the Lightning callback call :func:`judge_run` before their policy's first decision on a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vaediag.diagnose.profiles import profile_reason

__all__ = ["run_config", "judge_run"]


def run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's config.json as ``vaediag check`` reads it ({} when it has none or it cannot be read)."""
    from vaediag.logs.reader import RunInfo, read_run_metadata  # pandas: only once there is a run

    path = Path(run_dir)
    info = RunInfo(run=path.name, path=path)
    read_run_metadata(path, info)
    return dict(info.config)


def judge_run(policy: Any, run_dir: str | os.PathLike[str] | None) -> str | None:
    """Tell ``policy`` which run it judges (``run_dir``; None: a loop with no run directory, judged as a run
    without a config.json of vaediag's trainer). Returns one line saying which profile judges it and why, or
    None for a policy without profiles (controlvae, geco: their targets are the user's)."""
    if not getattr(policy, "has_profiles", False):
        return None
    config = run_config(run_dir) if run_dir is not None else None
    judged = policy.for_run(config)
    if judged is None:
        return None
    return profile_reason(getattr(policy, "profile", judged), config=config)
