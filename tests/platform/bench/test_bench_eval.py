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


@pytest.fixture()
def local_ray():
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="evb", dir="/tmp"),
             log_to_driver=False)
    yield
    ray.shutdown()


def test_bench_eval_fake_backend_writes_rows(tmp_path, capsys, local_ray):
    out = tmp_path / "bench.json"
    rc = main(["--backend", "fake", "--actors", "1,2", "--episodes-per-actor", "2", "--max-keyposes", "2",
               "--json", str(out), "--videos", "compare"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert isinstance(data["device"], str) and data["device"].startswith("cpu")
    assert [(r["actors"], r["videos"] is not None) for r in data["rows"]] == [(1, False), (1, True), (2, False),
                                                                             (2, True)]
    assert all(r["videos"] >= 1 for r in data["rows"] if r["videos"] is not None)  # a GIF of the one task
    for row in data["rows"]:
        assert row["episodes_per_s"] > 0 and row["efficiency"] > 0 and row["errors"] == 0
        assert row["episodes"] == 2 * row["actors"]
        assert abs(sum(row["time_shares"].values()) - 1.0) < 1e-6
    assert data["rows"][0]["efficiency"] == 1.0
    printed = capsys.readouterr().out
    assert "episodes/s" in printed and "with videos" in printed
    assert "efficiency" in format_table(data["rows"])
