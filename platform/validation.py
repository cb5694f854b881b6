"""``python -m platform.validation``: a checkpoint's validation keypose error (the code lives in
``platform.train.validation``)."""

import sys

from platform.train.validation import main

if __name__ == "__main__":
    sys.exit(main())
