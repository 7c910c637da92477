"""The rules file: defaults as data, user files merged over them, errors that name the line and the key."""

from __future__ import annotations

import pytest

from vaediag.diagnose import DEFAULT_RULES_PATH, load_rules
from vaediag.errors import InputError, RulesError


def test_defaults_hold_the_seed_checklist():
    r = load_rules()
    assert [m.epoch for m in r.milestones] == [10, 30, 60]
    assert [m.rule for m in r.milestones] == ["milestone_10", "milestone_30", "milestone_60"]
    m10 = {c.id: c for c in r.milestones[0].criteria}
    assert m10["kl"].max == 500 and m10["perceptual"].max == 0.4
    assert m10["recon_vs_baseline"].kind == "baseline" and m10["sharpness_vs_baseline"].kind == "baseline"
    m30 = {c.id: c for c in r.milestones[1].criteria}
    assert (m30["kl"].min, m30["kl"].max) == (100, 300) and m30["psnr"].min == 28
    assert r.milestones[2].criteria[0].kind == "converged"
    s = {c.id: c for c in r.success}
    assert s["kl"].max == 500 and s["kl_stable"].kind == "stable" and s["psnr"].min == 30
    assert {"psnr_grey", "psnr_colour", "perceptual"} <= set(s)
    assert r.section("kl") == {"target": (100.0, 500.0), "expected": 300.0, "too_high_after": 10}
    assert r.section("recommend")["kl_reduce_factor"] == 10.0
    assert r.get("recommend.recipe") == {"w_l1": 1.0, "w_perceptual": 1.2, "w_ssim": 0.5, "w_edge": 0.1}
    assert DEFAULT_RULES_PATH.name == "default.toml"


