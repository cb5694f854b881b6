"""Recorded episodes: a plain on-disk format any robot stack can write, read back with every check.

``python -m evaluation.import_episodes --root DIR --out DIR`` turns a folder of them into this project's keyframe
dataset (``evaluation.datasets.episode_import``); docs/importing.md shows how to write one. Layout, one folder per
episode, frames ``t = 0 .. T-1`` at the robot's recording rate::

    <root>/<task>/<episode>/
        episode.json             {"instruction": "push the puck to the goal", "cameras": ["front", "side"]}
        gripper.npy              (T, 8) float [x, y, z, qx, qy, qz, qw, open]: the gripper per frame, world frame,
                                 metres, unit quaternion; open 1 (open) or 0 (closed)
        <camera>/intrinsics.npy  (3, 3) pinhole K in pixels
        <camera>/extrinsics.npy  (4, 4), or (T, 4, 4) for a camera that moves: camera-to-world, OpenCV axes
                                 (x right, y down, z forward), metres
        <camera>/rgb/<t>.png     (H, W, 3) 8-bit colour; t written with 6 digits (000000.png, 000001.png, ...)
        <camera>/depth/<t>.npy   (H, W) float32 planar depth in metres (0, NaN or inf: no reading)

Everything a reader could get wrong is refused by :func:`read_episode` with one line naming the episode, the file
and the fix (:class:`EpisodeFormatError`): missing frames, depth in millimetres, extrinsics that are not rigid,
frames without a pose. Images are read only for the frames used (:meth:`RecordedEpisode.frames`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from evaluation.files import atomic_write_bytes, atomic_write_json
from evaluation.simulators.sim import CameraFrame

EPISODE_FILE = "episode.json"
GRIPPER_FILE = "gripper.npy"
FRAME_DIGITS = 6
POSE_WIDTH = 8  # [x, y, z, qx, qy, qz, qw, open]
RIGID_TOLERANCE = (
    1e-3  # |R^T R - I| and |det R - 1| of a camera-to-world rotation (float32 round-off is ~1e-6)
)
QUATERNION_TOLERANCE = 1e-2  # | |q| - 1 |
# A tabletop camera sees at most a few metres; planar depth with a median beyond this is millimetres
# (a 70 cm view written in mm has median 700).
MAX_MEDIAN_DEPTH_M = 10.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class EpisodeFormatError(ValueError):
    """A recorded episode that cannot be imported; the message names the episode, the file and the fix."""


@dataclass(frozen=True)
class RecordedCamera:
    name: str
    intrinsics: np.ndarray  # (3, 3)
    extrinsics: np.ndarray  # (T, 4, 4) camera-to-world, one per frame (a fixed camera's repeated)


@dataclass(frozen=True)
class RecordedEpisode:
    path: Path
    task: str
    instruction: str
    gripper: np.ndarray  # (T, 8) [x, y, z, qx, qy, qz, qw, open]
    cameras: tuple[RecordedCamera, ...]

    @property
    def num_frames(self) -> int:
        return len(self.gripper)

    @property
    def gripper_open(self) -> np.ndarray:
        """(T,) bool."""
        return self.gripper[:, 7] > 0.5

    def frames(self, t: int) -> list[CameraFrame]:
        """Every camera at frame ``t`` (RGB, depth in metres, K, camera-to-world), with the image checks."""
        out = []
        for cam in self.cameras:
            rgb = _read_rgb(self, cam.name, t)
            depth = _read_depth(self, cam.name, t)
            if rgb.shape[:2] != depth.shape:
                raise EpisodeFormatError(
                    f"episode {self.path}: {cam.name} frame {t} has RGB {rgb.shape[1]}x{rgb.shape[0]} but depth "
                    f"{depth.shape[1]}x{depth.shape[0]}: write both at the camera's resolution"
                )
            out.append(CameraFrame(cam.name, rgb, depth, cam.intrinsics, cam.extrinsics[t]))
        return out


def frame_name(t: int) -> str:
    return f"{t:0{FRAME_DIGITS}d}"


def list_episodes(root: Path) -> dict[str, list[Path]]:
    """``{task: [episode folders, sorted by name]}`` under ``root`` (``<root>/<task>/<episode>/episode.json``)."""
    root = Path(root)
    if not root.is_dir():
        raise EpisodeFormatError(
            f"--root {root} is not a directory of recorded episodes (<root>/<task>/<episode>/)"
        )
    found: dict[str, list[Path]] = {}
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        episodes = sorted(p for p in task_dir.iterdir() if (p / EPISODE_FILE).is_file())
        if episodes:
            if not _NAME.match(task_dir.name):
                raise EpisodeFormatError(
                    f"{task_dir}: a task folder's name must be letters, digits, '.', '-' or '_'"
                )
            found[task_dir.name] = episodes
    if not found:
        raise EpisodeFormatError(
            f"no episodes under {root}: expected <root>/<task>/<episode>/{EPISODE_FILE} (docs/importing.md)"
        )
    return found


def read_episode(path: Path, task: str | None = None) -> RecordedEpisode:
    """The episode at ``path`` with its poses and cameras checked and every frame's files present."""
    path = Path(path)
    meta = _read_meta(path)
    gripper = _read_gripper(path)
    frames = len(gripper)
    cameras = tuple(_read_camera(path, name, frames) for name in meta["cameras"])
    for cam in cameras:
        for kind, suffix in (("rgb", ".png"), ("depth", ".npy")):
            folder = path / cam.name / kind
            for t in range(frames):
                if not (folder / f"{frame_name(t)}{suffix}").is_file():
                    raise EpisodeFormatError(
                        f"episode {path}: {folder / (frame_name(t) + suffix)} is missing ({GRIPPER_FILE} has {frames} "
                        f"frames): every frame needs an RGB image and a depth map per camera; drop the frame "
                        f"from {GRIPPER_FILE} too, or record it"
                    )
    return RecordedEpisode(path, task or path.parent.name, meta["instruction"], gripper, cameras)


