"""Per-task replay table of a Meta-World keyframe dataset (docs/metaworld.md): tier, stored episodes and
their replay success (verify.json, written by `python -m evaluation.collect --verify`), how many needed denser
keyframes, expert failures and demonstrations whose keyframes replay at no density.

    python scripts/replay_table.py data/metaworld_mt50
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from evaluation.metaworld_tiers import tier_of


def main(root: Path) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    verify = json.loads((root / "verify.json").read_text())
    print("| task | tier | replay success | episodes | refined | expert failures | no density replays |")
    print("|---|---|---|---|---|---|---|")
    for task in manifest["tasks"]:
        row = verify["per_task"][task]
        rungs = manifest.get("keyframe_rungs", {}).get(task, {})
        refined = sum(1 for r in rungs.values() if r > 0)
        print(
            f"| {task} | {tier_of(task)} | {100 * row['success_rate']:.0f} % | {row['episodes']} | {refined} | "
            f"{len(manifest['expert_failures'].get(task, []))} | {len(manifest.get('replay_failures', {}).get(task, []))} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
