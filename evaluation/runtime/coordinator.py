"""Fan episodes out over a pool of evaluation actors, with timeouts and fault containment.

Every remote call goes through ``ray.wait`` with a deadline: actor start-up (``ready``) gets
``startup_timeout_s``, each episode ``episode_timeout_s``. A crashed actor (process died, or the
simulator raised) or a hung one (deadline passed) is killed with ``ray.kill`` and replaced by a fresh
actor; its episode is retried until ``max_attempts`` and then recorded as ``sim_error`` or ``timeout``, or as
``oom_killed`` when the actor was killed for memory (``evaluation.runtime.memory.OomWatch``).
Every requested episode ends in exactly one ``EpisodeOutput`` (results are returned in request order),
so success rates always use the full denominator. If actors cannot even start, ``EvaluationStartupError``
is raised with the last cause (a broken checkpoint or a missing simulator is not an episode outcome).

Task affinity (``PoolConfig.task_affinity``, ``_next_episode``): an idle actor takes the next episode of
the task it ran last, else of a task no other actor holds, else the next waiting one; so an actor meets
each task about once and its simulator's bounded cache of task envs (``MetaWorldConfig.max_cached_tasks``)
rarely rebuilds one. Results do not depend on which actor ran an episode.

Progress (``evaluation.progress.ProgressLines``): a run that lasts longer than ``progress_every_s``
prints one ``[eval]`` line at every 10 % of its episodes and at least every ``progress_every_s`` (done /
total, success so far, episodes/s, ETA), and one when it ends; shorter runs print none.
"""

from __future__ import annotations

import collections
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import ray
from pydantic import Field, PositiveInt
from tqdm import tqdm

from evaluation.checkpoint_format import Instruction, Instructions
from evaluation.pointcloud import ConditionFn
from evaluation.progress import ProgressLines
from evaluation.runtime.actors import (
    SIM_RESOURCE,
    EvaluationActor,
    LocalPolicy,
    ServerPolicy,
    SimFactory,
    actor_resources,
)
from evaluation.runtime.episode import (
    DEFAULT_MAX_KEYPOSES,
    EpisodeOutput,
    EpisodeSpec,
    PlannerErrorRule,
)
from evaluation.runtime.memory import OomWatch
from evaluation.runtime.policy_server import PolicyFactory, PolicyServer
from evaluation.simulators.sim import EpisodeResult, EpisodeStatus
from policies.config import FrozenModel


class EvaluationStartupError(RuntimeError):
    """Evaluation actors (or the policy server) repeatedly failed to start."""


class PoolConfig(FrozenModel):
    """How episodes are spread over actors and how faults are contained."""

    num_actors: int = Field(2, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0)
    max_keyposes: int = Field(DEFAULT_MAX_KEYPOSES, ge=1)
    # Per-task limits that replace max_keyposes for those tasks (tasks whose demonstrations need more keyposes)
    max_keyposes_per_task: dict[str, PositiveInt] = Field(default_factory=dict)
    on_planner_error: PlannerErrorRule = "end"  # "continue": 3D Diffuser Actor's evaluation rule
    episode_timeout_s: float = Field(600.0, gt=0)
    startup_timeout_s: float = Field(300.0, gt=0)
    max_attempts: int = Field(2, ge=1)  # first try + retries
    max_startup_failures: int | None = Field(None, ge=1)  # in a row; default 2 * num_actors + 1
    policy_server: Literal["auto", "on", "off"] = "auto"  # auto: a server when the cluster has a GPU
    server_device: Literal["auto", "cpu", "cuda"] = "auto"
    server_max_batch: int | None = Field(None, ge=1)  # default: num_actors
    server_max_wait_s: float = Field(0.005, ge=0)
    use_sim_resource: bool | None = None  # None: when the cluster has a "sim" resource now; True: always
    torch_threads: int = Field(1, ge=1)
    progress: bool = True  # a tqdm bar on a terminal, and the [eval] progress lines
    # A line every 10 % and at least this often (once the run is older than this): a 500-episode MT50
    # evaluation at 1 episode/s otherwise printed nothing for 8 minutes.
    progress_every_s: float = Field(30.0, gt=0)
    task_affinity: bool = True  # an actor keeps to one task while it has episodes (see the module docstring)
    poll_s: float = Field(0.5, gt=0)
    # Rollout videos (evaluation.runtime.video): per task, the first success and the first failure, from this camera.
    videos: bool = False
    video_camera: str = "front"


