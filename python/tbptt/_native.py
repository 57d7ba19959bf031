"""Finds the compiled engine. The extension is built once per instruction-set level
(`_core_<isa>`); the best one this processor runs is imported, on first use."""

from __future__ import annotations

import importlib
import os

_ORDER = ("avx512", "avx2", "baseline")
_loaded = None


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _supported(isa: str, flags: set) -> bool:
    if isa == "baseline":
        return True
    if isa == "avx2":
        return {"avx2", "fma"} <= flags
    if isa == "avx512":
        return {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx2", "fma"} <= flags
    return False


def core():
    """The `_core` extension module for the best instruction set this machine supports.

    TBPTT_ISA=baseline|avx2|avx512 forces one (an ImportError if it was not built or cannot run)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    forced = os.environ.get("TBPTT_ISA")
    flags = _cpu_flags()
    candidates = (forced,) if forced else [isa for isa in _ORDER if _supported(isa, flags)]
    errors = []
    for isa in candidates:
        try:
            _loaded = importlib.import_module(f"tbptt._core_{isa}")
            return _loaded
        except ImportError as error:
            errors.append(f"_core_{isa}: {error}")
    raise ImportError("no compiled tbptt engine could be imported (" + "; ".join(errors) + "). "
                      "Reinstall with `pip install .`, or use backend='numpy'.")


def make_engine(model, k1, k2, loss, optimizer, clip_norm):
    from .engine import CppEngine
    return CppEngine(core(), model, k1, k2, loss, optimizer, clip_norm)
