"""The engine contract: what `tbptt.Trainer` asks of a backend.

Two backends implement it completely and with the same meaning: `tbptt.engines.cpp.CppEngine` (the
compiled C++/Eigen engine) and `tbptt.engines.reference.ReferenceEngine` (the NumPy reference). The
trainer checks the user's input and then talks to its engine only through these members;
`trainer.engine` is typed as `Engine`.

Legend of shapes: T = time steps in a call, B = streams (fixed by the first call), I = input
features, H = hidden size, L = layers, O = outputs, P = parameters (`model.num_parameters`).
"float" below means the model's dtype (float32 or float64); token ids and class ids are int64.

An update runs in phases, in both engines (docs/architecture.md §3):
0. rerun_stale_window (recompute only): a window that holds time steps of older weights is rerun;
1. backward: the un-normalised gradient of s·Σ w·loss over the update's window, and the sums
   s·Σ w·loss and s·Σ w, into one buffer (`reduce_buffer()`), s a power of two;
2. reduce: the hook set by `set_reduce` sums that buffer over processes in place (data-parallel
   training; nothing with one process);
3. apply: normalise by Σ w, check finiteness, clip by the global norm, make the optimiser step
   (the parameters, `model.flat_parameters`, change in place). `gradient()` shows the normalised
   gradient this phase used, before clipping;
4. after_apply: the gradient horizon; recompute: the time steps the next update reads are rerun.

The engine's state besides the parameters (the window of activations, the carried state, the
pending steps' loss terms, the optimiser's moments, the counters) travels as a snapshot: a dict
of plain arrays in one schema, the same for both engines (`tbptt.engines.snapshot`), so a trainer
saved with one backend resumes with the other.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Protocol, Tuple, runtime_checkable

import numpy as np

__all__ = ["Engine", "Snapshot", "State"]

#: The carried state: one (L, B, H) float array per state tensor of the cell, (h, c) or (h,).
State = Tuple[np.ndarray, ...]
#: An engine snapshot: entry name -> array (see `tbptt.engines.snapshot` for the entries).
Snapshot = Dict[str, np.ndarray]


@runtime_checkable
class Engine(Protocol):
    """TBPTT(k1, k2) over B streams for one model, updating `model.flat_parameters` in place.

    Built by the trainer from (model, k1, k2, loss, optimizer config, clip_norm, seed) and the
    keyword `recompute` (bool: every update reads its window as the current weights compute it:
    after each optimiser step the time steps the next update reads are rerun, and an update whose
    window still holds older weights' steps, after a flush, reruns it first; docs/semantics.md
    §3; configuration, not state: snapshots do not carry it); every argument
    has passed the trainer's checks, so an engine only checks what it alone can know (its own
    state, shapes of a snapshot)."""

    @property
    def pending_steps(self) -> int:
        """Steps processed since the last update (0 <= pending_steps < k1)."""
        ...

    @property
    def updates(self) -> int:
        """Updates made since training began, those that made no optimiser step included."""
        ...

    @property
    def steps(self) -> int:
        """Steps processed since training began (the dropout masks' step counter)."""
        ...

    def train(
        self,
        x: np.ndarray,
        tokens: bool,
        y: np.ndarray,
        mask: Optional[np.ndarray],
        resets: Optional[np.ndarray],
        outputs: Optional[np.ndarray] = None,
    ) -> List[float]:
        """Process T more steps; an update every k1 steps since the last one.

        x: (T, B, I) float features, or (T, B) int64 token ids when `tokens`.
        y: (T, B, O) float targets (mse) or (T, B) int64 class ids (cross_entropy): the loss's
            target_shape and target_dtype (tbptt.losses).
        mask: None or (T, B) float loss weights. resets: None or (T, B) bool/uint8: zero stream
        b's state before step t. outputs: None or a writeable (T, B, O) float array that receives
        each step's outputs as the forward pass computed them.
        Returns the loss of each update that had positions carrying loss. Raises
        FloatingPointError (with a `losses` attribute) when an update is not finite."""
        ...

    def peek(self, x: np.ndarray, tokens: bool, outputs: np.ndarray) -> None:
        """Write into `outputs` (B, O) float the next step's outputs for x, (B, I) float or (B,)
        int64 token ids, from the carried state, advancing nothing. (With dropout on, the two
        backends differ here: a known issue, tests/test_contract.py.)"""
        ...

    def flush(self) -> Optional[float]:
        """The update over the pending steps now: its loss, or None if none carries loss."""
        ...

    def reset_state(self) -> None:
        """Zero every stream's state before the next step (pending steps stay pending)."""
        ...

    def set_lr(self, lr: float) -> None:
        """The optimiser's learning rate from the next update on."""
        ...

    def state(self) -> Optional[State]:
        """The state the next step starts from, (h, c) or (h,), each (L, B, H) float copies;
        None before the first call."""
        ...

    def horizon(self) -> Tuple[np.ndarray, np.ndarray]:
        """(sums, updates): sums (2, L, k2) float64, over updates, of ||dL/dh|| ([0]) and
        ||dL/dc|| ([1], zeros without c) j steps back; updates (k2,) int64, how many updates
        reached j steps back. Empty ((2, L, 0) and (0,)) before any counted update."""
        ...

    def reset_horizon(self) -> None:
        """Forget the horizon's sums."""
        ...

    def gradient(self) -> np.ndarray:
        """dL/dθ of the last update, normalised, before clipping: a (P,) float copy in
        `state_dict` order (zeros before the first update)."""
        ...

    def set_reduce(self, reduce: Optional[Callable[[], None]]) -> None:
        """Data-parallel: `reduce()` replaces `reduce_buffer()` by its sum over the processes,
        in place, between the backward and apply phases of every update. None: one process."""
        ...

    def set_stream_offset(self, offset: int) -> None:
        """Data-parallel: the index of this process's first stream among every process's streams
        taken as one batch (dropout masks are drawn per stream index); 0 for one process."""
        ...

    def reduce_buffer(self) -> np.ndarray:
        """The update's buffer, (P + 2,) float, the array itself (no copy): the un-normalised
        gradient, then s·Σ w·loss and s·Σ w."""
        ...

    def snapshot(self) -> Snapshot:
        """Everything the next steps depend on besides the parameters, in the shared schema
        (`tbptt.engines.snapshot`): copies, plain arrays only (no objects: files are not
        pickled)."""
        ...

    def restore(self, snapshot: Snapshot) -> None:
        """Take a snapshot of an engine of the same model, k1, k2, loss and optimiser, written
        by either backend, in the current schema (older files' forms are converted at load,
        `tbptt.engines.old_files`). ValueError naming the entry that does not fit; the engine is
        unchanged then."""
        ...
