"""``python -m evaluation.coverage``: how far each Meta-World test scene lies outside a dataset's demonstrations
(``evaluation.datasets.coverage``)."""

import sys

from evaluation.datasets.coverage import main

if __name__ == "__main__":
    sys.exit(main())
