"""`python -m rbridge.worker --fd N --slot I`: how the pool starts a worker process."""

import sys

from rbridge.worker.main import main

sys.exit(main())
