"""The test suite; its layout mirrors the packages (tests/evaluation/runtime tests evaluation/runtime, ...)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
