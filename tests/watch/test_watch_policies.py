"""Policy tables: metric sequences -> the epoch of the first change and its value; guards; state."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from vaediag.errors import InputError, UsageError
from vaediag.watch.policies import (
    ControlVAEPolicy,
    Decision,
    GECOPolicy,
    LadderPolicy,
    MissingMetricWarning,
    make_policy,
    parse_param,
    psnr_to_mse,
)


def run(policy, seq: list[dict]) -> list[Decision]:
    return [policy.update(e, m) for e, m in enumerate(seq)]


def first_change(decisions: list[Decision]) -> tuple[int | None, str | None, float | None]:
    for d in decisions:
        if d.action != "keep":
            return d.epoch, d.action, d.kl_weight
    return None, None, None


def flat(n, **m):
    return [dict(m) for _ in range(n)]


# ---- ladder ----------------------------------------------------------------------------------------

LADDER_CASES = [
    # (id, params, metric sequence, expected (epoch, action, kl_weight) of the first non-keep decision)
    ("seed-run2: kl 1535 at 1e-5, 13.8 % of recon -> /100 after epoch 10 (the seed's 1e-7)",
     {"kl_weight": 1e-5}, flat(12, kl=1535.0, recon=0.111, psnr=23.9), (9, "set_kl_weight", 1e-7)),
    ("kl over target, recon not logged: the KL rule alone cuts /10",
     {"kl_weight": 1e-5}, flat(12, kl=1535.0, psnr=23.9), (9, "set_kl_weight", 1e-6)),
    ("kl in band but the penalty is 20 % of recon: /100 brings it to 0.2 %",
     {"kl_weight": 1e-4}, flat(12, kl=200.0, recon=0.1), (9, "set_kl_weight", 1e-6)),
    ("penalty 5 % of recon (under 10 %), kl in band, sharp: nothing",
     {"kl_weight": 1e-4}, flat(40, kl=50.0, recon=0.1, psnr=31.0, sharpness=0.95), (None, None, None)),
    ("max_factor caps the cut of a 194 % penalty",
     {"kl_weight": 1e-2, "reduce_at": 2, "ae_at": 4, "stop_at": 8, "max_factor": 100.0},
     flat(3, kl=35.0, recon=0.18), (1, "set_kl_weight", 1e-4)),
    ("posterior collapse at 1e-2 (kl 0.04 nats, 0 active units): /10 at the first milestone, as check cuts",
     {"kl_weight": 1e-2, "reduce_at": 4, "ae_at": 12, "stop_at": 40},
     flat(6, kl=0.04, recon=0.21, psnr=13.7, active_units=0.0), (3, "set_kl_weight", 1e-3)),
    ("posterior collapse with collapse_factor=100 given: /100",
     {"kl_weight": 1e-2, "reduce_at": 4, "ae_at": 12, "stop_at": 40, "collapse_factor": 100.0},
     flat(6, kl=0.04, recon=0.21, psnr=13.7, active_units=0.0), (3, "set_kl_weight", 1e-4)),
    ("no active unit even with kl above collapse_kl: collapse",
     {"kl_weight": 1e-3, "reduce_at": 2, "ae_at": 12, "stop_at": 40},
     flat(3, kl=3.0, recon=0.2, active_units=0.0), (1, "set_kl_weight", 1e-4)),
    ("kl_weight 0 (autoencoder start): a tiny KL is no collapse",
     {"kl_weight": 0.0, "reduce_at": 2, "ae_at": 12, "stop_at": 40},
     flat(5, kl=0.01, recon=0.2, psnr=31.0, sharpness=0.95, active_units=0.0), (None, None, None)),
    ("max_share None: the share is not a trigger",
     {"kl_weight": 1e-4, "max_share": None}, flat(12, kl=200.0, recon=0.1, psnr=31.0, sharpness=0.95),
     (None, None, None)),
    ("kl under target throughout, sharp: nothing",
     {"kl_weight": 1e-5}, flat(40, kl=300.0, recon=0.05, psnr=31.0, sharpness=0.95), (None, None, None)),
    ("kl rises over target only at epoch 15: reduce then",
     {"kl_weight": 1e-5}, flat(14, kl=300.0) + flat(5, kl=800.0), (14, "set_kl_weight", 1e-6)),
    ("kl fine but blurry (psnr 24 < 28) after 30: autoencoder",
     {"kl_weight": 1e-3}, flat(35, kl=200.0, psnr=24.0), (29, "switch_to_ae", 0.0)),
    ("kl fine but blurry by sharpness 0.5 after 30: autoencoder",
     {"kl_weight": 1e-3}, flat(35, kl=200.0, psnr=31.0, sharpness=0.5), (29, "switch_to_ae", 0.0)),
    ("demo thresholds 2/4: reduce after epoch 2",
     {"kl_weight": 1e-2, "reduce_at": 2, "ae_at": 4, "stop_at": 8}, flat(3, kl=900.0), (1, "set_kl_weight", 1e-3)),
    ("factor 100",
     {"kl_weight": 1e-5, "factor": 100.0}, flat(10, kl=1600.0), (9, "set_kl_weight", 1e-7)),
    ("reduction clamped at min_kl_weight",
     {"kl_weight": 2e-7, "min_kl_weight": 5e-8}, flat(10, kl=1600.0), (9, "set_kl_weight", 5e-8)),
    ("KL over target at a weight <= tiny_kl_weight: the autoencoder, as check says",
     {"kl_weight": 1e-7}, flat(10, kl=1600.0), (9, "switch_to_ae", 0.0)),
    ("nan kl at the milestone: no change that epoch, change next",
     {"kl_weight": 1e-5}, flat(9, kl=1535.0) + [{"kl": math.nan}] + flat(2, kl=1535.0), (10, "set_kl_weight", 1e-6)),
    ("inf psnr never triggers the autoencoder",
     {"kl_weight": 1e-3, "reduce_at": 1, "ae_at": 2, "stop_at": 3}, flat(5, kl=100.0, psnr=math.inf), (None, None, None)),
]


@pytest.mark.parametrize("case", LADDER_CASES, ids=[c[0] for c in LADDER_CASES])
def test_ladder_table(case):
    """The seed profile's ladder (the table's KL limit 500 and PSNR floor 28 dB are the seed's numbers)."""
    _, params, seq, expected = case
    got = first_change(run(LadderPolicy(profile="seed", **params), seq))
    assert got[:2] == expected[:2]
    if expected[2] is not None:
        assert got[2] == pytest.approx(expected[2], rel=1e-9)


