"""The Meta-World difficulty tiers, defined once: easy (28 tasks), medium (11), hard (6), very hard (5).

Source: Seo et al., Masked World Models for Visual Control (arXiv 2206.14244), appendix; the same split
DP3 (arXiv 2403.03954) and LeRobot's Meta-World evaluation report results in, here with Meta-World v3
task names. ``platform/reference/metaworld_tiers.csv`` is the same table as published (a test checks
that the two agree and that every MT50 task is in exactly one tier).

Here, not in ``evaluation/simulators/``, because it is a fact about the benchmark's results, read by the
evaluation report (``evaluation/runtime/metrics.py``) and by ``platform.compare``; ``evaluation/`` never
imports ``platform/``, so the table cannot live in ``platform/reference/`` as the code's source.
"""

from __future__ import annotations

from typing import Literal

Tier = Literal["easy", "medium", "hard", "very_hard"]
TIERS: tuple[Tier, ...] = ("easy", "medium", "hard", "very_hard")  # the order every table uses
TIER_LABELS: dict[str, str] = {"easy": "easy", "medium": "medium", "hard": "hard", "very_hard": "very hard"}
TIERS_SOURCE = "Seo et al., Masked World Models (arXiv 2206.14244), as used by DP3 and LeRobot"

TIER_TASKS: dict[Tier, tuple[str, ...]] = {
    "easy": (
        "button-press-v3", "button-press-topdown-v3", "button-press-topdown-wall-v3", "button-press-wall-v3",
        "coffee-button-v3", "dial-turn-v3", "door-close-v3", "door-lock-v3", "door-open-v3", "door-unlock-v3",
        "drawer-close-v3", "drawer-open-v3", "faucet-close-v3", "faucet-open-v3", "handle-press-v3",
        "handle-press-side-v3", "handle-pull-v3", "handle-pull-side-v3", "lever-pull-v3", "plate-slide-v3",
        "plate-slide-back-v3", "plate-slide-back-side-v3", "plate-slide-side-v3", "reach-v3", "reach-wall-v3",
        "window-close-v3", "window-open-v3", "peg-unplug-side-v3",
    ),
    "medium": (
        "basketball-v3", "bin-picking-v3", "box-close-v3", "coffee-pull-v3", "coffee-push-v3", "hammer-v3",
        "peg-insert-side-v3", "push-wall-v3", "soccer-v3", "sweep-v3", "sweep-into-v3",
    ),
    "hard": ("assembly-v3", "hand-insert-v3", "pick-out-of-hole-v3", "pick-place-v3", "push-v3", "push-back-v3"),
    "very_hard": ("shelf-place-v3", "disassemble-v3", "stick-pull-v3", "stick-push-v3", "pick-place-wall-v3"),
}  # fmt: skip

# Episode lengths in low-level (``env.step``) steps of the published MT50 evaluations: Meta-World's
# ``max_path_length`` and LeRobot's ``MetaworldEnv.episode_length`` (the SmolVLA-reported rows). This platform's
# keypose episodes end at 25 keyposes or 3000 low-level steps, so its reports also count the successes that
# came within these (``EvalReport.within_steps``); its controller moves at most 1 cm per step, the speed of a
# Meta-World action of 1 (docs/evaluation.md).
PUBLISHED_EPISODE_STEPS: dict[str, int] = {"Meta-World max_path_length": 500, "LeRobot episode_length": 400}

_TIER_OF: dict[str, Tier] = {task: tier for tier, tasks in TIER_TASKS.items() for task in tasks}


def tier_of(task: str) -> Tier | None:
    """The tier of a Meta-World task; None for any other task (RLBench, the fake simulator)."""
    return _TIER_OF.get(task)


def group_by_tier(tasks: list[str] | tuple[str, ...]) -> dict[Tier, list[str]]:
    """``tasks`` that belong to a tier, grouped by tier in ``TIERS`` order (tiers without a task left out)."""
    groups: dict[Tier, list[str]] = {}
    for tier in TIERS:
        members = [t for t in tasks if _TIER_OF.get(t) == tier]
        if members:
            groups[tier] = members
    return groups
