"""``python -m evaluation.run``: evaluate a checkpoint (the code lives in ``evaluation.runtime.run``)."""

import sys

from evaluation.runtime.run import main

if __name__ == "__main__":
    sys.exit(main())
