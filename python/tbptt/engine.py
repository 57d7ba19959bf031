"""The C++ engine behind Trainer(backend="cpp") and `predict`: a thin adapter over `tbptt._core_<isa>`.

The compiled engine keeps a reference to the model's flat parameter array and updates it in place;
it owns the window of activations, the optimiser state and the carried state between calls. It
takes the cell by name (`model.cell`: "lstm", "gru", "rnn_tanh", "rnn_relu") and hands the state
out as a tuple with one (L, B, H) array per name in the model's STATE: (h, c) or (h,).

Its snapshot is the compiled engine's own (a ring of S = max(k1, k2) + 1 slots, step s in slot
s % S, and the pending steps' outputs, targets, weights and loss terms in k1 rows), translated
here to and from the schema both backends share (`tbptt._snapshot`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import _pickled, _snapshot
from .cells import CELLS
from .losses import LOSSES

if TYPE_CHECKING:
    from ._core import Core          # the compiled modules' interface (types only)
    from .contract import Snapshot, State
    from .model import Recurrent     # the model module imports this one (predict)


def _shape(model: Recurrent) -> Tuple[str, int, int, int, int]:
    """The arguments every compiled entry point takes after the parameters."""
    return (model.cell, model.input_size, model.hidden_size, model.output_size, model.num_layers)


def predict(core: Core, model: Recurrent, x: np.ndarray, tokens: bool,
            state: State) -> Tuple[np.ndarray, State]:
    """`model` forward over x (T, B, I) or (T, B) token ids, from `state`, a tuple like the
    engine's. Returns outputs (T, B, O) and the final state (a tuple)."""
    outputs, state = core.predict(model.flat_parameters, *_shape(model), x, tokens, tuple(state))
    return outputs, tuple(state)


class CppEngine:
    """The compiled engine behind the `tbptt.contract.Engine` protocol (see there for every
    member's meaning, shapes and dtypes)."""

    def __init__(self, core: Core, model: Recurrent, k1: int, k2: int, loss: str,
                 optimizer: Dict[str, Any], clip_norm: Optional[float], seed: int,
                 recompute: bool = False) -> None:
        cls = core.Engine64 if model.dtype == np.float64 else core.Engine32
        self._engine = cls(model.flat_parameters, *_shape(model), k1, k2, loss, optimizer,
                           clip_norm, model.dropout, model.head_dropout, seed, recompute)
        self._model, self._k1, self._k2, self._loss = model, k1, k2, loss

    def __reduce_ex__(self, protocol):
        _pickled.refuse("the C++ engine")  # process-local memory: its trainer pickles instead

    def train(self, x: np.ndarray, tokens: bool, y: np.ndarray, mask: Optional[np.ndarray],
              resets: Optional[np.ndarray], outputs: Optional[np.ndarray] = None) -> List[float]:
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

    # ---- snapshots: the compiled engine's ring <-> the shared schema ---------------------------
    def snapshot(self) -> Snapshot:
        return _CppSnapshot(self).shared(self._engine.snapshot())

    def restore(self, snapshot: Snapshot) -> None:
        if not _snapshot.is_shared(snapshot):  # the compiled engine's own older form (files)
            self._engine.restore(snapshot)
            return
        c = _snapshot.check(snapshot, self._model, self._k1, self._k2, self._loss)
        self._engine.restore(_CppSnapshot(self).native(snapshot, c))


