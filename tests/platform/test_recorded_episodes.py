"""Meta-World as the robot, the loop closed: expert episodes exported as recorded episodes (every frame, every
camera), imported with ``python -m evaluation.import_episodes``, trained on with ``platform.train`` like any
dataset, served over HTTP with Ray Serve (``platform.serve``), and Meta-World episodes driven through the HTTP
client with exactly the outcomes and keyposes of in-process evaluation (issue "From a robot and back";
docs/importing.md, docs/serving.md). One test, because training the policy is most of its time."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.checkpoint_format import CheckpointBundle
from evaluation.datasets.episode_export import export_episodes
from evaluation.raysession import ray_session
from evaluation.runtime.coordinator import PoolConfig
from evaluation.runtime.episode import LocalInference, row_seed, run_episode
from evaluation.runtime.evaluate import (
    evaluate_checkpoint,
    metaworld_factory,
    metaworld_test_variations,
    plan_episodes,
)
from platform.serve import Client, HttpInference, ServeError
from platform.serve.client import request_body
from platform.serve.run import resolve_checkpoint
from tests.listening import HAS_PROC_NET, assert_loopback_only
from tests.platform.conftest import TINY_TASKS, _free_port, run_platform, tiny_overrides

pytestmark = [pytest.mark.integration, pytest.mark.sim]


def test_exported_episodes_import_train_and_serve_like_a_collection(tmp_path, ray_cluster):
    recordings = tmp_path / "recordings"
    export_episodes(TINY_TASKS, 1, recordings, log=lambda _: None)
    dataset = tmp_path / "imported"
    out = run_platform(
        "evaluation.import_episodes", ["--root", str(recordings), "--out", str(dataset), "--no-progress"]
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (
        "workspace fitted to the data" in out.stdout and "table height 0.00" in out.stdout
    )  # Meta-World's table
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["suite"] == "recorded" and sorted(manifest["tasks"]) == sorted(TINY_TASKS)

    args = tiny_overrides(
        tmp_path,
        dataset,
        "imported",
        "train.steps=10",
        "data.episodes_per_task=1",
        "data.val_episodes_per_task=0",
        "train.val_every=0",
        "policy.history=2",  # served requests then carry previous_poses, checked bit for bit below
        "eval.enabled=false",  # evaluated below, beside the served episodes
    )
    # on the suite's shared cluster (a private one: the serving below, and tests/platform/test_loopback.py)
    run = run_platform("platform.train", args, env={"RAY_ADDRESS": ray_cluster.address})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "(evaluation disabled)" in run.stdout.strip().splitlines()[-1], run.stdout[-2000:]

    serve_and_drive_metaworld(resolve_checkpoint(tmp_path / "runs" / "imported"))


class Recording:
    """An ``Inference`` that keeps every keypose it returns."""

    def __init__(self, infer) -> None:
        self.infer, self.poses = infer, []

    def __call__(self, condition, seed: int) -> np.ndarray:
        pose = self.infer(condition, seed)
        self.poses.append(np.asarray(pose))
        return pose


def serve_and_drive_metaworld(checkpoint: Path, max_keyposes: int = 3) -> None:
    from ray import serve

    from platform.serve.app import ServeSettings
    from platform.serve.run import start

    bundle = CheckpointBundle.read(checkpoint)
    assert sorted(bundle.instruction_texts) == sorted(TINY_TASKS) and "MiniLM" in bundle.text_encoder
    specs = plan_episodes(TINY_TASKS, 2, 0, metaworld_test_variations())
    threads = torch.get_num_threads()
    with ray_session(num_cpus=3):
        report = evaluate_checkpoint(
            bundle,
            tasks=TINY_TASKS,
            episodes_per_task=2,
            num_actors=1,
            seed=0,
            pool=PoolConfig(num_actors=1, max_keyposes=max_keyposes, progress=False),
        )
        settings = ServeSettings(max_batch=4, batch_wait_s=0.05, max_request_bytes=2**20)  # 1 MB: 413 below
        url, device = start(bundle, settings, port=_free_port())
        assert device == "cpu"
        try:
            client = Client(url)
            # the private cluster, its HTTP proxy and the replica's own gRPC server: loopback only
            if HAS_PROC_NET:
                assert_loopback_only("platform.serve", also="ServeReplica")
            info = client.info()
            assert info["tasks"] == sorted(TINY_TASKS) and len(info["instructions"]) == len(TINY_TASKS)
            assert info["pointcloud"] == bundle.condition_fn().config.settings()  # what clients must match
            http = HttpInference(client)
            local = LocalInference(bundle.build_policy())
            torch.set_num_threads(1)  # as the replica and evaluation's actors: other counts round differently
            sim = metaworld_factory("mt10")()
            served, in_process = [], []
            for spec in specs:  # the same plan as the evaluation above, once over HTTP, once in this process
                served_poses, local_poses = Recording(http), Recording(local)
                served.append(
                    (
                        run_episode(
                            sim, served_poses, http.condition, bundle.instructions, spec, max_keyposes
                        ),
                        served_poses.poses,
                    )
                )
                in_process.append(
                    (
                        run_episode(
                            sim, local_poses, bundle.condition_fn(), bundle.instructions, spec, max_keyposes
                        ),
                        local_poses.poses,
                    )
                )
            evaluated = {(r.task, r.seed): (r.success, r.steps, r.status) for r in report.results}
            for (out, poses), (ref, ref_poses) in zip(served, in_process, strict=True):
                r = out.result
                assert (r.success, r.steps, r.status) == evaluated[
                    (r.task, r.seed)
                ]  # same outcomes as evaluation
                assert (r.success, r.steps) == (ref.result.success, ref.result.steps)
                assert len(poses) == len(ref_poses)
                assert all(np.array_equal(a, b) for a, b in zip(poses, ref_poses, strict=True))  # bit for bit

            # Concurrent requests are batched and each gets the answer it gets alone.
            obs = sim.reset(TINY_TASKS[0], 0, 0)
            alone = [client.predict_observation(obs, seed=row_seed(3, k)) for k in range(4)]
            with ThreadPoolExecutor(4) as pool:
                together = list(
                    pool.map(lambda k: client.predict_observation(obs, seed=row_seed(3, k)), range(4))
                )
            assert max(p.timing["batch_size"] for p in together) > 1
            for a, b in zip(alone, together, strict=True):
                assert a.seed == b.seed and np.allclose(a.pose, b.pose, atol=1e-5)
            assert alone[0].instruction_source == "checkpoint"
            assert (
                client.predict(
                    "close the laptop lid", obs.gripper_pose, cameras=obs.cameras, seed=1
                ).instruction_source
                == "encoder"
            )  # a new text, encoded on the server
            sim.close()

            # Bad requests: 4xx with one line; the server keeps answering.
            for body, status, words in [
                (b"{oops", 400, "not valid JSON"),
                (request_body("x", [0.0] * 7, points=np.zeros((3, 6))), 400, "gripper_pose"),
                (b"x" * (2**20 + 1), 413, "more than this server's 1 MB"),
            ]:
                with pytest.raises(ServeError) as info:
                    client.send(body)
                assert (
                    info.value.status == status and words in str(info.value) and "\n" not in str(info.value)
                )
            assert np.array_equal(client.predict_observation(obs, seed=alone[0].seed).pose, alone[0].pose)
        finally:
            torch.set_num_threads(threads)
            serve.shutdown()
