"""RLBench-18 in the PerAct setting: the 18 tasks, their variation counts and task classes, and the
evaluation protocol of PerAct / 3D Diffuser Actor, in one place.

Pure data (no ``rlbench`` import). Sources of every fact are listed in ``docs/rlbench.md``:
task order = PerAct README ("Data Generation", same order as its Table 1); variation counts = the
``variation_count()`` of each task in stepjam/RLBench ``rlbench/tasks/<task>.py`` (``colors`` has 20
entries), and for the three tasks that exist only in PerAct's RLBench fork (``MohitShridhar/RLBench``,
branch ``peract``) the number of targets listed in their ``init_task``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from evaluation.simulators.sim import UnknownTaskError

# -- evaluation protocol (PerAct / 3DDA on RLBench-18; shared/reference/README.md) --------------------
EPISODES_PER_TASK = 25  # PerAct's test split: 25 episodes per task, all variations mixed
EVAL_SEEDS: tuple[int, ...] = (0, 1, 2)  # results are the mean over 3 seeds
Protocol = Literal["peract", "3dda"]
PROTOCOLS: tuple[str, ...] = ("peract", "3dda")
DDA_MAX_TRIES = 2  # 3D Diffuser Actor's online evaluation: --max_tries 2
MAX_KEYPOSES = 25  # 3DDA ``--max_steps 25`` (online_evaluation_rlbench/eval_peract.sh)
TRAIN_EPISODES_PER_TASK = 100  # PerAct's train split
CAMERAS: tuple[str, ...] = ("left_shoulder", "right_shoulder", "wrist", "front")
ALL_CAMERAS: tuple[str, ...] = ("left_shoulder", "right_shoulder", "overhead", "wrist", "front")
IMAGE_SIZE = 128  # PerAct's pre-generated data; 3DDA re-rendered at 256

# PerAct's scene bounds (conf/config.yaml ``scene_bounds``) and RLBench's table top (z, metres)
SCENE_BOUNDS_LOW: tuple[float, float, float] = (-0.3, -0.5, 0.6)
SCENE_BOUNDS_HIGH: tuple[float, float, float] = (0.7, 0.5, 1.6)
TABLE_HEIGHT = 0.7505


@dataclass(frozen=True)
class RLBenchTask:
    name: str  # module name under rlbench.tasks (and the dataset folder name)
    class_name: str  # task class in that module
    variations: int  # variation_count()
    peract_fork_only: bool = False  # defined only in MohitShridhar/RLBench@peract


def class_name_of(task: str) -> str:
    """RLBench's file -> class rule (``rlbench.backend.utils.task_file_to_task_class``): camel case."""
    return "".join(word[:1].upper() + word[1:] for word in task.split("_"))


def _task(name: str, variations: int, fork_only: bool = False) -> RLBenchTask:
    return RLBenchTask(name, class_name_of(name), variations, fork_only)


# Order of PerAct's README / Table 1.
PERACT_TASKS: tuple[RLBenchTask, ...] = (
    _task("open_drawer", 3),
    _task("slide_block_to_color_target", 4, fork_only=True),
    _task("sweep_to_dustpan_of_size", 2, fork_only=True),
    _task("meat_off_grill", 2),
    _task("turn_tap", 2),
    _task("put_item_in_drawer", 3),
    _task("close_jar", 20),
    _task("reach_and_drag", 20),
    _task("stack_blocks", 60),
    _task("light_bulb_in", 20),
    _task("put_money_in_safe", 3),
    _task("place_wine_at_rack_location", 3, fork_only=True),
    _task("put_groceries_in_cupboard", 9),
    _task("place_shape_in_shape_sorter", 5),
    _task("push_buttons", 50),
    _task("insert_onto_square_peg", 20),
    _task("stack_cups", 20),
    _task("place_cups", 3),
)
PERACT_TASK_NAMES: tuple[str, ...] = tuple(t.name for t in PERACT_TASKS)


def resolve_tasks(names: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """``None``/``"peract18"``/``"all"`` -> the 18 tasks; a comma-separated string or list -> checked names.

    Any RLBench task name is accepted (the backend can run all of RLBench's tasks), but names that are
    not PerAct tasks must look like module names (lower case, underscores).
    """
    if names is None or names in ("peract18", "all"):
        return PERACT_TASK_NAMES
    items = (
        [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    )
    items = [n for n in items if n]
    if not items:
        raise ValueError("no task names given: pass e.g. 'close_jar,open_drawer' or 'peract18'")
    for name in items:
        if not name.replace("_", "").isalnum() or name.lower() != name:
            raise UnknownTaskError(f"{name!r} is not an RLBench task module name (e.g. 'close_jar')")
    return tuple(dict.fromkeys(items))
