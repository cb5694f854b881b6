"""Smoke test of ``python -m platform.bench eval`` on the fake simulator (a real tiny policy, real Ray)."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from platform.bench.evaluation import actor_counts, format_table, main

pytestmark = pytest.mark.integration


def test_actor_counts():
    assert actor_counts(None, 16) == [1, 2, 4, 8, 16]
    assert actor_counts(None, 6) == [1, 2, 4, 6]
    assert actor_counts("4,1,2,2", 2) == [1, 2, 4]
    with pytest.raises(ValueError, match="positive"):
        actor_counts("0,1", 2)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=tempfile.mkdtemp(prefix="evb", dir="/tmp"),
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def test_bench_eval_fake_backend_writes_rows(tmp_path, capsys, local_ray):
    out = tmp_path / "bench.json"
    rc = main(
        [
            "--backend",
            "fake",
            "--actors",
            "1,2",
            "--episodes-per-actor",
            "2",
            "--max-keyposes",
            "2",
            "--json",
            str(out),
            "--videos",
            "compare",
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert isinstance(data["device"], str) and data["device"].startswith("cpu")
    assert [(r["actors"], r["videos"] is not None) for r in data["rows"]] == [
        (1, False),
        (1, True),
        (2, False),
        (2, True),
    ]
    assert all(r["videos"] >= 1 for r in data["rows"] if r["videos"] is not None)  # a GIF of the one task
    for row in data["rows"]:
        assert row["episodes_per_s"] > 0 and row["efficiency"] > 0 and row["errors"] == 0
        assert row["episodes"] == 2 * row["actors"]
        assert abs(sum(row["time_shares"].values()) - 1.0) < 1e-6
    assert data["rows"][0]["efficiency"] == 1.0
    printed = capsys.readouterr().out
    assert "episodes/s" in printed and "with videos" in printed
    assert "efficiency" in format_table(data["rows"])


def test_bench_eval_suites_side_by_side_report_memory_and_cpu_per_keypose(tmp_path, capsys, local_ray):
    """--suites mt10,mt50 (the fake simulator under the suites' task names): every task once, one row per
    suite with the actors' peak RSS and CPU per keypose step, and the MT50-vs-MT10 line."""
    out = tmp_path / "suites.json"
    rc = main(
        [
            "--backend",
            "fake",
            "--suites",
            "mt10,mt50",
            "--episodes-per-task",
            "1",
            "--actors",
            "1",
            "--max-keyposes",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["suite"], r["tasks"], r["episodes"]) for r in rows] == [("mt10", 10, 10), ("mt50", 50, 50)]
    for row in rows:
        assert row["keyposes"] == row["episodes"] and row["cpu_s_per_keypose"] > 0
        assert len(row["actor_peak_rss_mb"]) == 1 and 50 < row["peak_rss_mb"] < 4000
        assert row["efficiency"] == 1.0  # each suite against its own first row
    printed = capsys.readouterr().out
    assert "1 actors, mt50 vs mt10: CPU per keypose step" in printed and "peak RSS per actor" in printed
