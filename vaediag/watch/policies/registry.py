"""Policies by name: the table of policies, :func:`make_policy` (validated keyword arguments, defaults from a
rules file) and :func:`parse_param` (a command-line ``KEY=VALUE``, typed)."""

from __future__ import annotations

from typing import Any

from vaediag.errors import UsageError
from vaediag.watch.policies.base import Policy, policy_defaults
from vaediag.watch.policies.controlvae import ControlVAEPolicy
from vaediag.watch.policies.geco import GECOPolicy
from vaediag.watch.policies.ladder import LadderPolicy

__all__ = ["POLICIES", "make_policy", "parse_param"]

POLICIES: dict[str, type[Policy]] = {p.name: p for p in (LadderPolicy, ControlVAEPolicy, GECOPolicy)}


def make_policy(name: str, *, rules: Any = None, **params: Any) -> Policy:
    """Build a policy by name with validated keyword arguments.

    ``rules`` (a :class:`vaediag.diagnose.rulesfile.Rules`, e.g. from ``--rules FILE``): parameters not given
    default to that file's thresholds (:func:`policy_defaults`) instead of the packaged ones, so ``check``
    and ``watch`` judge a run by the same file.

    Raises:
        UsageError: unknown policy or parameter, or a bad value (the message quotes it and the valid set).
    """
    cls = POLICIES.get(name)
    if cls is None:
        raise UsageError(f"unknown policy {name!r} (choose {', '.join(POLICIES)})")
    unknown = [k for k in params if k not in cls.param_types]
    if unknown:
        raise UsageError(
            f"policy {name!r} has no parameter {unknown[0]!r} (choose {', '.join(sorted(cls.param_types))})"
        )
    if rules is not None:
        params = cls.with_rules_defaults(policy_defaults(rules), params)
    return cls(**params)


def parse_param(policy: str, item: str) -> tuple[str, Any]:
    """Parse a command-line ``KEY=VALUE`` for ``policy`` into a typed ``(key, value)``.

    >>> parse_param("ladder", "reduce_at=2")
    ('reduce_at', 2)
    """
    cls = POLICIES.get(policy)
    if cls is None:
        raise UsageError(f"unknown policy {policy!r} (choose {', '.join(POLICIES)})")
    key, sep, raw = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise UsageError(f"policy parameter {item!r} must look like KEY=VALUE (e.g. reduce_at=2)")
    typ = cls.param_types.get(key)
    if typ is None:
        raise UsageError(
            f"policy {policy!r} has no parameter {key!r} (choose {', '.join(sorted(cls.param_types))})"
        )
    raw = raw.strip()
    if raw.lower() in ("none", "off") and typ is float:
        return key, None
    try:
        if typ is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return key, raw.lower() in ("true", "1", "yes")
        return key, typ(raw)
    except ValueError:
        raise UsageError(f"policy parameter {key} must be {'an integer' if typ is int else typ.__name__}, "
                         f"got {raw!r}") from None
