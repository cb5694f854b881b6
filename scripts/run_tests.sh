#!/usr/bin/env bash
# The default test suite (excludes `slow` and `gpu` markers, see pyproject.toml). pytest exits 5 when no
# test was collected: that is a failure here, since it means the suite silently ran nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 MUJOCO_GL=${MUJOCO_GL:-egl} RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# The project's own bytecode (the environment's is compiled by make setup): Python does not cache it where
# PYTHONDONTWRITEBYTECODE is set, and every test subprocess and Ray worker imports it.
# Lint first (seconds): CI runs only this script, and an unformatted file must not land.
bash scripts/lint.sh || exit 1
.venv/bin/python -m compileall -q platform policies evaluation tests >/dev/null
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