def _read_meta(path: Path) -> dict:
    file = path / EPISODE_FILE
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError:
        raise EpisodeFormatError(f"episode {path}: {file} is missing (docs/importing.md)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EpisodeFormatError(f"episode {path}: {file} is not valid JSON ({err})") from None
    instruction = meta.get("instruction") if isinstance(meta, dict) else None
    if not isinstance(instruction, str) or not instruction.strip():
        raise EpisodeFormatError(f'episode {path}: {file} needs "instruction": the task in words')
    cameras = meta.get("cameras")
    if (
        not isinstance(cameras, list)
        or not cameras
        or not all(isinstance(c, str) and _NAME.match(c) for c in cameras)
        or len(set(cameras)) != len(cameras)
    ):
        raise EpisodeFormatError(
            f'episode {path}: {file} needs "cameras": a list of distinct camera folder names'
        )
    return {"instruction": instruction.strip(), "cameras": cameras}


def _load_npy(path: Path, episode: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EpisodeFormatError(f"episode {episode}: {path} is missing: {what}") from None
    except (OSError, ValueError) as err:
        raise EpisodeFormatError(f"episode {episode}: {path} is not a readable .npy array ({err})") from None


def _read_gripper(path: Path) -> np.ndarray:
    file = path / GRIPPER_FILE
    pose = _load_npy(file, path, f"the (T, {POSE_WIDTH}) gripper pose per frame")
    if pose.ndim != 2 or pose.shape[1] != POSE_WIDTH or len(pose) < 2:
        raise EpisodeFormatError(
            f"episode {path}: {file} is {pose.shape}, expected (T >= 2, {POSE_WIDTH}): "
            "[x, y, z, qx, qy, qz, qw, open] per frame"
        )
    pose = pose.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(pose).all(axis=1))
    if len(bad):
        raise EpisodeFormatError(
            f"episode {path}: {file} has no pose at frame {int(bad[0])} ({len(bad)} frames NaN or inf): every frame "
            "needs the gripper pose; drop those frames (and their images) or record them"
        )
    norm = np.linalg.norm(pose[:, 3:7], axis=1)
    off = np.flatnonzero(np.abs(norm - 1.0) > QUATERNION_TOLERANCE)
    if len(off):
        raise EpisodeFormatError(
            f"episode {path}: {file} frame {int(off[0])} has a quaternion of norm {norm[off[0]]:.3f}: columns 3-6 "
            "are a unit quaternion [qx, qy, qz, qw]"
        )
    opening = pose[:, 7]
    if np.any((opening < 0.0) | (opening > 1.0)):
        raise EpisodeFormatError(
            f"episode {path}: {file} column 7 (open) holds {opening.min():g}..{opening.max():g}: write 1 for open, "
            "0 for closed"
        )
    pose[:, 3:7] /= norm[:, None]
    return pose


def _read_camera(path: Path, name: str, frames: int) -> RecordedCamera:
    folder = path / name
    k = _load_npy(folder / "intrinsics.npy", path, "the camera's (3, 3) pinhole matrix K")
    if (
        k.shape != (3, 3)
        or not np.isfinite(k).all()
        or k[0, 0] <= 0
        or k[1, 1] <= 0
        or not np.allclose(k[2], [0, 0, 1])
    ):
        raise EpisodeFormatError(
            f"episode {path}: {folder / 'intrinsics.npy'} is not a pinhole K ([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "
            f"fx, fy > 0, in pixels): got {np.array2string(np.asarray(k), precision=3)}"
        )
    ext = _load_npy(folder / "extrinsics.npy", path, "the camera-to-world (4, 4) or (T, 4, 4) matrices")
    if ext.shape == (4, 4):
        ext = np.broadcast_to(ext, (frames, 4, 4))
    if ext.shape != (frames, 4, 4):
        raise EpisodeFormatError(
            f"episode {path}: {folder / 'extrinsics.npy'} is {ext.shape}: expected (4, 4) for a fixed camera or "
            f"({frames}, 4, 4), one per frame of {GRIPPER_FILE}"
        )
    ext = np.asarray(ext, np.float64)
    problem = non_rigid(ext)
    if problem is not None:
        t, why = problem
        raise EpisodeFormatError(f"episode {path}: {folder / 'extrinsics.npy'} frame {t} {why}")
    return RecordedCamera(name, np.asarray(k, np.float64), ext)


def non_rigid(ext: np.ndarray) -> tuple[int, str] | None:
    """The first of (T, 4, 4) camera-to-world matrices that is not rigid and why (with the fix); None if all are.
    Shared by the importer and the policy server (platform.serve)."""
    rot = ext[:, :3, :3]  # (T, 3, 3)
    ortho = np.abs(np.einsum("tji,tjk->tik", rot, rot) - np.eye(3)).max(axis=(1, 2))  # (T,)
    det = np.linalg.det(rot)  # (T,)
    bottom = np.abs(ext[:, 3] - [0, 0, 0, 1]).max(axis=1)  # (T,)
    bad = np.flatnonzero(
        ~np.isfinite(ext).all(axis=(1, 2))
        | (ortho > RIGID_TOLERANCE)
        | (np.abs(det - 1.0) > RIGID_TOLERANCE)
        | (bottom > RIGID_TOLERANCE)
    )
    if not len(bad):
        return None
    t = int(bad[0])
    return t, (
        f"is not a rigid transform (|R^T R - I| = {ortho[t]:.2g}, det R = {det[t]:.3f}, last row "
        f"{ext[t, 3].tolist()}): write camera-to-world as [[R, t], [0, 0, 0, 1]] with R a rotation "
        "(no scale, no shear, no reflection)"
    )


def metric_depth(depth: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(H, W) planar depth as float32 metres with holes (non-finite, <= 0) set to 0, or (None, what is wrong and
    the fix): integer depth or a median beyond ``MAX_MEDIAN_DEPTH_M`` is millimetres. Shared with platform.serve."""
    if not np.issubdtype(depth.dtype, np.floating):
        return (
            None,
            f"holds {depth.dtype} depth, most likely millimetres: write float32 metres (depth_mm / 1000)",
        )
    depth = depth.astype(np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if valid.any():
        median = float(np.median(depth[valid]))
        if median > MAX_MEDIAN_DEPTH_M:
            return None, (
                f"has median depth {median:.0f}, which is millimetres, not metres: write depth in "
                "metres (depth_mm / 1000)"
            )
    if np.any(depth < 0):
        return None, "has negative depth: write planar depth >= 0"
    return np.where(valid, depth, 0.0).astype(np.float32), ""


def _read_rgb(episode: RecordedEpisode, camera: str, t: int) -> np.ndarray:
    file = episode.path / camera / "rgb" / f"{frame_name(t)}.png"
    try:
        with Image.open(file) as image:
            if image.mode not in ("RGB", "RGBA", "L", "P"):
                raise EpisodeFormatError(
                    f"episode {episode.path}: {file} is a {image.mode} image: write 8-bit RGB colour"
                )
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise EpisodeFormatError(f"episode {episode.path}: {file} is missing") from None
    except OSError as err:
        raise EpisodeFormatError(f"episode {episode.path}: {file} is not a readable PNG ({err})") from None


def _read_depth(episode: RecordedEpisode, camera: str, t: int) -> np.ndarray:
    file = episode.path / camera / "depth" / f"{frame_name(t)}.npy"
    depth = _load_npy(file, episode.path, "the frame's depth map")
    if depth.ndim != 2:
        raise EpisodeFormatError(
            f"episode {episode.path}: {file} is {depth.shape}, expected (H, W) planar depth"
        )
    metres, problem = metric_depth(depth)
    if metres is None:
        raise EpisodeFormatError(f"episode {episode.path}: {file} {problem}")
    return metres


# -- writing (exporters, tests) --------------------------------------------------------------------------------
def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclass
class CameraRecording:
    """What an exporter gives :func:`write_episode` for one camera."""

    intrinsics: np.ndarray  # (3, 3)
    extrinsics: np.ndarray  # (4, 4) or (T, 4, 4)
    rgb: Sequence[np.ndarray]  # T x (H, W, 3) uint8
    depth: Sequence[np.ndarray]  # T x (H, W) float32 metres


def write_episode(
    path: Path, instruction: str, gripper: np.ndarray, cameras: Mapping[str, CameraRecording]
) -> Path:
    """Write one episode in the format above (each file atomically; ``episode.json`` last, so a folder without it
    is an unfinished episode that :func:`list_episodes` skips)."""
    path = Path(path)
    gripper = np.asarray(gripper, np.float64)
    for name, cam in cameras.items():
        if len(cam.rgb) != len(gripper) or len(cam.depth) != len(gripper):
            raise ValueError(
                f"camera {name}: {len(cam.rgb)} RGB and {len(cam.depth)} depth frames for "
                f"{len(gripper)} poses"
            )
        atomic_write_bytes(path / name / "intrinsics.npy", _npy_bytes(np.asarray(cam.intrinsics, np.float64)))
        atomic_write_bytes(path / name / "extrinsics.npy", _npy_bytes(np.asarray(cam.extrinsics, np.float64)))
        for t, (rgb, depth) in enumerate(zip(cam.rgb, cam.depth, strict=True)):
            atomic_write_bytes(path / name / "rgb" / f"{frame_name(t)}.png", _png_bytes(rgb))
            atomic_write_bytes(
                path / name / "depth" / f"{frame_name(t)}.npy", _npy_bytes(np.asarray(depth, np.float32))
            )
    atomic_write_bytes(path / GRIPPER_FILE, _npy_bytes(gripper))
    atomic_write_json(path / EPISODE_FILE, {"instruction": instruction, "cameras": list(cameras)})
    return path
