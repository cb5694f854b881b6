"""Keyframe detection on a scripted-expert trajectory (gripper events, near-still frames, turns).

Meta-World's experts are reactive controllers that never stop, so keyframes are found from the TCP
path and the gripper commands of a rollout:

- gripper events: the command toggles at step t -> keyframe at the slowest frame between t and the
  frame where the fingers stop moving (opening changes less than ``settle_eps`` per step, at most
  ``settle_max`` steps later, before the next toggle), with the *new* gripper state. The experts keep
  moving while the slow fingers close, and a controller that stops, actuates and holds must do it
  where the expert paused (pick: waiting for the grasp) or turned (push: bottom of the reach);
- near-still frames: the last frame of each run of at least ``still_frames`` frames moving less than
  ``still_speed_m`` per step (the expert has converged and is about to move on);
- direction changes: between consecutive keyframes, the frame where the path strays furthest from
  the straight segment joining them is added while that distance exceeds ``path_tolerance_m``
  (Ramer-Douglas-Peucker), so that straight moves between keyframes follow the expert's path;
- contact frames (``contact_stride`` > 0, off by default): every ``contact_stride`` steps while an
  object moves faster than ``contact_speed_m`` per step, so that straight keypose moves reproduce a
  contact the expert makes along a curved or sustained path (ratcheting a handle up, sweeping);
- the final frame (the first frame with task success).

Candidates closer than ``min_gap`` steps to a kept one are dropped (gripper events win ties).
Indices refer to states: 0 is the reset state, t the state after step t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from policies.config import FrozenModel


class KeyframeConfig(FrozenModel):
    still_speed_m: float = Field(0.0015, gt=0.0)
    still_frames: int = Field(3, ge=1)
    path_tolerance_m: float = Field(0.015, gt=0.0)
    min_gap: int = Field(6, ge=1)
    settle_eps: float = Field(0.01, gt=0.0)  # finger opening change per step (normalised 0..1) = settled
    settle_max: int = Field(25, ge=0)
    # where a gripper event's keyframe goes: the slowest frame between the toggle and the fingers settling,
    # or the settled frame itself (experts that start closing while still descending onto an object)
    gripper_at: Literal["slowest", "settled"] = "slowest"
    contact_stride: int = Field(0, ge=0)  # 0 = no contact frames
    contact_speed_m: float = Field(0.0005, gt=0.0)  # object motion per step that counts as contact
    # Collection replays each episode's keyframes through the keypose controller and, when they do not
    # solve the task, retries with the next, denser rung of REFINEMENTS (collection.md: why per task).
    refine: bool = True
    # What the samples observe before each keypose: the expert trajectory's state at the previous keyframe
    # ("expert"), or the state the keypose controller reached replaying the keyframes ("replay": what a policy
    # sees at evaluation; the keyframes after the replay's first success are dropped). demos.py: why.
    observe: Literal["expert", "replay"] = "expert"
    # Recoveries per grasp (replay observations only; demos.recovery_observations): the grasp keypose sent 3-6 cm
    # beside its target so that the fingers close on nothing, then two observed steps (lift straight up, open;
    # back to where the grasp started), kept when the rest of the episode replays from there. 0 = none.
    recoveries: int = Field(0, ge=0, le=5)
    # Aim the keyframe after which the replay succeeds at the goal, for the tasks whose expert stops at the edge
    # of the success radius (demos.AIMED_TASKS: reach's ends 4.6 of 5 cm from its goal): that keyframe moves by
    # what still separates the goal from the task's point (the TCP, or the object), kept when the replay still
    # succeeds and ends nearer the goal. A policy that imitates an edge-of-radius keypose misses by any error.
    aim_goal: bool = False

    @model_validator(mode="after")
    def _check(self) -> KeyframeConfig:
        if self.recoveries and self.observe != "replay":
            raise ValueError(
                "recoveries needs observe=replay (recoveries branch off the replay of the keyframes)"
            )
        return self

    def settings(self) -> dict[str, object]:
        """The config as collection settings record it; ``observe``, ``recoveries`` and ``aim_goal`` only when
        not the default, so that a dataset collected before the options existed keeps its settings (and can be
        extended)."""
        defaults = {"observe": "expert", "recoveries": 0, "aim_goal": False}
        return self.model_dump(mode="json", exclude={k for k, v in defaults.items() if getattr(self, k) == v})


# Keyframe settings tried in order when an episode's keyframes do not replay (rung 0 is the config
# itself), sparsest first. Measured on MT50 x 25 train variations (docs/metaworld.md): gripper keyframes
# at the settled frame fix hand-insert, whose expert starts closing 5 cm above the puck; a 5 mm path
# tolerance fixes handle-pull and basketball, whose experts move along curves while in contact; contact
# frames every 4, 2 and 1 steps fix soccer, sweep-into and stick-pull, which push an object along the way.
REFINEMENTS: tuple[dict[str, float | int | str], ...] = (
    {"gripper_at": "settled"},
    {"path_tolerance_m": 0.005},
    {"path_tolerance_m": 0.005, "gripper_at": "settled"},
    {"path_tolerance_m": 0.005, "contact_stride": 4},
    {"path_tolerance_m": 0.005, "contact_stride": 2},
    {"path_tolerance_m": 0.003, "contact_stride": 1},
    {"path_tolerance_m": 0.003, "contact_stride": 1, "gripper_at": "settled"},
)


def refinement_ladder(cfg: KeyframeConfig) -> list[KeyframeConfig]:
    """``cfg`` followed by its denser rungs (only ``cfg`` when ``cfg.refine`` is off)."""
    if not cfg.refine:
        return [cfg]
    return [cfg, *(cfg.model_copy(update=dict(rung)) for rung in REFINEMENTS)]


@dataclass(frozen=True)
class Keyframe:
    index: int  # state index in the trajectory
    gripper_open: bool  # gripper state commanded at this keyframe (after the toggle, for events)
    kind: str  # "gripper", "still", "turn", "contact" or "final"
    # added to the TCP position at ``index`` (metres): a keyframe aimed at the goal (KeyframeConfig.aim_goal)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


def gripper_events(grip_open: np.ndarray) -> list[int]:
    """Steps t (>= 1) whose command differs from step t-1's (state index 0 = reset, open). ``grip_open`` (T+1,)."""
    changed = np.nonzero(grip_open[1:] != grip_open[:-1])[0]  # grip_open[j+1] != grip_open[j]
    return [int(j) + 1 for j in changed]


