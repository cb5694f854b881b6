"""Root conftest: make the repo's hybrid ``platform`` package the one that is imported.

The ``pytest`` console script imports the stdlib ``platform`` before collecting tests, so by the time
this file runs ``sys.modules["platform"]`` may be the plain stdlib module (no ``__path__``). Put the
repo root first on ``sys.path`` and re-import ``platform`` so ``platform.config`` etc. resolve.
``python -m pytest`` already has the cwd first on ``sys.path`` and needs nothing.
"""

import importlib
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if sys.path[0] != ROOT:
    if ROOT in sys.path:
        sys.path.remove(ROOT)
    sys.path.insert(0, ROOT)
if not hasattr(sys.modules.get("platform"), "__path__"):
    sys.modules.pop("platform", None)
    importlib.import_module("platform")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
