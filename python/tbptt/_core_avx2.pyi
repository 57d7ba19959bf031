"""The compiled engine for the avx2 instruction-set level: see _core.pyi."""

from ._core import *  # noqa: F403
from ._core import Divergence as Divergence
from ._core import InvalidArgument as InvalidArgument
from ._core import OutOfMemory as OutOfMemory
