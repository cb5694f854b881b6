"""Level-1 sampler exact resume, LR schedule, the non-finite guard of train_step (R7), the progress ETA format."""

import math

import numpy as np
import pytest
import torch

from platform.train.sampler import Level1Sampler, step_seed
from platform.train.step import EMA, train_step, warmup_cosine
from policies.base import LossOutput

pytestmark = pytest.mark.unit


def test_sampler_covers_each_epoch_once_and_resumes_exactly():
    s = Level1Sampler(num_samples=10, batch_size=4, seed=3)
    draws = np.concatenate([s.next_indices() for _ in range(5)])  # 20 draws = 2 epochs
    assert sorted(draws[:10]) == list(range(10)) and sorted(draws[10:]) == list(range(10))
    a = Level1Sampler(10, 4, seed=3)
    for _ in range(3):
        a.next_indices()
    state = a.state_dict()
    b = Level1Sampler(10, 4, seed=3)
    b.load_state_dict(state)
    for _ in range(7):
        assert np.array_equal(a.next_indices(), b.next_indices())


def test_sampler_refuses_another_dataset():
    state = Level1Sampler(10, 4, 0).state_dict()
    with pytest.raises(ValueError, match="different dataset"):
        Level1Sampler(11, 4, 0).load_state_dict(state)


def test_task_balanced_sampler_draws_every_task_equally_and_resumes_exactly():
    groups = np.array([0] * 12 + [1] * 3 + [2] * 1)  # one large task, one small, one with a single sample
    s = Level1Sampler(len(groups), batch_size=6, seed=1, groups=groups)
    draws = np.concatenate([s.next_indices() for _ in range(12)])  # 72 draws = 2 epochs of 3 tasks x 12
    for epoch in (draws[:36], draws[36:]):
        assert np.bincount(groups[epoch]).tolist() == [12, 12, 12]  # every task as often as the largest
        assert sorted(epoch[groups[epoch] == 0]) == list(range(12))  # the largest: each sample once
        assert np.bincount(epoch[groups[epoch] == 1], minlength=15)[12:].tolist() == [4, 4, 4]
    assert not np.array_equal(draws[:36], draws[36:])  # a fresh shuffle each epoch
    a = Level1Sampler(len(groups), 6, seed=1, groups=groups)
    for _ in range(5):
        a.next_indices()
    b = Level1Sampler(len(groups), 6, seed=1, groups=groups)
    b.load_state_dict(a.state_dict())
    for _ in range(9):
        assert np.array_equal(a.next_indices(), b.next_indices())
    with pytest.raises(ValueError, match="data.balance"):  # resuming with the other sampling is refused
        Level1Sampler(len(groups), 6, seed=1).load_state_dict(a.state_dict())


def test_sqrt_balanced_sampler_draws_tasks_by_the_root_of_their_size_and_refuses_another_exponent():
    groups = np.array([0] * 16 + [1] * 4 + [2] * 1)  # sizes 16, 4, 1: draws ceil(sqrt(n * 16)) = 16, 8, 4
    s = Level1Sampler(len(groups), batch_size=7, seed=2, groups=groups, exponent=0.5)
    draws = np.concatenate([s.next_indices() for _ in range(8)])  # 56 draws = 2 epochs of 28
    for epoch in (draws[:28], draws[28:]):
        assert np.bincount(groups[epoch]).tolist() == [16, 8, 4]
        assert sorted(epoch[groups[epoch] == 0]) == list(range(16))  # the largest: each sample once
        assert np.bincount(epoch[groups[epoch] == 1], minlength=20)[16:].tolist() == [2, 2, 2, 2]
    a = Level1Sampler(len(groups), 7, seed=2, groups=groups, exponent=0.5)
    for _ in range(3):
        a.next_indices()
    b = Level1Sampler(len(groups), 7, seed=2, groups=groups, exponent=0.5)
    b.load_state_dict(a.state_dict())
    assert all(np.array_equal(a.next_indices(), b.next_indices()) for _ in range(6))
    with pytest.raises(ValueError, match="data.balance"):  # sqrt -> tasks: another sampling
        Level1Sampler(len(groups), 7, seed=2, groups=groups).load_state_dict(a.state_dict())
    old = {
        k: v
        for k, v in Level1Sampler(len(groups), 7, 2, groups).state_dict().items()
        if k != "balance_exponent"
    }
    Level1Sampler(len(groups), 7, seed=2, groups=groups).load_state_dict(old)  # a checkpoint from before sqrt
    with pytest.raises(ValueError, match="data.balance"):
        Level1Sampler(len(groups), 7, seed=2, groups=groups, exponent=0.5).load_state_dict(old)
    with pytest.raises(ValueError, match="exponent"):
        Level1Sampler(len(groups), 7, seed=2, groups=groups, exponent=1.5)


