"""--grad-share-every: the trainer logs each weighted term's gradient at the latent head at its cadence, with
every architecture and mode, without changing what it trains; `vaediag check` reports it beside the value share.

Runs are the tiny real ones of conftest.py (16 crops, batch 8: two steps an epoch).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaediag import terms
from vaediag.cli import main as vaediag_main
from vaediag.errors import ConfigError

from train.config import TrainConfig
from train.loop import grad_share_due, load_checkpoint, train
from trainhelp import ckpt_of, read_events, steps_of


@pytest.mark.parametrize(
    "every, p_every, steps, expected",
    [
        (0, 1, 20, []),  # off
        (1, 1, 4, [0, 1, 2, 3]),
        (5, 1, 12, [0, 5, 10]),
        (10, 4, 45, [0, 12, 20, 32, 40]),  # the first step of each 10 that computes the perceptual term
        (8, 4, 20, [0, 8, 16]),  # a multiple of perceptual_every: plain multiples of 8
        (2, 4, 13, [0, 4, 8, 12]),  # finer than the perceptual cadence: every perceptual step
    ],
)
def test_grad_share_cadence(every, p_every, steps, expected):
    assert [s for s in range(steps) if grad_share_due(s, every=every, perceptual_every=p_every)] == expected


def test_grad_share_every_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"^grad_share_every must be >= 0 \(0 = off\), got -1$"):
        TrainConfig(grad_share_every=-1)
    assert TrainConfig().grad_share_every == 100  # python -m bench grad_share: about 1.2 % of the training time
    assert "--grad-share-every" in TrainConfig(grad_share_every=7).to_argv()


def _gradients(ev: dict) -> dict[str, list[tuple[int, float]]]:
    return {t: [(s, v) for s, v, _ in pts] for t, pts in ev["scalars"].items()
            if t.count("/") == 2 and t.split("/")[1] in terms.GRADIENT_KINDS}


@pytest.mark.slow
def test_a_real_run_logs_the_shares_at_the_cadence_and_check_says_so(tmp_path, tiny_cfg, capsys):
    # 3 epochs of 2 steps; the perceptual term every 2nd step; a measurement on the first step of each 3 that has it
    cfg = tiny_cfg.replace(epochs=3, perceptual_every=2, grad_share_every=3, kl_weight=1e-3)
    result = train(cfg)
    grads = _gradients(read_events(result.run_dir))
    due = [s for s in range(6) if grad_share_due(s, every=3, perceptual_every=2)]
    assert due == [0, 4]
    for t in set(terms.GRADIENT_TAGS) - {terms.grad_tag("grad_cos", "kl")}:
        assert [s for s, _ in grads[t]] == due, t
    for step in due:
        shares = {t: dict(grads[terms.grad_tag("grad_share", t)])[step] for t in terms.LOSS_TERMS}
        assert math.fsum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    # Step 0: the residual decoder's output conv is still 0, so only the KL's gradient reaches the head and the
    # cosine is undefined (not logged); at step 4 every term reaches it.
    at0 = {t: dict(pts)[0] for t, pts in grads.items() if 0 in dict(pts)}
    assert at0[terms.grad_tag("grad_share", "kl")] == 1.0 and at0[terms.grad_tag("grad_norm", "recon")] == 0.0
    assert [s for s, _ in grads[terms.grad_tag("grad_cos", "kl")]] == [4]
    assert all(dict(grads[terms.grad_tag("grad_norm", t)])[4] > 0 for t in terms.LOSS_TERMS)
    capsys.readouterr()

    assert vaediag_main(["check", str(result.run_dir)]) in (0, 1)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps lines
    share = dict(grads[terms.grad_tag("grad_share", "kl")])[4]
    sentence = f"of the loss value but {100 * share:.1f}% of the gradient at the encoder head (mu, logvar), epoch 3"
    assert f"Gradient: KL is " in out and sentence in out, out
    assert "gradient_share: KL is" in out
    assert vaediag_main(["check", str(result.run_dir), "--json"]) in (0, 1)
    g = json.loads(capsys.readouterr().out)["runs"][0]["penalty"]["gradient"]
    assert g["epoch"] == 2 and g["kl_grad_share"] == pytest.approx(share, rel=1e-6)
    assert set(g["shares"]) == set(terms.LOSS_TERMS) and g["kl_value_share"] < 0.01 < g["kl_grad_share"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet", "flat"])
def test_option_b_logs_a_zero_kl_gradient_with_either_model(tmp_path, tiny_cfg, arch, capsys):
    """Option B (z = mu, KL weight 0): the KL is computed for the logs only, outside autograd, so its gradient at
    the head is 0 at every measurement; the flat model's decoder is not zero-initialised, so its reconstruction
    terms reach the head from the first step."""
    result = train(tiny_cfg.replace(arch=arch, ae=True, grad_share_every=1, perceptual_every=1))
    grads = _gradients(read_events(result.run_dir))
    assert [s for s, _ in grads[terms.grad_tag("grad_norm", "kl")]] == [0, 1]
    assert [v for _, v in grads[terms.grad_tag("grad_norm", "kl")]] == [0.0, 0.0]
    # the residual model at step 0: no term reaches the head at all, so no share is defined (none logged)
    shared = [0, 1] if arch == "flat" else [1]
    assert grads[terms.grad_tag("grad_share", "kl")] == [(s, 0.0) for s in shared]
    assert terms.grad_tag("grad_cos", "kl") not in grads  # the KL's side is 0: no direction to compare
    if arch == "flat":
        assert all(v > 0 for _, v in grads[terms.grad_tag("grad_norm", "recon")])
    capsys.readouterr()
    vaediag_main(["check", str(result.run_dir)])
    out = " ".join(capsys.readouterr().out.split())
    if arch == "flat":
        assert "autoencoder: the KL is not penalised, 0% of the loss value and of the gradient at the encoder head" in out


@pytest.mark.slow
def test_off_writes_nothing_and_the_measurement_changes_no_weight(tmp_path, tiny_cfg):
    """The same run with a measurement on every step and with none: the same weights, bit for bit; no gradient
    tag and no gradient chart without it."""
    measured = train(tiny_cfg.replace(grad_share_every=1, perceptual_every=1))
    off = train(tiny_cfg.replace(grad_share_every=0, perceptual_every=1))
    a = load_checkpoint(ckpt_of(tmp_path, 0))["model"]
    b = load_checkpoint(ckpt_of(tmp_path, 1))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert steps_of(read_events(measured.run_dir), terms.grad_tag("grad_share", "kl")) == [0, 1]
    assert not _gradients(read_events(off.run_dir))
    assert measured.val == off.val


@pytest.mark.slow
def test_under_compile_the_measured_steps_run_the_uncompiled_module(tiny_cfg, monkeypatch):
    """A compiled model returns recon, mu and logvar from one node: no path from mu to the reconstruction terms.
    The measurement steps therefore run the module itself; the others the compiled one."""
    calls: list[str] = []

    class Compiled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, **kw):
            calls.append("compiled")
            return self.inner(x, **kw)

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Compiled(model))
    result = train(tiny_cfg.replace(compile=True, epochs=2, grad_share_every=2, perceptual_every=1))
    assert len(calls) == 2  # steps 1 and 3; steps 0 and 2 were measured on the module itself
    assert steps_of(read_events(result.run_dir), terms.grad_tag("grad_share", "kl")) == [0, 2]
