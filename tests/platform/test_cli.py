"""`python -m platform.train` as a new user meets it: help, --print-config, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import REPO_ROOT


def run(args, cwd=REPO_ROOT, timeout=120):
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def one_line_error(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{out.stderr}"
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.process
def test_help_from_repo_root():
    out = run(["-m", "platform.train", "--help"])
    assert out.returncode == 0, out.stderr
    assert "usage: python -m platform.train" in out.stdout and "--print-config" in out.stdout


@pytest.mark.process
def test_print_config_applies_overrides():
    out = run(
        ["-m", "platform.train", "--print-config", "policy.m=7", "train.steps=123", "policy.preset=tiny"]
    )
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    from policies.presets import preset_values

    tiny = preset_values("tiny", "mini_diffuser")
    assert (
        cfg["policy"]["m"] == 7
        and cfg["train"]["steps"] == 123
        and cfg["policy"]["d_model"] == tiny["d_model"]
    )


@pytest.mark.process
def test_typod_key():
    one_line_error(run(["-m", "platform.train", "--print-config", "trian.steps=5"]), "trian", "allowed here")


@pytest.mark.process
def test_wrong_typed_value():
    one_line_error(
        run(["-m", "platform.train", "--print-config", "train.steps=many"]),
        "train.steps",
        "'many'",
        "integer",
    )


@pytest.mark.process
def test_missing_config_file():
    one_line_error(run(["-m", "platform.train", "--config", "nope.yaml"]), "nope.yaml", "not found")


@pytest.mark.process
def test_run_as_script_gives_one_line():
    one_line_error(run([str(REPO_ROOT / "platform" / "train")]), "python -m platform.train", str(REPO_ROOT))


@pytest.mark.process
def test_wrong_directory_gives_one_line(tmp_path):
    guard = Path(sys.prefix) / "lib"
    assert list(guard.glob("python3*/site-packages/minidiffuser_platform_guard.pth")), (
        "the venv lacks the guard: run `make setup`"
    )
    line = one_line_error(
        run(["-m", "platform.train", "--help"], cwd=tmp_path), "repository root", str(REPO_ROOT)
    )
    assert "torch" not in line


@pytest.mark.unit
def test_example_configs_validate():
    from platform.config import load_config

    configs = sorted((REPO_ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)
