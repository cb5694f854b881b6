import sys

from platform.compare.cli import main

sys.exit(main())
