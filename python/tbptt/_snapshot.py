"""`tbptt._snapshot` is `tbptt.engines.snapshot`: moved there, this name stays importable for the
code, tests and pickles that use it (the same module object, not a copy)."""

import sys

from .engines import snapshot

sys.modules[__name__] = snapshot
