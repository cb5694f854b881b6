#!/usr/bin/env bash
# Create/refresh the project-local virtual environment .venv/ (idempotent).
#
# Fast path: uv (installed into the venv from PyPI) with the local CPU torch wheel when one is on disk.
# Fallback: plain pip. CPU torch unless an NVIDIA GPU is visible. The project itself is never installed:
# `platform/` is importable from the repo root only (design.md 5.1).
# A stamp keyed on pyproject.toml and this script makes a second run take well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev}
TORCH_VERSION=2.13.0

pick_python() {
  for p in ${PYTHON:-} python3.11 python3.12 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(not ((3,11) <= sys.version_info[:2] < (3,13)))'; then
      echo "$p"; return 0
    fi
  done
  echo "error: Python 3.11 or 3.12 is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

stamp_key() { cat pyproject.toml scripts/setup_env.sh scripts/platform_guard.py | sha256sum | cut -c1-16; echo "extras=$EXTRAS"; }
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.setup-stamp" ] && [ "$(cat "$VENV/.setup-stamp")" = "$(stamp_key)" ]; then
  exit 0
fi

PY=$(pick_python)
start=$(date +%s)
if [ -x "$VENV/bin/python" ]; then
  echo "[setup] updating $VENV (pyproject.toml or the set-up script changed)"
else
  echo "[setup] creating $VENV with $($PY --version) (one-time; later runs take well under a second)"
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
mapfile -t DEPS < <("$VPY" .ci/deps.py $EXTRAS | grep -v '^torch==')

# --- torch first (pinned), CPU build unless a GPU is present ---
TORCH_ARGS=("torch==$TORCH_VERSION")
FIND_LINKS=()
has_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then has_gpu=1; fi
local_wheel=$(ls /opt/wheels/torch-"$TORCH_VERSION"+cpu-*.whl 2>/dev/null | head -1 || true)
if [ "$has_gpu" = 0 ] && [ -n "$local_wheel" ]; then
  FIND_LINKS=(--find-links "$(dirname "$local_wheel")")
  TORCH_ARGS=("$local_wheel")
fi

install_uv() {
  "$VPY" -m pip install -q --disable-pip-version-check uv >/dev/null 2>&1 || return 1
  local UV="$VENV/bin/uv"
  if [ "$has_gpu" = 0 ] && [ -z "$local_wheel" ]; then
    "$UV" pip install --python "$VPY" -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu || return 1
  else
    "$UV" pip install --python "$VPY" -q "${FIND_LINKS[@]}" "${TORCH_ARGS[@]}" || return 1
  fi
  # Keep torch exactly as installed above while resolving the rest.
  "$UV" pip install --python "$VPY" -q "${FIND_LINKS[@]}" "torch==$TORCH_VERSION" "${DEPS[@]}"
}
install_pip() {
  "$VPY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  if [ "$has_gpu" = 0 ] && [ -z "$local_wheel" ]; then
    "$VPY" -m pip install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
      || "$VPY" -m pip install -q "torch==$TORCH_VERSION"
  else
    "$VPY" -m pip install -q "${FIND_LINKS[@]}" "${TORCH_ARGS[@]}"
  fi
  "$VPY" -m pip install -q "${FIND_LINKS[@]}" "torch==$TORCH_VERSION" "${DEPS[@]}"
}

if [ "${SETUP_NO_UV:-0}" != 1 ] && install_uv; then
  how=uv
else
  echo "[setup] uv path unavailable, using pip (slower, ~3 min)"
  install_pip
  how=pip
fi
"$VPY" -c 'import torch, ray, mlflow, pyarrow, pydantic, metaworld' \
  || { echo "error: the environment in $VENV does not import; delete it and rerun 'make setup'" >&2; exit 1; }
site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Bytecode for every installed module, once. uv does not write it, and where PYTHONDONTWRITEBYTECODE is set
# (as on this project's CI machines) Python never caches it either: every process, each Ray worker included,
# would compile torch, ray and mlflow again (~6 s of CPU each; a tiny platform.train took 55 s instead of 22 s).
# A few packages ship templates that are not Python: compileall reports them and they are skipped.
echo "[setup] compiling bytecode (one-time, ~30 s)"
"$VPY" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
# The `python -m platform.*` outside-the-repo guard (not the project itself; see scripts/platform_guard.py).
sed "s#@REPO_ROOT@#$(pwd)#" scripts/platform_guard.py > "$site/_minidiffuser_platform_guard.py"
echo "import _minidiffuser_platform_guard" > "$site/minidiffuser_platform_guard.pth"
stamp_key > "$VENV/.setup-stamp"
echo "[setup] done with $how in $(( $(date +%s) - start )) s: $("$VPY" -c 'import torch, ray, mlflow; print(f"torch {torch.__version__}, ray {ray.__version__}, mlflow {mlflow.__version__}")')"
