"""PerAct's keyframe heuristic for RLBench demonstrations (used by PerAct, Act3D, 3D Diffuser Actor).

RLBench's experts follow planned paths and come to rest at each waypoint, so keyframes are simpler
than Meta-World's (``evaluation.datasets.keyframes``, built for reactive experts that never stop): frame ``i``
(never 0) is a keyframe when

- the gripper state changes (``gripper_open[i] != gripper_open[i-1]``), or
- it is the last frame, or
- the arm has *stopped*: every joint velocity is within ``stopping_delta`` of 0, the gripper state is
  the same at ``i-2, i-1, i, i+1`` (so not around a gripper event), ``i < T-2``, and no stop was
  detected in the previous ``stop_buffer`` frames (a counter set to ``stop_buffer`` at each stop and
  decremented on every other frame; a stop is allowed when it is ``<= 0``).

Finally, when the last two keyframes are adjacent frames, the second-to-last is dropped.

``boundary="clamp"`` reads frames ``i-1``/``i-2`` clamped at 0 (3D Diffuser Actor's version);
``"wrap"`` reads them with Python's negative indexing, i.e. from the end of the demo for ``i < 2``
(PerAct's original code). They can differ at frames 0 and 1 (which read frames from the end under
"wrap") and, through the stop buffer, on the few frames after them.
Sources: ``peract/peract`` ``helpers/demo_loading_utils.py`` and ``nickgkan/3d_diffuser_actor``
``utils/utils_with_rlbench.py`` (``keypoint_discovery``, ``_is_stopped``); see docs/rlbench.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from policies.config import FrozenModel


class PerActKeyframeConfig(FrozenModel):
    stopping_delta: float = Field(0.1, gt=0.0)  # rad/s, per joint
    stop_buffer: int = Field(4, ge=0)
    boundary: Literal["clamp", "wrap"] = "clamp"


def _previous(i: int, k: int, boundary: str) -> int:
    return max(0, i - k) if boundary == "clamp" else i - k


def _is_stopped(
    i: int, gripper_open: np.ndarray, velocities: np.ndarray, buffer: int, cfg: PerActKeyframeConfig
) -> bool:
    n = len(gripper_open)
    if buffer > 0 or i >= n - 2:
        return False
    g = gripper_open
    p1, p2 = _previous(i, 1, cfg.boundary), _previous(i, 2, cfg.boundary)
    steady = g[i] == g[i + 1] and g[i] == g[p1] and g[p2] == g[p1]
    return bool(steady and np.all(np.abs(velocities[i]) <= cfg.stopping_delta))


def peract_keyframes(
    gripper_open: Sequence[float] | np.ndarray,
    joint_velocities: np.ndarray,
    cfg: PerActKeyframeConfig | None = None,
) -> list[int]:
    """Keyframe indices of a demo: ``gripper_open`` (T,) 0/1 per frame, ``joint_velocities`` (T, J).

    Returns sorted frame indices in ``1..T-1``; the last one is always ``T-1`` (for ``T >= 2``).
    """
    cfg = cfg or PerActKeyframeConfig()
    g = np.asarray(gripper_open, dtype=np.float64).reshape(-1)  # (T,)
    v = np.asarray(joint_velocities, dtype=np.float64)
    if v.ndim != 2 or len(v) != len(g):
        raise ValueError(f"joint_velocities must be (T, J) with T = {len(g)}, got {v.shape}")
    keyframes: list[int] = []
    buffer = 0
    for i in range(len(g)):
        stopped = _is_stopped(i, g, v, buffer, cfg)
        buffer = cfg.stop_buffer if stopped else buffer - 1
        changed = i > 0 and g[i] != g[i - 1]
        if i > 0 and (changed or i == len(g) - 1 or stopped):
            keyframes.append(i)
    if len(keyframes) > 1 and keyframes[-1] - 1 == keyframes[-2]:
        keyframes.pop(-2)
    return keyframes


def demo_arrays(demo: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(gripper_open (T,), joint_velocities (T, J))`` of an RLBench ``Demo`` (a sequence of observations).

    Raises ``ValueError`` naming the frame when a field is missing (e.g. the data were generated with
    ``joint_velocities=False`` in the ObservationConfig).
    """
    grip, vel = [], []
    for i, obs in enumerate(demo):
        g, jv = getattr(obs, "gripper_open", None), getattr(obs, "joint_velocities", None)
        if g is None or jv is None:
            missing = "gripper_open" if g is None else "joint_velocities"
            raise ValueError(f"observation {i} of the demo has no {missing}: the keyframe heuristic needs it")
        grip.append(float(g))
        vel.append(np.asarray(jv, dtype=np.float64).reshape(-1))
    return np.asarray(grip), np.stack(vel) if vel else np.zeros((0, 7))


def demo_keyframes(demo: Sequence[Any], cfg: PerActKeyframeConfig | None = None) -> list[int]:
    """``peract_keyframes`` of an RLBench ``Demo``."""
    grip, vel = demo_arrays(demo)
    return peract_keyframes(grip, vel, cfg)
