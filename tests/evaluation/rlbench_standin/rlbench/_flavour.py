"""Stand-in only (not an RLBench module): which RLBench the stand-in imitates.

``upstream`` (default): stepjam/RLBench 1.2. ``fork``: PerAct's fork (MohitShridhar/RLBench@peract), which
differs in what the backend touches: ``MoveArmThenGripper`` takes a 9th value (ignore_collisions) and
passes it to ``EndEffectorPoseViaPlanning.action(scene, action, ignore_collisions=True)``;
``TaskEnvironment.reset_to_demo(demo)`` only restores the RNG state and resets (the caller sets the
variation); ``misc`` has no ``variation_index``; ``Environment`` has no ``shaped_rewards`` /
``arm_max_velocity`` / ``arm_max_acceleration``. Chosen with ``$RLBENCH_STANDIN_FLAVOUR`` when imported.
"""

import os

FLAVOUR = os.environ.get("RLBENCH_STANDIN_FLAVOUR", "upstream")
if FLAVOUR not in ("upstream", "fork"):
    raise ValueError(f"RLBENCH_STANDIN_FLAVOUR must be 'upstream' or 'fork', got {FLAVOUR!r}")
FORK = FLAVOUR == "fork"
