"""``python -m platform.tracking``: upload left-over MLflow buffers (see ``platform.tracking.main``)."""

import sys

from platform.tracking import main

sys.exit(main())
