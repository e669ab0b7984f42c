"""`python -m diffinv.cli`, the same as the `diffinv` command."""

import sys

from diffinv.cli import main

sys.exit(main())
