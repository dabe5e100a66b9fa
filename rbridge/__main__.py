"""`python -m rbridge` is the same CLI as `rbridge`."""

import sys

from rbridge.cli import main

sys.exit(main())
