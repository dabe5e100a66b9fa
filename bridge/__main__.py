"""`python -m bridge` is the same CLI as `rbridge`."""

import sys

from .cli import main

sys.exit(main())
