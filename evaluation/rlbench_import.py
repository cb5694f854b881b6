"""``python -m evaluation.rlbench_import``: import RLBench demonstrations (code: ``evaluation.datasets.rlbench_import``)."""

import sys

from evaluation.datasets.rlbench_import import main

if __name__ == "__main__":
    sys.exit(main())