def test_weighted_sampler_draws_a_task_in_proportion_to_its_size_times_its_weight():
    groups = np.array(
        [0] * 4 + [1] * 2 + [2] * 1
    )  # sizes 4, 2, 1; weights 1, 2, 3.5: 4, 4, 4 draws per epoch
    weights = np.array([1.0, 2.0, 3.5])
    s = Level1Sampler(len(groups), batch_size=3, seed=5, groups=groups, exponent=1.0, weights=weights)
    for _ in range(2):
        epoch = np.concatenate([s.next_indices() for _ in range(4)])  # 12 draws: one epoch
        assert np.bincount(groups[epoch]).tolist() == [4, 4, 4]
        assert sorted(epoch[groups[epoch] == 0]) == [0, 1, 2, 3]  # weight 1: each sample once
        assert np.bincount(epoch[groups[epoch] == 1], minlength=6)[4:].tolist() == [2, 2]
    unweighted = Level1Sampler(len(groups), 3, seed=5, groups=groups, exponent=1.0)
    epoch = np.concatenate([unweighted.next_indices() for _ in range(7)])[:7]  # exponent 1: each sample once
    assert sorted(epoch.tolist()) == list(range(7))
    a = Level1Sampler(len(groups), 3, seed=5, groups=groups, exponent=1.0, weights=weights)
    for _ in range(5):
        a.next_indices()
    b = Level1Sampler(len(groups), 3, seed=5, groups=groups, exponent=1.0, weights=weights)
    b.load_state_dict(a.state_dict())
    assert all(np.array_equal(a.next_indices(), b.next_indices()) for _ in range(9))
    with pytest.raises(ValueError, match="data.task_weights"):  # other weights: another sampling
        Level1Sampler(len(groups), 3, 5, groups, 1.0, np.array([1.0, 2.0, 3.0])).load_state_dict(
            a.state_dict()
        )
    with pytest.raises(ValueError, match="data.task_weights"):  # a checkpoint from before the weights
        a.load_state_dict({k: v for k, v in unweighted.state_dict().items() if k != "group_weights"})
    with pytest.raises(ValueError, match="one positive number per group"):
        Level1Sampler(len(groups), 3, 5, groups, 1.0, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="one positive number per group"):
        Level1Sampler(len(groups), 3, 5, groups, 1.0, np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="pass groups"):
        Level1Sampler(len(groups), 3, 5, None, 1.0, weights)


def test_data_balance_reaches_the_training_sampler():
    from platform.config import load_config
    from platform.train.state import build_training

    class Data:
        task_index = np.array([0, 0, 0, 1])
        task_names = ["a-v3", "b-v3"]

        def __len__(self):
            return 4

    overrides = ["policy.preset=tiny", "train.batch_size=4"]
    uniform = build_training(load_config(None, overrides), Data(), torch.device("cpu"))
    balanced = build_training(
        load_config(None, [*overrides, "data.balance=tasks"]), Data(), torch.device("cpu")
    )
    assert uniform.sampler.groups is None and balanced.sampler.groups.tolist() == [0, 0, 0, 1]
    assert np.bincount(
        Data.task_index[np.concatenate([balanced.sampler.next_indices() for _ in range(3)])]
    ).tolist() == [6, 6]
    root = build_training(load_config(None, [*overrides, "data.balance=sqrt"]), Data(), torch.device("cpu"))
    assert root.sampler.exponent == 0.5 and balanced.sampler.exponent == 0.0
    # task sizes 3 and 1: ceil(sqrt(3 * 3)) = 3 and ceil(sqrt(1 * 3)) = 2 draws per epoch, 4 epochs in 20 draws
    assert np.bincount(
        Data.task_index[np.concatenate([root.sampler.next_indices() for _ in range(5)])]
    ).tolist() == [12, 8]
    weighted = build_training(
        load_config(None, [*overrides, "data.task_weights.b-v3=3"]), Data(), torch.device("cpu")
    )  # sizes 3 and 1, weights 1 and 3: 3 draws each per epoch
    assert weighted.sampler.exponent == 1.0 and weighted.sampler.weights.tolist() == [1.0, 3.0]
    assert np.bincount(
        Data.task_index[np.concatenate([weighted.sampler.next_indices() for _ in range(3)])]
    ).tolist() == [6, 6]
    with pytest.raises(ValueError, match=r"data.task_weights names \['c-v3'\]"):
        build_training(
            load_config(None, [*overrides, "data.task_weights.c-v3=2"]), Data(), torch.device("cpu")
        )


def test_step_seeds_differ_by_step_and_stream():
    seeds = {step_seed(0, s, k) for s in range(50) for k in range(3)}
    assert len(seeds) == 150 and step_seed(1, 2, 0) == step_seed(1, 2, 0)


