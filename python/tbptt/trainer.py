"""Trainer: TBPTT(k1, k2) over streams whose state is carried across calls.

Every k1 steps it makes an update: the loss of the k1 newest steps, its gradient with the
recurrence cut k2 steps back, optional global-norm clipping, then the optimiser step. Steps
since the last update stay pending across calls, so `train(x[:a]); train(x[a:])` equals
`train(x)`. The numerical work happens in a backend engine:

- "cpp": the C++/Eigen engine (`tbptt._core`), the fast one;
- "numpy": the NumPy reference (`tbptt.reference`), written to be read next to the math.

Both take arrays that passed the checks below and implement exactly the same algorithm.
"""

from __future__ import annotations

import numpy as np

from . import _checks, _native
from .model import LSTM
from .optim import SGD, Adam

LOSSES = ("mse", "cross_entropy")
BACKENDS = ("cpp", "numpy")


class Trainer:
    """Train `model` in place with TBPTT(k1, k2).

    k1: steps between updates. k2: steps each update backpropagates through.
    k1 = k2 = k is chunked TBPTT (detach every k steps); k1 = k2 = T is full BPTT; k2 > k1 gives
    overlapping windows (Williams & Peng's BPTT(h; h')); k2 < k1 lets the first k1 - k2 steps of
    each segment only warm the state up.
    """

    def __init__(self, model, k1, k2, loss="mse", optimizer=None, clip_norm=None, backend="cpp"):
        if not isinstance(model, LSTM):
            raise TypeError(f"model must be a tbptt.LSTM, got {type(model).__name__}")
        self.model = model
        self.k1 = _checks.positive_int("k1", k1)
        self.k2 = _checks.positive_int("k2", k2)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        if optimizer is None:
            optimizer = Adam()
        if not isinstance(optimizer, (SGD, Adam)):
            raise TypeError(f"optimizer must be tbptt.SGD or tbptt.Adam, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if clip_norm is not None:
            clip_norm = _checks.finite_float("clip_norm", clip_norm)
            if clip_norm <= 0:
                raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm}")
        self.clip_norm = clip_norm
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.num_streams = None  # B, fixed by the first call to train
        self._engine = self._make_engine()

    def _make_engine(self):
        args = (self.model, self.k1, self.k2, self.loss, self.optimizer.config(), self.clip_norm)
        if self.backend == "numpy":
            from .reference import ReferenceEngine
            return ReferenceEngine(*args)
        return _native.make_engine(*args)

    # ---- training -----------------------------------------------------------------------------
    def train(self, x, y, mask=None, resets=None) -> np.ndarray:
        """Process T more steps of the B streams; make an update every k1 steps.

        x: (T, B, I) features or (T, B) integer token ids. y: (T, B, O) for "mse", (T, B) integer
        class ids for "cross_entropy". mask: optional (T, B) loss weights. resets: optional (T, B)
        bool, zero stream b's state before step t.
        Returns the loss of each update made in this call (float64 array).
        Raises FloatingPointError if an update's loss or gradient is not finite (see SPEC §3.6).
        """
        model = self.model
        x, tokens = _checks.inputs("x", x, model.input_size, model.dtype)
        T, B = x.shape[0], x.shape[1]
        y = _checks.targets("y", y, self.loss, (T, B), model.output_size, model.dtype)
        mask = _checks.mask(mask, (T, B), model.dtype)
        resets = _checks.resets(resets, (T, B))
        if T == 0:
            return np.zeros(0)
        if B == 0:
            raise ValueError("x must have at least one stream: got B = 0 (x.shape[1])")
        if self.num_streams is None:
            self.num_streams = B
        elif B != self.num_streams:
            raise ValueError(f"x has B = {B} streams, but this trainer was started with "
                             f"B = {self.num_streams} (x.shape[1] must stay the same)")
        return np.asarray(self._engine.train(x, tokens, y, mask, resets), dtype=np.float64)

    def flush(self):
        """Make the update over the pending steps (fewer than k1) now. Returns its loss, or None
        if no step is pending or no pending position carries loss."""
        return self._engine.flush()

    def reset_state(self) -> None:
        """Zero every stream's state before the next step (pending steps stay pending)."""
        self._engine.reset_state()

    @property
    def pending_steps(self) -> int:
        """Steps processed since the last update."""
        return int(self._engine.pending_steps)

    @property
    def updates(self) -> int:
        """Updates made so far (including those that made no optimiser step)."""
        return int(self._engine.updates)

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value) -> None:
        self.optimizer.lr = _checks.finite_float("lr", value, minimum=0.0)
        self._engine.set_lr(self.optimizer.lr)

    def state(self):
        """The carried state (h, c), each (num_layers, B, H), as the next step will see it
        (resets requested by reset_state() applied); None before the first call."""
        return self._engine.state()

    # ---- checkpoints --------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write a checkpoint atomically: model, optimiser state, carried state, pending steps and
        schedule. `tbptt.load_trainer(path)` resumes exactly where this trainer is now."""
        from .checkpoint import save_trainer
        save_trainer(self, path)

    def __repr__(self) -> str:
        return (f"Trainer(k1={self.k1}, k2={self.k2}, loss={self.loss!r}, optimizer={self.optimizer}, "
                f"clip_norm={self.clip_norm}, backend={self.backend!r})")
