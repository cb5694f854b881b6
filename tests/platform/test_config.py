"""The experiment config: defaults, YAML, dotted overrides, and one-line errors."""

import pytest

from platform.config import ConfigError, ExperimentConfig, load_config, parse_override, set_dotted, to_yaml

pytestmark = pytest.mark.unit


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg.policy.type == "mini_diffuser" and cfg.policy.preset == "laptop"
    assert cfg.train.batch_size >= 1 and cfg.run_dir.name == cfg.name


def test_config_is_frozen():
    cfg = load_config()
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.steps = 3  # type: ignore[misc]


def test_overrides_are_parsed_as_yaml_and_applied():
    cfg = load_config(
        None,
        [
            "policy.m=64",
            "train.steps=2000",
            "train.lr=1e-3",
            "data.tasks=[reach-v3,push-v3]",
            "train.time_budget_s=null",
            "eval.enabled=false",
        ],
    )
    assert cfg.policy.m == 64 and cfg.train.steps == 2000 and cfg.train.lr == pytest.approx(1e-3)
    assert cfg.data.tasks == ("reach-v3", "push-v3") and cfg.eval.enabled is False


def test_switching_policy_type_keeps_the_preset():
    cfg = load_config(None, ["policy.type=one_to_one"])
    assert cfg.policy.type == "one_to_one" and cfg.policy.m == 1
    assert cfg.policy.d_model == load_config().policy.d_model


def test_yaml_then_override(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp1\ntrain:\n  steps: 50\n  warmup_steps: 5\npolicy:\n  preset: tiny\n  m: 4\n")
    cfg = load_config(path, ["policy.m=16"])
    from policies.presets import preset_values

    tiny_d = preset_values("tiny", "mini_diffuser")["d_model"]
    assert (cfg.name, cfg.train.steps, cfg.policy.m, cfg.policy.d_model) == ("exp1", 50, 16, tiny_d)


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["policy.preset=tiny", "policy.m=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg
    assert ExperimentConfig.model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize(
    "override, needles",
    [
        ("policy.mm=3", ["policy.mm", "allowed here", " m,"]),
        ("train.steps=many", ["train.steps", "'many'", "integer"]),
        ("train.lr=-1", ["train.lr", "-1", "greater than 0"]),
        ("data.suite=mt11", ["data.suite", "'mt11'", "mt10"]),
        ("policy.type=transformer", ["policy.type", "mini_diffuser", "one_to_one"]),
        ("policy.type=one_to_one policy.m=4", ["policy.m", "4"]),
        ("train.warmup_steps=10000", ["warmup_steps", "train.steps"]),
        ("train.steps", ["dotted.key=value"]),
        ("train=3", ["train", "3"]),
    ],
)
def test_bad_values_give_one_line_naming_key_and_value(override, needles):
    with pytest.raises(ConfigError) as info:
        load_config(None, override.split())
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must contain a mapping"):
        load_config(path)


def test_set_dotted_does_not_mutate():
    raw = {"train": {"steps": 1}}
    out = set_dotted(raw, "train.steps", 5)
    assert raw == {"train": {"steps": 1}} and out == {"train": {"steps": 5}}
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
