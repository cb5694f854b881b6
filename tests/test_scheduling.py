"""The suite's own scheduling rule (tests/conftest.py): the modules run whole on one pytest-xdist worker exist,
and only their tests are grouped."""

from __future__ import annotations

import pytest

from tests import REPO_ROOT
from tests.conftest import WHOLE_MODULES, scheduling_scope

pytestmark = pytest.mark.unit


def test_every_whole_module_exists():
    missing = [m for m in WHOLE_MODULES if not (REPO_ROOT / m).is_file()]
    assert not missing, f"tests/conftest.py WHOLE_MODULES names modules that are gone: {missing}"


def test_only_whole_modules_are_grouped():
    module = WHOLE_MODULES[0]
    assert scheduling_scope(f"{module}::test_a") == scheduling_scope(f"{module}::test_b[1]") == module
    other = "tests/platform/test_cli.py::test_help"
    assert scheduling_scope(other) == other
