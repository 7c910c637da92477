"""vaediag.integrations.gradients: each weighted loss term's gradient at the latent head.

The function is checked against a reference (each term re-run from leaf copies of the head and
back-propagated alone), on a model where the value share and the gradient share differ by construction,
on the trainer's own models and step (nothing about the step changes), and on its edge cases.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn as nn

from vaediag.errors import GradientError
from vaediag.integrations.gradients import TermGradients, gradient_shares, term_gradient_norms, term_gradients

from train.losses import kl_divergence, weighted_total
from train.loop import train_step
from train.model import build_model


class _Tiny(nn.Module):
    """An encoder to (mu, logvar) and a decoder that barely depends on z: ``recon = 0.5 + gain * dec(z)``."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.enc, self.dec, self.gain = nn.Linear(16, 8), nn.Linear(4, 16), gain

    def encode(self, x):
        return self.enc(x).chunk(2, dim=1)

    def decode(self, mu, logvar, eps):
        return 0.5 + self.gain * self.dec(mu + torch.exp(0.5 * logvar) * eps)


def _terms(model, x, mu, logvar, eps, kl_weight):
    recon = model.decode(mu, logvar, eps)
    return {"recon": (recon - x).abs().mean(), "kl": kl_weight * kl_divergence(mu, logvar)}


def _reference_norms(model, x, mu, logvar, eps, kl_weight):
    """Each term alone, from leaf copies of the head, with .backward(): the gradients the function must match."""
    out = {}
    for name in ("recon", "kl"):
        m, lv = mu.detach().clone().requires_grad_(True), logvar.detach().clone().requires_grad_(True)
        _terms(model, x, m, lv, eps, kl_weight)[name].backward()
        out[name] = float(torch.cat([m.grad.flatten(), lv.grad.flatten()]).double().norm())
    return out


@pytest.fixture
def tiny_case():
    torch.manual_seed(0)
    model = _Tiny(gain=1e-3)
    x = torch.rand(8, 16)
    eps = torch.randn(8, 4)
    mu, logvar = model.encode(x)
    return model, x, mu, logvar, eps


def test_value_share_small_gradient_share_large_by_construction(tiny_case):
    """The decoder scales z by 1e-3: the reconstruction term is almost all of the loss value, yet little of its
    gradient reaches (mu, logvar); the KL, weighted 1e-3, is 0.14 % of the value and 81 % of the push."""
    model, x, mu, logvar, eps = tiny_case
    terms = _terms(model, x, mu, logvar, eps, kl_weight=1e-3)
    value = {k: float(v.detach()) for k, v in terms.items()}
    value_share_kl = value["kl"] / sum(value.values())
    g = term_gradients(terms, (mu, logvar))
    assert value_share_kl < 0.01
    assert g.shares["kl"] > 0.75
    assert g.norms == pytest.approx(_reference_norms(model, x, mu, logvar, eps, 1e-3), rel=1e-6)
    assert sum(g.shares.values()) == pytest.approx(1.0)
    assert g.shares["kl"] == pytest.approx(g.norms["kl"] / (g.norms["kl"] + g.norms["recon"]))


def test_a_decoder_that_follows_z_turns_the_shares_around(tiny_case):
    """Same model and KL, decoder gain 1: now the reconstruction term carries the gradient as it carries the value."""
    model, x, mu, logvar, eps = tiny_case
    model.gain = 1.0
    terms = _terms(model, x, mu, logvar, eps, kl_weight=1e-3)
    g = term_gradients(terms, (mu, logvar))
    assert g.shares["recon"] > 0.9
    assert g.norms == pytest.approx(_reference_norms(model, x, mu, logvar, eps, 1e-3), rel=1e-6)


def test_cosine_is_the_kl_gradient_against_the_sum_of_the_others():
    mu, logvar = torch.tensor([1.0, 0.0], requires_grad=True), torch.zeros(2, requires_grad=True)
    recon = (mu * torch.tensor([3.0, 4.0])).sum()  # gradient (3, 4, 0, 0)
    edge = (mu * torch.tensor([-3.0, 0.0])).sum()  # gradient (-3, 0, 0, 0): the others sum to (0, 4, 0, 0)
    kl = 0.5 * (mu**2).sum() + logvar.sum()  # gradient (1, 0, 1, 1)
    g = term_gradients({"recon": recon, "edge": edge, "kl": kl}, (mu, logvar))
    assert g.norms == pytest.approx({"recon": 5.0, "edge": 3.0, "kl": math.sqrt(3)})
    assert g.cosine == pytest.approx(0.0)  # (1, 0, 1, 1) . (0, 4, 0, 0) = 0
    g = term_gradients({"recon": recon, "kl": -recon}, (mu, logvar))
    assert g.cosine == pytest.approx(-1.0) and g.shares == pytest.approx({"recon": 0.5, "kl": 0.5})
    assert term_gradients({"recon": recon, "kl": kl}, (mu, logvar), focus=None).cosine is None
    assert term_gradients({"recon": recon}, (mu, logvar)).cosine is None  # no KL among the terms


