"""The options check and report share (vaediag.commands.options): one definition, one validation."""

from __future__ import annotations

import argparse

import pytest

from vaediag.commands.options import PROFILES, kl_weight_arg, positive_int_arg


def test_profiles_are_the_engines():
    from vaediag.diagnose.engine import PROFILES as ENGINE_PROFILES

    assert PROFILES == ENGINE_PROFILES


@pytest.mark.parametrize("convert, text, expected", [
    (kl_weight_arg, "1e-5", 1e-5),
    (kl_weight_arg, "0", 0.0),
    (positive_int_arg, "3", 3),
])
def test_good_values(convert, text, expected):
    assert convert(text) == expected


@pytest.mark.parametrize("convert, text, message", [
    (kl_weight_arg, "abc", r"must be a number like 1e-5, got 'abc'"),
    (kl_weight_arg, "-1", r"must be a finite number >= 0, got '-1'"),
    (kl_weight_arg, "nan", r"must be a finite number >= 0, got 'nan'"),
    (kl_weight_arg, "inf", r"must be a finite number >= 0, got 'inf'"),
    (positive_int_arg, "0", r"must be a positive integer, got '0'"),
    (positive_int_arg, "1.5", r"must be a positive integer, got '1.5'"),
])
def test_bad_values(convert, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        convert(text)


@pytest.mark.parametrize("argv, message", [
    (["--kl-weight", "-1"], "argument --kl-weight: must be a finite number >= 0, got '-1'"),
    (["--kl-weight", "abc"], "argument --kl-weight: must be a number like 1e-5, got 'abc'"),
    (["--latent-dim", "0"], "argument --latent-dim: must be a positive integer, got '0'"),
    (["--steps-per-epoch", "x"], "argument --steps-per-epoch: must be a positive integer, got 'x'"),
    (["--profile", "nope"], "argument --profile: invalid choice: 'nope'"),
])
@pytest.mark.parametrize("command", ["check", "report"])
def test_check_and_report_refuse_a_bad_value_alike(tmp_path, capsys, command, argv, message):
    from vaediag.cli import main

    # Refused when the command line is read: the PATH is not even looked at, nothing is written.
    out = ["-o", str(tmp_path / "out" / "r.md")] if command == "report" else []
    assert main([command, str(tmp_path / "missing"), *out, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"Error: {message}")
    assert err.endswith(f"; see vaediag {command} --help\n"), err
    assert not (tmp_path / "out").exists()
