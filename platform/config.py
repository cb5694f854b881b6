"""The experiment configuration: frozen pydantic v2 models, loaded once at the edge and passed down.

    ExperimentConfig
      name       run name (same name => the run, its checkpoints and its MLflow run continue)
      data       where the keyframe dataset lives and how to collect it when missing
      policy     policies.config.PolicyConfig (discriminated union on ``type``)
      train      optimisation, schedule, checkpoints, budgets
      eval       parallel simulator evaluation of checkpoints
      tracking   MLflow
      ray        cluster address and resources

Loading: defaults < YAML file (``--config``) < dotted overrides (``policy.m=64``), each override
re-validated. Errors are ``ConfigError`` with one line naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, PositiveInt, ValidationError, model_validator

from evaluation import REPO_ROOT
from evaluation.datasets.keyframes import KeyframeConfig
from policies.config import CONFIG_CLASSES, FrozenModel, MiniDiffuserConfig, PolicyConfig

# Reliability tests only: the worker crashes once after the checkpoint at this step (platform.train.worker).
FAULT_ENV = "MINIDIFFUSER_FAULT_CRASH_AT_STEP"
_POLICY_CLASSES: dict[str, type[BaseModel]] = dict(CONFIG_CLASSES)
_POLICY_TYPES = tuple(_POLICY_CLASSES)


def data_root() -> Path:
    """Where relative data/run paths live: the repo root, except inside a submitted Ray job, whose working
    directory is a temporary copy: there ``$MINIDIFFUSER_HOME`` (default ``~/minidiffuser``)."""
    import os

    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ or os.environ.get("MINIDIFFUSER_HOME"):
        return Path(os.environ.get("MINIDIFFUSER_HOME", "~/minidiffuser")).expanduser()
    return REPO_ROOT


class ConfigError(ValueError):
    """A bad configuration file, key or value. ``str(err)`` is one actionable line."""


class DataConfig(FrozenModel):
    path: str = "data/metaworld_mt10"  # relative paths are relative to the repo root
    suite: Literal["mt10", "mt50", "rlbench"] = (
        "mt10"  # rlbench: data imported with python -m evaluation.rlbench_import
    )
    tasks: tuple[str, ...] | None = None  # subset of the suite; None = all
    episodes_per_task: int = Field(
        18, ge=1, le=1000
    )  # training episodes per task (Meta-World: train variations)
    # held-out validation episodes per task (the next ones after the training episodes, never test variations):
    # the keypose error after full sampling is measured on them every train.val_every steps; 0 disables it
    val_episodes_per_task: int = Field(2, ge=0, le=100)
    collect_if_missing: bool = True  # Meta-World: collect; RLBench: import from data.rlbench_root
    # RLBench demonstrations on disk (the dataset generator's layout, e.g. PerAct's train split): imported
    # into data.path when that is missing (python -m evaluation.rlbench_import does the same by hand)
    rlbench_root: str | None = None
    collect_workers: int = Field(2, ge=1, le=256)
    seed: int = 0
    # What level 1 draws uniformly: keyframe samples (the papers' choice), or tasks (every task as often as the
    # one with the most samples; a task with one keypose per episode, like reach, otherwise gets ~2 % of them),
    # or between the two, a task in proportion to the square root of its samples ("sqrt"; on MT50 reach about x2.5 and
    # handle-pull /1.8 against "samples", where "tasks" gives about x6 and /3). On MT50 (seed 0, 12000 steps) both
    # lost to "samples": tasks 88.2 %, sqrt 88.4 % per episode against 90.5 % (docs/quality.md)
    balance: Literal["samples", "sqrt", "tasks"] = "samples"
    # task -> how many times as often level 1 draws its samples (after data.balance; unnamed tasks 1): e.g. the tasks of
    # the tiers a metric weighs most (MT50's tier average counts each of the 5 very hard tasks 5.6 times as much as each
    # of the 28 easy ones, where "samples" gives the very hard ones 11 % of the draws; measured in docs/quality.md)
    task_weights: dict[str, Annotated[float, Field(gt=0, le=100)]] = Field(default_factory=dict)
    # What a Meta-World sample observes before its keypose (evaluation.collect --observe): the expert
    # trajectory's state at the previous keyframe, or the state the keypose controller reaches replaying the
    # keyframes, which is what the policy sees at evaluation (docs/metaworld.md). Collection uses it; a dataset
    # collected the other way is refused with the fix.
    observe: Literal["expert", "replay"] = "expert"
    # Recovery samples per grasp (evaluation.collect --recoveries; needs observe=replay): the grasp sent 3-6 cm
    # beside its target, observed, and labelled with a return to where it started, open (docs/metaworld.md). On MT50
    # (seed 0) they lowered success from 84.3 to 81.9 % per episode, on the tasks that got them (docs/quality.md)
    recoveries: int = Field(0, ge=0, le=5)
    # Meta-World collection aims the keypose that completes a demonstration at the goal, for the tasks whose expert
    # stops at the edge of the success radius (evaluation.collect --aim-goal; the six of demos.AIMED_TASKS: reach's
    # expert ends 4.6 cm from a goal that counts within 5; docs/metaworld.md). A dataset collected the other way is
    # refused with the fix.
    aim_goal: bool = False
    # Meta-World collection drops a horizontal surface above the table that holds at least this fraction of a
    # point cloud's voxels (evaluation.collect --surface-fraction; a fixture's top, e.g. hand-insert's box with a
    # hole, 75-88 % of its voxels); 0 = off. A dataset collected with another value is refused with the fix.
    surface_fraction: float = Field(0.0, ge=0.0, le=1.0)
    # Meta-World collection and evaluation render without the robot's links above its gripper (evaluation.collect
    # --hide-arm; about 45 % of a scene's voxels). A dataset collected the other way is refused with the fix.
    hide_arm: bool = False

    @model_validator(mode="after")
    def _keyframes(self) -> DataConfig:
        self.keyframes()  # the collection's own check (recoveries need replay observations)
        return self

    def keyframes(self) -> KeyframeConfig:
        """The keyframe settings Meta-World collection runs with (``evaluation.collect --observe --recoveries
        --aim-goal``)."""
        try:
            return KeyframeConfig(observe=self.observe, recoveries=self.recoveries, aim_goal=self.aim_goal)
        except ValidationError as exc:
            raise ValueError(
                "; ".join(f"data.{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
            ) from None


class TrainConfig(FrozenModel):
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(16, ge=1, le=4096)  # B: conditions per step (level 1)
    # 2e-3 for the laptop default (B = 16, thousands of steps; docs/quality.md); the paper's 3e-4 is for
    # B = 100 and 600k steps (configs/paper.yaml, configs/rlbench18.yaml)
    lr: float = Field(2e-3, gt=0, le=1)
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(50, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.995, ge=0, lt=1)  # 0 disables EMA
    ema_warmup: bool = (
        True  # decay min(ema_decay, (1 + n) / (10 + n)) after n steps (platform.train.step.EMA)
    )
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, off on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    keep_last: int = Field(2, ge=1)
    time_budget_s: float | None = Field(None, gt=0)  # stop (and checkpoint) after this much training time
    max_consecutive_nonfinite: int = Field(5, ge=1)
    # torch intra-op threads of a CPU training worker. None: the node's cores divided among the workers when
    # nothing evaluates beside the training (eval.every_steps=0), else ray.cpus_per_worker (Ray's default).
    cpu_threads: int | None = Field(None, ge=1, le=1024)
    # Training-time marks (seconds of training steps, validation and checkpointing excluded): at each, a
    # checkpoint is kept under runs/<name>/marks/ and validated (platform.train.marks); training stops at the last
    # one. What platform.quality evaluates to draw success against training time.
    time_marks_s: tuple[float, ...] = ()
    # keypose error on the validation episodes (data.val_episodes_per_task) every N steps and at the end; 0: never
    val_every: int = Field(200, ge=0)
    # at most this many held-out keyframes per task in each validation (evenly spaced over the task's; None:
    # all). A validation costs a full sampling per keyframe: MT50's 1039 took 18 s, 5 % of the 354 s its 500
    # steps took beside it (loaded 2-core machine); 8 per task keeps 400 of them
    val_per_task: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_steps >= self.steps and self.steps > 1:
            raise ValueError(
                f"train.warmup_steps ({self.warmup_steps}) must be below train.steps ({self.steps})"
            )
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"train.betas {self.betas} must be in [0, 1)")
        marks = self.time_marks_s
        if any(m <= 0 for m in marks) or any(b <= a for a, b in zip(marks, marks[1:], strict=False)):
            raise ValueError(f"train.time_marks_s {list(marks)} must be positive and increasing (seconds)")
        return self


class EvalConfig(FrozenModel):
    enabled: bool = True
    every_steps: int = Field(0, ge=0)  # 0: evaluate only the final checkpoint
    episodes_per_task: int = Field(25, ge=1)
    tasks: tuple[str, ...] | None = None  # None: the dataset's tasks
    actors: int = Field(2, ge=1, le=1024)
    max_keyposes: int = Field(25, ge=1)
    # task -> keypose limit replacing max_keyposes for that task: tasks whose demonstrations take more keyposes
    # than max_keyposes (a policy that imitates them cannot finish within it; configs/mt50.yaml)
    max_keyposes_per_task: dict[str, PositiveInt] = Field(default_factory=dict)
    episode_timeout_s: float = Field(180.0, gt=0)
    retries: int = Field(1, ge=0, le=10)
    policy_server: Literal["auto", "on", "off"] = "auto"  # auto: on when a GPU is present
    checkpoint: Literal["last", "best"] = "last"
    seed: int = 0
    # Seeds eval.seed, eval.seed + 1, ...; None: 1, or 3 with data.suite=rlbench (PerAct / 3DDA report the
    # mean over 3 seeds). Every seed runs episodes_per_task episodes per task.
    num_seeds: int | None = Field(None, ge=1, le=20)
    rlbench_demo_root: str | None = None  # data.suite=rlbench: the PerAct test split (reset_to_demo episodes)
    # data.suite=rlbench: whose evaluation rules (evaluation.simulators.rlbench_protocol.protocol_kwargs): peract (a planner
    # error ends the episode) or 3dda (3D Diffuser Actor's script: retry, separate gripper step, go on)
    rlbench_protocol: Literal["peract", "3dda"] = "peract"
    # Rollout videos (evaluation.runtime.video): per task, a success and a failure where both exist, one frame per
    # keypose with the predicted keypose drawn; <run>/eval/videos/<checkpoint>/ and MLflow artifacts videos/.
    videos: bool = True
    video_camera: str = Field("front", min_length=1)  # a camera of the simulator's rig (else its first)


class TrackingConfig(FrozenModel):
    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:////<repo>/mlflow.db
    experiment: str = Field("minidiffuser", min_length=1)


class RayConfig(FrozenModel):
    address: str | None = None  # None: $RAY_ADDRESS when set, else a private local cluster
    num_workers: int = Field(1, ge=0, le=64)  # 0 runs the train loop in the driver (tests)
    use_gpu: bool | None = None  # None: use a GPU when the cluster has one
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=0)  # Ray Train fault tolerance: restarts from the last checkpoint
    num_cpus: int | None = Field(None, ge=1)  # local cluster size; None = all cores
    # Pin the train worker(s) to the head node. None: when the cluster has simulation nodes (a "sim" resource,
    # cluster.yaml's layout: the head trains, the simulation nodes evaluate).
    train_on_head: bool | None = None


DEFAULT_POLICY: dict[str, Any] = {"type": "mini_diffuser", "preset": "laptop"}


class ExperimentConfig(FrozenModel):
    name: str = Field("mt10-minidiffuser", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    output_dir: str = "runs"  # checkpoints under <output_dir>/<name>/
    data: DataConfig = DataConfig()
    policy: PolicyConfig = MiniDiffuserConfig(**DEFAULT_POLICY)
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="before")
    @classmethod
    def _policy_defaults(cls, data: Any) -> Any:
        # A partial policy section (``policy.m=64``) is laid over the default policy: mini_diffuser, laptop preset.
        if isinstance(data, dict) and isinstance(data.get("policy"), dict):
            data = {**data, "policy": {**DEFAULT_POLICY, **data["policy"]}}
        return data

    def resolve_path(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else data_root() / p

    def with_absolute_paths(self) -> ExperimentConfig:
        """A copy whose data/output paths are absolute: what the driver hands to Ray workers, whose cwd and
        working_dir copy differ from the driver's."""
        return self.model_copy(
            update={
                "output_dir": str(self.resolve_path(self.output_dir)),
                "data": self.data.model_copy(update={"path": str(self.resolve_path(self.data.path))}),
            }
        )

    @property
    def run_dir(self) -> Path:
        return self.resolve_path(self.output_dir) / self.name


