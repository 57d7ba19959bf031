"""The C++ engine behind Trainer(backend="cpp") and `predict`: a thin adapter over `tbptt._core_<isa>`.

The compiled engine keeps a reference to the model's flat parameter array and updates it in place;
it owns the window of activations, the optimiser state and the carried state between calls. It
takes the cell by name (`model.cell`: "lstm", "gru", "rnn_tanh", "rnn_relu") and hands the state
out as a tuple with one (L, B, H) array per name in the model's STATE: (h, c) or (h,).
"""

from __future__ import annotations

import numpy as np


def _shape(model):
    """The arguments every compiled entry point takes after the parameters."""
    return (model.cell, model.input_size, model.hidden_size, model.output_size, model.num_layers)


def predict(core, model, x, tokens, state):
    """`model` forward over x (T, B, I) or (T, B) token ids, from `state`, a tuple like the
    engine's. Returns outputs (T, B, O) and the final state (a tuple)."""
    outputs, state = core.predict(model._flat, *_shape(model), x, tokens, tuple(state))
    return outputs, tuple(state)


class CppEngine:
    def __init__(self, core, model, k1, k2, loss, optimizer, clip_norm, seed):
        cls = core.Engine64 if model.dtype == np.float64 else core.Engine32
        self._engine = cls(model._flat, *_shape(model), k1, k2, loss, optimizer, clip_norm,
                           model.dropout, model.head_dropout, seed)

    def train(self, x, tokens, y, mask, resets, outputs=None):
        """outputs: None or a (T, B, O) array of the model's dtype that receives each step's
        outputs as the forward pass computed them."""
        return self._engine.train(x, tokens, y, mask, resets, outputs)

    def peek(self, x, tokens, outputs):
        """The next step's outputs for x, (B, I) or (B,) token ids, into `outputs` (B, O),
        from the carried state, without advancing it."""
        self._engine.peek(x, tokens, outputs)

    def flush(self):
        return self._engine.flush()

    def reset_state(self):
        self._engine.reset_state()

    def set_lr(self, lr):
        self._engine.set_lr(lr)

    def state(self):
        """None before the first train call, else a tuple: (h, c) or (h,), each (L, B, H)."""
        state = self._engine.state()
        return None if state is None else tuple(state)

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

    def set_reduce(self, reduce):
        """Data-parallel: `reduce()` all-reduces reduce_buffer() in place between backward and
        step of every update (called from the engine's loop with the GIL); None: one process."""
        self._engine.set_reduce(reduce)

    def reduce_buffer(self):
        """A view (no copy) of the engine's update buffer: [gradient (P,), Σ w·loss, Σ w]."""
        return self._engine.reduce_buffer()

    @property
    def pending_steps(self):
        return self._engine.pending_steps

    @property
    def updates(self):
        return self._engine.updates
