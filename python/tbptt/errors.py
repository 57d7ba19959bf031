"""`tbptt.Divergence`, what `Trainer.train`, `flush` and `fit` raise for an update whose loss or
gradient is not finite, with either backend (docs/semantics.md §3.6)."""

from __future__ import annotations

from typing import Optional

import numpy as np


class Divergence(FloatingPointError):
    """An update whose loss or gradient was not finite; it was not applied (the parameters and the
    optimiser state are those of the last good update, its steps were dropped and every stream's
    state was reset), and the trainer can go on, e.g. with a lower learning rate. A
    FloatingPointError, so `except FloatingPointError` catches it too.

    losses: the losses of the updates the call applied before it (float64).
    outputs: with `train(..., return_outputs=True)`, the outputs, NaN from the failed update on.
    """

    losses: np.ndarray
    outputs: Optional[np.ndarray]

    def __init__(self, message: str, losses=(), outputs: Optional[np.ndarray] = None):
        super().__init__(message)
        self.losses = np.asarray(losses, dtype=np.float64)
        self.outputs = outputs

    @classmethod
    def of(cls, error: FloatingPointError, outputs: Optional[np.ndarray] = None) -> Divergence:
        """`error` as raised by an engine (the compiled module's own Divergence class, or the
        reference's FloatingPointError) as a tbptt.Divergence."""
        if isinstance(error, cls):
            return error
        return cls(str(error), getattr(error, "losses", ()), outputs)