def settle_frame(toggle: int, grip_dist: np.ndarray | None, limit: int, cfg: KeyframeConfig) -> int:
    """First frame >= ``toggle`` at which the finger opening has stopped changing (capped)."""
    cap = min(toggle + cfg.settle_max, limit)
    if grip_dist is None:
        return cap
    moved = False
    for s in range(toggle + 1, cap + 1):
        step = abs(grip_dist[s] - grip_dist[s - 1])
        moved |= step >= cfg.settle_eps
        if moved and step < cfg.settle_eps:
            return s
    return cap


def actuation_frame(
    toggle: int, tcp: np.ndarray, grip_dist: np.ndarray | None, limit: int, cfg: KeyframeConfig
) -> int:
    """Where a keypose controller should actuate the gripper for a toggle at step ``toggle``: the
    slowest frame between the toggle and the fingers settling (the expert pauses to grasp, or turns
    at the bottom of a reach), first one on ties; the settled frame with ``gripper_at="settled"``."""
    end = settle_frame(toggle, grip_dist, limit, cfg)
    if end <= toggle:
        return toggle
    if cfg.gripper_at == "settled":
        return end
    speed = np.linalg.norm(tcp[toggle : end + 1] - tcp[toggle - 1 : end], axis=1)  # (end - toggle + 1,)
    return toggle + int(np.argmin(np.round(speed, 4)))


