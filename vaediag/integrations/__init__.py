"""Helpers for training code that uses torch: imported only by torch users, never by the analysis layer.

``import vaediag.cli`` and ``vaediag check`` never import this package (``tests/test_no_torch.py``);
its modules may import torch at their top. Each module stands alone: this file imports none of them.

* :mod:`vaediag.integrations.gradients`: each loss term's gradient at the latent head (norms, shares),
  for our trainer and for callbacks of other training loops.
"""
