"""``python -m evaluation.import_episodes``: recorded episodes -> a keyframe dataset (``evaluation.datasets.episode_import``)."""

import sys

from evaluation.datasets.episode_import import main

if __name__ == "__main__":
    sys.exit(main())