def test_ddp_ranks_draw_their_own_step_noise():
    """Under DDP every rank must draw its own timesteps, noise and augmentation; rank 0 draws what a
    single-worker run draws (so single-GPU results do not change)."""
    from platform.train.loop import step_generator

    cpu = torch.device("cpu")
    draws = [torch.rand(8, generator=step_generator(0, 7, cpu, rank=r)) for r in range(3)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert torch.equal(draws[0], torch.rand(8, generator=step_generator(0, 7, cpu)))
    assert step_seed(0, 7, 1, rank=0) == step_seed(0, 7, 1) != step_seed(0, 7, 1, rank=1)


def test_warmup_cosine():
    assert warmup_cosine(0, 10, 100, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert 0.1 < warmup_cosine(55, 10, 100, 0.1) < 1.0


class FakeLossPolicy(torch.nn.Module):
    """A two-parameter stand-in for a policy whose loss can be made non-finite on demand."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.poison = None  # None | "loss" | "grad"

    def forward(self, batch, generator=None):
        loss = (self.w**2).sum()
        if self.poison == "loss":
            loss = loss * float("nan")
        elif self.poison == "grad":
            loss = loss + (self.w * torch.tensor([float("inf"), 0.0, 0.0])).sum() * 0
            loss = loss + self.w.sum() * torch.tensor(float("inf")) * 0 + torch.sqrt(self.w[0] - self.w[0])
        return LossOutput(loss, {"loss/position": float(loss.detach())})


def make(policy):
    opt = torch.optim.AdamW(policy.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return opt, sched, scaler, EMA(policy, 0.9)


@pytest.mark.parametrize("poison", ["loss", "grad"])
def test_non_finite_step_changes_nothing(poison):
    policy = FakeLossPolicy()
    opt, sched, scaler, ema = make(policy)
    kw = dict(grad_clip=1.0, amp="off", device=torch.device("cpu"))
    ok = train_step(policy, None, opt, sched, scaler, ema, **kw)
    assert not ok.skipped and math.isfinite(ok.loss)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    ema_before = {k: v.clone() for k, v in ema.state_dict().items()}
    opt_before = opt.state_dict()["state"][0]["exp_avg"].clone()
    policy.poison = poison
    bad = train_step(policy, None, opt, sched, scaler, ema, **kw)
    assert bad.skipped
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert all(torch.equal(ema_before[k], v) for k, v in ema.state_dict().items())
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt_before)
    assert sched.last_epoch == 1


def test_ema_warmup_forgets_the_initial_weights():
    """With warmup, the average after a few hundred steps holds (almost) none of the random initial weights."""
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.constant_(model.weight, 0.0)
    plain, warm = EMA(model, 0.995, warmup=False), EMA(model, 0.995, warmup=True)
    with torch.no_grad():
        model.weight.fill_(1.0)  # trained weights, constant from the first step
    for n in range(1, 201):
        plain.update(model, updates=n)
        warm.update(model, updates=n)
    assert abs(float(plain.shadow.weight[0, 0]) - (1 - 0.995**200)) < 1e-4  # 37 % initial weights left
    assert float(warm.shadow.weight[0, 0]) > 0.999
    assert warm.decay_at(10_000) == 0.995 and warm.decay_at(1) < 0.2


def test_training_start_line_names_a_balanced_level_1(tmp_path, monkeypatch, capsys):
    import platform.train.worker as worker
    from platform.config import load_config
    from platform.train.dataset import DatasetSubset
    from tests.platform.fakes import FakeKeyframeDataset

    def split(c):
        full = FakeKeyframeDataset(c.policy, num_samples=12)
        return DatasetSubset(full, np.arange(8)), DatasetSubset(full, np.arange(8, 12))

    monkeypatch.setattr(worker, "open_split", split)
    for balance, words in (
        ("samples", None),
        ("sqrt", "level 1 balanced by the square root of each task's samples"),
    ):
        cfg = load_config(
            None,
            [
                *("policy.preset=tiny", "policy.m=2", "train.batch_size=2", "train.steps=2"),
                *(
                    "train.warmup_steps=0",
                    "train.val_every=1000",
                    "train.device=cpu",
                    "eval.enabled=false",
                    "tracking.enabled=false",
                ),
                f"output_dir={tmp_path / balance}",
                f"data.balance={balance}",
            ],
        )
        cfg.run_dir.mkdir(parents=True)
        worker.train_loop_per_worker({"config": cfg.model_dump(mode="json"), "run_dir": str(cfg.run_dir)})
        start = [ln for ln in capsys.readouterr().out.splitlines() if "[train] starting at step 0/2" in ln]
        assert len(start) == 1 and ("level 1" not in start[0] if words is None else words in start[0]), start
