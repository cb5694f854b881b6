import sys

from platform.serve.run import main

sys.exit(main())
