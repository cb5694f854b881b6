"""``python -m platform.bench policy``: two-level (B conditions x M) vs one-to-one (B*M conditions) training.

Same encoder, neck and heads, same weights, same number of noised action samples per step. For each M of
the sweep it measures a training step (forward + backward; the optimizer update is the same for both and
left out): noised samples per second and peak memory allocated during the step, and their ratios. It also
times the encoder alone on B conditions and the head (neck + heads) alone on B*M rows: the two-level step
cannot beat ``encoder(B) + head(B*M)``, the "limit" it is compared with.

Imports only torch, numpy (through torch), pydantic and ``policies`` so that it runs on a bare GPU box.
``--json PATH`` writes ``{"device", "rows": [...], "ratios": {"<M>": {"throughput", "memory_per_sample"}},
"limits": {...}, "settings": {...}, "skipped": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from policies.batch import ConditionBatch
from policies.expansion import expand_parent_index
from policies.minidiffuser import MiniDiffuserPolicy, reduce_row_losses
from policies.profiling import PeakTensorMemory, interleaved_median_seconds
from policies.registry import build_policy, parse_policy_config
from policies.synthetic import random_condition_batch


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m platform.bench policy", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset", default="laptop", choices=["tiny", "laptop", "paper"], help="policy size preset"
    )
    p.add_argument("--b", type=int, default=4, help="conditions per two-level step (B)")
    p.add_argument(
        "--ms", default="1,4,16,64,256", help="comma-separated sweep of M (noised samples per condition)"
    )
    p.add_argument(
        "--points", type=int, default=None, help="points per condition (default: the preset's max_points)"
    )
    p.add_argument("--text-len", type=int, default=12, help="instruction tokens per condition")
    p.add_argument(
        "--max-conditions",
        type=int,
        default=256,
        help="skip one-to-one rows that would encode more conditions than this per step (memory)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed steps per row (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per row")
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu' or 'cuda'")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU); default: torch's")
    p.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "process"],
        help="'process' times CPU seconds of this process (use with --threads 1 on a shared CPU box)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _config(args: argparse.Namespace, policy_type: str, m: int, n_points: int | None) -> Any:
    data: dict[str, Any] = {"type": policy_type, "preset": args.preset, "augment": {"enabled": False}}
    if n_points is not None:
        data["max_points"] = n_points
    if policy_type == "mini_diffuser":
        data["m"] = m
    return parse_policy_config(data)


def _batch(
    b: int, args: argparse.Namespace, cfg: Any, n_points: int, seed: int, device: torch.device
) -> ConditionBatch:
    return random_condition_batch(
        b,
        n_points,
        text_len=args.text_len,
        text_dim=cfg.text_dim,
        workspace_low=cfg.workspace_low,
        workspace_high=cfg.workspace_high,
        history=cfg.history,
        seed=seed,
    ).to(device)


def _train_step(policy: MiniDiffuserPolicy, batch: ConditionBatch, gen: torch.Generator) -> None:
    policy.zero_grad(set_to_none=True)
    policy.compute_loss(batch, gen).loss.backward()


def _encoder_step(policy: MiniDiffuserPolicy, batch: ConditionBatch) -> None:
    policy.zero_grad(set_to_none=True)
    enc = policy.encode(batch)
    total = sum(level.feats.mean() for level in enc.levels) + enc.text.mean() + enc.cond.mean()
    total.backward()


def _head_step(
    policy: MiniDiffuserPolicy, batch: ConditionBatch, enc_detached: Any, m: int, gen: torch.Generator
) -> None:
    policy.zero_grad(set_to_none=True)
    parent = expand_parent_index(batch.batch_size, m, batch.points.device)  # (B*M,)
    draw = policy.draw_noise(parent.numel(), gen, batch.points.device, conditions=batch.batch_size)
    rows = policy.row_losses(enc_detached, batch.target, parent, draw)
    reduce_row_losses(rows).loss.backward()


def _peak_memory(fn: Any, args: argparse.Namespace, device: torch.device) -> int:
    if args.no_memory:
        return -1
    with PeakTensorMemory(device) as mem:
        fn()
    return mem.peak_bytes


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    ms = [int(x) for x in args.ms.split(",") if x.strip()]
    base_cfg = _config(args, "mini_diffuser", 1, args.points)
    n_points = base_cfg.max_points
    torch.manual_seed(args.seed)
    reference = build_policy(_config(args, "mini_diffuser", 1, n_points)).to(device).train()
    batch = _batch(args.b, args, base_cfg, n_points, args.seed, device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        encoded = reference.encode(batch)
    enc_mem = _peak_memory(lambda: _encoder_step(reference, batch), args, device)
    rows: list[dict[str, Any]] = []
    ratios: dict[str, dict[str, float]] = {}
    limits: dict[str, dict[str, float]] = {}
    skipped: list[str] = []
    for m in ms:
        samples = args.b * m
        two = build_policy(_config(args, "mini_diffuser", m, n_points)).to(device).train()
        two.load_state_dict(reference.state_dict())
        fns = {
            "encoder": lambda: _encoder_step(reference, batch),
            "head": lambda two=two, m=m: _head_step(two, batch, encoded.detached(), m, gen),
            "two_level": lambda two=two: _train_step(two, batch, gen),
        }
        if samples <= args.max_conditions:
            one = build_policy(_config(args, "one_to_one", 1, n_points)).to(device).train()
            one.load_state_dict(reference.state_dict())
            many = _batch(samples, args, base_cfg, n_points, args.seed + 1, device)  # B*M distinct conditions
            fns["one_to_one"] = lambda one=one, many=many: _train_step(one, many, gen)
        else:
            skipped.append(
                f"one_to_one M={m}: {samples} conditions per step > --max-conditions {args.max_conditions}"
            )
        seconds = interleaved_median_seconds(fns, args.repeats, args.warmup, device, args.clock)
        two_mem = _peak_memory(fns["two_level"], args, device)
        rows.append(
            {
                "mode": "two_level",
                "B": args.b,
                "M": m,
                "samples_per_step": samples,
                "step_s": seconds["two_level"],
                "samples_per_s": samples / seconds["two_level"],
                "peak_mem_bytes": two_mem,
            }
        )
        limits[str(m)] = {
            "encoder_s": seconds["encoder"],
            "head_s": seconds["head"],
            "two_level_s": seconds["two_level"],
            "ratio_to_limit": seconds["two_level"] / (seconds["encoder"] + seconds["head"]),
        }
        _print_progress(rows[-1])
        if "one_to_one" in fns:
            one_mem = _peak_memory(fns["one_to_one"], args, device)
            rows.append(
                {
                    "mode": "one_to_one",
                    "B": samples,
                    "M": 1,
                    "sweep_m": m,
                    "samples_per_step": samples,
                    "step_s": seconds["one_to_one"],
                    "samples_per_s": samples / seconds["one_to_one"],
                    "peak_mem_bytes": one_mem,
                }
            )
            _print_progress(rows[-1])
            ratios[str(m)] = {
                "throughput": seconds["one_to_one"] / seconds["two_level"],
                "memory_per_sample": (one_mem / two_mem) if two_mem > 0 and one_mem > 0 else float("nan"),
            }
        fns.clear()
    return {
        "device": _device_name(device),
        "rows": rows,
        "ratios": ratios,
        "limits": limits,
        "encoder_peak_mem_bytes": enc_mem,
        "skipped": skipped,
        "settings": {
            "preset": args.preset,
            "B": args.b,
            "points": n_points,
            "text_len": args.text_len,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "clock": args.clock,
            "threads": torch.get_num_threads(),
            "d_model": reference.config.d_model,
            "parameters": sum(p.numel() for p in reference.parameters()),
            "torch": torch.__version__,
            "step": "forward + backward (optimizer update excluded)",
            "cpu_count": os.cpu_count(),
        },
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def _print_progress(row: dict[str, Any]) -> None:
    print(
        f"  measured {row['mode']:<10} B={row['B']:<5} M={row['M']:<4} {row['samples_per_s']:10.1f} samples/s",
        flush=True,
    )


def format_table(result: dict[str, Any]) -> str:
    """Markdown table: one line per M with both modes, their ratios and the limit."""
    by_m: dict[int, dict[str, dict[str, Any]]] = {}
    for row in result["rows"]:
        by_m.setdefault(row.get("sweep_m", row["M"]), {})[row["mode"]] = row
    s = result["settings"]
    lines = [
        f"device: {result['device']}; preset {s['preset']} ({s['parameters'] / 1e6:.2f} M parameters), B={s['B']}, "
        f"{s['points']} points per condition; step = {s['step']}; {s['clock']} clock, median of {s['repeats']}",
        "",
        "| M | two-level samples/s | one-to-one samples/s | throughput ratio | two-level peak MB | one-to-one peak MB "
        "| memory/sample ratio | encoder(B) s | head(B*M) s | two-level s | two-level / limit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, modes in sorted(by_m.items()):
        two, one = modes["two_level"], modes.get("one_to_one")
        ratio, lim = result["ratios"].get(str(m)), result["limits"][str(m)]
        lines.append(
            f"| {m} | {two['samples_per_s']:.1f} | {one['samples_per_s']:.1f} | {ratio['throughput']:.1f}x "
            f"| {two['peak_mem_bytes'] / 1e6:.1f} | {one['peak_mem_bytes'] / 1e6:.1f} | {ratio['memory_per_sample']:.1f}x "
            if one
            else f"| {m} | {two['samples_per_s']:.1f} | skipped | - | {two['peak_mem_bytes'] / 1e6:.1f} | skipped | - "
        )
        lines[-1] += (
            f"| {lim['encoder_s']:.3f} | {lim['head_s']:.3f} | {lim['two_level_s']:.3f} | {lim['ratio_to_limit']:.2f} |"
        )
    lines += [f"skipped: {note}" for note in result["skipped"]]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    if args.b < 1 or args.repeats < 1:
        raise SystemExit("--b and --repeats must be >= 1")
    result = run(args)
    print(format_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0
