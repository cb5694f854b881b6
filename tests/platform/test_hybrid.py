"""The repo's ``platform`` package is also the complete stdlib ``platform`` module (platform/__init__.py explains it)."""

import importlib.util
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import platform
from tests import REPO_ROOT

VENV_PY = sys.executable


def _stdlib_platform():
    spec = importlib.util.spec_from_file_location("_stdlib_platform_ref", platform.STDLIB_PLATFORM_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_loaded_platform_is_the_hybrid_package():
    assert hasattr(platform, "__path__"), "the stdlib module was imported instead of the repo package"
    assert Path(platform.__file__).resolve() == REPO_ROOT / "platform" / "__init__.py"


def test_stdlib_api_is_intact():
    ref = _stdlib_platform()
    public = [n for n in dir(ref) if not n.startswith("_")]
    missing = [n for n in public if not hasattr(platform, n)]
    assert not missing, f"stdlib platform attributes missing from the hybrid package: {missing}"
    for name in ("system", "machine", "python_version", "python_implementation", "release", "node",
                 "architecture", "python_version_tuple", "processor", "libc_ver"):
        assert getattr(platform, name)() == getattr(ref, name)(), name
    assert platform.uname()[:5] == ref.uname()[:5]
    assert platform.platform() == ref.platform()
    try:  # no os-release file: both must raise the same way
        expected = ref.freedesktop_os_release()
    except OSError as exc:
        with pytest.raises(type(exc)):
            platform.freedesktop_os_release()
    else:
        assert platform.freedesktop_os_release() == expected


def test_no_submodule_shadows_a_stdlib_attribute():
    ref = _stdlib_platform()
    stdlib_names = set(dir(ref))
    submodules = {m.name for m in pkgutil.iter_modules([str(REPO_ROOT / "platform")])}
    assert submodules, "found no submodules: the check would be vacuous"
    clashes = sorted(submodules & stdlib_names)
    assert not clashes, f"platform submodules shadow stdlib platform attributes: {clashes}"


def test_libraries_that_call_platform_import_fine():
    code = "import torch, pyarrow, pydantic, platform; print(platform.system(), hasattr(platform, '__path__'))"
    out = subprocess.run([VENV_PY, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [platform.system(), "True"]


def test_pytest_entry_points_see_the_hybrid():
    # Both `python -m pytest` and the `pytest` console script (which imports the stdlib module first)
    # must resolve `platform.config` thanks to the root conftest.py.
    console = Path(VENV_PY).with_name("pytest")
    assert console.exists(), "pytest console script missing from the venv"
    target = "tests/platform/test_config.py::test_defaults_are_valid"
    cmds = [[VENV_PY, "-m", "pytest", target, "-q", "-p", "no:cacheprovider"],
            [str(console), target, "-q", "-p", "no:cacheprovider"]]
    env = {**os.environ, "PYTHONPATH": ""}
    for cmd in cmds:
        # conftest.py at the root is picked up because the probe runs with rootdir = repo root
        out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-2000:])
