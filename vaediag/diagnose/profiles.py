"""Which checklist judges a run: its profile, decided once, in plain Python (no pandas), for ``vaediag check``,
``vaediag report`` and every watchdog (``vaediag watch``, ``KLWatchdog``, the Lightning callback).

* ``seed``: the seed's absolute numbers on top of the scale-free criteria: the KL band (``[kl] target``,
  "KL < 500"), the PSNR floors and milestone epochs of its checklist.
* ``generic``: the scale-free criteria only (trend, penalty share, collapse per latent dim where the
  convention is known, blur by gradient similarity, divergence, learning rate, dead model).
* ``auto`` (the rules file's ``[profiles] default``): ``seed`` for runs of vaediag's trainer (a config.json
  with its data and weight fields), ``generic`` for everyone else's.

    >>> decide_profile("auto", config={"train_npy": "t.npy", "val_npy": "v.npy", "kl_weight": 1e-2, "latent_dim": 512})
    'seed'
    >>> decide_profile("auto", config=None)
    'generic'
"""

from __future__ import annotations

from typing import Any, Mapping

from vaediag.errors import UsageError

__all__ = ["PROFILES", "OUR_CONFIG_FIELDS", "is_our_run", "resolve_profile", "decide_profile", "profile_reason"]

#: The names ``--profile`` takes.
PROFILES = ("auto", "seed", "generic")

#: The fields of a config.json that make a run vaediag's trainer's.
OUR_CONFIG_FIELDS = ("train_npy", "val_npy", "kl_weight", "latent_dim")


def is_our_run(config: Mapping[str, Any] | None) -> bool:
    """True when a config.json looks like vaediag's trainer's (it has the trainer's data and weight fields)."""
    return bool(config) and all(k in config for k in OUR_CONFIG_FIELDS)


def resolve_profile(name: str, *, ours: bool) -> str:
    """``seed`` or ``generic`` for a run: ``auto`` is the seed's profile for runs of vaediag's trainer only.

    Raises:
        UsageError: an unknown profile name.
    """
    if name not in PROFILES:
        raise UsageError(f"unknown profile {name!r} (choose {', '.join(PROFILES)})")
    if name == "auto":
        return "seed" if ours else "generic"
    return name


def decide_profile(name: str, *, config: Mapping[str, Any] | None) -> str:
    """The profile ``name`` (the user's ``--profile``, else the rules file's default) means for the run whose
    config.json (as the reader reads it; None or {} when it has none) is ``config``."""
    return resolve_profile(name, ours=is_our_run(config))


def profile_reason(name: str, *, config: Mapping[str, Any] | None) -> str:
    """Why the run is judged by the profile :func:`decide_profile` gives, in words."""
    judged = decide_profile(name, config=config)
    if name != "auto":
        return f"{judged} profile: asked for (--profile {name})"
    if judged == "seed":
        return "seed profile: a run of vaediag's trainer (its config.json)"
    return ("generic profile: not a run of vaediag's trainer (no config.json with "
            f"{', '.join(OUR_CONFIG_FIELDS)}); the seed profile (--profile seed) would add the seed's absolute "
            "KL limit and PSNR floor")