GENERIC_CASES = [
    # The generic profile (someone else's run): check's scale-free criteria only, no absolute KL or PSNR.
    ("the seed's run 2 by its penalty alone (13.8 % of recon): the same /100",
     {"kl_weight": 1e-5}, flat(12, kl=1535.0, recon=0.111, psnr=23.9), (9, "set_kl_weight", 1e-7)),
    ("kl 1535 with recon not logged: no share, no absolute limit: nothing",
     {"kl_weight": 1e-5}, flat(12, kl=1535.0, psnr=23.9), (None, None, None)),
    ("the audit's run: kl 2000 at 1e-3 against recon 100 (2 %): nothing",
     {"kl_weight": 1e-3}, flat(40, kl=2000.0, recon=100.0), (None, None, None)),
    ("psnr 24 but sharp by gradient similarity: nothing",
     {"kl_weight": 1e-3}, flat(35, kl=200.0, recon=50.0, psnr=24.0, grad_similarity=0.9), (None, None, None)),
    ("blurry by gradient similarity after 30, penalty 0.4 %: autoencoder",
     {"kl_weight": 1e-3}, flat(35, kl=200.0, recon=50.0, psnr=31.0, grad_similarity=0.5), (29, "switch_to_ae", 0.0)),
    ("blurry by the sharpness ratio after 30, share unknown: autoencoder",
     {"kl_weight": 1e-3}, flat(35, kl=200.0, psnr=31.0, sharpness=0.5), (29, "switch_to_ae", 0.0)),
    ("penalty 5 % (warn) and blurry: cut /10 at the first milestone, as check cuts",
     {"kl_weight": 1e-4}, flat(12, kl=50.0, recon=0.1, grad_similarity=0.5), (9, "set_kl_weight", 1e-5)),
    ("penalty 5 % (warn), sharp: nothing",
     {"kl_weight": 1e-4}, flat(40, kl=50.0, recon=0.1, grad_similarity=0.95), (None, None, None)),
    ("collapse (0 active units): /10",
     {"kl_weight": 1e-2, "reduce_at": 4, "ae_at": 12, "stop_at": 40},
     flat(6, kl=0.004, recon=0.21, active_units=0.0), (3, "set_kl_weight", 1e-3)),
    ("a total kl of 0.3 nats of unknown reduction is no collapse (check: only at the per-dim line)",
     {"kl_weight": 1.0, "reduce_at": 2, "max_share": None}, flat(12, kl=0.3, recon=50.0), (None, None, None)),
    ("a heavy penalty at a weight <= tiny_kl_weight: the autoencoder, as check says",
     {"kl_weight": 1e-7}, flat(10, kl=1e7, recon=1.0), (9, "switch_to_ae", 0.0)),
    ("an explicit target_kl applies under the generic profile too",
     {"kl_weight": 1e-3, "target_kl": 1000.0}, flat(12, kl=2000.0, recon=100.0), (9, "set_kl_weight", 1e-4)),
    ("an explicit target_psnr applies under the generic profile too",
     {"kl_weight": 1e-3, "target_psnr": 28.0}, flat(35, kl=200.0, recon=50.0, psnr=24.0), (29, "switch_to_ae", 0.0)),
]


