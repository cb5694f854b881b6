"""cluster.yaml files validate against Ray's own autoscaler schema, offline; a typo'd key fails."""

import copy

import pytest
import yaml

from tests import REPO_ROOT

pytestmark = pytest.mark.unit

FILES = ["cluster.yaml", "cluster-aws.yaml"]


def validate(cfg):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.mark.parametrize("name", FILES)
def test_cluster_file_is_valid(name):
    cfg = yaml.safe_load((REPO_ROOT / name).read_text())
    validate(cfg)
    commands = " ".join(cfg["setup_commands"])
    assert "make setup" in commands, "nodes must install the project"


def test_gpu_head_has_no_sim_resource_and_workers_do():
    cfg = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    assert '"sim": 0' in " ".join(cfg["head_start_ray_commands"]).replace('\\"', '"')
    assert '"sim": 16' in " ".join(cfg["worker_start_ray_commands"]).replace('\\"', '"')
    aws = yaml.safe_load((REPO_ROOT / "cluster-aws.yaml").read_text())
    assert aws["available_node_types"][aws["head_node_type"]]["resources"]["sim"] == 0


@pytest.mark.parametrize("name", FILES)
def test_typod_key_is_rejected(name):
    cfg = yaml.safe_load((REPO_ROOT / name).read_text())
    cfg["setup_comands"] = cfg.pop("setup_commands")
    with pytest.raises(Exception, match="setup_comands"):
        validate(cfg)
