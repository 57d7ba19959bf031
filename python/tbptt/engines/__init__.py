"""The engines: what runs a model's numbers, below the model classes and the trainer.

`spec` says what an engine knows of a model (`ModelSpec`, the lowest module here); `native`
finds the compiled core (`_core_<isa>`), `cpp` adapts it to the engine protocol
(`tbptt.contract.Engine`), `reference` is the NumPy reference, `snapshot` the one schema of an
engine's state both speak and `old_files` the conversion of older forms of it, once, at load;
`threads` sets the compiled core's threads.

This module chooses between the two backends, always by name: `make_engine` for a trainer,
`forward` for a model's `predict`. Neither falls back from one backend to the other; only
`default_backend`, asked for explicitly, picks the compiled one where it imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

from . import cpp, native
from .spec import ModelSpec

if TYPE_CHECKING:
    from ..contract import Engine, State

#: The backends' names: the compiled C++ engine and the NumPy reference.
BACKENDS = ("cpp", "numpy")


def check_backend(backend: Any) -> str:
    """`backend` if it names one (a ValueError otherwise)."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def default_backend() -> str:
    """The backend `predict` runs on when it is not told: "cpp" where the compiled core imports,
    else "numpy" (the two compute the same outputs, to rounding)."""
    try:
        native.core()
    except ImportError:
        return "numpy"
    return "cpp"


def make_engine(
    backend: str,
    spec: ModelSpec,
    k1: int,
    k2: int,
    loss: str,
    optimizer: Dict[str, Any],
    clip_norm: Optional[float],
    seed: int,
    recompute: bool = False,
) -> Engine:
    """The engine of `backend` for a trainer (the arguments have passed the trainer's checks).
    "cpp" raises ImportError when the compiled core does not import."""
    args = (spec, k1, k2, loss, optimizer, clip_norm, seed)
    if check_backend(backend) == "numpy":
        from . import reference  # imported when asked for: 9% of `import tbptt`'s time

        return reference.ReferenceEngine(*args, recompute=recompute)
    return cpp.CppEngine(native.core(), *args, recompute=recompute)


def forward(
    backend: str, spec: ModelSpec, x: np.ndarray, tokens: bool, state: State
) -> Tuple[np.ndarray, State]:
    """The model forward over x (T, B, I) or (T, B) token ids from `state` (a tuple, one
    (L, B, H) array per name in the cell's STATE) on `backend`: outputs (T, B, O) and the final
    state (a tuple). "cpp" raises ImportError when the compiled core does not import."""
    if check_backend(backend) == "numpy":
        from . import reference

        return reference.forward(spec, x, tokens, state)
    return cpp.predict(native.core(), spec, x, tokens, state)
