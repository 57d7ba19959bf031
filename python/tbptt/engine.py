"""The C++ engine behind Trainer(backend="cpp"): a thin adapter over `tbptt._core_<isa>`.

The compiled engine keeps a reference to the model's flat parameter array and updates it in place;
it owns the window of activations, the optimiser state and the carried state between calls.
"""

from __future__ import annotations

import numpy as np


class CppEngine:
    def __init__(self, core, model, k1, k2, loss, optimizer, clip_norm):
        cls = core.Engine64 if model.dtype == np.float64 else core.Engine32
        m = model
        self._engine = cls(m._flat, m.input_size, m.hidden_size, m.output_size, m.num_layers,
                           k1, k2, loss, optimizer, clip_norm)

    def train(self, x, tokens, y, mask, resets):
        return self._engine.train(x, tokens, y, mask, resets)

    def flush(self):
        return self._engine.flush()

    def reset_state(self):
        self._engine.reset_state()

    def set_lr(self, lr):
        self._engine.set_lr(lr)

    def state(self):
        return self._engine.state()

    def horizon(self):
        return self._engine.horizon()

    def reset_horizon(self):
        self._engine.reset_horizon()

    def snapshot(self):
        return self._engine.snapshot()

    def restore(self, state):
        self._engine.restore(state)

    def gradient(self):
        return self._engine.gradient()

    @property
    def pending_steps(self):
        return self._engine.pending_steps

    @property
    def updates(self):
        return self._engine.updates