@pytest.mark.parametrize("case", GENERIC_CASES, ids=[c[0] for c in GENERIC_CASES])
def test_ladder_table_generic_profile(case):
    _, params, seq, expected = case
    ds = run(LadderPolicy(profile="generic", **params), seq)
    got = first_change(ds)
    assert got[:2] == expected[:2], [d.reason for d in ds if d.action != "keep"][:1] or ds[-1].reason
    if expected[2] is not None:
        assert got[2] == pytest.approx(expected[2], rel=1e-9)
    assert all(d.profile == "generic" and d.reason.endswith("[generic profile]") for d in ds)


OURS = {"train_npy": "t.npy", "val_npy": "v.npy", "kl_weight": 1e-3, "latent_dim": 512}


@pytest.mark.parametrize("profile,config,judged", [
    ("auto", OURS, "seed"), ("auto", {"lr": 1e-3}, "generic"), ("auto", None, "generic"),
    ("seed", None, "seed"), ("generic", OURS, "generic"),
])
def test_the_ladders_profile_is_decided_as_checks(profile, config, judged):
    """for_run decides the profile with check's own function; the absolute numbers follow it."""
    from vaediag.diagnose.profiles import decide_profile

    p = LadderPolicy(kl_weight=1e-3, profile=profile)
    assert p.for_run(config) == judged == decide_profile(profile, config=config)
    assert (p.target_kl, p.target_psnr) == ((500.0, 28.0) if judged == "seed" else (None, None))
    assert p.params()["profile"] == judged


def test_a_ladder_told_nothing_about_its_run_judges_it_generic():
    """A training loop of your own (no run directory, no config): auto is decided as check decides a run without
    our trainer's config.json. Before, the seed's KL limit cut this weight (kl 2000 > 500, penalty 2 %)."""
    p = LadderPolicy(kl_weight=1e-3)
    assert p.profile == "auto" and p.judged_by is None
    d = p.update(9, {"kl": 2000.0, "recon": 100.0})
    assert d.action == "keep" and d.profile == "generic" and p.judged_by == "generic"
    state = json.loads(json.dumps(p.state_dict()))
    again = LadderPolicy(kl_weight=1e-3)
    again.load_state_dict(state)
    assert again.judged_by == "generic"


