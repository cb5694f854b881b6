"""``python -m evaluation.run --variations``: which Meta-World variations the episodes cycle through."""

from __future__ import annotations

import argparse

import pytest

from evaluation.runtime.run import _suite, main, parse_args, variation_list

pytestmark = pytest.mark.unit


def test_variation_lists_parse_ranges_and_single_numbers_and_refuse_the_rest():
    assert variation_list("0-17") == list(range(18))
    assert variation_list("0,3, 5-6") == [0, 3, 5, 6]
    for bad in ("", "a-3", "40-50", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            variation_list(bad)


def test_metaworld_episodes_cycle_through_the_chosen_variations_else_the_test_ones():
    base = ["--checkpoint", "unused", "--suite", "mt10", "--tasks", "reach-v3"]
    assert _suite(parse_args(base))[2] == list(range(25, 50))
    assert _suite(parse_args([*base, "--variations", "0-17"]))[2] == list(range(18))


def test_variations_of_a_suite_without_them_are_refused_before_anything_starts(capsys):
    assert main(["--checkpoint", "unused", "--suite", "fake", "--variations", "0-3"]) == 2
    assert "--variations is for the Meta-World suites (mt10, mt50), not fake" in capsys.readouterr().err
