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


@pytest.mark.unit
def test_loaded_platform_is_the_hybrid_package():
    assert hasattr(platform, "__path__"), "the stdlib module was imported instead of the repo package"
    assert Path(platform.__file__).resolve() == REPO_ROOT / "platform" / "__init__.py"


@pytest.mark.unit
def test_stdlib_api_is_intact():
    ref = _stdlib_platform()
    public = [n for n in dir(ref) if not n.startswith("_")]
    missing = [n for n in public if not hasattr(platform, n)]
    assert not missing, f"stdlib platform attributes missing from the hybrid package: {missing}"
    for name in (
        "system",
        "machine",
        "python_version",
        "python_implementation",
        "release",
        "node",
        "architecture",
        "python_version_tuple",
        "processor",
        "libc_ver",
    ):
        assert getattr(platform, name)() == getattr(ref, name)(), name
    assert platform.uname()[:5] == ref.uname()[:5]
    assert platform.platform() == ref.platform()
    assert platform.freedesktop_os_release is not ref.freedesktop_os_release  # own copy: the check is real


@pytest.mark.unit
def test_os_release_is_parsed_like_the_stdlib(tmp_path, monkeypatch):
    # A known os-release file for both modules, so that the comparison runs on every machine (one without
    # /etc/os-release would otherwise only compare two OSErrors).
    ref = _stdlib_platform()
    release = tmp_path / "os-release"
    release.write_text(
        'NAME="Test OS"\nID=testos\nVERSION_ID="1.2"\n# a comment\nPRETTY_NAME=\'Test OS 1.2\'\n'
    )
    for mod in (platform, ref):
        monkeypatch.setattr(mod, "_os_release_candidates", (str(release),))
        monkeypatch.setattr(mod, "_os_release_cache", None)
    got = platform.freedesktop_os_release()
    assert got == ref.freedesktop_os_release()
    assert got["ID"] == "testos" and got["VERSION_ID"] == "1.2" and got["PRETTY_NAME"] == "Test OS 1.2"
    monkeypatch.setattr(platform, "_os_release_candidates", (str(tmp_path / "absent"),))
    monkeypatch.setattr(platform, "_os_release_cache", None)
    with pytest.raises(OSError):
        platform.freedesktop_os_release()


@pytest.mark.unit
def test_no_submodule_shadows_a_stdlib_attribute():
    ref = _stdlib_platform()
    stdlib_names = set(dir(ref))
    submodules = {m.name for m in pkgutil.iter_modules([str(REPO_ROOT / "platform")])}
    assert submodules, "found no submodules: the check would be vacuous"
    clashes = sorted(submodules & stdlib_names)
    assert not clashes, f"platform submodules shadow stdlib platform attributes: {clashes}"


@pytest.mark.process
def test_libraries_that_call_platform_import_fine():
    code = (
        "import torch, pyarrow, pydantic, platform; print(platform.system(), hasattr(platform, '__path__'))"
    )
    out = subprocess.run([VENV_PY, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [platform.system(), "True"]


@pytest.mark.process
def test_pytest_entry_points_see_the_hybrid():
    # Both `python -m pytest` and the `pytest` console script (which imports the stdlib module first)
    # must resolve `platform.config` thanks to the root conftest.py.
    console = Path(VENV_PY).with_name("pytest")
    assert console.exists(), "pytest console script missing from the venv"
    target = "tests/platform/test_config.py::test_defaults_are_valid"
    cmds = [
        [VENV_PY, "-m", "pytest", target, "-q", "-p", "no:cacheprovider"],
        [str(console), target, "-q", "-p", "no:cacheprovider"],
    ]
    env = {**os.environ, "PYTHONPATH": ""}
    for cmd in cmds:
        # conftest.py at the root is picked up because the probe runs with rootdir = repo root
        out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-2000:])
