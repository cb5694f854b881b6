"""The Meta-World difficulty tiers: every MT50 task in exactly one tier, the same table as the reference CSV."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from evaluation import REPO_ROOT
from evaluation.metaworld_tiers import TIER_TASKS, TIERS, group_by_tier, tier_of
from evaluation.simulators.metaworld_backend import suite_task_names

pytestmark = pytest.mark.unit

TIERS_CSV = REPO_ROOT / "platform" / "reference" / "metaworld_tiers.csv"


def test_every_mt50_task_is_in_exactly_one_tier() -> None:
    mt50 = suite_task_names("mt50")
    membership = Counter(task for tasks in TIER_TASKS.values() for task in tasks)
    assert set(membership) == set(mt50) and len(mt50) == 50
    assert all(n == 1 for n in membership.values()), [t for t, n in membership.items() if n > 1]
    assert {tier: len(TIER_TASKS[tier]) for tier in TIERS} == {
        "easy": 28,
        "medium": 11,
        "hard": 6,
        "very_hard": 5,
    }
    assert all(tier_of(task) is not None for task in mt50)
    assert tier_of("close_jar") is None  # an RLBench task has no tier


def test_module_and_reference_csv_are_the_same_table() -> None:
    with TIERS_CSV.open(newline="", encoding="utf-8") as f:
        rows = [(r["tier"], r["task"]) for r in csv.DictReader(f)]
    assert sorted(rows) == sorted((tier, task) for tier, tasks in TIER_TASKS.items() for task in tasks)


def test_mt10_covers_three_tiers() -> None:
    groups = group_by_tier(suite_task_names("mt10"))
    assert list(groups) == ["easy", "medium", "hard"]  # no very hard task in MT10
    assert groups["medium"] == ["peg-insert-side-v3"] and sorted(groups["hard"]) == [
        "pick-place-v3",
        "push-v3",
    ]
