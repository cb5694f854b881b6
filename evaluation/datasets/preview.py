"""``python -m evaluation.collect --preview TASK``: pictures of what the policy sees.

Writes ``<task>_cameras.png`` (RGB and depth of every camera at the first observation) and
``<task>_pointcloud.png`` (the fused, cropped, voxelized cloud from three viewpoints, with the expert's
keyposes numbered in order: green = gripper open, red = closed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.datasets.demos import keyframes_of, keypose, run_expert
from evaluation.datasets.keyframes import KeyframeConfig
from evaluation.pointcloud import PointCloudConfig, frames_to_points
from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator
from evaluation.simulators.rendering import RenderConfig


def _camera_figure(obs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(obs.cameras)
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6), squeeze=False)
    for i, frame in enumerate(obs.cameras):
        axes[0, i].imshow(frame.rgb)
        axes[0, i].set_title(frame.name)
        depth = np.where(frame.depth < 5.0, frame.depth, np.nan)  # background reads ~far
        axes[1, i].imshow(depth, cmap="viridis")
        axes[1, i].set_title(f"depth {np.nanmin(depth):.2f}-{np.nanmax(depth):.2f} m")
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle(f"{obs.task}: {obs.instruction}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _cloud_figure(
    points: np.ndarray, poses: np.ndarray, title: str, cfg: PointCloudConfig, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = np.clip((points[:, 3:6] + 1.0) / 2.0, 0.0, 1.0)  # rgb [-1, 1] -> [0, 1]
    fig = plt.figure(figsize=(15, 5))
    views = [("3D", (25, -60)), ("top (x-y)", (90, -90)), ("side (y-z)", (0, 0))]
    for k, (name, (elev, azim)) in enumerate(views):
        ax = fig.add_subplot(1, 3, k + 1, projection="3d")
        ax.scatter(points[:, 0], points[:, 1], points[:, 2], c=colours, s=2, depthshade=False)
        ax.plot(poses[:, 0], poses[:, 1], poses[:, 2], "k--", lw=1)
        for j, pose in enumerate(poses):
            ax.scatter(
                *pose[:3], c="limegreen" if pose[7] >= 0.5 else "red", s=60, marker="o", edgecolors="k"
            )
            ax.text(*pose[:3], f" {j}", fontsize=9)
        ax.set_xlim(cfg.workspace_low[0], cfg.workspace_high[0])
        ax.set_ylim(cfg.workspace_low[1], cfg.workspace_high[1])
        ax.set_zlim(cfg.workspace_low[2], cfg.workspace_high[2])
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_zlabel("z")
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_preview(
    task: str,
    out: Path,
    suite: str = "mt10",
    variation: int = 0,
    render: RenderConfig | None = None,
    pointcloud: PointCloudConfig | None = None,
) -> list[Path]:
    """Render ``task``'s first observation and the expert's keyposes; returns the PNG paths."""
    out.mkdir(parents=True, exist_ok=True)
    pc_cfg = pointcloud or PointCloudConfig()
    with MetaWorldSimulator(MetaWorldConfig(suite=suite, render=render or RenderConfig())) as sim:  # type: ignore[arg-type]
        traj = run_expert(sim, task, variation, seed=0)
        poses = np.stack([keypose(traj, kf) for kf in keyframes_of(traj, KeyframeConfig())])  # (K, 8)
        obs = sim.reset(task, variation, 0)
    points = frames_to_points(obs.cameras, pc_cfg)  # (N, 7)
    cam_path, cloud_path = out / f"{task}_cameras.png", out / f"{task}_pointcloud.png"
    _camera_figure(obs, cam_path)
    status = "expert solved it" if traj.success else "expert FAILED"
    _cloud_figure(
        points,
        poses,
        f"{task} variation {variation}: {len(points)} points, {len(poses)} keyposes ({status})",
        pc_cfg,
        cloud_path,
    )
    return [cam_path, cloud_path]