def test_user_file_overrides_only_what_it_says(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[kl]\ntarget = [50.0, 400.0]\n\n[[milestones]]\nepoch = 20\ncriteria = [{ term = \"psnr\", min = 25.0 }]\n")
    r = load_rules(p)
    assert r.section("kl")["target"] == (50.0, 400.0) and r.section("kl")["expected"] == 300.0
    assert [m.rule for m in r.milestones] == ["milestone_20"]  # [[milestones]] replaces the list
    assert r.milestones[0].criteria[0].label == "psnr > 25"
    assert len(r.success) == 7 and r.source == str(p)


BAD = [
    # (file text, line, message fragment)
    ("[penalty]\nwarn_ratio = 0.02\nmax_rato = 0.2\n", 3, "[penalty] key 'max_rato' is unknown (choose warn_ratio, fail_ratio)"),
    ("[penaltyy]\nwarn_ratio = 0.02\n", 1, "[penaltyy] is an unknown table"),
    ("[blurry]\nmin_sharpness = \"high\"\n", 2, "[blurry] key 'min_sharpness' must be a number, got 'high'"),
    ("[converged]\nwindow = 2.5\n", 2, "[converged] key 'window' must be an integer, got 2.5"),
    ("[lr]\nvanished_ratio = -1.0\n", 2, "must be a finite number >= 0"),
    ("[kl]\ntarget = [500.0, 100.0]\n", 2, "must be [low, high] with low < high"),
    ("\n[recommend.recipe]\nw_l1 = 1.0\nw_foo = 2.0\n", 4, "[recommend] recipe key 'w_foo' is unknown"),
    ("[recommend]\non_collapse = \"panic\"\n", 2, "choose reduce_kl_weight, increase_kl_weight"),
    ("[[milestones]]\nepoch = 10\ncriteria = [\n  { term = \"kl\", max = 500.0 },\n  { term = \"psnr\", min = \"x\" },\n]\n",
     5, "[milestones #1] criteria #2 key 'min' must be a number, got 'x'"),
    ("[[milestones]]\nepoch = 10\ncriteria = [ { term = \"klx\", max = 1.0 } ]\n", 3, "unknown term 'klx'"),
    ("[[milestones]]\nepoch = 10\ncriteria = [ { term = \"kl\", maxx = 1.0 } ]\n", 3, "key 'maxx' is unknown"),
    ("[[milestones]]\nepoch = 10\ncriteria = [ { term = \"kl\" } ]\n", 3, "needs min, max, better_than_baseline or stable"),
    ("[[milestones]]\nepoch = 0\ncriteria = [ { term = \"kl\", max = 1.0 } ]\n", 2, "must be at least 1"),
    ("[[milestones]]\ncriteria = [ { term = \"kl\", max = 1.0 } ]\n", 1, "needs an epoch"),
    ("[[milestones]]\nepoch = 10\ncriteria = [ { check = \"plateau\" } ]\n", 3, "unknown check 'plateau' (choose converged)"),
    ("[success]\njudge_after = 30\ncriteria = [ { term = \"kl\", max = 1.0 }, { term = \"kl\", min = 0.5 } ]\n", 3,
     "repeats id 'kl'"),
    ("[success]\ncriteria = [ { term = \"kl\", stable = 5 } ]\n", 2, "needs a tolerance"),
    ("[success]\nwhen = 3\n", 2, "[success] key 'when' is unknown"),
    # Values that make no sense for what the key does (issue 10): the key, the value and the range.
    ("[recommend]\nkl_reduce_factor = 0.0\n", 2, "[recommend] key 'kl_reduce_factor' is 0.0; allowed: > 1"),
    ("[recommend]\nkl_reduce_factor = 1.0\n", 2, "[recommend] key 'kl_reduce_factor' is 1.0; allowed: > 1"),
    ("[recommend]\nkl_increase_factor = 0.5\n", 2, "[recommend] key 'kl_increase_factor' is 0.5; allowed: > 1"),
    ("[recommend]\nlatent_factor = 1\n", 2, "[recommend] key 'latent_factor' is 1; allowed: >= 2"),
    ("[recommend]\nmax_latent_dim = 0\n", 2, "[recommend] key 'max_latent_dim' is 0; allowed: >= 1"),
    ("[recommend]\nkl_reduce_factor = 2000.0\n", 2,
     "[recommend] key 'kl_reduce_factor' is 2000.0; allowed: at most max_reduce_factor (1000.0)"),
    ("[kl]\nexpected = 0.0\n", 2, "[kl] key 'expected' is 0.0; allowed: > 0"),
    ("[penalty]\nwarn_ratio = 0.0\n", 2, "[penalty] key 'warn_ratio' is 0.0; allowed: > 0"),
    ("[penalty]\nwarn_ratio = 0.01\nfail_ratio = 0.005\n", 3,
     "[penalty] key 'fail_ratio' is 0.005; allowed: at least warn_ratio (0.01)"),
    ("[lr]\nvanished_ratio = 2.0\n", 2, "[lr] key 'vanished_ratio' is 2.0; allowed: 0 to 1"),
    ("[converged]\nmin_delta = 1.5\n", 2, "[converged] key 'min_delta' is 1.5; allowed: 0 to 1"),
    ("[divergence]\nwindow = 0\n", 2, "[divergence] key 'window' is 0; allowed: >= 1"),
    ("[blurry]\nmin_grad_similarity = 1.2\n", 2, "[blurry] key 'min_grad_similarity' is 1.2; allowed: 0 to 1"),
    ("[blurry]\nmax_sharpness = 0.5\n", 2, "[blurry] key 'max_sharpness' is 0.5; allowed: above min_sharpness (0.6)"),
    ("[dead_model]\nmin_spread = 3.0\n", 2, "[dead_model] key 'min_spread' is 3.0; allowed: 0 to 1"),
    ("[collapse]\nactive_fraction_min = 1.01\n", 2, "[collapse] key 'active_fraction_min' is 1.01; allowed: 0 to 1"),
    ("[penalty]\nwarn_ratio = inf\n", 2, "[penalty] key 'warn_ratio' must be a finite number >= 0, got inf"),
]


def test_defaults_satisfy_the_value_ranges():
    """The ranges hold for every default (the table adds checks, it never changes a default)."""
    from vaediag.diagnose.rulesfile import _ORDERED, _RANGES, _Checker

    r = load_rules()
    checker = _Checker("default", "")
    for (section, key), _ in _RANGES.items():
        v = r.section(section)[key]
        assert checker.number((section, key), v, integer=isinstance(v, int)) == v
    checker.ordered({}, r.data)
    assert {k for k, _ in _RANGES} <= set(r.data)
    assert all(lo in r.data[s] and hi in r.data[s] for s, lo, hi, *_ in _ORDERED)


def test_sensible_edge_values_load(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[recommend]\nkl_reduce_factor = 1.5\nmax_reduce_factor = 1.5\nkl_increase_factor = 2.0\n"
                 "[lr]\nvanished_ratio = 0.0\n[collapse]\nactive_fraction_min = 1.0\n"
                 "[penalty]\nwarn_ratio = 0.2\nfail_ratio = 0.2\n")
    r = load_rules(p)
    assert r.section("recommend")["kl_reduce_factor"] == 1.5 and r.section("penalty")["fail_ratio"] == 0.2


@pytest.mark.parametrize("text, line, fragment", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_rules_name_the_line_and_key(tmp_path, text, line, fragment):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(RulesError, match=rf"^rules file {p}, line {line}: .*") as exc:
        load_rules(p)
    assert fragment in exc.value.message
    assert exc.value.exit_code == 2


def test_toml_syntax_error_names_the_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[kl\ntarget = 1\n")
    with pytest.raises(RulesError, match=r"rules file .*bad\.toml: .*\(at line 1, column 4\)"):
        load_rules(p)


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d / "missing.toml", "does not exist"),
    (lambda d: d, "is a directory"),
])
def test_missing_or_directory_rules_file(tmp_path, make, fragment):
    with pytest.raises(InputError, match=fragment):
        load_rules(make(tmp_path))
