"""Run parameters for MLflow: a flattened config and the process environment (versions, git, device)."""

from __future__ import annotations

import enum
import json
import math
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evaluation import REPO_ROOT


def param_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | list | tuple | dict):
        return json.dumps(value, default=str)
    return str(value)


def flatten_config(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping (or pydantic model) to ``{"a.b.c": "value"}``; lists, None and bools as JSON."""
    if hasattr(d, "model_dump"):
        d = d.model_dump(mode="json")
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, name))
        elif isinstance(value, Mapping):
            out[name] = "{}"
        elif isinstance(value, float) and not math.isfinite(value):
            out[name] = str(value)
        else:
            out[name] = param_str(value.value if isinstance(value, enum.Enum) else value)
    return out


def _git(repo_root: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(repo_root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def run_environment_params(repo_root: Path | None = None) -> dict[str, str]:
    """Versions, git commit, host and device of this process, as ``env.*`` params."""
    from importlib import metadata

    out = {"env.python": sys.version.split()[0], "env.hostname": socket.gethostname()}
    for dist in ("torch", "ray", "mlflow"):
        try:
            out[f"env.{dist}"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[f"env.{dist}"] = "not installed"
    root = Path(repo_root) if repo_root is not None else REPO_ROOT
    commit = _git(root, "rev-parse", "HEAD")
    out["env.git_commit"] = commit or "unknown (no git checkout, e.g. a Ray working_dir copy)"
    if commit:
        out["env.git_dirty"] = json.dumps(bool(_git(root, "status", "--porcelain", "--untracked-files=no")))
    try:
        import torch

        if torch.cuda.is_available():
            out["env.device"] = f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
        else:
            out["env.device"] = "cpu"
    except ImportError:
        out["env.device"] = "unknown (torch not installed)"
    return out
