import sys

from platform.bench.cli import main

sys.exit(main())