# ---------------------------------------------------------------- loading and overrides


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Defaults < YAML ``path`` < ``key=value`` overrides; each step validated. Raises ``ConfigError``."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(Path(path))
        _validate(raw, source=str(path))
    for item in overrides:
        key, value = parse_override(item)
        raw = set_dotted(raw, key, value)
        # Field-level errors are pinned on the override that caused them; cross-field checks wait for the
        # final validation, since a later override may fix them (train.steps=10 train.warmup_steps=2).
        _validate(raw, source=f"override {item!r}", defer_cross_field=True)
    cfg = _validate(raw, source="config")
    assert cfg is not None
    return cfg


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"config file {path} not found (pass --config with an existing YAML file, e.g. configs/tiny.yaml)"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"config file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must contain a mapping of sections (data:, policy:, train: ...), got {type(data).__name__}"
        )
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``"policy.m=64"`` -> ``("policy.m", 64)``; the value is parsed as YAML (ints, floats, bools, lists, null)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"bad override {item!r}: expected dotted.key=value, e.g. policy.m=64 or train.steps=2000"
        )
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``raw`` with ``key`` (dotted) set to ``value``."""
    out = dict(raw)
    node = out
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ConfigError(
                f"cannot set {key}: {'.'.join(parts[: i + 1])} is a value ({child!r}), not a section"
            )
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = value
    return out


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _validate(raw: dict[str, Any], source: str, defer_cross_field: bool = False) -> ExperimentConfig | None:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        if defer_cross_field and all(
            e["type"] == "value_error" and isinstance(e.get("input"), dict) for e in exc.errors()
        ):
            return None
        raise ConfigError(f"{source}: {_one_line(exc, raw)}") from None


def _one_line(exc: ValidationError, raw: dict[str, Any]) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # Discriminated unions insert the tag into the location: policy.mini_diffuser.m -> policy.m
    if len(loc) >= 2 and loc[0] == "policy" and loc[1] in _POLICY_TYPES:
        loc.pop(1)
    key = ".".join(loc) or "<root>"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], raw)
        return f"unknown key {key!r}; allowed here: {', '.join(allowed)}{more}"
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"{key}.type must be one of {', '.join(_POLICY_TYPES)} (got {_lookup(raw, loc + ['type'])!r}){more}"
    value = err.get("input")
    shown = "<missing>" if err["type"] == "missing" else repr(value)
    msg = err["msg"].removeprefix("Value error, ")
    if isinstance(value, dict) and err["type"] == "value_error":
        return f"{msg}{more}"  # a cross-field check: its message names the keys
    if isinstance(value, dict):
        shown = "{...}"
    return f"{key} = {shown}: {msg}{more}"


def _allowed_keys(section: list[str], raw: dict[str, Any]) -> list[str]:
    model: type[BaseModel] = ExperimentConfig
    for part in section:
        if model is ExperimentConfig and part == "policy":
            model = _POLICY_CLASSES.get(
                _lookup(raw, ["policy", "type"]) or "mini_diffuser", MiniDiffuserConfig
            )
            continue
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


def _lookup(raw: dict[str, Any], path: list[str]) -> Any:
    node: Any = raw
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
