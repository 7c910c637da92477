"""Integrations with the tools users train in: one module per tool, each an optional extra that imports its tool
(and torch) itself. Nothing here is imported by ``vaediag`` or its command line (``tests/test_no_torch.py``).

- :mod:`vaediag.integrations.lightning`: ``KLWatchdogCallback``, the watchdog inside ``Trainer.fit``
  (``pip install 'vaediag[lightning]'``);
- :mod:`vaediag.integrations.gradients`: each loss term's gradient norm and share at the latent head (torch);
- :mod:`vaediag.integrations.optuna`: each epoch's diagnosis reported to a trial, failing trials pruned
  (``pip install 'vaediag[optuna]'``).
"""