@pytest.mark.parametrize("arch", ["resnet", "flat"])
@pytest.mark.parametrize("ae", [False, True])
def test_the_trainer_step_is_unchanged_by_the_measurement(arch, ae):
    """The loop's own train_step, with and without the hook, from the same state: the same losses and the same
    weights after the optimizer step, bit for bit (no .grad touched, no random number drawn)."""
    def run(measure: bool):
        torch.manual_seed(0)
        model = build_model(arch=arch, channels=3, image_size=32, latent_dim=16, base_channels=8)
        if arch == "resnet":  # the decoder's last conv starts at 0 (no gradient reaches z): give it one
            nn.init.normal_(model.decoder[-1].weight, std=0.02)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        got = []
        hook = (lambda weighted, head: got.append(term_gradients(weighted, head))) if measure else None
        weights = {"recon": 1.0, "ssim_loss": 0.5, "edge": 0.1, "kl": 0.0 if ae else 1e-3}
        torch.manual_seed(2)
        total, raw, _ = train_step(model, x, opt, weights=weights, weight_map=torch.ones(1, 1, 32, 32),
                                   perceptual=None, deterministic=ae, grad_clip=1.0, before_backward=hook)
        return total, raw, model.state_dict(), got

    t0, raw0, w0, _ = run(False)
    t1, raw1, w1, got = run(True)
    assert torch.equal(t0, t1) and all(torch.equal(raw0[k], raw1[k]) for k in raw0)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    (g,) = got
    assert list(g.norms) == ["recon", "ssim_loss", "edge", "kl"]
    assert all(g.norms[t] > 0 for t in ("recon", "ssim_loss", "edge"))
    if ae:  # Option B: z = mu, KL weight 0 (computed under no_grad): no KL gradient at all
        assert g.norms["kl"] == 0.0 and g.shares["kl"] == 0.0 and g.cosine is None
    else:
        assert g.norms["kl"] > 0 and -1.0 <= g.cosine <= 1.0


def test_resnet_at_initialisation_sends_no_reconstruction_gradient_to_the_head():
    """The residual decoder's output conv starts at zero (its output is flat grey whatever z is), so at step 0
    every reconstruction term's gradient at (mu, logvar) is 0 and the KL holds the whole share."""
    torch.manual_seed(0)
    model = build_model(arch="resnet", channels=3, image_size=32, latent_dim=16, base_channels=8)
    got = []
    train_step(model, torch.rand(2, 3, 32, 32), torch.optim.SGD(model.parameters(), lr=0.0),
               weights={"recon": 1.0, "ssim_loss": 0.0, "edge": 0.1, "kl": 1e-3}, weight_map=torch.ones(1, 1, 32, 32), perceptual=None,
               deterministic=False, grad_clip=0.0, before_backward=lambda w, h: got.append(term_gradients(w, h)))
    assert got[0].norms["recon"] == got[0].norms["edge"] == 0.0
    assert got[0].shares == {"recon": 0.0, "ssim_loss": 0.0, "edge": 0.0, "kl": 1.0}


def test_bf16_measures_at_the_tensors_the_decoder_consumed():
    """Under bf16 autocast the head the hook gets is the model's own output (bf16), which the decoder read: the
    reconstruction terms reach it. Their float32 casts would have no path to the reconstruction at all."""
    torch.manual_seed(0)
    model = build_model(arch="flat", channels=3, image_size=32, latent_dim=8, base_channels=8)
    got = []

    def hook(weighted, head):
        got.append((term_gradients(weighted, head), term_gradients(weighted, tuple(h.float() for h in head))))

    train_step(model, torch.rand(2, 3, 32, 32), torch.optim.SGD(model.parameters(), lr=0.0), precision="bf16",
               weights={"recon": 1.0, "ssim_loss": 0.5, "edge": 0.1, "kl": 1e-3}, weight_map=torch.ones(1, 1, 32, 32), perceptual=None,
               deterministic=False, grad_clip=0.0, before_backward=hook)
    (raw_head, cast_head), = got
    assert raw_head.norms["recon"] > 0 and raw_head.norms["kl"] > 0
    assert cast_head.norms["recon"] == 0.0  # why the trainer passes the uncast tensors


