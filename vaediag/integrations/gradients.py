"""Each loss term's gradient at the latent head: what the encoder feels from each term, not what it weighs.

A loss value says how large a term is; the optimiser moves along its gradient. A KL weighted 1e-5 may be
0.1 % of the loss value and still a third of the gradient that reaches the encoder's output, because the
KL's gradient with respect to ``mu`` and ``logvar`` does not pass through the decoder. This module measures,
for each **weighted** term ``L_t`` (as it enters the total loss):

* ``norm_t = || dL_t / dh ||_2``, ``h`` the latent head tensors (``mu`` and ``logvar``) flattened and
  concatenated, from ``torch.autograd.grad(L_t, h, retain_graph=True)``: one partial backward pass per term
  that requires grad, from the term down to the head only;
* ``share_t = norm_t / sum_j norm_j``: the share of the gradient magnitude at the head that comes from
  term ``t``. The shares lie in [0, 1] and add up to 1. The denominator is the sum of the norms, not the norm
  of the total gradient ``|| sum_j dL_j/dh ||``: terms that pull in opposite directions cancel in the total,
  so ``norm_t / ||total||`` can exceed 1 and the ratios do not add up to anything; the sum of norms
  apportions how much each term pushes, whatever the direction;
* ``cosine = <g_f, g_rest> / (|g_f| |g_rest|)`` for one focus term ``f`` (the KL by default) against the sum
  ``g_rest`` of the other terms' gradients: the direction the shares leave out. Near -1 the focus term
  undoes what the others ask of the head; near 0 it pulls sideways; near 1 along. It costs nothing extra:
  the vectors are already there.

Nothing else changes: gradients are taken with ``torch.autograd.grad`` (``.grad`` of the parameters is never
touched), the graph is retained for the step's own ``backward()``, no random numbers are drawn, and the
values reach the host in one transfer (one device synchronisation per call on a GPU).

Conventions: a term that does not require grad (computed under ``torch.no_grad()``: the trainer's terms of
weight 0, the KL in autoencoder mode) or that has no path to the head has norm 0, not an error. A gradient
with a NaN or infinite element gives norm NaN (logged as a warning through :mod:`logging`), the shares all
NaN, never an exception. Shares are undefined when every norm is 0 (nothing reaches the head): the
``shares`` dict is then empty; the cosine is None when either side is 0 or the focus term is absent.

Where to call it: after the forward pass and the loss terms, before ``backward()``, outside
``torch.no_grad()``. The head must lie on the autograd path from the input to the terms; under
``torch.compile`` a model's outputs come from one compiled node, so a reconstruction term has no path to
``mu`` there: measure with the uncompiled module (our trainer does, on its measurement steps). Under bf16
autocast pass the tensors the model returned (the ones the decoder consumed), not their float32 casts.

Our trainer (``train.loop``, ``--grad-share-every N``) and a Lightning callback both use it::

    from vaediag.integrations.gradients import term_gradients

    # in training_step, after the loss terms and before backward (weighted: {"recon": ..., "kl": beta * kl}):
    g = term_gradients(weighted, (mu, logvar))
    self.log_dict(g.scalars())      # train/grad_norm/<term>, train/grad_share/<term>, train/grad_cos/kl

The tags come from :func:`vaediag.terms.grad_tag`, so ``vaediag check`` reads them beside the loss values
and reports the KL's gradient share next to its value share.

    >>> import torch
    >>> mu, logvar = torch.tensor([1.0, 0.0], requires_grad=True), torch.zeros(2, requires_grad=True)
    >>> recon = (mu * torch.tensor([3.0, 4.0])).sum()          # value 3, gradient (3, 4) at mu
    >>> kl = 0.5 * (mu ** 2).sum()                             # value 0.5, gradient (1, 0) at mu
    >>> g = term_gradients({"recon": recon, "kl": kl}, (mu, logvar))
    >>> g.norms, round(g.shares["kl"], 4), round(g.cosine, 4)
    ({'recon': 5.0, 'kl': 1.0}, 0.1667, 0.6)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from vaediag.errors import GradientError
from vaediag.terms import grad_tag

__all__ = ["TermGradients", "term_gradients", "term_gradient_norms", "gradient_shares"]

_log = logging.getLogger(__name__)
# A library logs, the application decides where it goes: without a configured handler Python's last-resort
# handler would print the warning on stderr, a second line beside a diverged run's one-line error.
_log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class TermGradients:
    """The gradient of each weighted loss term at the latent head (definitions: module docstring).

    Attributes:
        norms: term -> L2 norm of its gradient at the head (0.0: no path; NaN: not finite), in the
            order of the ``terms`` mapping.
        shares: term -> its norm / the sum of the norms (add up to 1; all NaN when a norm is NaN; empty
            when every norm is 0).
        cosine: cosine between the focus term's gradient and the sum of the others', or None (focus
            absent or not given, either side 0); NaN when not finite.
        focus: the focus term of ``cosine``, or None.
    """

    norms: dict[str, float]
    shares: dict[str, float] = field(default_factory=dict)
    cosine: float | None = None
    focus: str | None = None

    def scalars(self, *, split: str = "train") -> dict[str, float]:
        """``{tag: value}`` as the trainer logs them: every norm (``train/grad_norm/<term>``), every share
        (``train/grad_share/<term>``) and the cosine (``train/grad_cos/<focus>``) when defined.

        Raises:
            ValueError: a term name with ``/`` in it, or a split other than train and val.
        """
        out = {grad_tag("grad_norm", t, split): v for t, v in self.norms.items()}
        out.update({grad_tag("grad_share", t, split): v for t, v in self.shares.items()})
        if self.cosine is not None and self.focus is not None:
            out[grad_tag("grad_cos", self.focus, split)] = self.cosine
        return out


def gradient_shares(norms: Mapping[str, float]) -> dict[str, float]:
    """``{term: norm / sum of norms}``; all NaN when a norm is not finite; ``{}`` when every norm is 0.

    >>> gradient_shares({"recon": 3.0, "kl": 1.0})
    {'recon': 0.75, 'kl': 0.25}
    >>> gradient_shares({"recon": 0.0, "kl": 0.0})
    {}
    """
    values = [float(v) for v in norms.values()]
    if not all(math.isfinite(v) for v in values):
        return {t: math.nan for t in norms}
    total = math.fsum(values)
    if total <= 0.0:
        return {}
    return {t: float(v) / total for t, v in norms.items()}


def term_gradient_norms(terms: Mapping[str, torch.Tensor], head: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, float]:
    """``{term: || d term / d head ||_2}`` for each scalar loss term: :func:`term_gradients` without the
    shares and the cosine (same conventions, same errors)."""
    return term_gradients(terms, head, focus=None).norms


def term_gradients(terms: Mapping[str, torch.Tensor], head: torch.Tensor | Sequence[torch.Tensor], *,
                   focus: str | None = "kl") -> TermGradients:
    """Norm and share of each weighted loss term's gradient at the latent head, and the focus term's cosine
    with the others (definitions and where to call it: module docstring).

    Args:
        terms: term name -> scalar tensor, each term as it enters the total loss (weight included). Names
            are free; ours are ``vaediag.terms.LOSS_TERMS`` (``recon``, ``perceptual``, ``ssim_loss``,
            ``edge``, ``kl``), which ``vaediag check`` reads back.
        head: the tensor(s) the gradients are taken at, e.g. ``(mu, logvar)``; each must require grad.
        focus: the term whose gradient the cosine compares with the sum of the others' (None: no cosine).

    Returns:
        A :class:`TermGradients`; its :meth:`~TermGradients.scalars` are the tags to log.

    Raises:
        GradientError: a term is not a scalar tensor, the head is empty or a head tensor does not require
            grad (called under ``torch.no_grad()``), or the graph was already freed (called after
            ``backward()``).
    """
    heads = _heads(head)
    names = list(terms)
    for name in names:
        t = terms[name]
        if not isinstance(t, torch.Tensor) or t.numel() != 1:
            what = f"a tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise GradientError(f"loss term {name!r} must be a scalar tensor, got {what}")
    if not names:
        return TermGradients(norms={}, focus=focus)
    device = heads[0].device
    vectors: dict[str, torch.Tensor | None] = {}  # None: no gradient reaches the head (norm 0)
    for name in names:
        vectors[name] = _gradient_at(name, terms[name], heads)
    zero = torch.zeros((), dtype=torch.float64, device=device)
    stats = [torch.linalg.vector_norm(v) if v is not None else zero for v in vectors.values()]
    with_cos = focus is not None and focus in vectors and len(names) > 1
    if with_cos:
        g_f = vectors[focus]
        rest = [v for n, v in vectors.items() if n != focus and v is not None]
        g_r = torch.stack(rest).sum(0) if rest else None
        if g_f is None or g_r is None:
            stats += [zero, zero, zero]
        else:
            stats += [torch.dot(g_f, g_r), torch.linalg.vector_norm(g_f), torch.linalg.vector_norm(g_r)]
    values = torch.stack(stats).tolist()  # one transfer to the host
    norms = _finite_norms(names, values)
    cosine = None
    if with_cos:
        dot, nf, nr = values[len(names):]
        if not all(math.isfinite(x) for x in (dot, nf, nr)):
            cosine = math.nan
        elif nf > 0.0 and nr > 0.0:
            cosine = max(-1.0, min(1.0, dot / (nf * nr)))
    return TermGradients(norms=norms, shares=gradient_shares(norms), cosine=cosine, focus=focus)


def _gradient_at(name: str, t: torch.Tensor, heads: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """One term's gradient at the head, flattened to one float64 vector (None: no gradient reaches the head)."""
    if not t.requires_grad:
        return None
    try:
        grads = torch.autograd.grad(t.reshape(()), heads, retain_graph=True, allow_unused=True)
    except RuntimeError as exc:
        if "second time" in str(exc) or "been freed" in str(exc):
            raise GradientError(f"the graph of loss term {name!r} was already freed: call term_gradients "
                                "after the forward pass and before backward()") from None
        raise
    if all(g is None for g in grads):
        return None
    return torch.cat([(g if g is not None else torch.zeros_like(h)).reshape(-1).to(torch.float64)
                      for g, h in zip(grads, heads)])


def _finite_norms(names: list[str], values: list[float]) -> dict[str, float]:
    """The terms' norms by name; a non-finite one is NaN, with one warning naming them."""
    norms = {}
    bad = []
    for name, v in zip(names, values):
        if not math.isfinite(v):
            bad.append(name)
            v = math.nan
        norms[name] = float(v)
    if bad:
        _log.warning("the gradient of loss term(s) %s at the latent head is not finite (NaN or inf); its norm "
                     "is NaN", ", ".join(bad))
    return norms


def _heads(head: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    heads = (head,) if isinstance(head, torch.Tensor) else tuple(head)
    if not heads:
        raise GradientError("the latent head is empty: pass the tensor(s) the gradients are taken at, e.g. (mu, logvar)")
    for i, h in enumerate(heads):
        if not isinstance(h, torch.Tensor):
            raise GradientError(f"head[{i}] must be a tensor, got {type(h).__name__}")
        if not h.requires_grad:
            raise GradientError(f"head[{i}] does not require grad: call term_gradients on the model's outputs "
                                "after the forward pass, outside torch.no_grad()")
    return heads
