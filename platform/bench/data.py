"""``python -m platform.bench data``: what a training start spends reading the dataset.

Each training worker loads and verifies the whole dataset once (``KeyframeDataset``: every shard hashed and
read, points included); the driver only checks it (``DatasetSummary``: the manifest and one column, the
keypose targets, of each shard). Before that split the driver did the full load too, so a start read the
dataset twice. This measures both reads of ``--data`` side by side, interleaved, ``--repeats`` times each
(median), and prints the start-up time the cheap check saves (the full load minus the check).
``--json PATH`` writes ``{"rows": [...], "settings": {...}}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from evaluation.datasets.dataset import DatasetError, DatasetSummary, KeyframeDataset
from evaluation.files import atomic_write_json
from platform.config import data_root


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m platform.bench data", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        action="append",
        default=None,
        help="a keyframe dataset directory; repeat for several (default: data/metaworld_mt10)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed reads of each kind per dataset (median)")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.data = [
        d if d.is_absolute() else data_root() / d for d in (args.data or [Path("data/metaworld_mt10")])
    ]
    return args


def measure(path: Path, repeats: int) -> dict[str, float | int | str]:
    """Median seconds of the driver's check and of a worker's full load of ``path``, interleaved."""
    full, check, summary = [], [], None
    for _ in range(repeats):  # interleaved: a noisy machine slows both alike
        t0 = time.perf_counter()
        KeyframeDataset(path)
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        summary = DatasetSummary.read(path)
        check.append(time.perf_counter() - t0)
    mb = sum(f.stat().st_size for f in path.rglob("*.parquet")) / 2**20
    full_s, check_s = statistics.median(full), statistics.median(check)
    return {
        "dataset": str(path),
        "shards": len(summary.manifest["shards"]),
        "samples": int(summary.target.shape[0]),
        "parquet_mb": round(mb, 1),
        "full_load_s": full_s,
        "driver_check_s": check_s,
        "saved_s": full_s - check_s,
        "full_over_check": full_s / check_s if check_s > 0 else float("inf"),
    }


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    rows = []
    for path in args.data:
        try:
            rows.append(measure(path, args.repeats))
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(
        f"{'dataset':<40} {'shards':>6} {'samples':>7} {'MB':>6} {'full load':>10} {'check':>8} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{Path(str(r['dataset'])).name:<40} {r['shards']:>6} {r['samples']:>7} {r['parquet_mb']:>6} "
            f"{r['full_load_s']:>9.2f}s {r['driver_check_s']:>7.2f}s {r['full_over_check']:>5.1f}x"
        )
    for r in rows:
        print(
            f"[bench] {Path(str(r['dataset'])).name}: a training start reads it once instead of twice, "
            f"{r['saved_s']:.2f} s sooner (median of {args.repeats})"
        )
    if args.json:
        atomic_write_json(args.json, {"rows": rows, "settings": {"repeats": args.repeats}}, indent=2)
        print(f"[bench] wrote {args.json}")
    return 0
