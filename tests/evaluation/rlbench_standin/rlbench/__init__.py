"""Stand-in for RLBench (tests only; see ../README.md). Not RLBench."""

__version__ = "1.2.0-standin"

from rlbench.action_modes.action_mode import ActionMode
from rlbench.environment import Environment
from rlbench.observation_config import CameraConfig, ObservationConfig

__all__ = ["ActionMode", "CameraConfig", "Environment", "ObservationConfig"]