def test_terms_without_a_path_to_the_head_give_zero_not_an_error():
    mu = torch.ones(3, requires_grad=True)
    other = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        logged_only = (mu * 2).sum()  # the trainer's weight-0 terms: computed for the logs, outside autograd
    g = term_gradients({"recon": (mu * 2).sum(), "edge": other.sum(), "kl": logged_only, "x": torch.tensor(1.0)}, mu)
    assert g.norms == {"recon": pytest.approx(math.sqrt(12)), "edge": 0.0, "kl": 0.0, "x": 0.0}
    assert g.shares == {"recon": 1.0, "edge": 0.0, "kl": 0.0, "x": 0.0} and g.cosine is None


def test_nothing_reaching_the_head_leaves_the_shares_undefined():
    mu = torch.ones(3, requires_grad=True)
    g = term_gradients({"recon": torch.tensor(0.5), "kl": mu.sum() * 0.0}, mu)
    assert g.norms == {"recon": 0.0, "kl": 0.0} and g.shares == {} and g.cosine is None
    assert g.scalars() == {"train/grad_norm/recon": 0.0, "train/grad_norm/kl": 0.0}


def test_a_non_finite_gradient_is_nan_and_logged_never_raised(caplog):
    mu = torch.ones(2, requires_grad=True)
    with caplog.at_level(logging.WARNING, logger="vaediag.integrations.gradients"):
        g = term_gradients({"recon": (mu * 2).sum(), "kl": (mu * float("inf")).sum()}, mu)
    assert g.norms["recon"] == pytest.approx(math.sqrt(8)) and math.isnan(g.norms["kl"])
    assert all(math.isnan(v) for v in g.shares.values()) and math.isnan(g.cosine)
    assert "loss term(s) kl at the latent head is not finite" in caplog.text
    nan = term_gradients({"kl": (mu * float("nan")).sum()}, mu)
    assert math.isnan(nan.norms["kl"])
    assert all(math.isnan(v) for v in g.scalars().values() if v != g.norms["recon"])


def test_scalars_are_the_trainer_tags():
    mu = torch.tensor([1.0, 0.0], requires_grad=True)
    g = term_gradients({"recon": (mu * 3).sum(), "kl": 0.5 * (mu**2).sum()}, mu)
    assert g.scalars() == {"train/grad_norm/recon": pytest.approx(math.sqrt(18)), "train/grad_norm/kl": 1.0,
                           "train/grad_share/recon": pytest.approx(math.sqrt(18) / (math.sqrt(18) + 1)),
                           "train/grad_share/kl": pytest.approx(1 / (math.sqrt(18) + 1)),
                           "train/grad_cos/kl": pytest.approx(1 / math.sqrt(2))}
    assert set(g.scalars(split="val")) == {t.replace("train/", "val/") for t in g.scalars()}


def test_norms_only_and_shares_from_norms():
    mu = torch.tensor([3.0, 4.0], requires_grad=True)
    assert term_gradient_norms({"recon": (mu**2).sum() / 2}, [mu]) == {"recon": 5.0}
    assert gradient_shares({"a": 1.0, "b": 3.0}) == {"a": 0.25, "b": 0.75}
    assert all(math.isnan(v) for v in gradient_shares({"a": math.nan, "b": 1.0}).values())
    assert term_gradients({}, mu) == TermGradients(norms={}, focus="kl")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda mu: ({"recon": mu * 2}, mu), r"^loss term 'recon' must be a scalar tensor, got a tensor of shape \(3,\)$"),
        (lambda mu: ({"recon": 1.0}, mu), r"^loss term 'recon' must be a scalar tensor, got float$"),
        (lambda mu: ({"recon": mu.sum()}, ()), r"^the latent head is empty"),
        (lambda mu: ({"recon": mu.sum()}, [mu, "logvar"]), r"^head\[1\] must be a tensor, got str$"),
        (lambda mu: ({"recon": mu.sum()}, mu.detach()), r"^head\[0\] does not require grad: call term_gradients"),
    ],
)
def test_misuse_is_one_line(make, match):
    terms, head = make(torch.ones(3, requires_grad=True) * 1.0)
    with pytest.raises(GradientError, match=match):
        term_gradients(terms, head)


def test_after_backward_the_graph_is_gone_and_says_so():
    w = torch.ones(3, requires_grad=True)
    mu = w * 2
    loss = (mu**2).sum()
    loss.backward()
    with pytest.raises(GradientError, match=r"^the graph of loss term 'recon' was already freed: call term_gradients "
                                            r"after the forward pass and before backward\(\)$"):
        term_gradients({"recon": loss}, mu)


def test_module_doctests():
    import doctest

    import vaediag.integrations.gradients as module

    assert doctest.testmod(module).failed == 0
