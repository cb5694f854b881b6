"""Policy registry: config ``type`` -> (config class, policy class). The types and their config classes are
listed once, in ``policies.config.CONFIG_CLASSES``; this adds the policy class of each."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from policies.base import Policy
from policies.baselines import DDAStylePolicy
from policies.config import CONFIG_CLASSES, DDAStyleConfig, MiniDiffuserConfig, OneToOneConfig, PolicyConfig
from policies.minidiffuser import MiniDiffuserPolicy, OneToOnePolicy

_POLICY_CLASSES: dict[str, type[Policy]] = {
    "mini_diffuser": MiniDiffuserPolicy,
    "one_to_one": OneToOnePolicy,
    "dda_style": DDAStylePolicy,
}
REGISTRY: dict[str, tuple[type, type[Policy]]] = {t: (CONFIG_CLASSES[t], _POLICY_CLASSES[t]) for t in CONFIG_CLASSES}

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
