"""Finds the compiled engine. The extension is built once per instruction-set level
(`_core_<isa>`); the best one this processor runs is imported, on first use."""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Optional, Set, cast

if TYPE_CHECKING:  # the interface every _core_<isa> module has (_core.pyi: types only)
    from .._core import Core

# The widest first. On the machine measured (AMD Zen 4) the AVX-512 module is 2-15% faster than
# the AVX2 one since the recurrent products use tbptt's own kernel (docs/performance.md); before,
# with Eigen's products throughout, AVX2 was faster. TBPTT_ISA=avx2 selects the other.
_ORDER = ("avx512", "avx2", "baseline")
_loaded: Optional[Core] = None


def _cpu_flags() -> Set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# The flags /proc/cpuinfo shows for the x86-64 micro-architecture levels the modules target.
_LEVELS = {
    "baseline": set(),
    "avx2": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},  # x86-64-v3
    "avx512": {
        "avx",
        "avx2",
        "bmi1",
        "bmi2",
        "f16c",
        "fma",
        "abm",
        "movbe",
        "xsave",
        "avx512f",
        "avx512bw",
        "avx512cd",
        "avx512dq",
        "avx512vl",
    },  # x86-64-v4
}


def _supported(isa: str, flags: Set[str]) -> bool:
    return isa in _LEVELS and _LEVELS[isa] <= flags


def core() -> Core:
    """The `_core` extension module for the best instruction set this machine supports.

    TBPTT_ISA=baseline|avx2|avx512 forces one (an ImportError if it was not built or cannot run);
    TBPTT_NUM_THREADS=n sets its threads (default: the number of cores)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    forced = os.environ.get("TBPTT_ISA")
    flags = _cpu_flags()
    candidates = (forced,) if forced else [isa for isa in _ORDER if _supported(isa, flags)]
    errors = []
    for isa in candidates:
        try:
            module = importlib.import_module(f"tbptt._core_{isa}")
        except ImportError as error:
            errors.append(f"_core_{isa}: {error}")
            continue
        threads = os.environ.get("TBPTT_NUM_THREADS")
        if threads:
            try:
                module.set_num_threads(int(threads))
            except ValueError:
                raise ValueError(
                    f"TBPTT_NUM_THREADS must be a positive integer, got {threads!r}"
                ) from None
        _loaded = cast("Core", module)
        return _loaded
    raise ImportError(
        "no compiled tbptt engine could be imported (" + "; ".join(errors) + "). "
        "Reinstall with `pip install .`, or use backend='numpy'."
    )
