"""Using Ray from ``evaluation`` (standalone commands, collection pools): join the running session, or start
a local one for the duration and shut it down after. ``platform.session`` starts Ray for platform commands."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None, address: str | None = "local", log_to_driver: bool = True,
                **kwargs: Any) -> Iterator[bool]:
    """Use the running Ray session, or start one and shut it down afterwards. Yields whether it started one."""
    import ray

    if ray.is_initialized():
        yield False
        return
    if address == "local" and "runtime_env" not in kwargs:
        # Workers import ``evaluation``/``policies`` from this checkout wherever the driver was started.
        env = {"PYTHONPATH": str(REPO_ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        kwargs["runtime_env"] = {"env_vars": env}
    ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver, **kwargs)
    try:
        yield True
    finally:
        ray.shutdown()