@dataclass
class _Slot:
    actor: Any = None
    pid: int = 0
    state: Literal["starting", "idle", "busy", "dead"] = "dead"
    task: str | None = None  # the task of the last episode given to this actor


@dataclass
class _Work:
    slot: int
    kind: Literal["ready", "episode"]
    deadline: float
    index: int = -1
    started: float = field(default_factory=time.monotonic)
    recording: bool = False  # this episode records video frames


@dataclass
class RunStats:
    wall_s: float = 0.0
    retries: int = 0
    actor_restarts: int = 0
    failures: list[str] = field(default_factory=list)  # one line per crash/timeout, in order


@dataclass
class _Run:
    """The state of one ``Coordinator.run`` call: which episodes wait, run, are done, and their videos."""

    specs: list[EpisodeSpec]
    attempt_limit: int
    bar: Any  # tqdm progress bar
    progress: ProgressLines
    queue: collections.deque[int] = field(
        default_factory=collections.deque
    )  # spec indices waiting for an actor
    inflight: dict[Any, _Work] = field(default_factory=dict)  # episode ref -> work
    attempts: collections.Counter[int] = field(default_factory=collections.Counter)
    outputs: dict[int, EpisodeOutput] = field(default_factory=dict)
    successes: int = 0
    errors: int = 0
    videos: dict[tuple[str, bool], tuple[EpisodeSpec, list[Any]]] = field(default_factory=dict)
    recording: collections.Counter[str] = field(
        default_factory=collections.Counter
    )  # recording episodes in flight

    @property
    def done(self) -> bool:
        return len(self.outputs) >= len(self.specs)


def next_episode(queue: Iterable[int], specs: list[EpisodeSpec], own: str | None, held: set[str]) -> int:
    """Task affinity: the first waiting episode of ``own`` (the task the actor ran last), else the first of a
    task outside ``held`` (the other actors' tasks), else the first waiting. ``queue`` (spec indices in
    request order, retries first) must not be empty; one scan, at most a few thousand entries."""
    pick: int | None = None
    for index in queue:
        task = specs[index].task
        if task == own:
            return index
        if pick is None and task not in held:
            pick = index
    return next(iter(queue)) if pick is None else pick


def _failed(spec: EpisodeSpec, status: EpisodeStatus, message: str, wall_s: float) -> EpisodeOutput:
    result = EpisodeResult(spec.task, spec.variation, spec.seed, False, 0, status, message, wall_s)
    return EpisodeOutput(result=result)


