"""DDP on CPU (gloo, 2 processes): ranks agree on skipping a non-finite step and on the time budget, so a
NaN on one rank or a clock that runs out on one rank never leaves the other waiting in a collective."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.process  # two gloo ranks in child processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from platform.config import load_config
    from platform.train.loop import time_is_up
    from platform.train.step import train_step
    from policies.registry import build_policy
    from tests.platform.fakes import FakeKeyframeDataset

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=__import__("datetime").timedelta(seconds=60)
    )
    torch.manual_seed(0)
    cfg = load_config(None, ["policy.preset=tiny", "policy.m=2"])
    policy = DistributedDataParallel(build_policy(cfg.policy))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batch = FakeKeyframeDataset(cfg.policy).batch([rank, rank + 2], max_points=64)
    results = {}
    kw = {"grad_clip": 1.0, "amp": "off", "device": torch.device("cpu")}
    gen = torch.Generator().manual_seed(1)
    results["ok_step"] = train_step(
        policy, batch, optimizer, scheduler, scaler, None, generator=gen, **kw
    ).skipped
    if rank == 1:
        batch.points[:] = float("nan")  # only this rank sees a non-finite loss
    before = [p.detach().clone() for p in policy.parameters()]
    results["nan_step"] = train_step(
        policy, batch, optimizer, scheduler, scaler, None, generator=gen, **kw
    ).skipped
    results["weights_kept"] = all(
        torch.equal(a, b.detach()) for a, b in zip(before, policy.parameters(), strict=True)
    )
    deadline = time.monotonic() + (-1.0 if rank == 1 else 1000.0)  # only rank 1's budget is spent
    results["time_up"] = time_is_up(deadline, torch.device("cpu"))
    results["no_budget"] = time_is_up(None, torch.device("cpu"))
    dist.barrier()
    dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))


def test_ranks_skip_a_non_finite_step_together_and_stop_on_the_first_spent_budget(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung in a collective"
    assert [p.exitcode for p in procs] == [0, 0]
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == {
            "ok_step": False,
            "nan_step": True,
            "weights_kept": True,
            "time_up": True,
            "no_budget": False,
        }, (rank, got)