def test_watch_profile_option_reaches_the_ladder():
    import argparse

    from vaediag.commands import watch

    parser = argparse.ArgumentParser()
    watch.add_parser(parser.add_subparsers(), name="watch", help="")
    args = parser.parse_args(["watch", "--profile", "seed", "--", "python", "x.py"])
    p = watch.policy_from_args(args, ["python", "x.py"])
    assert p.profile == p.judged_by == "seed"
    args = parser.parse_args(["watch", "--", "python", "x.py"])
    assert watch.policy_from_args(args, ["python", "x.py"]).profile == "auto"  # the rules file's default


def test_ladder_full_escalation_and_stop():
    p = LadderPolicy(kl_weight=1e-5, window=5, profile="seed")
    seq = flat(10, kl=1600.0, recon=0.2) + flat(20, kl=1550.0, recon=0.15) + flat(40, kl=0.0, recon=0.05, ae_mode=1.0)
    ds = run(p, seq)
    changes = [(d.epoch, d.action, d.kl_weight, d.mode) for d in ds if d.action != "keep"]
    assert changes == [(9, "set_kl_weight", pytest.approx(1e-6), "vae"), (29, "switch_to_ae", 0.0, "ae"),
                       (59, "stop", 0.0, "ae")]
    assert ds[9].reason == "kl = 1600 > 500 after epoch 10: kl_weight 1e-05 -> 1e-06 [seed profile]"
    assert {d.profile for d in ds} == {"seed"}
    assert "kl = 1550 > 500 still after epoch 30" in ds[29].reason
    assert "converged" in ds[59].reason and "after epoch 60" in ds[59].reason
    assert all(d.action == "keep" for d in ds[60:])


def test_ladder_does_not_stop_while_still_improving():
    p = LadderPolicy(kl_weight=1e-7, reduce_at=1, ae_at=2, stop_at=3, window=3)
    seq = [{"kl": 100.0, "psnr": 31.0, "recon": 0.5 * 0.8**i} for i in range(20)]
    assert all(d.action == "keep" for d in run(p, seq))


# ---- controlvae ------------------------------------------------------------------------------------

def test_controlvae_formula_one_step():
    # From rest (I = 0 at beta_min): beta = Kp/(1+exp(e)) - Ki*e + beta_min.
    p = ControlVAEPolicy(target_kl=100.0, kp=0.01, ki=1e-4, min_kl_weight=0.0, max_kl_weight=1.0)
    d = p.update(0, {"kl": 103.0})
    e = 100.0 - 103.0
    assert d.kl_weight == pytest.approx(0.01 / (1 + math.exp(e)) - 1e-4 * e)
    assert d.action == "set_kl_weight"


CONTROLVAE_CASES = [
    # (id, kl sequence, expected epoch of the first change, expected direction of beta vs start)
    ("kl above set point -> beta rises", [900.0] * 5, 0, +1),
    ("kl below set point -> beta falls", [100.0] * 5, 0, -1),
    ("kl at set point within 5%: keep", [500.0] * 5, None, 0),
    ("nan kl -> nothing until finite", [math.nan, math.nan, 900.0], 2, +1),
]


@pytest.mark.parametrize("case", CONTROLVAE_CASES, ids=[c[0] for c in CONTROLVAE_CASES])
def test_controlvae_table(case):
    _, kls, epoch, direction = case
    start = 1e-3
    p = ControlVAEPolicy(target_kl=500.0, kp=1e-3, ki=1e-6, kl_weight=start, min_kl_weight=1e-8, max_kl_weight=1e-2)
    got = first_change(run(p, [{"kl": k} for k in kls]))
    assert got[0] == epoch
    if direction:
        assert math.copysign(1, got[2] - start) == direction


