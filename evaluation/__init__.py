"""Simulators behind one interface, keypose controllers, dataset collection, Ray evaluation actors."""

from pathlib import Path

# The checkout's root, for every package (the repository is never installed: docs/design.md section 1).
REPO_ROOT = Path(__file__).resolve().parents[1]
