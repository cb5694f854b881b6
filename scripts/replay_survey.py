"""Replay survey: for every train variation of some Meta-World tasks, does the expert succeed, and at which
keyframe refinement rung (keyframes.REFINEMENTS) do its keyframes replay through the keypose controller?
Nothing is rendered or written; one line per task. What docs/metaworld.md's MT50 table was measured with.
``--test`` surveys the test variations (25..49) instead, the ones evaluation runs: where the expert itself fails
there, an imitation of it has nothing to imitate (``--expert-only`` skips the keyframes and counts those alone).

    PYTHONPATH=. python scripts/replay_survey.py --suite mt50 [--tasks a b ...] [--variations 25] [--no-refine]
    PYTHONPATH=. python scripts/replay_survey.py --suite mt50 --test --expert-only

Tasks with a keypose-level expert (evaluation/datasets/keypose_experts.py) are rolled out with it instead.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from evaluation.datasets.demos import NO_RUNG, plan_keyframes, run_expert
from evaluation.datasets.keyframes import KeyframeConfig
from evaluation.datasets.keypose_experts import KEYPOSE_EXPERTS, run_keypose_expert
from evaluation.simulators.metaworld_backend import (
    TEST_VARIATIONS,
    TRAIN_VARIATIONS,
    MetaWorldConfig,
    MetaWorldSimulator,
    suite_task_names,
)


def survey(
    sim: MetaWorldSimulator, task: str, variations: tuple[int, ...], cfg: KeyframeConfig, expert_only: bool = False
) -> str:
    start = time.perf_counter()
    rungs: dict[int, int] = {}
    failed_expert, no_replay, keyposes = [], [], []
    for v in variations:
        if task in KEYPOSE_EXPERTS:
            rollout = run_keypose_expert(sim, task, v, 0)
            if not rollout.success:
                failed_expert.append(v)
                continue
            rungs[0] = rungs.get(0, 0) + 1
            keyposes.append(len(rollout.targets))
            continue
        traj = run_expert(sim, task, v, 0)
        if not traj.success:
            failed_expert.append(v)
            continue
        if expert_only:
            continue
        frames, rung, _ = plan_keyframes(sim, traj, cfg)
        if rung == NO_RUNG:
            no_replay.append(v)
        else:
            rungs[rung] = rungs.get(rung, 0) + 1
            keyposes.append(len(frames))
    ok = sum(rungs.values())
    expert = "keypose expert" if task in KEYPOSE_EXPERTS else "Meta-World expert"
    if expert_only:
        solved = len(variations) - len(failed_expert)
        return (
            f"{task:30s} expert succeeds {solved}/{len(variations)} ({expert}) failures {failed_expert} "
            f"({time.perf_counter() - start:.0f} s)"
        )
    return (
        f"{task:30s} replay {ok}/{ok + len(no_replay)} ({expert}) expert failures {failed_expert} "
        f"rungs {dict(sorted(rungs.items()))} keyposes/episode {np.mean(keyposes) if keyposes else 0:.1f} "
        f"no rung replays {no_replay} ({time.perf_counter() - start:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="mt50", choices=["mt10", "mt50"])
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--variations", type=int, default=25, help="the first N variations (at most 25)")
    parser.add_argument("--test", action="store_true", help="the test variations 25..49 instead of 0..24")
    parser.add_argument("--expert-only", action="store_true", help="only whether the expert succeeds")
    parser.add_argument("--no-refine", action="store_true", help="only the config's own keyframes (rung 0)")
    args = parser.parse_args()
    sim = MetaWorldSimulator(MetaWorldConfig(suite=args.suite))
    cfg = KeyframeConfig(refine=not args.no_refine)
    pool = TEST_VARIATIONS if args.test else TRAIN_VARIATIONS
    variations = pool[: args.variations]
    for task in args.tasks or suite_task_names(args.suite):
        print(survey(sim, task, variations, cfg, args.expert_only), flush=True)
    sim.close()


if __name__ == "__main__":
    main()
