"""Suite-wide rules for test markers (pyproject.toml defines them).

Every test carries a kind: ``unit`` (in-process: no child process, no Ray, no simulator), ``process``
(starts child Python processes, no Ray cluster), ``integration`` (starts a Ray cluster) or ``sim`` (runs
MuJoCo / Meta-World); ``gpu`` and ``slow`` are added on top. ``unit`` excludes the others, so that
``pytest -m unit`` is the fast in-process subset it claims to be. A test without a kind, or ``unit`` mixed
with another kind, stops the collection with the test's name.
"""

import os
import subprocess
import sys
import traceback

import pytest

KINDS = ("unit", "process", "integration", "sim")
RUN_ORDER = ("integration", "sim", "process", "unit")  # the first marker a test has decides its place
# Modules whose tests share a costly module-scoped fixture: with several pytest-xdist workers
# (``--dist loadgroup``, scripts/run_tests.sh) each runs whole on one worker, so the fixture is set up once, not
# once per worker (8-13 s for the actor pool, 6-15 s for the three-node cluster, measured in the suite). A list
# here, not ``xdist_group`` marks: pytest-xdist 3.8 groups by rewriting node ids, which pytest 9.2 ignores
# (pytest-xdist issue 1386), so the marks would silently group nothing.
WHOLE_MODULES = (
    "tests/evaluation/datasets/test_collect.py",  # a tiny Meta-World collection
    "tests/evaluation/runtime/test_coordinator.py",  # a Ray session and a pool of simulator actors
    "tests/platform/bench/test_bench_eval.py",  # a Ray session
    "tests/platform/test_cluster.py",  # a three-node Ray cluster
)


def scheduling_scope(nodeid: str) -> str:
    """The unit pytest-xdist hands to one worker: a ``WHOLE_MODULES`` test's module, else the test itself."""
    module = nodeid.split("::", 1)[0]
    return module if module in WHOLE_MODULES else nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup``: tests one at a time to the next free worker (in the order below), except that a
    ``WHOLE_MODULES`` module goes whole to one worker. Other modes keep pytest-xdist's own schedulers."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WholeModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scheduling_scope(nodeid)

    return WholeModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked, mixed = [], []
    for item in items:
        kinds = {k for k in KINDS if item.get_closest_marker(k) is not None}
        if not kinds:
            unmarked.append(item.nodeid)
        elif "unit" in kinds and len(kinds) > 1:
            mixed.append(f"{item.nodeid} ({', '.join(sorted(kinds))})")
    problems = [f"no kind marker ({'/'.join(KINDS)}): {n}" for n in unmarked]
    problems += [f"'unit' mixed with another kind: {n}" for n in mixed]
    if problems:
        raise pytest.UsageError("test markers (tests/conftest.py):\n  " + "\n  ".join(problems))
    # Longest kinds first (stable within a kind): with several workers (scripts/run_tests.sh hands tests out in this
    # order) the Ray tests, 30 of which take 10-130 s each, start at once instead of forming the suite's tail.
    items.sort(
        key=lambda item: next(i for i, k in enumerate(RUN_ORDER) if item.get_closest_marker(k) is not None)
    )


@pytest.fixture(autouse=True)
def _unit_tests_stay_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A ``unit`` test that starts a Python child process or leaves a Ray session behind was not in-process:
    fail it, naming the marker. (Other programs, e.g. the stdlib's ``uname -p``, are allowed.)"""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    popen_init = subprocess.Popen.__init__
    started: list[str] = []

    def guarded_init(self, args, *a, **kw):
        argv = [args] if isinstance(args, (str, os.PathLike)) else list(args)
        # glfw's import (through Meta-World's) runs `python -c` once to read the library's version: an import
        # side effect of a package, not a process the test starts.
        probe = any(
            f.filename.endswith(os.path.join("glfw", "library.py")) for f in traceback.extract_stack()
        )
        if argv and os.path.basename(str(argv[0])).startswith("python") and not probe:
            started.append(" ".join(map(str, argv))[:120])
        popen_init(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_init)
    yield
    if started:
        pytest.fail(f"a test marked 'unit' started a Python process ({started[0]}): mark it 'process'")
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("a test marked 'unit' started Ray: mark it 'integration' (tests/conftest.py)")
