"""One optimisation step, the learning-rate schedule and the EMA (the step stage of training).

``train_step`` is the only place gradients are taken, for every policy type: forward
(``policy.compute_loss``), non-finite guard, backward, clip, optimizer step, scheduler step, EMA update.
A non-finite loss or gradient skips the step without touching weights, optimizer or EMA (R7).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from policies.base import Policy
from policies.batch import ConditionBatch


@dataclass
class StepMetrics:
    loss: float
    grad_norm: float
    lr: float
    skipped: bool  # True when the loss or a gradient was non-finite
    parts: dict[str, float] = field(default_factory=dict)


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """``flag`` on every rank (logical AND over the process group); just ``flag`` without DDP."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    if torch.distributed.get_world_size() < 2:
        return flag
    if torch.distributed.get_backend() != "nccl":
        device = torch.device("cpu")  # gloo reduces CPU tensors
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item())


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a model's parameters (buffers copied).

    With ``warmup`` the decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))`` (as diffusers'
    EMAModel): without it, a 0.995 average still holds 0.995^200 = 37 % of the random initial weights after
    200 steps and 5 % after 600, which is what a short run evaluates.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, updates: int | None) -> float:
        """The decay of update number ``updates`` (1 for the first); the plain decay when unknown."""
        if not self.warmup or updates is None:
            return self.decay
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int | None = None) -> None:
        decay = self.decay_at(updates)
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            s.lerp_(p.detach(), 1 - decay)
        for s, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            s.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA (``auto`` = bf16); nothing on CPU unless asked explicitly for bf16."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(
    policy: Policy,
    batch: ConditionBatch,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    ema: EMA | None,
    *,
    grad_clip: float,
    amp: str,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> StepMetrics:
    """Forward, guard, backward, clip, step. Pure apart from its arguments."""
    policy.train()
    optimizer.zero_grad(set_to_none=True)
    lr = optimizer.param_groups[0]["lr"]
    with autocast_context(device, amp):
        out = policy(batch, generator=generator)  # forward == compute_loss (also under DDP)
    loss = out.loss
    if not all_ranks_agree(bool(torch.isfinite(loss.detach())), loss.device):
        # skipped on every rank together: under DDP a rank that skipped backward would leave the others
        # waiting in the gradient all-reduce
        return StepMetrics(
            loss=float(loss.detach()), grad_norm=float("nan"), lr=lr, skipped=True, parts=out.metrics
        )
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    params = [p for p in policy.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip, error_if_nonfinite=False)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        scaler.update()
        return StepMetrics(
            loss=float(loss.detach()), grad_norm=float("nan"), lr=lr, skipped=True, parts=out.metrics
        )
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    if ema is not None:
        ema.update(
            policy, updates=scheduler.last_epoch
        )  # the scheduler counts applied steps (resumed exactly)
    return StepMetrics(
        loss=float(loss.detach()), grad_norm=float(grad_norm), lr=lr, skipped=False, parts=out.metrics
    )
