"""``python -m platform.train``: the main job; the driver is ``platform.train.command``."""

import sys

if not __package__:  # run as a script (python platform/train): `platform` would be the stdlib module
    import os

    _root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.stderr.write(
        f"error: run this as a module from the repository root: cd {_root} && "
        "python -m platform.train (or use `make train`)\n"
    )
    raise SystemExit(2)

from platform.cli import run_cli
from platform.train.command import build_parser, main

sys.exit(run_cli(main, build_parser()))
