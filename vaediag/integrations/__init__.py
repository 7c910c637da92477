"""Integrations with the frameworks users train in: each module imports its framework (and torch) itself.

Nothing here is imported by ``vaediag`` or its CLI: ``import vaediag.integrations.lightning`` (or
``.gradients``) is the user's choice, and brings Lightning and/or torch with it. The analysis layer stays
torch-free (``tests/test_no_torch.py``).

- :mod:`vaediag.integrations.lightning`: ``KLWatchdogCallback``, the watchdog inside ``Trainer.fit``;
- :mod:`vaediag.integrations.gradients`: each loss term's gradient norm and share at the latent head.
"""
