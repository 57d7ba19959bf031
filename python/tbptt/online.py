"""`tbptt.online` is `tbptt.apps.online`: moved there, this name stays importable for
the code, tests and pickles that use it (the same module object, not a copy)."""

import sys
from typing import TYPE_CHECKING

from .apps import online as _module

if TYPE_CHECKING:  # what a type checker reads under this name: the module's public names
    from .apps.online import *  # noqa: F403

sys.modules[__name__] = _module
