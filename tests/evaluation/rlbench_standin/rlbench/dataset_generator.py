"""Stand-in for ``rlbench.dataset_generator``: ``save_demo`` writes an episode exactly in RLBench's
on-disk layout; ``generate`` collects live demos into either layout:

- ``all_variations=False`` (RLBench): ``<save>/<task>/variation<v>/variation_descriptions.pkl`` and
  ``<save>/<task>/variation<v>/episodes/episode<i>/``;
- ``all_variations=True`` (PerAct's fork, the PerAct data): ``<save>/<task>/all_variations/episodes/
  episode<i>/`` holding ``variation_descriptions.pkl`` and ``variation_number.pkl`` too.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
from PIL import Image

from rlbench.action_modes.action_mode import MoveArmThenGripper
from rlbench.action_modes.arm_action_modes import EndEffectorPoseViaPlanning
from rlbench.action_modes.gripper_action_modes import Discrete
from rlbench.backend import utils
from rlbench.backend.const import (
    DEPTH_SCALE,
    EPISODE_FOLDER,
    EPISODES_FOLDER,
    IMAGE_FORMAT,
    LOW_DIM_PICKLE,
    VARIATION_DESCRIPTIONS,
    VARIATION_NUMBER,
    VARIATIONS_ALL_FOLDER,
    VARIATIONS_FOLDER,
)
from rlbench.environment import Environment
from rlbench.observation_config import ObservationConfig

CAMERAS = ("left_shoulder", "right_shoulder", "overhead", "wrist", "front")


def save_demo(demo, example_path: str) -> None:
    for cam in CAMERAS:
        for kind in ("rgb", "depth", "mask"):
            os.makedirs(os.path.join(example_path, f"{cam}_{kind}"), exist_ok=True)
    for i, obs in enumerate(demo):
        for cam in CAMERAS:
            rgb = getattr(obs, f"{cam}_rgb")
            depth = getattr(obs, f"{cam}_depth")
            mask = getattr(obs, f"{cam}_mask")
            Image.fromarray(rgb).save(os.path.join(example_path, f"{cam}_rgb", IMAGE_FORMAT % i))
            utils.float_array_to_rgb_image(depth, scale_factor=DEPTH_SCALE).save(
                os.path.join(example_path, f"{cam}_depth", IMAGE_FORMAT % i)
            )
            Image.fromarray((mask * 255).astype(np.uint8)).save(
                os.path.join(example_path, f"{cam}_mask", IMAGE_FORMAT % i)
            )
            for kind in ("rgb", "depth", "point_cloud", "mask"):
                setattr(obs, f"{cam}_{kind}", None)
    with open(os.path.join(example_path, LOW_DIM_PICKLE), "wb") as f:
        pickle.dump(demo, f)


def observation_config(image_size) -> ObservationConfig:
    cfg = ObservationConfig()
    cfg.set_all(True)
    for cam in CAMERAS:
        cam_cfg = getattr(cfg, f"{cam}_camera")
        cam_cfg.image_size = list(image_size)
        cam_cfg.depth_in_meters = False
        cam_cfg.masks_as_one_channel = False
    return cfg


def generate(
    save_path: str,
    tasks,
    episodes_per_task: int,
    variations: int = -1,
    all_variations: bool = False,
    image_size=(32, 32),
    seed: int = 0,
) -> None:
    np.random.seed(seed)
    env = Environment(
        MoveArmThenGripper(EndEffectorPoseViaPlanning(), Discrete()),
        obs_config=observation_config(image_size),
        headless=True,
    )
    env.launch()
    for task_class in tasks:
        task_env = env.get_task(task_class)
        count = task_env.variation_count() if variations < 0 else min(variations, task_env.variation_count())
        if all_variations:
            episodes = os.path.join(save_path, task_env.get_name(), VARIATIONS_ALL_FOLDER, EPISODES_FOLDER)
            for ex in range(episodes_per_task):
                variation = ex % count
                task_env.set_variation(variation)
                descriptions, _ = task_env.reset()
                (demo,) = task_env.get_demos(amount=1, live_demos=True)
                path = os.path.join(episodes, EPISODE_FOLDER % ex)
                save_demo(demo, path)
                with open(os.path.join(path, VARIATION_DESCRIPTIONS), "wb") as f:
                    pickle.dump(descriptions, f)
                with open(os.path.join(path, VARIATION_NUMBER), "wb") as f:
                    pickle.dump(variation, f)
            continue
        for variation in range(count):
            task_env.set_variation(variation)
            descriptions, _ = task_env.reset()
            variation_path = os.path.join(save_path, task_env.get_name(), VARIATIONS_FOLDER % variation)
            os.makedirs(variation_path, exist_ok=True)
            with open(os.path.join(variation_path, VARIATION_DESCRIPTIONS), "wb") as f:
                pickle.dump(descriptions, f)
            for ex in range(episodes_per_task):
                (demo,) = task_env.get_demos(amount=1, live_demos=True)
                save_demo(demo, os.path.join(variation_path, EPISODES_FOLDER, EPISODE_FOLDER % ex))
    env.shutdown()