def test_controlvae_anti_windup_leaves_bound_promptly():
    """After 200 epochs pinned at max_kl_weight (KL far above the set point), the error changes sign:
    beta must leave the bound at once, not after 200 epochs of unwinding."""
    p = ControlVAEPolicy(target_kl=100.0, kp=1e-3, ki=1e-6, kl_weight=1e-4, min_kl_weight=1e-6, max_kl_weight=1e-2,
                         min_change=0.0)
    saturated = run(p, [{"kl": 5000.0}] * 200)
    assert saturated[-1].kl_weight == p.max_kl_weight == 1e-2
    assert "saturated at max" in saturated[-1].reason
    after = [p.update(200 + i, {"kl": 50.0}) for i in range(3)]
    assert after[0].action == "set_kl_weight" and after[0].kl_weight < p.max_kl_weight
    # and it keeps falling while KL stays below the set point
    assert after[0].kl_weight > after[1].kl_weight > after[2].kl_weight


def test_controlvae_without_anti_windup_would_stick():
    """The same scenario with a naive integrator stays at the bound for many epochs: the test above can fail."""
    kp, ki, lo, hi = 1e-3, 1e-6, 1e-6, 1e-2
    integral, stuck = 1e-4 - lo, 0
    for kl in [5000.0] * 200:
        integral -= ki * (100.0 - kl)
    for kl in [50.0] * 50:
        e = 100.0 - kl
        integral -= ki * e
        beta = min(max(kp / (1 + math.exp(e)) + integral + lo, lo), hi)
        stuck += beta == hi
    assert stuck > 10


def test_controlvae_bumpless_start_and_bounds():
    p = ControlVAEPolicy(target_kl=500.0, kp=1e-3, ki=1e-9, kl_weight=1e-3, min_kl_weight=1e-8, max_kl_weight=1e-2)
    d = p.update(0, {"kl": 499.0})  # tiny error: beta stays where the run already is
    assert d.action == "keep" and d.kl_weight == pytest.approx(1e-3)
    big = ControlVAEPolicy(target_kl=10.0, kp=1.0, ki=1.0, kl_weight=1e-3, max_kl_weight=0.5)
    assert big.update(0, {"kl": 1e6}).kl_weight == 0.5


# ---- geco ------------------------------------------------------------------------------------------

def test_psnr_to_mse_28db():
    assert psnr_to_mse(28.0) == pytest.approx(1.5849e-3, rel=1e-4)
    assert psnr_to_mse(20.0, data_range=255.0) == pytest.approx(650.25)


GECO_CASES = [
    # (id, psnr sequence, expected first change epoch, direction)
    ("psnr 5 dB under target -> weight falls at once", [23.0] * 4, 0, -1),
    ("psnr 4 dB over target -> weight rises", [32.0] * 4, 0, +1),
    ("psnr on target: keep", [28.0] * 4, None, 0),
    ("non-finite psnr: no change", [math.nan, math.inf, -math.inf], None, 0),
]


@pytest.mark.parametrize("case", GECO_CASES, ids=[c[0] for c in GECO_CASES])
def test_geco_table(case):
    _, ps, epoch, direction = case
    p = GECOPolicy(target_psnr=28.0, kl_weight=1e-4)
    got = first_change(run(p, [{"psnr": v} for v in ps]))
    assert got[0] == epoch
    if direction:
        assert math.copysign(1, got[2] - 1e-4) == direction


def test_geco_update_value_and_moving_average():
    p = GECOPolicy(target_psnr=28.0, alpha=1.0, momentum=0.5, kl_weight=1e-2, min_kl_weight=1e-9)
    d0 = p.update(0, {"psnr": 18.0})  # c = ln(10) : weight / 10
    assert d0.kl_weight == pytest.approx(1e-3)
    d1 = p.update(1, {"psnr": 28.0})  # c_ma = 0.5 * ln(10): weight / sqrt(10)
    assert d1.kl_weight == pytest.approx(1e-3 / math.sqrt(10))


def test_geco_max_factor_limits_one_step():
    p = GECOPolicy(target_psnr=40.0, alpha=5.0, max_factor=3.0, kl_weight=1e-2, min_kl_weight=1e-9)
    assert p.update(0, {"psnr": 10.0}).kl_weight == pytest.approx(1e-2 / 3)


# ---- guards shared by all --------------------------------------------------------------------------

@pytest.mark.parametrize("name,metrics", [("ladder", {"kl": 2000.0}), ("controlvae", {"kl": 5000.0}),
                                          ("geco", {"psnr": 15.0})])
