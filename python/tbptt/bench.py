"""`tbptt.bench` is `tbptt.apps.bench`: moved there, this name stays importable for
the code, tests and pickles that use it (the same module object, not a copy)."""

import sys
from typing import TYPE_CHECKING

from .apps import bench as _module

if TYPE_CHECKING:  # what a type checker reads under this name: the module's public names
    from .apps.bench import *  # noqa: F403

if __name__ == "__main__":  # python -m tbptt.bench
    sys.exit(_module.main())
sys.modules[__name__] = _module