class _CppSnapshot:
    """Translates between the compiled engine's snapshot and the shared schema for one engine."""

    def __init__(self, engine: CppEngine) -> None:
        self.engine, self.model = engine, engine._model
        m = self.model
        self.L, self.H, self.I, self.O = m.num_layers, m.hidden_size, m.input_size, m.output_size
        self.S = max(engine._k1, engine._k2) + 1
        spec = CELLS[m.cell]  # the compiled engine's window per hidden unit: gates, extra, carried
        self.G, self.E, self.C = spec.gates * self.H, spec.extra * self.H, spec.carried * self.H
        self.keeps_gates = spec.keeps_gates

    def ring(self, native: Dict[str, np.ndarray], key: str, B: int, width: int) -> np.ndarray:
        """A per-layer ring of the native snapshot as (L, S, B, width)."""
        return np.asarray(native[key]).reshape(self.L, self.S, B, width)

    def shared(self, native: Dict[str, np.ndarray]) -> Snapshot:
        """The shared schema's entries from the compiled engine's snapshot."""
        counters = [int(v) for v in native["counters"]]
        B, tokens, step, first_valid, pending, updates, reset_next, opt_steps = counters[:8]
        fresh_from = counters[8] if len(counters) > 8 else step - pending  # older files: 8
        oldest = max(first_valid, step - self.S + 1) if B else step
        n, slots = step - oldest, np.arange(oldest, step) % self.S
        h, carry = self.ring(native, "h", B, self.H), self.ring(native, "carry", B, self.C)
        gates = np.concatenate([self.ring(native, "gates", B, self.G),
                                self.ring(native, "extra", B, self.E)], axis=-1)
        if not self.keeps_gates:
            gates = gates[..., :0]
        cut = oldest == first_valid  # nothing precedes the oldest step: it starts from zeros
        before = (oldest - 1) % self.S
        d = _snapshot.header(self.model, [B, tokens, step, pending, updates, reset_next, opt_steps])
        d["fresh_from"] = np.array([fresh_from], np.int64)
        d["loss_sums"] = np.asarray(native["sums"], np.float64)[:3]
        if d["loss_sums"].size < 3:  # files from before data-parallel training
            d["loss_sums"] = np.append(d["loss_sums"], 0.0)
        d.update(self.window(native, B, bool(tokens), slots, h, carry, gates))
        # the state entering the oldest step, its resets applied (as the reference keeps it)
        keep = ~d["window/reset"][0][None, :, None] if n else True
        d["window/h_in"] = np.zeros_like(h[:, 0]) if cut else np.where(keep, h[:, before], 0)
        d["window/c_in"] = np.zeros_like(carry[:, 0]) if cut else np.where(keep, carry[:, before], 0)
        d.update(self.pending(native, B, pending))
        d.update(self.moments(native))
        return d

    def window(self, native, B, tokens, slots, h, carry, gates) -> Dict[str, np.ndarray]:
        """window/x, reset, gates, h, c of the held steps, the oldest first."""
        if tokens:
            x = np.asarray(native["ids"]).reshape(self.S, B)[slots]
        else:
            x = np.asarray(native["x"]).reshape(self.S, B, self.I)[slots]
        reset = np.asarray(native["resets"]).reshape(self.S, B)[slots] != 0
        swap = (lambda a: np.ascontiguousarray(a[:, slots].transpose(1, 0, 2, 3)))  # noqa: E731
        return {"window/x": x, "window/reset": reset, "window/gates": swap(gates),
                "window/h": swap(h), "window/c": swap(carry)}

    def pending(self, native, B, r) -> Dict[str, np.ndarray]:
        """pending/*: the r pending rows of the compiled engine's outputs, targets, weights and
        loss terms (weights NaN where restored from an older file that kept no targets: the
        reference refuses them)."""
        def rows(key, width):
            a = np.asarray(native[key])
            return a.reshape((-1, B) + width)[:r].copy() if B else np.zeros((0, 0) + width, a.dtype)

        O, spec = (self.O,), LOSSES[self.engine._loss]
        y = rows("classes", ()) if spec.classes else rows("values", spec.target_shape(self.O))
        return {"pending/out": rows("outputs", O), "pending/y": y, "pending/w": rows("weights", ()),
                "pending/dy": rows("dy", O)}

    def moments(self, native) -> Dict[str, np.ndarray]:
        """optimizer/m, v as (P,) arrays (zeros where the optimiser keeps none)."""
        P, dtype = self.model.num_parameters, self.model.dtype
        m, v = np.asarray(native["first_moment"]), np.asarray(native["second_moment"])
        return {"optimizer/m": m.copy() if m.size else np.zeros(P, dtype),
                "optimizer/v": v.copy() if v.size else np.zeros(P, dtype)}

    def native(self, d: Snapshot, c: Dict[str, int]) -> Dict[str, np.ndarray]:
        """The compiled engine's snapshot from a checked shared one (counters `c`)."""
        B, n, step, r = c["num_streams"], c["held"], c["steps"], c["pending"]
        k1, S, L, dtype = self.engine._k1, self.S, self.L, self.model.dtype
        capacity = S - 1
        first_valid = step - n - 1 if n == capacity and step > n else step - n
        slots, before = np.arange(step - n, step) % S, (step - n - 1) % S
        rings = {key: np.zeros((L, S, B, width), dtype)
                 for key, width in (("gates", self.G), ("extra", self.E), ("carry", self.C),
                                    ("h", self.H))}
        gates = d["window/gates"].transpose(1, 0, 2, 3)
        if self.keeps_gates:
            rings["gates"][:, slots], rings["extra"][:, slots] = gates[..., :self.G], gates[..., self.G:]
        rings["h"][:, slots] = d["window/h"].transpose(1, 0, 2, 3)
        rings["carry"][:, slots] = d["window/c"].transpose(1, 0, 2, 3)
        if first_valid < step - n:  # the state entering the oldest step lives in the slot before
            rings["h"][:, before], rings["carry"][:, before] = d["window/h_in"], d["window/c_in"]
        tokens = bool(c["tokens"])
        x = np.zeros((S, B) if tokens else (S, B, self.I), np.int64 if tokens else dtype)
        x[slots] = d["window/x"]
        resets = np.zeros((S, B), np.uint8)
        resets[slots] = d["window/reset"]
        def rows(key, width, dt):  # k1 rows, the first r pending (the engine's layout)
            a = np.zeros((k1 if B else 0, B) + width, dt)
            a[:r] = d[key]
            return a.ravel()

        spec = LOSSES[self.engine._loss]
        O, Y = (self.O,), spec.target_shape(self.O)  # outputs and targets per position
        counters = [B, c["tokens"], step, first_valid, r, c["updates"], c["reset_next"],
                    c["optimizer_steps"], max(c["fresh_from"], first_valid)]
        native = {"counters": np.array(counters, np.int64), "sums": d["loss_sums"].copy(),
                  "dy": rows("pending/dy", O, dtype), "outputs": rows("pending/out", O, dtype),
                  "values": np.zeros(0, dtype) if spec.classes else rows("pending/y", Y, dtype),
                  "classes": rows("pending/y", Y, np.int64) if spec.classes else np.zeros(0, np.int64),
                  "weights": rows("pending/w", (), dtype), "x": (np.zeros(0, dtype) if tokens else x).ravel(),
                  "ids": (x if tokens else np.zeros(0, np.int64)).ravel(),
                  "resets": resets.ravel(),
                  "any_reset": np.asarray(resets.any(axis=1), np.uint8)[:S if B else 0]}
        native.update({key: ring.ravel() for key, ring in rings.items()})
        sizes = self.engine._engine.snapshot()
        for key, name in (("first_moment", "optimizer/m"), ("second_moment", "optimizer/v")):
            native[key] = d[name].copy() if np.asarray(sizes[key]).size else np.zeros(0, dtype)
        return native
