"""Stand-in for ``rlbench.backend.utils``: the 24-bit RGB depth encoding and the task-class lookup."""

from __future__ import annotations

import importlib

import numpy as np
from PIL import Image


def float_array_to_rgb_image(float_array: np.ndarray, scale_factor: float = 256000.0) -> Image.Image:
    """Fixed-point encoding: round(value * scale) as a 24-bit integer, R the high byte, B the low byte."""
    scaled = np.clip(np.floor(float_array * scale_factor + 0.5), 0, 2**24 - 1).astype(np.uint32)
    rgb = np.zeros(scaled.shape + (3,), np.uint8)
    rgb[..., 0] = (scaled >> 16) & 0xFF
    rgb[..., 1] = (scaled >> 8) & 0xFF
    rgb[..., 2] = scaled & 0xFF
    return Image.fromarray(rgb, mode="RGB")


def image_to_float_array(image, scale_factor: float | None = None) -> np.ndarray:
    arr = np.array(image)
    if arr.ndim == 3 and arr.shape[2] == 3:
        value = arr[..., 0].astype(np.float64) * 65536 + arr[..., 1].astype(np.float64) * 256 + arr[..., 2]
        return value / (256000.0 if scale_factor is None else scale_factor)
    return arr.astype(np.float32) / (100.0 if scale_factor is None else scale_factor)


def task_file_to_task_class(task_file: str):
    name = task_file.replace(".py", "")
    class_name = "".join(w[0].upper() + w[1:] for w in name.split("_"))
    module = importlib.import_module(f"rlbench.tasks.{name}")
    return getattr(module, class_name)
