"""Print the project's dependencies from pyproject.toml, one per line (the single source of truth).

Usage: python .ci/deps.py [EXTRA ...]   (the project itself is never installed: `platform/` must
stay importable only from the repo root, see design.md 5.1).
"""

import pathlib
import sys
import tomllib

root = pathlib.Path(__file__).resolve().parent.parent
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
deps = list(project["dependencies"])
for extra in sys.argv[1:]:
    deps += project.get("optional-dependencies", {}).get(extra, [])
print("\n".join(deps))
