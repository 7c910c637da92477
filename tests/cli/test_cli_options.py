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
