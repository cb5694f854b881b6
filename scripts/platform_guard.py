"""Installed into the venv's site-packages by scripts/setup_env.sh (as ``_minidiffuser_platform_guard``
plus a ``.pth`` line that imports it). It does not install the project: it only turns the confusing
``__path__ attribute not found on 'platform'`` (or a traceback from torch) into one actionable line
when someone runs ``python -m platform.<cmd>`` outside the repository root. See platform/__init__.py.
"""

import os
import sys

REPO_ROOT = "@REPO_ROOT@"


def _check() -> None:
    argv = list(getattr(sys, "orig_argv", []))
    if "-m" not in argv:
        return
    i = argv.index("-m")
    module = argv[i + 1] if i + 1 < len(argv) else ""
    if not module.startswith("platform."):
        return
    search = [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if any(os.path.isfile(os.path.join(p, "platform", "__init__.py")) for p in search):
        return
    sys.stderr.write(
        f"error: `python -m {module}` must run from the repository root, where the `platform/` package lives: "
        f"cd {REPO_ROOT} && python -m {module} (or set PYTHONPATH={REPO_ROOT})\n"
    )
    sys.stderr.flush()
    os._exit(2)  # sys.exit is not allowed while site.py runs


_check()