def test_cooldown_blocks_then_allows(name, metrics):
    params = {"kl_weight": 1e-3, "cooldown": 2, "min_kl_weight": 1e-9}
    if name == "ladder":
        params.update(reduce_at=1, ae_at=50, stop_at=60, factor=10.0, profile="seed")
    p = make_policy(name, **params)
    ds = run(p, [dict(metrics)] * 6)
    assert ds[0].changes
    # ladder changes once by design; the controllers want a change every epoch but wait out the cool-down.
    if name != "ladder":
        assert [d.changes for d in ds] == [True, False, False, True, False, False]
        assert "cool-down" in ds[1].declined and ds[1].proposed_kl_weight is not None
        assert ds[1].kl_weight == ds[0].kl_weight


@pytest.mark.parametrize("name", ["ladder", "controlvae", "geco"])
def test_one_decision_per_epoch(name):
    p = make_policy(name, kl_weight=1e-3, reduce_at=1, ae_at=5, stop_at=9, profile="seed") if name == "ladder" else \
        make_policy(name, kl_weight=1e-3)
    m = {"kl": 5000.0, "psnr": 12.0}
    assert p.update(0, m).changes
    again = p.update(0, m)
    assert again.action == "keep" and "already decided" in again.reason
    assert p.update(0, {"kl": 1.0, "psnr": 60.0}).action == "keep"


@pytest.mark.parametrize("name,needs", [("ladder", "kl"), ("controlvae", "kl"), ("geco", "psnr")])
def test_missing_metric_strict_lists_available(name, needs):
    p = make_policy(name, kl_weight=1e-3)
    with pytest.raises(InputError, match=rf"needs metric\(s\) {needs} after epoch 1; available: recon, sharpness"):
        p.update(0, {"recon": 0.1, "sharpness": 0.9})


@pytest.mark.parametrize("name", ["ladder", "controlvae", "geco"])
def test_missing_metric_lenient_warns_and_keeps(name):
    p = make_policy(name, kl_weight=1e-3, strict=False)
    with pytest.warns(MissingMetricWarning, match="available: recon"):
        d = p.update(0, {"recon": 0.1})
    assert d.action == "keep"


def test_ladder_without_any_known_weight_errors():
    with pytest.raises(InputError, match="does not know the current kl_weight"):
        LadderPolicy().update(9, {"kl": 2000.0})
    p = LadderPolicy(reduce_at=1, profile="seed")
    d = p.update(0, {"kl": 2000.0, "kl_weight": 1e-4})  # the logged weight is enough
    assert d.kl_weight == pytest.approx(1e-5)


def test_logged_weight_is_the_truth():
    p = GECOPolicy(kl_weight=1e-2, target_psnr=28.0)
    d = p.update(0, {"psnr": 28.0, "kl_weight": 1e-5})
    assert d.kl_weight == pytest.approx(1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"cooldown": -1}, r"cooldown must be an integer >= 0, got -1"),
    ({"cooldown": 1.5}, r"cooldown must be an integer >= 0, got 1.5"),
    ({"min_kl_weight": -1e-3}, r"min_kl_weight must be a number >= 0, got -0.001"),
    ({"max_kl_weight": float("nan")}, r"max_kl_weight must be a number > 0, got nan"),
    ({"min_kl_weight": 1e-2, "max_kl_weight": 1e-3}, r"max_kl_weight must be > min_kl_weight"),
    ({"kl_weight": "high"}, r"kl_weight must be a number >= 0, got 'high'"),
    ({"strict": "yes"}, r"strict must be true or false, got 'yes'"),
    ({"target_kl": 0}, r"target_kl must be a number > 0, got 0"),
    ({"reduce_at": 30, "ae_at": 10}, r"reduce_at <= ae_at <= stop_at, got 30, 10, 60"),
    ({"factor": 1.0}, r"factor must be a number > 1, got 1.0"),
])
def test_ladder_bad_arguments(kwargs, match):
    with pytest.raises(UsageError, match=match):
        LadderPolicy(**kwargs)