class Coordinator:
    """A pool of ``EvaluationActor`` s (+ an optional ``PolicyServer``); ``run(specs)`` may be called repeatedly.

    Works inside an existing Ray session and never shuts Ray down; ``shutdown()`` kills its own actors.
    """

    def __init__(
        self,
        sim_factory: SimFactory,
        policy_factory: PolicyFactory,
        instructions: Instructions | Mapping[str, Instruction],
        condition_fn: ConditionFn,
        config: PoolConfig,
    ) -> None:
        if not ray.is_initialized():
            raise RuntimeError(
                "Coordinator needs a Ray session: call ray.init(...) first (evaluate_checkpoint does)"
            )
        self.sim_factory = sim_factory
        self.policy_factory = policy_factory
        self.instructions = Instructions.of(instructions)
        self.condition_fn = condition_fn
        self.cfg = config
        self.server: Any = None
        self.server_pid = 0
        self.slots = [_Slot() for _ in range(config.num_actors)]
        self.stats = RunStats()
        self._startup_failures = 0
        self._pending_ready: dict[Any, _Work] = {}
        self._server_device = self._resolve_server()
        # Rollout videos of the last run(): (task, success) -> (spec, frames); at most one per outcome.
        self.videos: dict[tuple[str, bool], tuple[EpisodeSpec, list[Any]]] = {}
        self._uses_sim = False  # the actors need the cluster's "sim" resource (simulation nodes)
        self._sim_decided: bool | None = None
        self._oom = OomWatch()  # tells an out-of-memory kill from a crash

    # -- set-up ---------------------------------------------------------------------------------------
    def _resolve_server(self) -> str | None:
        gpus = ray.cluster_resources().get("GPU", 0)
        use = self.cfg.policy_server == "on" or (self.cfg.policy_server == "auto" and gpus >= 1)
        if not use:
            return None
        if self.cfg.server_device != "auto":
            return self.cfg.server_device
        return "cuda" if gpus >= 1 else "cpu"

    def _check_capacity(self) -> None:
        """Fail fast when the actors can never be placed; warn when they must wait for busy CPUs."""
        starting = sum(1 for s in self.slots if s.state == "dead")
        need = starting * self.cfg.cpus_per_actor
        total = ray.cluster_resources().get("CPU", 0)
        autoscaled = self.cfg.use_sim_resource is True  # "sim" nodes may still be launched by the autoscaler
        if not autoscaled and self.cfg.num_actors * self.cfg.cpus_per_actor > total + 1e-9:
            raise ValueError(
                f"{self.cfg.num_actors} actors x {self.cfg.cpus_per_actor} CPU need more than the Ray cluster's "
                f"{total} CPUs: lower --actors or cpus_per_actor"
            )
        free = ray.available_resources().get("CPU", 0)
        if need > free + 1e-9:
            warnings.warn(
                f"{need} CPUs needed for evaluation actors, {free} free now: they start when CPUs free up",
                stacklevel=2,
            )

    def start(self) -> Coordinator:
        """Start the policy server (if any) and the actors; waits until the server is ready."""
        self._check_capacity()
        if self._server_device is not None and self.server is None:
            self._start_server()
        for i, slot in enumerate(self.slots):
            if slot.state == "dead":
                self._launch(i)
        return self

    def _start_server(self) -> None:
        spare = ray.cluster_resources().get("CPU", 0) - self.cfg.num_actors * self.cfg.cpus_per_actor
        options: dict[str, Any] = {"num_cpus": max(0.0, min(1.0, spare)), "max_restarts": 0}
        if self._server_device == "cuda":
            options["num_gpus"] = 1
        self.server = PolicyServer.options(**options).remote(
            self.policy_factory,
            device=self._server_device,
            max_batch=self.cfg.server_max_batch or self.cfg.num_actors,
            max_wait_s=self.cfg.server_max_wait_s,
            torch_threads=self.cfg.torch_threads,
        )
        ref = self.server.ready.remote()
        done, _ = ray.wait([ref], timeout=self.cfg.startup_timeout_s)
        if not done:
            ray.kill(self.server)
            self.server = None
            raise EvaluationStartupError(
                f"the policy server did not start within {self.cfg.startup_timeout_s:.0f} s"
            )
        try:
            self.server_pid = int(ray.get(ref)["pid"])
        except ray.exceptions.RayError as exc:
            self.server = None
            raise EvaluationStartupError(f"the policy server failed to start: {exc}") from exc

    def _policy_source(self) -> LocalPolicy | ServerPolicy:
        if self.server is not None:
            return ServerPolicy(self.server, timeout_s=self.cfg.episode_timeout_s)
        return LocalPolicy(self.policy_factory)

    def _launch(self, i: int) -> _Work:
        # Decided once per pool: a replacement actor never moves off the simulation nodes (onto the head)
        # because they are gone; it waits for one, and _check_sim_nodes fails the run if none is left.
        opts = actor_resources(
            self.cfg.cpus_per_actor,
            self.cfg.use_sim_resource if self._sim_decided is None else self._sim_decided,
        )
        self._uses_sim = self._sim_decided = "resources" in opts
        actor = EvaluationActor.options(**opts).remote(
            self.sim_factory,
            self._policy_source(),
            self.instructions,
            self.condition_fn,
            max_keyposes=self.cfg.max_keyposes,
            max_keyposes_per_task=self.cfg.max_keyposes_per_task,
            on_planner_error=self.cfg.on_planner_error,
            torch_threads=self.cfg.torch_threads,
        )
        self.slots[i] = _Slot(actor=actor, state="starting")
        work = _Work(slot=i, kind="ready", deadline=time.monotonic() + self.cfg.startup_timeout_s)
        self._pending_ready[actor.ready.remote()] = work
        return work

    def _kill(self, i: int) -> None:
        slot = self.slots[i]
        if slot.actor is not None:
            ray.kill(slot.actor, no_restart=True)
        self.slots[i] = _Slot()

    # -- the run loop ---------------------------------------------------------------------------------
    def __enter__(self) -> Coordinator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def run(self, specs: list[EpisodeSpec], max_attempts: int | None = None) -> list[EpisodeOutput]:
        """One ``EpisodeOutput`` per spec, in order; failures included (never dropped).

        ``max_attempts`` overrides the pool's setting for this run. With ``videos`` on, ``self.videos`` holds
        the run's rollout videos afterwards.
        """
        start = time.monotonic()
        if any(s.state == "dead" for s in self.slots):
            self.start()
        bar = tqdm(
            total=len(specs), desc="eval", unit="ep", disable=None if self.cfg.progress else True, leave=False
        )
        progress = ProgressLines(len(specs), self.cfg.progress_every_s, self.cfg.progress, start)
        run = _Run(
            specs, max_attempts or self.cfg.max_attempts, bar, progress, collections.deque(range(len(specs)))
        )
        self.videos = run.videos
        try:
            while not run.done:
                self._dispatch(run)
                refs = list(self._pending_ready) + list(run.inflight)
                now = time.monotonic()
                deadlines = [w.deadline for w in [*self._pending_ready.values(), *run.inflight.values()]]
                wait_s = min([self.cfg.poll_s, *[max(0.0, d - now) for d in deadlines]])
                done, rest = ray.wait(refs, num_returns=1, timeout=wait_s) if refs else ([], [])
                if done and rest:  # collect everything else that is already finished, without blocking
                    done += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
                for ref in done:
                    if ref in self._pending_ready:
                        self._on_ready(ref, self._pending_ready.pop(ref))
                    else:
                        self._on_episode(ref, run.inflight.pop(ref), run)
                self._expire(run)
                self._check_sim_nodes()
                progress.update(len(run.outputs), run.successes)
            progress.update(len(run.outputs), run.successes, final=True)
        finally:
            bar.close()
            for work in run.inflight.values():  # only on an exception: leave no episode running
                self._kill(work.slot)
        self.stats.wall_s += time.monotonic() - start
        return [run.outputs[i] for i in range(len(specs))]

    def _check_sim_nodes(self) -> None:
        """No actor alive and no simulation node left (they were removed or died): fail now with a clear
        error instead of waiting for replacement actors that can never be placed. An autoscaled pool
        (``use_sim_resource=True``) waits: the autoscaler may bring simulation nodes back."""
        if not self._uses_sim or self.cfg.use_sim_resource is True:
            return
        if any(s.state in ("idle", "busy") for s in self.slots):
            return
        if ray.cluster_resources().get(SIM_RESOURCE, 0) < 1:
            raise EvaluationStartupError(
                f"no simulation node is left in the Ray cluster (no '{SIM_RESOURCE}' resource): every evaluation "
                "actor is gone and none can be placed; add simulation nodes (cluster.yaml) and evaluate again"
            )

    def _dispatch(self, run: _Run) -> None:
        for i, slot in enumerate(self.slots):
            if slot.state == "dead":
                self._launch(i)
            if slot.state == "idle" and run.queue:
                index = self._next_episode(run, i)
                run.attempts[index] += 1
                spec = run.specs[index]
                slot.task = spec.task
                record = self._wants_video(run, spec.task)
                ref = slot.actor.run_episode.remote(spec, self.cfg.video_camera if record else None)
                run.inflight[ref] = _Work(
                    i, "episode", time.monotonic() + self.cfg.episode_timeout_s, index, recording=record
                )
                run.recording[spec.task] += record
                slot.state = "busy"

    def _next_episode(self, run: _Run, i: int) -> int:
        """Take the waiting episode actor ``i`` runs next (``next_episode``; FIFO without task affinity)."""
        if not self.cfg.task_affinity:
            return run.queue.popleft()
        held = {
            s.task for j, s in enumerate(self.slots) if j != i and s.state != "dead" and s.task is not None
        }
        pick = next_episode(run.queue, run.specs, self.slots[i].task, held)
        run.queue.remove(pick)
        return pick

    def _wants_video(self, run: _Run, task: str) -> bool:
        """Record this episode: videos are on, the task still lacks a success or a failure video, and fewer
        than two of its recording episodes are running (recording costs one extra render per episode)."""
        if not self.cfg.videos:
            return False
        missing = sum((task, outcome) not in run.videos for outcome in (True, False))
        return missing > 0 and run.recording[task] < 2

    def _keep_video(self, run: _Run, work: _Work, output: EpisodeOutput | None) -> None:
        if not work.recording:
            return
        spec = run.specs[work.index]
        run.recording[spec.task] -= 1
        if output is not None and output.frames:
            key = (spec.task, bool(output.result.success))
            if key not in run.videos:
                run.videos[key] = (spec, output.frames)

    def _on_ready(self, ref: Any, work: _Work) -> None:
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as exc:
            self._startup_failed(work.slot, f"actor failed to start: {_short(exc)}")
            return
        slot = self.slots[work.slot]
        slot.pid, slot.state = int(info["pid"]), "idle"
        self._startup_failures = 0

    def _startup_failed(self, i: int, message: str) -> None:
        self._kill(i)
        self.stats.actor_restarts += 1
        self._startup_failures += 1
        self.stats.failures.append(message)
        limit = self.cfg.max_startup_failures or 2 * self.cfg.num_actors + 1
        if self._startup_failures >= limit:
            raise EvaluationStartupError(
                f"{self._startup_failures} evaluation actors in a row failed to start; last error: {message}"
            )

    def _on_episode(self, ref: Any, work: _Work, run: _Run) -> None:
        try:
            output: EpisodeOutput = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if self._oom.killed_for_memory(exc):
                self._fault(
                    work,
                    "oom_killed",
                    f"actor killed for memory (out-of-memory killer): {_short(exc)}; "
                    "run fewer actors at once",
                    run,
                )
            else:
                self._fault(work, "sim_error", f"actor crashed: {_short(exc)}", run)
            return
        self.slots[work.slot].state = "idle"
        self._keep_video(run, work, output)
        output.frames = None  # kept in run.videos (or not needed): the outputs stay small
        self._record(run, work.index, output)

    def wait_ready(self) -> Coordinator:
        """Block until every actor has started (replacing failed ones); benchmarks time ``run`` after this."""
        while self._pending_ready or any(s.state == "dead" for s in self.slots):
            for i, slot in enumerate(self.slots):
                if slot.state == "dead":
                    self._launch(i)
            now = time.monotonic()
            wait_s = min(
                [self.cfg.poll_s, *[max(0.0, w.deadline - now) for w in self._pending_ready.values()]]
            )
            done, _ = ray.wait(list(self._pending_ready), num_returns=1, timeout=wait_s)
            for ref in done:
                self._on_ready(ref, self._pending_ready.pop(ref))
            self._expire_ready()
        return self

    def _expire_ready(self) -> None:
        now = time.monotonic()
        for ref, work in list(self._pending_ready.items()):
            if now >= work.deadline:
                del self._pending_ready[ref]
                self._startup_failed(
                    work.slot, f"actor did not start within {self.cfg.startup_timeout_s:.0f} s"
                )

    def _expire(self, run: _Run) -> None:
        self._expire_ready()
        now = time.monotonic()
        for ref, work in list(run.inflight.items()):
            if now >= work.deadline:
                del run.inflight[ref]
                self._fault(work, "timeout", f"episode exceeded {self.cfg.episode_timeout_s:.1f} s", run)

    def _fault(self, work: _Work, status: EpisodeStatus, message: str, run: _Run) -> None:
        """Kill and replace the actor; retry the episode or record its final status."""
        spec = run.specs[work.index]
        self._keep_video(run, work, None)
        pid = self.slots[work.slot].pid
        self.stats.failures.append(f"{spec.task} v{spec.variation} seed {spec.seed} (pid {pid}): {message}")
        self._kill(work.slot)
        self.stats.actor_restarts += 1
        if self.server is not None:
            self._check_server()
        if run.attempts[work.index] < run.attempt_limit:
            self.stats.retries += 1
            run.queue.appendleft(work.index)
        else:
            note = f"{message} (attempt {run.attempts[work.index]} of {run.attempt_limit})"
            self._record(run, work.index, _failed(spec, status, note, time.monotonic() - work.started))
        self._launch(work.slot)

    def _check_server(self) -> None:
        """A dead policy server fails every episode: raise rather than burn the retries."""
        ref = self.server.ready.remote()
        done, _ = ray.wait([ref], timeout=min(30.0, self.cfg.startup_timeout_s))
        try:
            if not done:
                raise EvaluationStartupError("the policy server stopped answering")
            ray.get(ref)
        except ray.exceptions.RayError as exc:
            raise EvaluationStartupError(f"the policy server died: {_short(exc)}") from exc

    def _record(self, run: _Run, index: int, output: EpisodeOutput) -> None:
        if index in run.outputs:
            raise AssertionError(f"episode {index} recorded twice")  # the exactly-once invariant
        run.outputs[index] = output
        run.successes += int(output.result.success)
        run.errors += int(output.result.status != "ok")
        run.bar.set_postfix(success=run.successes, errors=run.errors, refresh=False)
        run.bar.update(1)

    # -- teardown -------------------------------------------------------------------------------------
    def actor_pids(self) -> list[int]:
        """PIDs of the live simulator actors (and the policy server, last, when there is one)."""
        pids = [s.pid for s in self.slots if s.pid]
        return pids + ([self.server_pid] if self.server_pid else [])

    def actor_memory(self, timeout_s: float = 30.0) -> list[dict[str, float]]:
        """``{"pid", "rss_mb", "peak_rss_mb"}`` of every live simulator actor (those that answer in time)."""
        refs = [s.actor.memory.remote() for s in self.slots if s.state in ("idle", "busy")]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
        return [ray.get(ref) for ref in done]

    def server_stats(self) -> dict[str, float] | None:
        if self.server is None:
            return None
        ref = self.server.stats.remote()
        done, _ = ray.wait([ref], timeout=30.0)
        return ray.get(ref) if done else None

    def shutdown(self) -> None:
        """Kill every actor of this pool (the Ray session itself is left running)."""
        self._pending_ready.clear()
        for i in range(len(self.slots)):
            self._kill(i)
        if self.server is not None:
            ray.kill(self.server, no_restart=True)
            self.server = None
            self.server_pid = 0


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def _short(exc: BaseException, limit: int = 300) -> str:
    """One line naming what went wrong inside the actor (the root cause, not Ray's boilerplate)."""
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        text = f"{type(exc.cause).__name__}: {exc.cause}"
    else:
        lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
        causes = [ln for ln in lines if _EXC_LINE.match(ln)]
        head = lines[0] if lines else ""
        text = f"{type(exc).__name__}: {head}" + (f" <- {causes[-1]}" if causes else "")
        exit_detail = re.search(r"Worker exit type: \w+", str(exc))
        if exit_detail and not causes:
            text += f" ({exit_detail.group(0)})"
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