def still_frames(tcp: np.ndarray, cfg: KeyframeConfig) -> list[int]:
    """Last frame of each run of >= ``still_frames`` near-still frames. ``tcp`` (T+1, 3)."""
    speed = np.linalg.norm(np.diff(tcp, axis=0), axis=1)  # (T,), speed[t-1] = |tcp[t] - tcp[t-1]|
    still = speed < cfg.still_speed_m
    out, run = [], 0
    for t, is_still in enumerate(still, start=1):
        run = run + 1 if is_still else 0
        if run >= cfg.still_frames and (t == len(still) or not still[t]):
            out.append(t)
    return out


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each of ``points`` (K, 3) to the segment a-b."""
    ab = b - a
    denom = float(ab @ ab)
    t = np.zeros(len(points)) if denom < 1e-12 else np.clip((points - a) @ ab / denom, 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def path_corners(tcp: np.ndarray, anchors: list[int], tolerance: float) -> list[int]:
    """Frames to add between sorted ``anchors`` so every segment follows ``tcp`` within ``tolerance``."""
    out: list[int] = []
    stack = [(a, b) for a, b in zip(anchors[:-1], anchors[1:], strict=True)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        dist = _segment_distance(tcp[a + 1 : b], tcp[a], tcp[b])  # (b - a - 1,)
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            mid = a + 1 + k
            out.append(mid)
            stack += [(a, mid), (mid, b)]
    return sorted(out)


def contact_frames(objects: np.ndarray, stride: int, speed_m: float, taken: set[int]) -> list[int]:
    """Frames ``stride`` steps apart (counted from the last taken or added frame) while ``objects``
    (T+1, K) moves faster than ``speed_m`` per step; frames 0 and T are left to the caller."""
    moving = np.zeros(len(objects), bool)  # (T+1,), moving[t]: objects moved between t-1 and t
    moving[1:] = np.linalg.norm(np.diff(objects, axis=0), axis=1) > speed_m
    out, last = [], -(10**9)
    for t in range(1, len(objects) - 1):
        if t in taken:
            last = t
        elif moving[t] and t - last >= stride:
            out.append(t)
            last = t
    return out


def detect_keyframes(
    tcp: np.ndarray,
    grip_open: np.ndarray,
    cfg: KeyframeConfig | None = None,
    grip_dist: np.ndarray | None = None,
    objects: np.ndarray | None = None,
) -> list[Keyframe]:
    """Keyframes of a trajectory: ``tcp`` (T+1, 3) TCP positions, ``grip_open`` (T+1,) bool commands
    (``grip_open[t]`` is the command applied at step t; ``grip_open[0]`` the reset state, open),
    ``grip_dist`` (T+1,) optional finger opening in [0, 1] (settles gripper keyframes), ``objects``
    (T+1, K) optional object positions (contact frames, when ``cfg.contact_stride`` > 0).

    Returns keyframes in time order; the last one is the final frame T. Frame 0 is never a keyframe
    (it is the first observation). Observations for the next keypose are taken at each keyframe.
    """
    cfg = cfg or KeyframeConfig()
    tcp, grip_open = np.asarray(tcp, np.float64), np.asarray(grip_open, bool)
    if tcp.ndim != 2 or tcp.shape[1] != 3 or len(grip_open) != len(tcp):
        raise ValueError(f"tcp must be (T+1, 3) and grip_open (T+1,); got {tcp.shape}, {grip_open.shape}")
    if grip_dist is not None and len(grip_dist) != len(tcp):
        raise ValueError(f"grip_dist must be (T+1,) = ({len(tcp)},), got {np.shape(grip_dist)}")
    if objects is not None and len(objects) != len(tcp):
        raise ValueError(f"objects must be (T+1, K) with T+1 = {len(tcp)}, got {np.shape(objects)}")
    last = len(tcp) - 1
    if last < 1:
        return []
    toggles = gripper_events(grip_open)
    events: dict[int, bool] = {}
    for i, t in enumerate(toggles):
        limit = (toggles[i + 1] - 1) if i + 1 < len(toggles) else last
        events[max(1, actuation_frame(t, tcp, grip_dist, limit, cfg))] = bool(grip_open[t])
    stills = set(still_frames(tcp, cfg))
    kept = [t for t in sorted(events) if t < last]
    for t in sorted(stills - set(events)):
        if 1 <= t <= last - cfg.min_gap and all(abs(t - k) >= cfg.min_gap for k in kept):
            kept.append(t)
    kept += path_corners(tcp, sorted({0, *kept, last}), cfg.path_tolerance_m)
    contacts: set[int] = set()
    if cfg.contact_stride > 0 and objects is not None:
        objects = np.asarray(objects, np.float64).reshape(len(tcp), -1)  # (T+1, K)
        contacts = set(contact_frames(objects, cfg.contact_stride, cfg.contact_speed_m, set(kept)))
        kept += sorted(contacts)
    kept = sorted(set(kept) - {0, last})
    # the gripper state a keypose commands changes at the settled event frame, not at the toggle
    effective = np.ones(len(tcp), bool)  # (T+1,) open at reset
    for t in sorted(events):
        effective[t:] = events[t]
    frames = []
    for t in kept:
        kind = (
            "gripper" if t in events else "still" if t in stills else "contact" if t in contacts else "turn"
        )
        frames.append(Keyframe(t, bool(effective[t]), kind))
    frames.append(Keyframe(last, bool(effective[last]), "final"))
    return frames
