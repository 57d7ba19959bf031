"""The C++ engine behind Trainer(backend="cpp") and `predict`: a thin adapter over
`tbptt._core_<isa>`.

It is typed against `ModelSpec` (`tbptt.engines.spec`), what an engine knows of a model. The
compiled engine keeps a reference to the spec's flat parameter array (the model's own) and updates
it in place; it owns the window of activations, the optimiser state and the carried state between
calls. It takes the cell by name (`spec.cell`: "lstm", "gru", "rnn_tanh", "rnn_relu") and hands
the state out as a tuple with one (L, B, H) array per name in the cell's STATE: (h, c) or (h,).

Its snapshot is the schema both backends share (`snapshot`): the compiled engine writes
and reads the named fields itself (Engine::snapshot / restore); this adapter adds the schema's
tag and checks a snapshot against the spec before the engine takes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .. import _pickled
from . import snapshot as _snapshot
from .spec import ModelSpec

if TYPE_CHECKING:
    from .._core import Core  # the compiled modules' interface (types only)
    from ..contract import Snapshot, State


def _shape(spec: ModelSpec) -> Tuple[str, int, int, int, int]:
    """The arguments every compiled entry point takes after the parameters."""
    return (spec.cell, spec.input_size, spec.hidden_size, spec.output_size, spec.num_layers)


def predict(
    core: Core, spec: ModelSpec, x: np.ndarray, tokens: bool, state: State
) -> Tuple[np.ndarray, State]:
    """The model of `spec` forward over x (T, B, I) or (T, B) token ids, from `state`, a tuple
    like the engine's. Returns outputs (T, B, O) and the final state (a tuple)."""
    outputs, state = core.predict(spec.flat_parameters, *_shape(spec), x, tokens, tuple(state))
    return outputs, tuple(state)


class CppEngine:
    """The compiled engine behind the `tbptt.contract.Engine` protocol (see there for every
    member's meaning, shapes and dtypes)."""

    def __init__(
        self,
        core: Core,
        spec: ModelSpec,
        k1: int,
        k2: int,
        loss: str,
        optimizer: Dict[str, Any],
        clip_norm: Optional[float],
        seed: int,
        recompute: bool = False,
    ) -> None:
        cls = core.Engine64 if spec.dtype == np.float64 else core.Engine32
        self._engine = cls(
            spec.flat_parameters,
            *_shape(spec),
            k1,
            k2,
            loss,
            optimizer,
            clip_norm,
            spec.dropout,
            spec.head_dropout,
            seed,
            recompute,
        )
        self._spec, self._k1, self._k2, self._loss = spec, k1, k2, loss

    def __reduce_ex__(self, protocol):
        _pickled.refuse("the C++ engine")  # process-local memory: its trainer pickles instead

    def train(
        self,
        x: np.ndarray,
        tokens: bool,
        y: np.ndarray,
        mask: Optional[np.ndarray],
        resets: Optional[np.ndarray],
        outputs: Optional[np.ndarray] = None,
    ) -> List[float]:
        """outputs: None or a (T, B, O) array of the model's dtype that receives each step's
        outputs as the forward pass computed them."""
        return self._engine.train(x, tokens, y, mask, resets, outputs)

    def peek(self, x: np.ndarray, tokens: bool, outputs: np.ndarray) -> None:
        """The next step's outputs for x, (B, I) or (B,) token ids, into `outputs` (B, O),
        from the carried state, without advancing it."""
        self._engine.peek(x, tokens, outputs)

    def flush(self) -> Optional[float]:
        return self._engine.flush()

    def reset_state(self) -> None:
        self._engine.reset_state()

    def set_lr(self, lr: float) -> None:
        self._engine.set_lr(lr)

    def state(self) -> Optional[State]:
        """None before the first train call, else a tuple: (h, c) or (h,), each (L, B, H)."""
        state = self._engine.state()
        return None if state is None else tuple(state)

    def horizon(self) -> Tuple[np.ndarray, np.ndarray]:
        return self._engine.horizon()

    def reset_horizon(self) -> None:
        self._engine.reset_horizon()

    def gradient(self) -> np.ndarray:
        return self._engine.gradient()

    def set_stream_offset(self, offset: int) -> None:
        self._engine.set_stream_offset(offset)

    def set_reduce(self, reduce: Optional[Callable[[], None]]) -> None:
        """Data-parallel: `reduce()` all-reduces reduce_buffer() in place between backward and
        step of every update (called from the engine's loop with the GIL); None: one process."""
        self._engine.set_reduce(reduce)

    def reduce_buffer(self) -> np.ndarray:
        """A view (no copy) of the engine's update buffer: [gradient (P,), Σ w·loss, Σ w]."""
        return self._engine.reduce_buffer()

    @property
    def pending_steps(self) -> int:
        return int(self._engine.pending_steps)

    @property
    def updates(self) -> int:
        return int(self._engine.updates)

    @property
    def steps(self) -> int:
        return int(self._engine.steps)

    # ---- snapshots: the schema both backends share, named fields (engines/snapshot.py) -------
    def snapshot(self) -> Snapshot:
        return {**_snapshot.header(self._spec), **self._engine.snapshot()}

    def restore(self, snapshot: Snapshot) -> None:
        _snapshot.check(snapshot, self._spec, self._k1, self._k2, self._loss)
        self._engine.restore(snapshot)
