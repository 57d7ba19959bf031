"""`tbptt.reference` is `tbptt.engines.reference`: moved there, this name stays importable for the
code, tests and pickles that use it (the same module object, not a copy)."""

import sys

from .engines import reference

sys.modules[__name__] = reference
