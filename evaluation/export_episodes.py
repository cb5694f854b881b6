"""``python -m evaluation.export_episodes``: Meta-World expert episodes as recorded episodes (``evaluation.datasets.episode_export``)."""

import sys

from evaluation.datasets.episode_export import main

if __name__ == "__main__":
    sys.exit(main())
