"""``python -m evaluation.collect``: collect a keyframe dataset (the code lives in ``evaluation.datasets``)."""

import sys

from evaluation.datasets.collect_cli import main

if __name__ == "__main__":
    sys.exit(main())
