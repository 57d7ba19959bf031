"""Types of the compiled engine, `tbptt._core_<isa>` (csrc/bindings.cpp): one module per
instruction-set level (baseline, avx2, avx512), all with this interface. `_native.core()` returns
the one this machine runs, typed as `Core`. Shapes: see `tbptt.contract.Engine`; "float" is
float32 for Engine32, float64 for Engine64."""

from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, Type

import numpy as np

class Divergence(FloatingPointError):
    """An update whose loss or gradient is not finite; `losses` holds those applied before it."""

    losses: np.ndarray

class InvalidArgument(ValueError): ...
class OutOfMemory(MemoryError): ...

class _Engine:
    """TBPTT(k1, k2) over a flat parameter array (P,) it updates in place and keeps alive."""
    def __init__(
        self,
        params: np.ndarray,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int,
        k1: int,
        k2: int,
        loss: str,
        optimizer: Dict[str, Any],
        clip_norm: Optional[float],
        dropout: float = 0.0,
        head_dropout: float = 0.0,
        seed: int = 0,
        recompute: bool = False,
    ) -> None: ...
    def train(
        self,
        x: np.ndarray,
        tokens: bool,
        y: np.ndarray,
        mask: Optional[np.ndarray],
        resets: Optional[np.ndarray],
        outputs: Optional[np.ndarray] = None,
    ) -> List[float]: ...
    def peek(self, x: np.ndarray, tokens: bool, outputs: np.ndarray) -> None: ...
    def flush(self) -> Optional[float]: ...
    def reset_state(self) -> None: ...
    def set_lr(self, lr: float) -> None: ...
    def state(self) -> Optional[Tuple[np.ndarray, ...]]: ...
    def gradient(self) -> np.ndarray: ...
    def set_reduce(self, reduce: Optional[Callable[[], None]]) -> None: ...
    def set_stream_offset(self, offset: int) -> None: ...
    def reduce_buffer(self) -> np.ndarray: ...
    def horizon(self) -> Tuple[np.ndarray, np.ndarray]: ...
    def reset_horizon(self) -> None: ...
    def snapshot(self) -> Dict[str, np.ndarray]:
        """The snapshot schema's entries (tbptt._snapshot) but "schema" and "cell": named
        scalars as 0-d arrays, the window's n held steps oldest first, the pending rows."""
    def restore(self, state: Dict[str, Any]) -> None:
        """The entries snapshot() gives (checked against the schema by the caller first)."""
    @property
    def pending_steps(self) -> int: ...
    @property
    def updates(self) -> int: ...
    @property
    def steps(self) -> int: ...

class Engine32(_Engine): ...
class Engine64(_Engine): ...

def predict(
    params: np.ndarray,
    cell: str,
    input_size: int,
    hidden_size: int,
    output_size: int,
    num_layers: int,
    x: np.ndarray,
    tokens: bool,
    state: Tuple[np.ndarray, ...],
) -> Tuple[np.ndarray, Tuple[np.ndarray, ...]]: ...

class SequenceTape32:
    """What a sequence forward kept for its backward (csrc/sequence.h), owned by the core."""
    @property
    def nbytes(self) -> int: ...

class SequenceTape64(SequenceTape32): ...

# One layer in one direction over a sequence: (h of every row, h_n, carry_n, tape or None).
# x (T, B, I), or (N, I) with batch_sizes (T,) for a packed batch.
def sequence_forward(
    cell: str,
    x: np.ndarray,
    h0: np.ndarray,
    carry0: np.ndarray,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
    reverse: bool,
    keep: bool,
    batch_sizes: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[SequenceTape32]]: ...

# Its gradients: (dx or None, dh0, dcarry0, dW_ih, dW_hh, db_ih, db_hh).
def sequence_backward(
    tape: SequenceTape32,
    x: np.ndarray,
    h0: np.ndarray,
    carry0: np.ndarray,
    W_ih: np.ndarray,
    W_hh: np.ndarray,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
    h: np.ndarray,
    dy: Optional[np.ndarray],
    dh_n: np.ndarray,
    dcarry_n: np.ndarray,
    need_dx: bool,
) -> Tuple[Optional[np.ndarray], ...]: ...
def cell_traits(name: str) -> Dict[str, Any]: ...
def loss_traits(name: str) -> Dict[str, Any]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def build_info() -> Dict[str, Any]: ...

class Core(Protocol):
    """A `_core_<isa>` module, as `_native.core()` returns it."""

    __name__: str
    Engine32: Type[Engine32]
    Engine64: Type[Engine64]
    Divergence: Type[Divergence]
    def predict(
        self,
        params: np.ndarray,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int,
        x: np.ndarray,
        tokens: bool,
        state: Tuple[np.ndarray, ...],
    ) -> Tuple[np.ndarray, Tuple[np.ndarray, ...]]: ...
    def sequence_forward(
        self,
        cell: str,
        x: np.ndarray,
        h0: np.ndarray,
        carry0: np.ndarray,
        W_ih: np.ndarray,
        W_hh: np.ndarray,
        b_ih: np.ndarray,
        b_hh: np.ndarray,
        reverse: bool,
        keep: bool,
        batch_sizes: Optional[np.ndarray] = None,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[SequenceTape32]]: ...
    def sequence_backward(
        self,
        tape: SequenceTape32,
        x: np.ndarray,
        h0: np.ndarray,
        carry0: np.ndarray,
        W_ih: np.ndarray,
        W_hh: np.ndarray,
        b_ih: np.ndarray,
        b_hh: np.ndarray,
        h: np.ndarray,
        dy: Optional[np.ndarray],
        dh_n: np.ndarray,
        dcarry_n: np.ndarray,
        need_dx: bool,
    ) -> Tuple[Optional[np.ndarray], ...]: ...
    def cell_traits(self, name: str) -> Dict[str, Any]: ...
    def loss_traits(self, name: str) -> Dict[str, Any]: ...
    def set_num_threads(self, n: int) -> None: ...
    def get_num_threads(self) -> int: ...
    def build_info(self) -> Dict[str, Any]: ...
