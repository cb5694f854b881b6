"""Benchmark commands: ``python -m platform.bench policy|eval|serve|data ...``.

Each subcommand lives in its own module (``platform.bench.policy``, ``platform.bench.evaluation``) with a
``main(argv: list[str]) -> int``, imported only when asked for, so that ``policy`` runs on a bare GPU box
with only torch, einops, numpy and pydantic installed.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "policy": ("platform.bench.policy", "two-level vs one-to-one training throughput and memory"),
    "eval": ("platform.bench.evaluation", "parallel simulator evaluation throughput"),
    "data": ("platform.bench.data", "the driver's dataset check vs a worker's full load (start-up saved)"),
    "serve": (
        "platform.bench.serve",
        "the HTTP policy server's latency and requests/s vs in-process inference",
    ),
}


def _usage() -> str:
    lines = ["usage: python -m platform.bench {" + ",".join(SUBCOMMANDS) + "} [options]", ""]
    lines += [f"  {name:<8}{help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    lines.append("\n'python -m platform.bench <subcommand> --help' lists a subcommand's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"unknown benchmark {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = SUBCOMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # a dependency of the benchmark is missing: show the real error
        path = module_name.replace(".", "/") + ".py"
        print(
            f"benchmark {name!r} is not available: {path} does not exist yet in this checkout",
            file=sys.stderr,
        )
        return 2
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
