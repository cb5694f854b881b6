"""platform.session: the environment variables a job's workers get (no Ray started)."""

import json

import pytest

from platform.session import TRAIN_POLL_S, _job_env_vars, runtime_env

pytestmark = pytest.mark.unit


def test_a_jobs_own_variables_win_and_the_others_are_added(monkeypatch):
    job = {"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip", "env_vars": {"MUJOCO_GL": "osmesa"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    added = _job_env_vars()
    assert "MUJOCO_GL" not in added  # Ray refuses a variable set by both; the job's value stays
    assert added["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == TRAIN_POLL_S
    assert added["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"
    assert set(added) == set(runtime_env()["env_vars"]) - {"MUJOCO_GL"}


def test_a_job_without_variables_or_unreadable_config_gets_all_of_them(monkeypatch):
    for value in (json.dumps({"runtime_env": None}), "not json"):
        monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", value)
        assert _job_env_vars() == runtime_env()["env_vars"]
