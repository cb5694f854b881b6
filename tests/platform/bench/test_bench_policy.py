"""Smoke run of ``python -m platform.bench policy`` with a tiny config: JSON schema and internal consistency."""

import importlib
import json
import subprocess
import sys

import pytest

from platform.bench import cli as bench
from platform.bench import policy as bench_policy
from tests import REPO_ROOT


@pytest.mark.unit
def test_bench_policy_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--preset",
        "tiny",
        "--b",
        "2",
        "--ms",
        "1,4",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--max-conditions",
        "8",
        "--json",
        str(out),
    ]
    assert bench.main(["policy", *argv]) == 0
    data = json.loads(out.read_text())
    assert isinstance(data["device"], str) and data["device"].startswith("cpu")
    for row in data["rows"]:
        assert row["mode"] in {"two_level", "one_to_one"}
        assert isinstance(row["B"], int) and isinstance(row["M"], int)
        assert (
            row["samples_per_s"] > 0 and isinstance(row["peak_mem_bytes"], int) and row["peak_mem_bytes"] > 0
        )
    modes = [(r["mode"], r["B"], r["M"]) for r in data["rows"]]
    assert modes == [("two_level", 2, 1), ("one_to_one", 2, 1), ("two_level", 2, 4), ("one_to_one", 8, 1)]
    assert set(data["ratios"]) == {"1", "4"}
    for m, ratio in data["ratios"].items():
        two = next(r for r in data["rows"] if r["mode"] == "two_level" and r["M"] == int(m))
        one = next(r for r in data["rows"] if r["mode"] == "one_to_one" and r["sweep_m"] == int(m))
        assert (
            abs(ratio["throughput"] - two["samples_per_s"] / one["samples_per_s"])
            < 1e-6 * ratio["throughput"]
        )
        assert (
            abs(ratio["memory_per_sample"] - one["peak_mem_bytes"] / two["peak_mem_bytes"])
            < 1e-9 * ratio["memory_per_sample"]
        )
    assert set(data["limits"]) == {"1", "4"}
    assert "| M |" in capsys.readouterr().out


@pytest.mark.unit
def test_bench_policy_skips_one_to_one_rows_over_the_condition_limit(tmp_path):
    out = tmp_path / "bench.json"
    bench_policy.main(
        [
            "--preset",
            "tiny",
            "--b",
            "2",
            "--ms",
            "8",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--max-conditions",
            "4",
            "--no-memory",
            "--json",
            str(out),
        ]
    )
    data = json.loads(out.read_text())
    assert [r["mode"] for r in data["rows"]] == ["two_level"] and data["ratios"] == {}
    assert "M=8" in data["skipped"][0]


@pytest.mark.unit
def test_dispatcher_reports_unknown_and_missing_subcommands(capsys, monkeypatch):
    assert bench.main(["nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    real_import = importlib.import_module

    def fake_import(name, *args):  # pretend the eval benchmark is not written yet
        if name == "platform.bench.evaluation":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    assert bench.main(["eval"]) == 2
    assert "platform/bench/evaluation.py" in capsys.readouterr().err


@pytest.mark.process
def test_bench_policy_imports_only_torch_numpy_pydantic_einops_and_policies():
    code = (
        "import sys, platform.bench.policy\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'ray', 'mlflow', 'pyarrow', 'transformers', 'metaworld', 'mujoco', 'evaluation', 'yaml'})\n"
        "bad += sorted(m for m in sys.modules if m.startswith('platform.') and m not in "
        "{'platform.bench', 'platform.bench.policy'})\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
