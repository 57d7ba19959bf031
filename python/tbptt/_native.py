"""`tbptt._native` is `tbptt.engines.native`: moved there, this name stays importable for the
code, tests and pickles that use it (the same module object, not a copy)."""

import sys

from .engines import native

sys.modules[__name__] = native
