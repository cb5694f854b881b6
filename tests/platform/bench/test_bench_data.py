"""``python -m platform.bench data`` on a small synthetic dataset: both reads timed, the JSON as documented."""

from __future__ import annotations

import json

import pytest

from platform.bench import cli as bench
from tests.evaluation.datasets.test_dataset import _write_synthetic_dataset

pytestmark = pytest.mark.unit


def test_bench_data_times_the_check_and_the_full_load(tmp_path, capsys):
    data = _write_synthetic_dataset(tmp_path / "data")
    out = tmp_path / "data.json"
    assert bench.main(["data", "--data", str(data), "--repeats", "2", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["shards"] == 4 and row["samples"] == 12
    assert row["full_load_s"] > 0 and row["driver_check_s"] > 0
    assert row["saved_s"] == pytest.approx(row["full_load_s"] - row["driver_check_s"])
    assert "reads it once instead of twice" in capsys.readouterr().out


def test_bench_data_names_a_missing_dataset(tmp_path, capsys):
    assert bench.main(["data", "--data", str(tmp_path / "absent")]) == 2
    assert "no dataset directory" in capsys.readouterr().err
