"""Policy registry: config ``type`` -> (config class, policy class). The types and their config classes are
listed once, in ``policies.config.CONFIG_CLASSES``; this adds the policy class of each."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter

from policies.base import EMA_WEIGHTS_FILE, POLICY_CONFIG_FILE, WEIGHTS_FILE, CheckpointError, Policy
from policies.baselines import DDAStylePolicy
from policies.config import (
    CONFIG_CLASSES,
    DDAStyleConfig,
    MiniDiffuserConfig,
    OneToOneConfig,
    PolicyConfig,
    deep_merge,
)
from policies.minidiffuser import MiniDiffuserPolicy, OneToOnePolicy

_POLICY_CLASSES: dict[str, type[Policy]] = {
    "mini_diffuser": MiniDiffuserPolicy,
    "one_to_one": OneToOnePolicy,
    "dda_style": DDAStylePolicy,
}
REGISTRY: dict[str, tuple[type, type[Policy]]] = {
    t: (CONFIG_CLASSES[t], _POLICY_CLASSES[t]) for t in CONFIG_CLASSES
}

_ADAPTER: TypeAdapter = TypeAdapter(PolicyConfig)


def parse_policy_config(data: dict[str, Any]) -> MiniDiffuserConfig | OneToOneConfig | DDAStyleConfig:
    """Validate a policy config dict (``type`` selects the class; a ``preset`` fills unset fields).

    Raises pydantic's ``ValidationError`` (a ``ValueError``) naming the bad key.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a policy config must be a mapping with a 'type' key, got {type(data).__name__}")
    if "type" not in data:
        raise ValueError(f"policy config has no 'type'; choose one of {sorted(REGISTRY)}")
    return _ADAPTER.validate_python(data)


def build_policy(cfg: MiniDiffuserConfig | OneToOneConfig | DDAStyleConfig) -> Policy:
    """A freshly initialised policy of ``cfg.type``."""
    if cfg.type not in REGISTRY:
        raise ValueError(f"unknown policy type {cfg.type!r}; registered: {sorted(REGISTRY)}")
    config_cls, policy_cls = REGISTRY[cfg.type]
    if not isinstance(cfg, config_cls):
        raise TypeError(f"policy type {cfg.type!r} needs a {config_cls.__name__}, got {type(cfg).__name__}")
    return policy_cls(cfg)


def load_policy(
    config: dict[str, Any],
    weights: Path | bytes,
    map_location: str = "cpu",
    config_updates: dict[str, Any] | None = None,
    source: str = "the weights",
) -> Policy:
    """The policy of ``config`` (``policy.json`` as a dict) with ``weights`` loaded (a file, or its bytes:
    what evaluation actors receive through the object store), in eval mode.

    ``config_updates``: nested values laid over the saved config, for inference settings such as
    ``{"diffusion": {"sampler": "ddpm", "inference_steps": 100}}`` (an architecture change fails to load).
    """
    try:
        cfg = parse_policy_config(deep_merge(config, config_updates or {}))
    except ValueError as exc:
        raise CheckpointError(f"{source}: {POLICY_CONFIG_FILE} is not a valid policy config: {exc}") from exc
    policy = build_policy(cfg)
    try:
        state = torch.load(
            io.BytesIO(weights) if isinstance(weights, bytes) else weights,
            map_location=map_location,
            weights_only=True,
        )
        policy.load_state_dict(state)
    except Exception as exc:  # corrupt file or shape mismatch: name the file
        name = weights if isinstance(weights, Path) else source
        raise CheckpointError(f"cannot load weights {name}: {exc}") from exc
    return policy.eval()


def load_checkpoint(
    directory: str | Path,
    prefer_ema: bool = True,
    map_location: str = "cpu",
    config_updates: dict[str, Any] | None = None,
) -> Policy:
    """Rebuild a policy from a checkpoint directory's config alone, then load its weights (EMA if preferred
    and present)."""
    config, weights = read_policy_files(directory, prefer_ema)
    return load_policy(config, weights, map_location, config_updates, source=str(directory))


def read_policy_files(directory: str | Path, prefer_ema: bool = True) -> tuple[dict[str, Any], Path]:
    """A checkpoint directory's policy config (``policy.json``) and the weights file to load (``ema.pt``
    when present and preferred, else ``model.pt``), checked to exist."""
    directory = Path(directory)
    cfg_path = directory / POLICY_CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing: {directory} is not a policy checkpoint directory")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path} is not a valid policy config: {exc}") from exc
    weights = directory / (
        EMA_WEIGHTS_FILE if prefer_ema and (directory / EMA_WEIGHTS_FILE).is_file() else WEIGHTS_FILE
    )
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing: the checkpoint {directory} is incomplete")
    return config, weights


def parameter_shapes(cfg: MiniDiffuserConfig | OneToOneConfig | DDAStyleConfig) -> dict[str, tuple[int, ...]]:
    """The policy's state dict as ``{name: shape}``, built on the meta device (no memory; milliseconds even
    for the paper preset): what decides whether a checkpoint's weights load into a policy of ``cfg``."""
    with torch.device("meta"):
        policy = build_policy(cfg)
    return {name: tuple(t.shape) for name, t in policy.state_dict().items()}


def shape_changes(saved: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The fields of policy config ``new`` whose change from ``saved`` (both ``policy.json`` dicts) stops
    ``saved``'s weights loading: ``(dotted key, saved value, new value)``, empty when they load as they are.

    Each differing field is tried alone on ``saved``; when only a combination changes the shapes, every
    differing field is named."""
    old_cfg, new_cfg = parse_policy_config(saved), parse_policy_config(new)
    old, cur = old_cfg.model_dump(mode="json"), new_cfg.model_dump(mode="json")
    old_shapes = parameter_shapes(old_cfg)
    if old_cfg.type == new_cfg.type and parameter_shapes(new_cfg) == old_shapes:
        return []
    old_leaves, new_leaves = _leaves(old), _leaves(cur)
    differing = [
        (k, old_leaves.get(k), new_leaves.get(k))
        for k in sorted(old_leaves.keys() | new_leaves.keys())
        if old_leaves.get(k) != new_leaves.get(k)
    ]
    blocking = []
    for key, before, after in differing:
        if key == "type":
            blocking.append((key, before, after))
            continue
        try:
            alone = parse_policy_config(_with_leaf(old, key, after))
        except ValueError:  # valid only together with the other changes
            blocking.append((key, before, after))
            continue
        if parameter_shapes(alone) != old_shapes:
            blocking.append((key, before, after))
    return blocking or differing


def _leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(_leaves(value, name))
        else:
            out[name] = value
    return out


def _with_leaf(d: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    out = dict(d)
    out[head] = _with_leaf(dict(out.get(head) or {}), rest, value) if rest else value
    return out
