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
# Several pytest workers (pytest-xdist): the suite mostly waits (Ray clusters starting, subprocesses, sim
# actors), using about half of one core when run serially; each worker has its own private Ray clusters and
# temp dirs. Tests go to the next free worker in the suite's order, longest kinds first (tests/conftest.py), so
# the end-to-end tests run side by side instead of forming the tail; a module of tests/conftest.py's
# WHOLE_MODULES goes whole to one worker, so that its costly module fixture (a Ray actor pool, a three-node
# cluster, a collection) is set up once, not once per worker. TEST_WORKERS=0 runs it serially; the measured
# times are in the README ("Tests").
WORKERS=${TEST_WORKERS:-2}
XDIST=()
if [ "$WORKERS" != 0 ]; then XDIST=(-n "$WORKERS" --dist loadgroup --no-loadscope-reorder); fi
.venv/bin/python -m pytest -q "${XDIST[@]}" "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
