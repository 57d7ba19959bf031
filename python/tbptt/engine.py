"""`tbptt.engine` is `tbptt.engines.cpp`: moved there, this name stays importable for the
code, tests and pickles that use it (the same module object, not a copy)."""

import sys

from .engines import cpp

sys.modules[__name__] = cpp
