"""RLBench-18's evaluation protocol (PerAct's or 3D Diffuser Actor's rules) as arguments of
``evaluation.runtime.evaluate.evaluate_checkpoint``: the test split's episodes restored with ``reset_to_demo``."""

from __future__ import annotations

from typing import Any

from evaluation.simulators.rlbench_backend import rlbench_factory
from evaluation.simulators.rlbench_tasks import (
    DDA_MAX_TRIES,
    EPISODES_PER_TASK,
    EVAL_SEEDS,
    MAX_KEYPOSES,
    PROTOCOLS,
    Protocol,
)


def protocol_kwargs(
    config: Any, episodes_per_task: int = EPISODES_PER_TASK, protocol: Protocol = "peract"
) -> dict[str, Any]:
    """``evaluate_checkpoint`` arguments (all but ``seed``) for RLBench-18 in the PerAct protocol.

    ``config`` is an ``evaluation.simulators.rlbench_backend.RLBenchConfig`` whose ``demo_root`` is the PerAct test
    split: episode ``i`` of a task restores its test demo ``i`` (``variations = range(episodes_per_task)``
    are test-episode indices), at most ``MAX_KEYPOSES`` keyposes each.

    ``protocol``: ``peract`` (PerAct's evaluation: a planner error ends the episode; one step per
    keypose) or ``3dda`` (3D Diffuser Actor's ``utils_with_rlbench.py``: a planner error costs the step and
    the policy is asked again, a keypose is re-tried once when the tip ends more than 5 mm away, the
    gripper changes in a step of its own after the arm has moved, and the instruction is one of the
    variation's descriptions drawn with the episode's seed). Both restore the same test demos.
    """
    from evaluation.runtime.coordinator import PoolConfig

    if config.demo_root is None:
        raise ValueError(
            "the PerAct protocol restores the test split's episodes: set RLBenchConfig.demo_root to it "
            "(e.g. data/peract/test, with <task>/all_variations/episodes/episode<i>)"
        )
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    rule = "end"
    if protocol == "3dda":
        config = config.model_copy(
            update={"max_tries": DDA_MAX_TRIES, "gripper_step": "after_arm", "instruction": "random"}
        )
        rule = "continue"
    return {
        "tasks": list(config.tasks),
        "episodes_per_task": episodes_per_task,
        "variations": tuple(range(episodes_per_task)),
        "sim_factory": rlbench_factory(config),
        "suite": "rlbench",
        "pool": PoolConfig(max_keyposes=MAX_KEYPOSES, on_planner_error=rule),
    }


def evaluate_rlbench(
    checkpoint_dir: str,
    config: Any,
    seeds: tuple[int, ...] = EVAL_SEEDS,
    episodes_per_task: int = EPISODES_PER_TASK,
    num_actors: int = 2,
    protocol: Protocol = "peract",
) -> Any:
    """The PerAct protocol on one actor pool: ``episodes_per_task`` test episodes per task for each seed.

    Returns one ``EvalReport``: each task's ``success_rate`` is the mean over ``seeds`` (equal episodes per
    seed), ``mean_success`` the RLBench-18 average, ``seed_success`` each seed's average."""
    from evaluation.runtime.evaluate import evaluate_checkpoint

    kwargs = protocol_kwargs(config, episodes_per_task, protocol)
    return evaluate_checkpoint(checkpoint_dir, seed=list(seeds), num_actors=num_actors, **kwargs)
