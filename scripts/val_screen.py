"""Screen training settings by the validation keypose error, without Ray, MLflow or the simulator.

    .venv/bin/python scripts/val_screen.py NAME --every 200 [key=value ...]

Trains in this process exactly as ``platform.train`` does (``build_training`` + ``run_steps``: same data
split, step seeds and schedule; ``train.device=cpu``, one torch thread unless ``--threads``) and validates
the EMA and the raw weights every ``--every`` steps. Prints one line per validation and writes
``runs/screens/<NAME>.json``. The figures of docs/quality.md's screening table come from this script; with
the same overrides, ``python -m platform.train ray.num_workers=0 eval.enabled=false train.val_every=<every>``
logs the same EMA validation numbers (up to floating-point differences between thread counts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "platform" in sys.modules and not hasattr(sys.modules["platform"], "__path__"):
    del sys.modules["platform"]  # the stdlib module was imported first: load the project's package instead


def main() -> int:
    import torch

    from platform.config import load_config
    from platform.train.dataset import open_split
    from platform.train.loop import run_steps
    from platform.train.state import build_training
    from platform.train.validation import ValidationSet, format_line, validate

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name")
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    os.chdir(ROOT)
    cfg = load_config(None, ["train.device=cpu", "eval.enabled=false", *args.overrides])
    torch.set_num_threads(args.threads)
    train, val_data = open_split(cfg)
    if val_data is None:
        raise SystemExit(f"error: {cfg.data.path} has no validation episodes beyond the training ones")
    val = ValidationSet.from_dataset(val_data, cfg.policy.max_points, history=cfg.policy.history)
    state = build_training(cfg, train, torch.device("cpu"))
    points = []
    while state.step < cfg.train.steps:
        history = run_steps(state, train, min(cfg.train.steps, state.step + args.every))
        ema = validate(
            state.ema.shadow if state.ema is not None else state.policy, val, state.device, cfg.train.seed
        )
        raw = validate(state.policy, val, state.device, cfg.train.seed)
        loss = sum(h.loss for h in history) / len(history)
        print(
            f"{args.name} loss {loss:.3f} train_s {state.train_time_s:.0f}",
            format_line(state.step, ema),
            "| raw",
            format_line(state.step, raw)[5:],
            flush=True,
        )
        points.append(
            {
                "step": state.step,
                "train_s": state.train_time_s,
                "loss": loss,
                **ema,
                **{f"raw_{k}": v for k, v in raw.items()},
            }
        )
    out = ROOT / "runs" / "screens" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"name": args.name, "overrides": args.overrides, "points": points}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
