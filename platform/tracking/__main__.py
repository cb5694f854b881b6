"""``python -m platform.tracking``: upload left-over MLflow buffers (see ``platform.tracking.sync``)."""

import sys

from platform.tracking.sync import main

sys.exit(main())
