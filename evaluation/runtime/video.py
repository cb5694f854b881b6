"""Rollout videos: one frame per keypose from one evaluation camera, with the predicted keypose drawn.

A keyframe policy acts at keyposes, so its rollout is the sequence of observations it decided on: frame k
is the camera image the policy saw before keypose k, with the gripper now (yellow dot) and the keypose the
policy predicted from it (red ring; filled when it closes the gripper), and a last frame after the final
keypose, framed green on success and red on failure. The frames come from the cameras already rendered
for the point cloud, so recording costs no extra rendering (one ``observe`` after the last keypose).

Videos are animated GIFs (Pillow; MLflow's artifact view plays them), upscaled with nearest-neighbour so
the markers stay sharp, and bounded by :data:`MAX_VIDEO_BYTES`: a larger one is written with fewer frames.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.files import atomic_write_bytes
from evaluation.simulators.sim import CameraFrame, Observation

DEFAULT_CAMERA = "front"
SCALE = 2  # 128 px cameras -> 256 px videos
FRAME_MS = 600  # one keypose per 0.6 s
MAX_VIDEO_BYTES = 1_500_000
GREEN, RED, WHITE, YELLOW, BLACK = (40, 200, 60), (230, 40, 40), (255, 255, 255), (255, 220, 0), (0, 0, 0)


def pick_camera(obs: Observation, name: str = DEFAULT_CAMERA) -> CameraFrame:
    """The camera called ``name`` (empty: the first; a name the rig lacks: the first)."""
    for cam in obs.cameras:
        if cam.name == name:
            return cam
    if not obs.cameras:
        raise ValueError("the observation has no camera images to record")
    return obs.cameras[0]


def project(cam: CameraFrame, xyz: np.ndarray) -> tuple[float, float] | None:
    """Pixel (u, v) of the world point ``xyz`` (3,) in ``cam``; None when it is behind the camera."""
    world_to_cam = np.linalg.inv(cam.extrinsics)  # (4, 4); extrinsics are camera-to-world, OpenCV axes
    p = world_to_cam @ np.append(np.asarray(xyz, np.float64)[:3], 1.0)  # (4,)
    if p[2] <= 1e-6:
        return None
    uvw = cam.intrinsics @ p[:3]  # (3,)
    return float(uvw[0] / uvw[2]), float(uvw[1] / uvw[2])


def annotate(
    cam: CameraFrame,
    caption: str,
    gripper_xyz: np.ndarray | None = None,
    target_pose: np.ndarray | None = None,
    outcome: bool | None = None,
) -> np.ndarray:
    """One video frame (H*SCALE, W*SCALE, 3) uint8: the camera image, markers, a caption; a coloured frame
    border when ``outcome`` is known (green success, red failure)."""
    from PIL import Image, ImageDraw

    h, w = cam.rgb.shape[:2]
    img = Image.fromarray(np.ascontiguousarray(cam.rgb[..., :3], dtype=np.uint8)).resize(
        (w * SCALE, h * SCALE), Image.NEAREST
    )
    draw = ImageDraw.Draw(img)
    r = 3 * SCALE
    if gripper_xyz is not None and (uv := project(cam, gripper_xyz)) is not None:
        u, v = uv[0] * SCALE, uv[1] * SCALE
        draw.ellipse((u - r / 2, v - r / 2, u + r / 2, v + r / 2), fill=YELLOW, outline=BLACK)
    if target_pose is not None and (uv := project(cam, target_pose[:3])) is not None:
        u, v = uv[0] * SCALE, uv[1] * SCALE
        closes = len(target_pose) >= 8 and float(target_pose[7]) < 0.5
        draw.ellipse((u - r, v - r, u + r, v + r), outline=RED, width=2, fill=RED if closes else None)
    draw.rectangle((0, 0, w * SCALE, 12), fill=(0, 0, 0))
    draw.text((3, 1), caption, fill=WHITE)
    if outcome is not None:
        draw.rectangle((0, 0, w * SCALE - 1, h * SCALE - 1), outline=GREEN if outcome else RED, width=4)
    return np.asarray(img)


def write_gif(
    frames: Sequence[np.ndarray], path: Path, frame_ms: int = FRAME_MS, max_bytes: int = MAX_VIDEO_BYTES
) -> Path:
    """Write ``frames`` as a looping GIF no larger than ``max_bytes`` (dropping every other middle frame,
    then halving the size, until it fits; the first and last frames always stay). Atomic (tmp + rename)."""
    from PIL import Image

    if not frames:
        raise ValueError(f"no frames to write to {path}")
    frames = list(frames)
    while True:
        images = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE, colors=128) for f in frames]
        gif = io.BytesIO()
        images[0].save(gif, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
        if gif.tell() <= max_bytes or (len(frames) <= 2 and frames[0].shape[0] <= 32):
            break
        if len(frames) > 2:
            frames = [frames[0], *frames[1:-1][::2], frames[-1]]
        else:
            frames = [f[::2, ::2] for f in frames]
    atomic_write_bytes(path, gif.getvalue())
    return path


class Recorder:
    """Collects one episode's annotated frames (``run_episode(record_camera=...)``)."""

    def __init__(self, task: str, camera: str = DEFAULT_CAMERA) -> None:
        self.task, self.camera = task, camera
        self.frames: list[np.ndarray] = []

    def keypose(self, k: int, obs: Observation, pose: np.ndarray) -> None:
        """Frame k: what the policy saw and the keypose it predicted from it."""
        state = "close" if len(pose) >= 8 and float(pose[7]) < 0.5 else "open"
        self.frames.append(
            annotate(
                pick_camera(obs, self.camera),
                f"{self.task}  keypose {k}  -> {state}",
                obs.gripper_pose[:3],
                np.asarray(pose, np.float64),
            )
        )

    def end(self, obs: Observation | None, success: bool, steps: int) -> None:
        """The last frame: the scene after the final keypose, framed by the outcome."""
        if obs is None:
            return
        word = "SUCCESS" if success else "FAILURE"
        self.frames.append(
            annotate(
                pick_camera(obs, self.camera),
                f"{self.task}  {word} after {steps} keyposes",
                obs.gripper_pose[:3],
                outcome=success,
            )
        )


def video_name(task: str, success: bool) -> str:
    return f"{task}_{'success' if success else 'failure'}.gif"


def write_videos(videos: dict[tuple[str, bool], tuple[object, list[np.ndarray]]], out_dir: Path) -> list[str]:
    """One GIF per (task, outcome) recorded by the coordinator; the file names, sorted."""
    names = []
    for (task, success), (_spec, frames) in sorted(videos.items()):
        if frames:
            write_gif(frames, Path(out_dir) / video_name(task, success))
            names.append(video_name(task, success))
    return names