@pytest.mark.parametrize("name,kwargs,match", [
    ("pid", {}, r"unknown policy 'pid' \(choose ladder, controlvae, geco\)"),
    ("geco", {"target_kl": 5.0}, r"policy 'geco' has no parameter 'target_kl' \(choose "),
    ("controlvae", {"ki": -1.0}, r"ki must be a number >= 0, got -1.0"),
    ("geco", {"momentum": 1.0}, r"momentum must be a number >= 0 and <= 0.999, got 1.0"),
])
def test_make_policy_errors(name, kwargs, match):
    with pytest.raises(UsageError, match=match):
        make_policy(name, **kwargs)


@pytest.mark.parametrize("item,expected", [
    ("reduce_at=2", ("reduce_at", 2)), ("target-kl=300", ("target_kl", 300.0)),
    ("target_psnr=none", ("target_psnr", None)), ("strict=false", ("strict", False)),
])
def test_parse_param(item, expected):
    assert parse_param("ladder", item) == expected


@pytest.mark.parametrize("item,match", [
    ("reduce_at", r"must look like KEY=VALUE"),
    ("reduce_at=two", r"reduce_at must be an integer, got 'two'"),
    ("kp=1", r"policy 'ladder' has no parameter 'kp'"),
])
def test_parse_param_errors(item, match):
    with pytest.raises(UsageError, match=match):
        parse_param("ladder", item)


# ---- state ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,seq", [
    ("ladder", [{"kl": 900.0, "recon": 0.1 - 0.001 * i, "psnr": 20.0} for i in range(7)]),
    ("controlvae", [{"kl": 900.0 - 100 * i} for i in range(7)]),
    ("geco", [{"psnr": 20.0 + i} for i in range(7)]),
])
def test_state_dict_resumes_identically(name, seq):
    params = {"kl_weight": 1e-3, "cooldown": 1}
    if name == "ladder":
        params.update(reduce_at=2, ae_at=5, stop_at=6, window=2)
    straight = make_policy(name, **params)
    expected = run(straight, seq)
    first = make_policy(name, **params)
    got = [first.update(e, m) for e, m in enumerate(seq[:3])]
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON round trip (journal, checkpoint)
    second = make_policy(name, **params)
    second.load_state_dict(state)
    got += [second.update(e, m) for e, m in enumerate(seq[3:], start=3)]
    assert got == expected


def test_load_state_of_other_policy_fails():
    with pytest.raises(UsageError, match="state is for policy 'geco', not 'ladder'"):
        LadderPolicy().load_state_dict(GECOPolicy(kl_weight=1.0).state_dict())


def test_decision_rejects_unknown_action():
    with pytest.raises(UsageError, match=r"unknown decision action 'explode' \(choose keep, set_kl_weight"):
        Decision("explode", 0, 1.0)


@pytest.mark.parametrize("name,metrics", [("ladder", {"kl": 2000.0}), ("controlvae", {"kl": 5000.0}),
                                          ("geco", {"psnr": 15.0})])
def test_not_applied_lets_the_policy_decide_again(name, metrics):
    params = {"kl_weight": 1e-3, "cooldown": 3, "min_kl_weight": 1e-9}
    if name == "ladder":
        params.update(reduce_at=1, ae_at=50, stop_at=60, profile="seed")
    p = make_policy(name, **params)
    before = p.state_dict()
    d0 = p.update(0, dict(metrics))
    assert d0.changes
    p.not_applied(d0)
    after = p.state_dict()
    assert {k: v for k, v in after.items() if k not in ("last_epoch", "c_ma", "recon_history")} == \
        {k: v for k, v in before.items() if k not in ("last_epoch", "c_ma", "recon_history")}
    d1 = p.update(1, dict(metrics))
    assert d1.changes and d1.kl_weight == pytest.approx(d0.kl_weight, rel=0.5)  # not blocked by the cool-down
    with pytest.raises(UsageError, match="must follow the update that decided it"):
        p.not_applied(d0)
