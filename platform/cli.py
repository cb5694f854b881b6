"""Command-line plumbing shared by ``platform.train`` and ``platform.sweep``: config file, dotted
overrides, ``--print-config``, one-line errors (exit code 2) instead of tracebacks for user mistakes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from platform.config import ConfigError, ExperimentConfig, load_config, to_yaml

# Printed on Ctrl-C (exit status 130); checkpoints are kept and the same command resumes from the newest one.
INTERRUPTED_LINE = "interrupted: rerun the same command to resume"
OVERRIDE_HELP = (
    "dotted config overrides, each re-validated, e.g. policy.m=64 train.steps=2000 policy.type=one_to_one "
    "data.tasks=[reach-v3,push-v3] (see --print-config for every key)"
)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="YAML", help="experiment YAML (default: built-in defaults; see configs/)"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDE_HELP)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, list(args.overrides))


def run_cli(
    main: Callable[[argparse.Namespace, ExperimentConfig], int],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse, resolve the config, honour ``--print-config``, then call ``main``; user errors -> one line."""
    set_runtime_defaults()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    try:
        return main(args, cfg)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED_LINE, file=sys.stderr, flush=True)
        return 130


def set_runtime_defaults() -> None:
    """Headless MuJoCo and an offline text encoder unless the user chose otherwise (inherited by Ray workers)."""
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Meta-World's scripted experts warn once per process about their gains: noise, not news.
    os.environ.setdefault("PYTHONWARNINGS", "ignore:Constant(s) may be too high:UserWarning")


class UserFacingError(RuntimeError):
    """An error whose message is the whole story for the user (missing dataset, bad checkpoint, ...)."""
