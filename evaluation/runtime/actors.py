"""The Ray evaluation actor: owns exactly one headless simulator and runs episodes on it.

The simulator is built inside the actor from a picklable zero-argument factory (``FakeSimConfig.build``,
``functools.partial(MetaWorldSimulator, config)``...), so any backend behind ``evaluation.simulators.sim.Simulator``
works. The policy either runs in the actor (``LocalPolicy``: built by a picklable factory, normally
``BundlePolicy``, which brings the checkpoint through the object store) or in a shared ``PolicyServer`` (``ServerPolicy``: the actor fuses the point cloud and
sends the condition). Resources: ``num_cpus`` plus one unit of the custom ``sim`` resource of
``cluster.yaml`` when the cluster has it, so evaluation actors land on the simulation nodes.
``memory()`` reports the actor's RSS now and at its peak (``Coordinator.actor_memory``, ``platform.bench eval``).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ray
import torch

from evaluation.checkpoint_format import CheckpointBundle, Instruction, Instructions
from evaluation.pointcloud import ConditionFn
from evaluation.runtime.episode import (
    DEFAULT_MAX_KEYPOSES,
    EpisodeOutput,
    EpisodeSpec,
    Inference,
    LocalInference,
    PlannerErrorRule,
    run_episode,
)
from evaluation.runtime.policy_server import ServerInference
from evaluation.simulators.sim import Simulator
from policies.base import Policy

SimFactory = Callable[[], Simulator]
SIM_RESOURCE = "sim"


@dataclass(frozen=True)
class BundlePolicy:
    """Picklable policy factory for actors and the policy server: the bundle travels as an object-store
    reference (``ray.put`` once per evaluation), so a pool of N actors does not copy the weights N times
    through the driver."""

    bundle: Any  # ray.ObjectRef of a CheckpointBundle (or the bundle itself, outside Ray)

    def __call__(self) -> Policy:
        bundle = self.bundle if isinstance(self.bundle, CheckpointBundle) else ray.get(self.bundle)
        return bundle.build_policy()


@dataclass(frozen=True)
class LocalPolicy:
    """Run the policy inside each simulator actor, on ``device`` (CPU by default)."""

    factory: Callable[[], Policy]
    device: str = "cpu"


@dataclass(frozen=True)
class ServerPolicy:
    """Ask a shared ``PolicyServer`` actor; each request waits at most ``timeout_s``."""

    server: Any  # ray.actor.ActorHandle of a PolicyServer
    timeout_s: float = 120.0


PolicySource = LocalPolicy | ServerPolicy


def actor_resources(num_cpus: float, use_sim_resource: bool | None = None) -> dict[str, Any]:
    """Ray ``.options()`` of one evaluation actor; the ``sim`` resource is used when the cluster has it."""
    if use_sim_resource is None:
        use_sim_resource = ray.cluster_resources().get(SIM_RESOURCE, 0) >= 1
    options: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": 0, "max_task_retries": 0}
    if use_sim_resource:
        options["resources"] = {SIM_RESOURCE: 1}
    return options


@ray.remote
class EvaluationActor:
    """One simulator + (local policy | policy-server client). ``run_episode`` is one blocking call."""

    def __init__(
        self,
        sim_factory: SimFactory,
        policy: PolicySource,
        instructions: Instructions | Mapping[str, Instruction],
        condition_fn: ConditionFn,
        max_keyposes: int = DEFAULT_MAX_KEYPOSES,
        on_planner_error: PlannerErrorRule = "end",
        torch_threads: int = 1,
        max_keyposes_per_task: Mapping[str, int] | None = None,
    ) -> None:
        torch.set_num_threads(max(1, torch_threads))
        # Mesa's llvmpipe renders with one thread per core by default: keep an actor on its own CPU share.
        os.environ.setdefault("LP_NUM_THREADS", str(max(1, torch_threads)))
        # Arguments arrive as read-only views of Ray's object store; torch wants writable arrays.
        self.instructions = Instructions.of(instructions).writable()
        self.condition_fn = condition_fn
        self.max_keyposes = max_keyposes
        # replaces max_keyposes for these tasks
        self.max_keyposes_per_task = dict(max_keyposes_per_task or {})
        self.on_planner_error = on_planner_error
        self.infer: Inference
        if isinstance(policy, LocalPolicy):
            self.infer = LocalInference(policy.factory(), device=policy.device)
        elif isinstance(policy, ServerPolicy):
            self.infer = ServerInference(policy.server, timeout_s=policy.timeout_s)
        else:
            raise TypeError(f"policy must be LocalPolicy or ServerPolicy, got {type(policy).__name__}")
        self.sim = sim_factory()

    def ready(self) -> dict[str, Any]:
        """Called once by the coordinator: the actor is constructed (simulator and policy built)."""
        return {"pid": os.getpid(), "tasks": self.sim.task_names()}

    def run_episode(self, spec: EpisodeSpec, record_camera: str | None = None) -> EpisodeOutput:
        cpu = time.process_time()
        output = run_episode(
            self.sim,
            self.infer,
            self.condition_fn,
            self.instructions,
            spec,
            self.max_keyposes_per_task.get(spec.task, self.max_keyposes),
            self.on_planner_error,
            record_camera,
        )
        output.actor_pid = os.getpid()
        output.result = dataclasses.replace(output.result, node=ray.get_runtime_context().get_node_id())
        output.cpu_s = time.process_time() - cpu
        return output

    def memory(self) -> dict[str, float]:
        """This actor's resident memory (MB) now and at its peak (``rss_mb``, ``peak_rss_mb``), and its pid."""
        return {"pid": os.getpid(), **process_memory_mb()}

    def close(self) -> None:
        self.sim.close()


def process_memory_mb() -> dict[str, float]:
    """RSS of this process now (``VmRSS`` of ``/proc/self/status``; NaN off Linux) and its peak since it
    started (``getrusage``), in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    try:
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith("VmRSS:"))
        rss = int(line.split()[1]) / 1024  # kB
    except (OSError, StopIteration, ValueError):
        rss = float("nan")
    return {"rss_mb": rss, "peak_rss_mb": peak}
