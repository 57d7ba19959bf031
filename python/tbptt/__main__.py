"""`python -m tbptt ...` runs the `tbptt` command (as under
`mpiexec ... python -m mpi4py -m tbptt`)."""

import sys

from .cli import main

sys.exit(main())
