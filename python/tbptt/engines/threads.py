"""Threads of the C++ engine and what the build runs on."""

from __future__ import annotations

import os

from .. import _checks
from . import native as _native


def set_num_threads(n: int) -> None:
    """The most threads the C++ engine uses (default: the number of cores). The results do not
    depend on it; per update the engine uses one thread or `n`, whichever it has measured to be
    faster (one, when other work keeps a core busy)."""
    _native.core().set_num_threads(_checks.positive_int("n", n))


def get_num_threads() -> int:
    return int(_native.core().get_num_threads())


def build_info() -> dict:
    """Which compiled engine runs: instruction set, Eigen's SIMD, OpenMP, compiler."""
    core = _native.core()
    info = dict(core.build_info())
    info["module"] = core.__name__
    info["forced_by_TBPTT_ISA"] = os.environ.get("TBPTT_ISA")
    return info
