"""The experiment platform package, which is *also* a complete stdlib ``platform`` module.

``platform/`` shadows the standard library module of the same name whenever the repo root is first on
``sys.path`` (``python -m platform.train`` from the root, a Ray ``working_dir``, ``PYTHONPATH=.``).
torch, ray, mlflow and pyarrow call ``platform.system()`` and friends at import time, so this package
loads the stdlib ``platform.py`` source and executes it in its own namespace: every stdlib function
and constant is defined here, and the package's submodules (``platform.train``, ``platform.config``...)
sit beside them. ``tests/platform/test_hybrid.py`` checks the stdlib API and
that no submodule name collides with a stdlib attribute.
"""

import importlib.machinery as _machinery
import os as _os

_stdlib_spec = _machinery.PathFinder.find_spec("platform", [_os.path.dirname(_os.__file__)])
if _stdlib_spec is None or _stdlib_spec.origin is None:  # pragma: no cover - broken Python install
    raise ImportError("cannot locate the standard library 'platform' module next to 'os'")
STDLIB_PLATFORM_FILE: str = _stdlib_spec.origin
with open(STDLIB_PLATFORM_FILE, encoding="utf-8") as _f:
    _code = compile(_f.read(), STDLIB_PLATFORM_FILE, "exec")
# The stdlib code refers to its own module globals only; running it here defines system(), uname(),
# python_version() ... in this package's namespace. __name__ stays "platform", as in the stdlib.
exec(_code, globals())
del _code, _f, _stdlib_spec, _machinery, _os
