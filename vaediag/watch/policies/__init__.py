"""Policies: small stateful objects that turn one epoch's metrics into a kl_weight decision.

Every policy has the same surface::

    policy = make_policy("ladder", kl_weight=1e-5, target_kl=500)
    decision = policy.update(epoch, {"kl": 1535.0, "recon": 0.111, "psnr": 23.9})
    decision.action      # "keep" | "set_kl_weight" | "switch_to_ae" | "stop"
    decision.kl_weight   # the weight to use from the next epoch on
    decision.reason      # "kl = 1535 > 500 after epoch 10: kl_weight 1e-05 -> 1e-06"
    state = policy.state_dict(); policy.load_state_dict(state)   # resumable

Modules: :mod:`.base` (:class:`Policy` with the metric checks and the guards every policy shares,
:class:`Decision`, argument validation, :func:`policy_defaults` from the rules file), one module per policy
(:mod:`.ladder`, :mod:`.controlvae`, :mod:`.geco`), and :mod:`.registry` (:func:`make_policy`,
:func:`parse_param`). Everything public is importable from here, as before the split.
"""

from __future__ import annotations

from vaediag.watch.policies.base import (ACTIONS, CHANGE_ACTIONS, DEFAULTS, Decision, MissingMetricWarning, Policy,
                                         policy_defaults)
from vaediag.watch.policies.controlvae import ControlVAEPolicy
from vaediag.watch.policies.geco import GECOPolicy, psnr_to_mse
from vaediag.watch.policies.ladder import LadderPolicy
from vaediag.watch.policies.registry import POLICIES, make_policy, parse_param

__all__ = [
    "ACTIONS",
    "CHANGE_ACTIONS",
    "POLICIES",
    "DEFAULTS",
    "policy_defaults",
    "Decision",
    "Policy",
    "LadderPolicy",
    "ControlVAEPolicy",
    "GECOPolicy",
    "make_policy",
    "parse_param",
    "psnr_to_mse",
    "MissingMetricWarning",
]
