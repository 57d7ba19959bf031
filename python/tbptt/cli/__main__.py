"""`python -m tbptt.cli ...` runs the `tbptt` command."""

import sys

from . import main

sys.exit(main())
