"""`tbptt._old_files` is `tbptt.engines.old_files`: moved there, this name stays importable for the
code, tests and pickles that use it (the same module object, not a copy)."""

import sys

from .engines import old_files

sys.modules[__name__] = old_files
