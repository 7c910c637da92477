'''In-process use: :class:`KLWatchdog` steers kl_weight from inside any training loop.

The same policies and guards as ``vaediag watch``, without a supervisor or a control file: the loop asks
the watchdog after each epoch and reads the weight back from it. Decisions go to ``watchdog.jsonl``
when a run directory is given.
'''

from __future__ import annotations

import os
from typing import Any, Mapping

from vaediag.watch.journal import Journal, decision_record
from vaediag.watch.policies import Decision, Policy, make_policy

__all__ = ["KLWatchdog"]


class KLWatchdog:
    """A policy, its guards and a journal, for any training loop.

    Args:
        policy: ``"ladder"``, ``"controlvae"``, ``"geco"`` or a :class:`~vaediag.watch.policies.Policy`.
        run_dir: where to append ``watchdog.jsonl`` (None: no journal).
        via: how decisions reach the training loop, as the journal records it (``in_process``; the Lightning
            callback says ``lightning``).
        profile: the ladder's profile, ``auto`` (the rules file's default), ``seed`` or ``generic``
            (:mod:`vaediag.diagnose.profiles`). ``auto`` is decided as ``vaediag check`` decides it, from the
            config.json in ``run_dir`` (vaediag's trainer's: seed; anything else, or no ``run_dir``: generic, the
            scale-free criteria without the seed's absolute KL limit and PSNR floor).
        **params: the policy's keyword arguments (``kl_weight``, ``target_kl``, ``target_psnr``,
            ``min_kl_weight``, ``max_kl_weight``, ``cooldown``, ...), validated at once.

    Example, a plain PyTorch loop (runs as written on random data)::

        import torch
        import torch.nn.functional as F
        from vaediag.watch import KLWatchdog

        torch.manual_seed(0)
        data = torch.rand(256, 64)                       # your data, in [0, 1]
        enc, dec = torch.nn.Linear(64, 2 * 8), torch.nn.Linear(8, 64)
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)

        def losses(x):
            mu, logvar = enc(x).chunk(2, dim=1)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            recon = torch.sigmoid(dec(z))
            mse = F.mse_loss(recon, x)
            kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()   # sum over dims, mean over batch
            return mse, kl

        watchdog = KLWatchdog("geco", kl_weight=1e-2, target_psnr=20.0, run_dir=None)  # or a run dir: journal
        for epoch in range(5):
            for x in data.split(32):
                mse, kl = losses(x)
                loss = mse + watchdog.kl_weight * kl       # the weight the watchdog decided
                opt.zero_grad(); loss.backward(); opt.step()
            with torch.no_grad():
                mse, kl = losses(data)
            psnr = -10 * torch.log10(mse).item()
            decision = watchdog.step(epoch, {"kl": kl.item(), "recon": mse.item(), "psnr": psnr})
            print(epoch, decision.action, decision.reason)
            if decision.action == "stop":
                break
        # checkpoint it with the model: torch.save({..., "watchdog": watchdog.state_dict()}, path)

    ``decision.action`` is ``keep``, ``set_kl_weight`` (``watchdog.kl_weight`` is the new value),
    ``switch_to_ae`` (use z = mu and ``watchdog.kl_weight`` = 0 from now on; ``watchdog.mode == "ae"``)
    or ``stop``.
    """

    def __init__(self, policy: str | Policy = "ladder", *, run_dir: str | os.PathLike[str] | None = None,
                 via: str = "in_process", profile: str | None = None, **params: Any) -> None:
        if isinstance(policy, Policy):
            if params or profile is not None:
                raise TypeError("pass policy parameters (and profile) to the policy, not to KLWatchdog, when giving an "
                                "instance")
            self.policy = policy
        else:
            if profile is not None:
                params["profile"] = profile  # make_policy says so when the policy has no profiles
            self.policy = make_policy(policy, **params)
        self.run_dir = run_dir
        self.journal = Journal(run_dir) if run_dir is not None else None
        self.via = via
        self.last: Decision | None = None
        # A policy handed over as an instance and no run directory: whatever its owner told it about its run stands
        # (one told nothing decides auto as generic at its first update).
        self._judged = isinstance(policy, Policy) and run_dir is None

    def judge(self, run_dir: str | os.PathLike[str] | None = None) -> str | None:
        """Decide the policy's profile for the run in ``run_dir`` (default: the watchdog's), as ``vaediag check``
        decides it (:func:`vaediag.watch.profile.judge_run`), and journal why; :meth:`step` calls it before the
        first decision. Returns that line, or None for a policy without profiles."""
        from vaediag.watch.profile import judge_run

        self._judged = True
        why = judge_run(self.policy, run_dir if run_dir is not None else self.run_dir)
        if why is not None and self.journal is not None:
            self.journal.event("profile", profile=self.policy.judged_by, why=why, via=self.via)
        return why

    @property
    def kl_weight(self) -> float:
        """The weight to train the next epoch with (0 in autoencoder mode)."""
        if self.policy.mode == "ae":
            return 0.0
        if self.policy.kl_weight is None:
            raise ValueError("the watchdog does not know the kl_weight yet: pass kl_weight=... when creating it")
        return self.policy.kl_weight

    @property
    def mode(self) -> str:
        """``vae`` or ``ae`` (Option B: z = mu, no KL term)."""
        return self.policy.mode

    def step(self, epoch: int, metrics: Mapping[str, float], *, apply: bool = True, **extra: Any) -> Decision:
        """Decide after ``epoch`` (0-based) from its validation metrics (canonical terms: kl, recon, psnr ...).

        ``apply=False`` (a dry run): the decision is journalled as not applied, with ``note``.
        ``extra``: more fields for the journal line."""
        if not self._judged:
            self.judge()
        decision = self.policy.update(epoch, metrics)
        self.last = decision
        if self.journal is not None:
            acts = decision.changes or decision.action == "stop"  # a stop is carried out by the loop, as a change
            if acts and not apply:
                extra.setdefault("note", "dry run")
            self.journal.append(decision_record(decision, metrics=metrics, policy=self.policy,
                                                applied=acts and apply, via=self.via, **extra))
        return decision

    def state_dict(self) -> dict[str, Any]:
        """The policy's state: save it with your checkpoint, restore with :meth:`load_state_dict`."""
        return {"policy": self.policy.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
