#!/usr/bin/env bash
# Lint and format check (make lint; make test runs it first). The formatter is ruff's, pinned in
# pyproject.toml so that every machine formats alike; `ruff format` rewrites what this rejects.
set -euo pipefail
cd "$(dirname "$0")/.."
PATHS=(platform policies evaluation tests conftest.py)
.venv/bin/python -m ruff check "${PATHS[@]}"
if ! .venv/bin/python -m ruff format --check --quiet "${PATHS[@]}"; then
    echo "error: files above are not formatted: run .venv/bin/python -m ruff format ${PATHS[*]}" >&2
    exit 1
fi
