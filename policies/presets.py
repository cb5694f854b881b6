"""Size presets for the policies: ``tiny`` (unit tests, milliseconds), ``laptop`` (trains on 2 CPU cores in
minutes), ``paper`` (about Mini-Diffuser's size: up to 4000 points, M=256; fits one 24 GB GPU)."""

from __future__ import annotations

from typing import Any

_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 32, "heads": 2, "max_points": 256, "diffusion": {"inference_steps": 5}},
    "laptop": {"d_model": 96, "heads": 4, "max_points": 1024, "diffusion": {"inference_steps": 10}},
    "paper": {"d_model": 192, "heads": 6, "max_points": 4000, "m": 256, "diffusion": {"inference_steps": 25}},
}


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def preset_values(name: str, policy_type: str) -> dict[str, Any]:
    """Field values of preset ``name`` for a policy of ``policy_type`` (``m`` only for mini_diffuser)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {preset_names()}")
    values = {k: v for k, v in _PRESETS[name].items() if not (k == "m" and policy_type != "mini_diffuser")}
    return {"preset": name, **values}
