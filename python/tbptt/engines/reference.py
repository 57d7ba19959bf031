"""The NumPy reference engine: TBPTT(k1, k2) for a stacked LSTM, GRU or Elman RNN with a linear
head (docs/semantics.md §3, §6).

What it is: a plain, readable implementation of exactly the algorithm the C++ engine implements,
written to be read next to the math. It is the test oracle and the benchmark baseline
(`Trainer(..., backend="numpy")`). It is vectorised over the streams (one set of matrix products
per layer per step), and it shares no numeric code with the C++ engine (csrc/).
What it is not: fast. It loops over time steps in Python and makes no effort to fuse, block or
thread anything; the inputs it gets have already been checked by `tbptt.Trainer`.

Legend of the dimension letters used in shapes and comments:
    T   time steps in one call              B   streams (the batch), fixed by the first call
    I   input features (vocabulary size for token inputs)
    H   hidden units per layer              L   layers
    O   outputs of the linear head          gH  a cell's gates stacked: 4H (LSTM), 3H (GRU), H (RNN)
    k1  steps between updates               k2  steps each update backpropagates through

The cells, layer k, step t (torch's equations; x is the layer's input, h, c its state):
    LSTM  z = W_ih x + b_ih + W_hh h_{t-1} + b_hh                   (B, 4H), split into i, f, g, o
          i, f, o = sigmoid(z_i, z_f, z_o),  g = tanh(z_g)
          c_t = f * c_{t-1} + i * g,        h_t = o * tanh(c_t)
    GRU   a = W_ih x + b_ih,  b = W_hh h_{t-1} + b_hh               (B, 3H) each, split into r, z, n
          r = sigmoid(a_r + b_r),  z = sigmoid(a_z + b_z)
          n = tanh(a_n + r * b_n)                                   (b_hn sits inside the product)
          h_t = (1 - z) * n + z * h_{t-1}
    RNN   h_t = act(W_ih x + b_ih + W_hh h_{t-1} + b_hh),            act = tanh or relu
Layer 0 reads x_t, layer k > 0 reads h_t of layer k-1, the head reads the top layer: out = W h + b.

The engine (`ReferenceEngine`) never names a cell: it calls the cell's `forward` and `backward`
for one layer at one step and keeps what they say they need (`STATE`, `CACHE`).
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from .. import _pickled
from ..cells import CELLS
from ..contract import Snapshot, State
from ..losses import LOSSES
from . import snapshot as _snapshot
from .spec import ModelSpec

__all__ = ["ReferenceEngine", "forward", "LSTMCell", "GRUCell", "RNNCell", "cell_of", "loss_terms"]


# ---- what every cell shares: the two affine maps of a layer ------------------------------------


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class _Cache:
    """What the backward pass needs from one layer at one step: the layer's input `inp`
    ((B, I or H) floats, or (B,) token ids when `tokens`) and the cell's CACHE fields, each
    (B, H)."""

    if TYPE_CHECKING:  # its fields depend on the cell (CACHE): any name, set by the cell's forward

        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...


def _weights(P, prefix, k):
    return (
        P[f"{prefix}.weight_ih_l{k}"],
        P[f"{prefix}.weight_hh_l{k}"],
        P[f"{prefix}.bias_ih_l{k}"],
        P[f"{prefix}.bias_hh_l{k}"],
    )


def _input_part(W_ih, inp, tokens):
    """W_ih x, (B, gH): a one-hot input selects column `id` of W_ih (never built as a matrix)."""
    return W_ih[:, inp].T if tokens else inp @ W_ih.T


def _affine_backward(P, G, prefix, k, cache, d_a, d_b, need_prev):
    """Backward through a = W_ih inp + b_ih and b = W_hh h_prev + b_hh, given d_a = dL/da and
    d_b = dL/db, each (B, gH). Adds the four parameter gradients into G. Returns dL/d inp (None
    for layer 0, whose input is data) and dL/dh_prev through W_hh (None unless `need_prev`)."""
    W_ih, W_hh, _, _ = _weights(P, prefix, k)
    G[f"{prefix}.weight_hh_l{k}"] += d_b.T @ cache.h_prev
    if cache.tokens:
        np.add.at(
            G[f"{prefix}.weight_ih_l{k}"].T, cache.inp, d_a
        )  # row `id` of W_ih^T; repeats add up
    else:
        G[f"{prefix}.weight_ih_l{k}"] += d_a.T @ cache.inp
    G[f"{prefix}.bias_ih_l{k}"] += d_a.sum(axis=0)
    G[f"{prefix}.bias_hh_l{k}"] += d_b.sum(axis=0)
    d_inp = d_a @ W_ih if k > 0 else None
    dh_prev = d_b @ W_hh if need_prev else None
    return d_inp, dh_prev


# ---- the cells: one layer at one step, forward and backward ------------------------------------
# forward(P, k, inp, tokens, prev) -> cache: prev holds the state entering the step (one (B, H)
#     array per name in STATE); the cache holds `<name>_prev` and `<name>` for each of them (the
#     state leaving the step) among its CACHE fields.
# backward(P, G, k, cache, d_state, need_prev) -> (d_inp, d_prev, d_total):
#     d_state: per STATE name, dL/d(state_t) from the layer above or the head (h) and from step
#     t+1. Adds this step's parameter gradients into G (same names and shapes as P). Returns
#     dL/d inp (None for layer 0), dL/d(state_{t-1}) per name (None unless `need_prev`: the
#     oldest step of the window has nothing before it to send it to), and the total gradient
#     into each state tensor at step t (the gradient horizon's norms).


class LSTMCell:
    """torch's nn.LSTM layer: gates (i, f, g, o), state (h, c)."""

    prefix, STATE = CELLS["lstm"].prefix, CELLS["lstm"].state  # "lstm", ("h", "c")
    CACHE = ("h_prev", "c_prev", "i", "f", "g", "o", "c", "tanh_c", "h")

    def forward(self, P, k, inp, tokens, prev):
        W_ih, W_hh, b_ih, b_hh = _weights(P, self.prefix, k)
        h_prev, c_prev = prev
        z = _input_part(W_ih, inp, tokens) + h_prev @ W_hh.T + (b_ih + b_hh)  # (B, 4H)
        H = h_prev.shape[1]
        cache = _Cache()
        cache.inp, cache.tokens, cache.h_prev, cache.c_prev = inp, tokens, h_prev, c_prev
        cache.i = _sigmoid(z[:, 0 * H : 1 * H])
        cache.f = _sigmoid(z[:, 1 * H : 2 * H])
        cache.g = np.tanh(z[:, 2 * H : 3 * H])
        cache.o = _sigmoid(z[:, 3 * H : 4 * H])
        cache.c = cache.f * c_prev + cache.i * cache.g
        cache.tanh_c = np.tanh(cache.c)
        cache.h = cache.o * cache.tanh_c
        return cache

    def backward(self, P, G, k, cache, d_state, need_prev):
        dh, dc = d_state
        i, f, g, o, tanh_c = cache.i, cache.f, cache.g, cache.o, cache.tanh_c
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)  # h_t = o * tanh(c_t)
        do = dh * tanh_c
        di = dc * g  # c_t = f * c_{t-1} + i * g
        df = dc * cache.c_prev
        dg = dc * i
        dz = np.concatenate(
            [
                di * i * (1.0 - i),  # through the activations: sigmoid' = s (1 - s),
                df * f * (1.0 - f),  # tanh' = 1 - tanh^2
                dg * (1.0 - g * g),
                do * o * (1.0 - o),
            ],
            axis=1,
        )  # (B, 4H)
        d_inp, dh_prev = _affine_backward(P, G, self.prefix, k, cache, dz, dz, need_prev)
        d_prev = (dh_prev, dc * f) if need_prev else None
        return d_inp, d_prev, (dh, dc)


class GRUCell:
    """torch's nn.GRU layer: gates (r, z, n), state h."""

    prefix, STATE = CELLS["gru"].prefix, CELLS["gru"].state  # "gru", ("h",)
    CACHE = (
        "h_prev",
        "r",
        "z",
        "n",
        "hn",
        "h",
    )  # hn = W_hn h_prev + b_hn, the reset gate's operand

    def forward(self, P, k, inp, tokens, prev):
        W_ih, W_hh, b_ih, b_hh = _weights(P, self.prefix, k)
        (h_prev,) = prev
        a = _input_part(W_ih, inp, tokens) + b_ih  # (B, 3H)
        b = h_prev @ W_hh.T + b_hh  # (B, 3H)
        H = h_prev.shape[1]
        cache = _Cache()
        cache.inp, cache.tokens, cache.h_prev = inp, tokens, h_prev
        cache.r = _sigmoid(a[:, 0 * H : 1 * H] + b[:, 0 * H : 1 * H])
        cache.z = _sigmoid(a[:, 1 * H : 2 * H] + b[:, 1 * H : 2 * H])
        cache.hn = b[:, 2 * H : 3 * H]
        cache.n = np.tanh(a[:, 2 * H : 3 * H] + cache.r * cache.hn)
        cache.h = (1.0 - cache.z) * cache.n + cache.z * h_prev
        return cache

    def backward(self, P, G, k, cache, d_state, need_prev):
        (dh,) = d_state
        r, z, n = cache.r, cache.z, cache.n
        dn = dh * (1.0 - z)  # h_t = (1 - z) n + z h_{t-1}
        dz = dh * (cache.h_prev - n)
        da_n = dn * (1.0 - n * n)  # n = tanh(a_n + r * hn)
        dr = da_n * cache.hn
        da_r = dr * r * (1.0 - r)
        da_z = dz * z * (1.0 - z)
        d_a = np.concatenate([da_r, da_z, da_n], axis=1)  # (B, 3H)
        d_b = np.concatenate([da_r, da_z, da_n * r], axis=1)  # hn enters through r * hn
        d_inp, dh_prev = _affine_backward(P, G, self.prefix, k, cache, d_a, d_b, need_prev)
        d_prev = (dh_prev + dh * z,) if need_prev else None
        return d_inp, d_prev, (dh,)


class RNNCell:
    """torch's nn.RNN layer (Elman): h_t = act(W_ih x + b_ih + W_hh h_{t-1} + b_hh), state h."""

    prefix, STATE = CELLS["rnn_tanh"].prefix, CELLS["rnn_tanh"].state  # "rnn", ("h",)
    CACHE = ("h_prev", "h")  # act' is read off h: tanh' = 1 - h^2, relu' = [h > 0]

    def __init__(self, nonlinearity):
        self.nonlinearity = nonlinearity  # "tanh" or "relu"

    def forward(self, P, k, inp, tokens, prev):
        W_ih, W_hh, b_ih, b_hh = _weights(P, self.prefix, k)
        (h_prev,) = prev
        a = _input_part(W_ih, inp, tokens) + h_prev @ W_hh.T + (b_ih + b_hh)  # (B, H)
        cache = _Cache()
        cache.inp, cache.tokens, cache.h_prev = inp, tokens, h_prev
        cache.h = np.tanh(a) if self.nonlinearity == "tanh" else np.maximum(a, 0.0)
        return cache

    def backward(self, P, G, k, cache, d_state, need_prev):
        (dh,) = d_state
        h = cache.h
        da = dh * (1.0 - h * h) if self.nonlinearity == "tanh" else dh * (h > 0)
        d_inp, dh_prev = _affine_backward(P, G, self.prefix, k, cache, da, da, need_prev)
        return d_inp, ((dh_prev,) if need_prev else None), (dh,)


_CELLS = {
    "lstm": LSTMCell(),
    "gru": GRUCell(),
    "rnn_tanh": RNNCell("tanh"),
    "rnn_relu": RNNCell("relu"),
}


def cell_of(spec: ModelSpec) -> Any:
    """The reference cell of a model's `spec` (its `cell`: "lstm", "gru", "rnn_tanh",
    "rnn_relu")."""
    try:
        return _CELLS[spec.cell]
    except KeyError:
        raise ValueError(f"model.cell must be one of {tuple(_CELLS)}, got {spec.cell!r}") from None


def _head(P, h_top):
    return h_top @ P["head.weight"].T + P["head.bias"]


# ---- forward only ------------------------------------------------------------------------------


def forward(spec: ModelSpec, x: np.ndarray, tokens: bool, state: State) -> Tuple[np.ndarray, State]:
    """Run the model of `spec` over x (T, B, I), or (T, B) token ids when `tokens`, from
    `state`: a tuple with one (L, B, H) array per name in the cell's STATE ((h0, c0) for an
    LSTM, (h0,) else).
    No resets. Returns outputs (T, B, O) and the final state, a tuple like `state`."""
    cell, P, L = cell_of(spec), spec.parameter_views, spec.num_layers
    T, B = x.shape[0], x.shape[1]
    layers = [tuple(np.array(part[k], dtype=spec.dtype) for part in state) for k in range(L)]
    outputs = np.empty((T, B, spec.output_size), dtype=spec.dtype)
    with np.errstate(all="ignore"):
        for t in range(T):
            inp = x[t]
            for k in range(L):
                cache = cell.forward(P, k, inp, tokens and k == 0, layers[k])
                layers[k] = tuple(getattr(cache, name) for name in cell.STATE)
                inp = cache.h
            outputs[t] = _head(P, inp)
    return outputs, tuple(np.stack([layer[i] for layer in layers]) for i in range(len(cell.STATE)))


# ---- the loss ----------------------------------------------------------------------------------


def loss_terms(out, y, loss):
    """Per position of outputs `out` (..., B, O) and targets y ((..., B) class ids, or values
    (..., B, O) for "mse", (..., B, O / 2) for "gaussian"): (loss (..., B), dloss/dout
    (..., B, O)). Each loss's NumPy definition is its `terms` in tbptt.losses (MSE: the mean over
    O of (out - y)^2; cross-entropy: -log softmax(out)[y]; gaussian: the mean over targets of
    -log N(y; mu, sigma^2))."""
    return LOSSES[loss].terms(out, y)


def pending_loss(out, y, w, loss):
    """The loss terms of steps still to be updated on, from their outputs (r, B, O), targets and
    weights w (r, B): (w · dloss/dout (r, B, O), 0 where w = 0; Σ w·loss; Σ w), the sums float64."""
    per_position, dout = loss_terms(out, y, loss)
    carries = w > 0
    dy = np.where(carries[..., None], w[..., None] * dout, 0).astype(out.dtype)
    loss_sum = float(np.sum(np.where(carries, w * per_position, 0), dtype=np.float64))
    return dy, loss_sum, float(np.sum(w, dtype=np.float64))


# ---- the engine --------------------------------------------------------------------------------


def _mix(x):
    """splitmix64's finaliser on uint64 arrays (arithmetic mod 2**64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def dropout_mask(p, seed, layer, step, B, H, dtype, stream_offset=0):
    """The dropout mask of layer `layer`'s output at global step `step`, (B, H): 1 / (1 - p) where
    a unit is kept, 0 where it is dropped. A pure function of (seed, layer, step, stream, unit):

        z = mix(mix(mix(mix(seed + φ (layer + 1)) ^ step) ^ stream) ^ unit),  φ = 0x9E3779B97F4A7C15
        keep = (z >> 40) < round((1 - p) 2^24)

    with mix splitmix64's finaliser, so the C++ engine draws the same masks."""
    with np.errstate(over="ignore"):
        key = _mix(
            np.array([seed], np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(layer + 1)
        )
        key = _mix(key ^ np.uint64(step))
        streams = _mix(key ^ np.arange(stream_offset, stream_offset + B, dtype=np.uint64))
        z = _mix(streams[:, None] ^ np.arange(H, dtype=np.uint64)[None, :])
    keep = (z >> np.uint64(40)) < np.uint64(int((1.0 - p) * (1 << 24) + 0.5))
    return np.where(keep, dtype.type(1.0 / (1.0 - p)), dtype.type(0))


class _Step:
    """One processed time step: its index since training began, per-layer caches (`_Cache`), the
    resets applied before it, the head's input and output and what the loss needs (targets, mask
    weights)."""

    __slots__ = ("index", "layers", "reset", "head_in", "out", "y", "w")
    index: int
    layers: List[_Cache]
    reset: Optional[np.ndarray]  # (B,) bool, None when no stream resets
    head_in: np.ndarray  # (B, H) the top layer's h after dropout
    out: np.ndarray  # (B, O)
    y: np.ndarray  # (B, O) floats or (B,) class ids
    w: np.ndarray  # (B,) loss weights


class ReferenceEngine:
    """TBPTT(k1, k2) in NumPy; the `backend="numpy"` engine behind `tbptt.Trainer`.

    Keeps the activations of the last max(k1, k2) steps (each step's record also holds the state
    that entered it), the carried state (the cell's STATE: (h, c) or h) and the optimiser state.
    Updates the model's parameters (`spec.flat_parameters`) in place.
    """

    def __init__(
        self,
        spec: ModelSpec,
        k1: int,
        k2: int,
        loss: str,
        optimizer: Dict[str, Any],
        clip_norm: Optional[float],
        seed: int = 0,
        recompute: bool = False,
    ) -> None:
        self.spec = spec
        # after an update, run the steps the next update reads again with the new weights
        # (docs/semantics.md §3); _fresh_from: the oldest step held as the current weights
        # compute it (a count since training began, like _Step.index)
        self.recompute = bool(recompute)
        self._fresh_from = 0
        self.cell = cell_of(spec)
        self.seed = int(seed)
        # dropout on each layer's output as the layer above (the head, for the top) reads it
        L = spec.num_layers
        self._dropout = [spec.dropout] * (L - 1) + [spec.head_dropout]
        self._stream_offset = 0  # data-parallel: this process's first stream among all
        self._steps = 0  # steps processed since training began (the masks' counter)
        self.k1, self.k2 = int(k1), int(k2)
        self.loss = loss
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.opt = dict(optimizer)
        self.dtype = spec.dtype
        self._history: Deque[_Step] = collections.deque(maxlen=max(self.k1, self.k2))
        # carried state: per layer, a tuple of (B, H) arrays, one per name in cell.STATE; None
        # before train
        self._state: Optional[List[Tuple[np.ndarray, ...]]] = None
        self._reset_next = False  # reset_state() was called: zero every stream at the next step
        self._pending = 0
        self._updates = 0
        # optimiser state, flat like model.flat_parameters
        self._momentum_buffer: Optional[np.ndarray] = None  # SGD
        self._optimizer_steps = 0  # steps taken (Adam's bias correction)
        self._tokens = False  # layer 0 reads token ids (fixed by the first call)
        self._adam_m = np.zeros_like(spec.flat_parameters)
        self._adam_v = np.zeros_like(spec.flat_parameters)
        # the gradient horizon: sums over updates of ||dL/dh||, ||dL/dc|| per layer and step back
        # (2, L, k2) float64; None until an update adds
        self._horizon_sums: Optional[np.ndarray] = None
        # (k2,) int64: updates whose window reached j back
        self._horizon_updates: Optional[np.ndarray] = None
        self._horizon_squares: Optional[np.ndarray] = None  # (2, L, k2) of the update being made
        # the update's buffer [gradient (P,), Σ w·loss, Σ w] (one all-reduce when data-parallel)
        self._buffer = np.zeros(spec.flat_parameters.size + 2, self.dtype)
        self._reduce: Optional[Callable[[], None]] = None  # data-parallel: sums the buffer
        self._last_weight_sum = 0.0  # the last update's global Σ w (see _backward)

    def __reduce_ex__(self, protocol):
        # a copy of its arrays would not alias its (copied) model's parameters: the trainer
        # pickles instead, through a snapshot
        _pickled.refuse("the NumPy reference engine")

    # ---- public ------------------------------------------------------------------------------
    @property
    def pending_steps(self) -> int:
        return self._pending

    @property
    def updates(self) -> int:
        return self._updates

    @property
    def steps(self) -> int:
        return self._steps

    def gradient(self) -> np.ndarray:
        """dL/dθ of the last update, normalised, before clipping: (P,), a copy."""
        return self._buffer[:-2].copy()

    def set_lr(self, lr: float) -> None:
        self.opt["lr"] = float(lr)

    def reset_state(self) -> None:
        self._reset_next = True

    def set_stream_offset(self, offset: int) -> None:
        self._stream_offset = int(offset)

    def set_reduce(self, reduce: Optional[Callable[[], None]]) -> None:
        """Data-parallel training: `reduce()` replaces reduce_buffer() by its sum over the
        processes, between backward and apply of every update; None for one process."""
        self._reduce = reduce

    def reduce_buffer(self) -> np.ndarray:
        """The update's buffer [gradient (P,), Σ w·loss, Σ w], the array itself (no copy)."""
        return self._buffer

    def horizon(self) -> Tuple[np.ndarray, np.ndarray]:
        """(sums, updates) as the C++ engine returns them: sums (2, L, k2) float64, the sum over
        updates of ||dL/dh_{t-j}|| ([0]) and ||dL/dc_{t-j}|| ([1], zeros for cells without c) of
        every layer (Frobenius over all streams), for j = 0 .. k2-1 steps back from each update's
        newest step t; updates (k2,) int64, how many updates' windows reached j steps back.
        Updates that made no optimiser step (no loss, or diverged) are not counted. Before any
        counted update (or after `reset_horizon()`) both are empty: (2, L, 0) and (0,)."""
        if self._horizon_sums is None:
            return (np.zeros((2, self.spec.num_layers, 0)), np.zeros(0, dtype=np.int64))
        assert self._horizon_updates is not None  # set and reset with the sums
        return self._horizon_sums.copy(), self._horizon_updates.copy()

    def reset_horizon(self) -> None:
        self._horizon_sums = self._horizon_updates = None

    def state(self) -> Optional[State]:
        """The carried state as a tuple, one (L, B, H) array per name in the cell's STATE
        (resets requested by reset_state() applied); None before the first call."""
        if self._state is None:
            return None
        parts = self._stacked_state()  # copies
        if self._reset_next:
            for a in parts:
                a[...] = 0
        return parts

    def _stacked_state(self):
        assert self._state is not None
        return tuple(
            np.stack([layer[i] for layer in self._state]) for i in range(len(self.cell.STATE))
        )

    def train(
        self,
        x: np.ndarray,
        tokens: bool,
        y: np.ndarray,
        mask: Optional[np.ndarray],
        resets: Optional[np.ndarray],
        outputs: Optional[np.ndarray] = None,
    ) -> List[float]:
        """outputs: None, or a (T, B, O) array that receives each step's head outputs as the
        forward pass computed them (before the update that uses the step's target)."""
        T, B = x.shape[0], x.shape[1]
        if self._state is None:
            self._zero_state(B)
        self._tokens = bool(tokens)
        losses: List[float] = []
        with np.errstate(all="ignore"):  # overflow shows up as a non-finite loss or gradient
            for t in range(T):
                reset = None if resets is None else resets[t].astype(bool)
                if self._reset_next:
                    reset = np.ones(B, dtype=bool)
                    self._reset_next = False
                w = np.ones(B, self.dtype) if mask is None else mask[t].copy()
                self._step(x[t].copy(), tokens, y[t].copy(), w, reset)
                if outputs is not None:
                    outputs[t] = self._history[-1].out
                if self._pending == self.k1:
                    try:
                        loss = self._update()
                    except FloatingPointError as error:
                        setattr(
                            error, "losses", np.asarray(losses, np.float64)
                        )  # applied before it
                        raise
                    if loss is not None:
                        losses.append(loss)
        return losses

    def peek(self, x: np.ndarray, tokens: bool, outputs: np.ndarray) -> None:
        """The next step's outputs for x, (B, I) features or (B,) token ids, into `outputs`
        (B, O): one step forward from the carried state, nothing stored or advanced."""
        if self._state is None:
            self._zero_state(x.shape[0])
        self._tokens = bool(tokens)
        P, inp, state = self.spec.parameter_views, x, self._state
        assert state is not None
        with np.errstate(all="ignore"):
            for k in range(self.spec.num_layers):
                prev = state[k]
                if self._reset_next:
                    prev = tuple(np.zeros_like(a) for a in prev)
                # the masks the next step will draw (train's forward, test-then-train)
                inp = self._drop(
                    k, self._steps, self.cell.forward(P, k, inp, tokens and k == 0, prev).h
                )
            outputs[...] = _head(P, inp)

    def flush(self) -> Optional[float]:
        if self._pending == 0:
            return None
        with np.errstate(all="ignore"):
            return self._update()

    # ---- checkpoints: the schema both backends share, held as it is (engines/snapshot.py) ---
    def snapshot(self) -> Snapshot:
        """Everything the next steps depend on besides the parameters, in the shared schema
        (tbptt.engines.snapshot): {name: ndarray}, copies."""
        steps, B = list(self._history), self._num_streams()
        d = _snapshot.header(self.spec)
        d.update(self._window_entries(steps, B))
        pending = self._pending_entries(steps[len(steps) - self._pending :], B)
        dy, loss_sum, weight_sum = pending_loss(
            pending["pending/out"], pending["pending/y"], pending["pending/w"], self.loss
        )
        d.update(pending, **{"pending/dy": dy})
        d.update(self._optimizer_entries())
        d.update(
            _snapshot.scalars(
                num_streams=B,
                tokens=self._tokens,
                steps=self._steps,
                pending=self._pending,
                updates=self._updates,
                reset_next=self._reset_next,
                optimizer_steps=self._optimizer_steps,
                fresh_from=self._fresh_from,
                loss_sum=loss_sum,
                weight_sum=weight_sum,
                last_weight_sum=self._last_weight_sum,
            )
        )
        return d

    def _num_streams(self):
        return 0 if self._state is None else self._state[0][0].shape[0]

    def _window_entries(self, steps, B):
        """window/*: the held steps' inputs, resets, gates, h and c; the state entering them."""
        L, H, I, n = (
            self.spec.num_layers,
            self.spec.hidden_size,
            self.spec.input_size,
            len(steps),
        )
        spec = CELLS[self.spec.cell]
        gate_fields, C = spec.snapshot_gates, spec.carried * H

        def per_layer(value, width):  # (n, L, B, width) from value(cache) of each step and layer
            return np.array(
                [[value(cache) for cache in s.layers] for s in steps], dtype=self.dtype
            ).reshape(n, L, B, width)

        x_dtype = np.int64 if self._tokens else self.dtype
        x_shape = (n, B) if self._tokens else (n, B, I)
        first = steps[0].layers if steps else None
        zeros = np.zeros((L, B, H), self.dtype)
        return {
            "window/x": np.array([s.layers[0].inp for s in steps], dtype=x_dtype).reshape(x_shape),
            "window/reset": np.array(
                [np.zeros(B, bool) if s.reset is None else s.reset for s in steps], dtype=bool
            ).reshape(n, B),
            "window/gates": per_layer(
                lambda c: np.concatenate(
                    [getattr(c, f) for f in gate_fields] or [np.zeros((B, 0), self.dtype)], axis=1
                ),
                len(gate_fields) * H,
            ),
            "window/h": per_layer(lambda c: c.h, H),
            "window/c": per_layer(lambda c: c.c, C) if C else np.zeros((n, L, B, 0), self.dtype),
            "window/h_in": np.array([c.h_prev for c in first]) if first else zeros,
            "window/c_in": (np.array([c.c_prev for c in first]) if first and C else zeros)[..., :C],
        }

    def _pending_entries(self, pending, B):
        """pending/out, y, w: the pending steps' outputs and targets."""
        O, r = self.spec.output_size, len(pending)
        spec = LOSSES[self.loss]
        return {
            "pending/out": np.array([s.out for s in pending], dtype=self.dtype).reshape(r, B, O),
            "pending/y": np.array(
                [s.y for s in pending], dtype=spec.target_dtype(self.dtype)
            ).reshape((r, B) + spec.target_shape(O)),
            "pending/w": np.array([s.w for s in pending], dtype=self.dtype).reshape(r, B),
        }

    def _optimizer_entries(self):
        """optimizer/m (Adam's first moment or SGD's momentum buffer) and optimizer/v."""
        if self.opt["name"] == "sgd":
            m = (
                np.zeros_like(self.spec.flat_parameters)
                if self._momentum_buffer is None
                else self._momentum_buffer.copy()
            )
        else:
            m = self._adam_m.copy()
        return {"optimizer/m": m, "optimizer/v": self._adam_v.copy()}

    def restore(self, snapshot: Snapshot) -> None:
        """Take a snapshot in the shared schema (of either backend) of an engine with the same
        model, k1, k2, loss and optimiser. ValueError naming the entry that does not fit; the
        engine is unchanged then."""
        c = _snapshot.check(snapshot, self.spec, self.k1, self.k2, self.loss)
        if not np.isfinite(snapshot["pending/w"]).all():
            _snapshot.fail(
                "'pending/w' is not known (a C++ engine's file older than the shared "
                "schema, saved with pending steps): resume it with backend='cpp', or "
                "flush() before saving"
            )
        B, n = c["num_streams"], c["held"]
        self._history = self._held_steps(snapshot, c)
        self._state = (
            None
            if B == 0
            else [
                tuple(
                    snapshot[f"window/{name}"][-1, k].copy()
                    if n
                    else np.zeros((B, self.spec.hidden_size), self.dtype)
                    for name in self.cell.STATE
                )
                for k in range(self.spec.num_layers)
            ]
        )
        self._pending, self._updates, self._steps = c["pending"], c["updates"], c["steps"]
        self._reset_next, self._tokens = bool(c["reset_next"]), bool(c["tokens"])
        self._optimizer_steps, self._fresh_from = c["optimizer_steps"], c["fresh_from"]
        self._last_weight_sum = float(snapshot["last_weight_sum"])
        m, sgd = snapshot["optimizer/m"], self.opt["name"] == "sgd"
        momentum = sgd and self.opt["momentum"] != 0 and c["optimizer_steps"] > 0
        self._momentum_buffer = m.copy() if momentum else None
        self._adam_m = np.zeros_like(m) if sgd else m.copy()
        self._adam_v = snapshot["optimizer/v"].copy()
        self.reset_horizon()  # as the C++ engine: a restored engine starts a fresh horizon

    def _held_steps(self, d, c) -> collections.deque:
        """The n held steps as this engine keeps them (_Step records with the cell's caches and
        the state entering each), from a checked snapshot `d` (copies)."""
        n, r, tokens = c["held"], c["pending"], bool(c["tokens"])
        fields = dict(
            zip(
                CELLS[self.spec.cell].snapshot_gates,
                np.split(
                    d["window/gates"], len(CELLS[self.spec.cell].snapshot_gates) or 1, axis=-1
                ),
            )
        )
        fields["h"] = d["window/h"]
        if "c" in self.cell.STATE:
            fields["c"], fields["tanh_c"] = d["window/c"], np.tanh(d["window/c"])
        keep = ~d["window/reset"][:, None, :, None]  # (n, 1, B, 1): zero the reset streams
        for name in self.cell.STATE:  # the state entering each step, resets applied
            before = np.concatenate([d[f"window/{name}_in"][None], fields[name][:-1]])[:n]
            fields[f"{name}_prev"] = np.where(keep, before, 0).astype(self.dtype)
        history: collections.deque = collections.deque(maxlen=max(self.k1, self.k2))
        for t in range(n):
            step = _Step()
            step.index = c["steps"] - n + t
            reset = d["window/reset"][t].copy()
            step.reset = reset if reset.any() else None
            step.layers = []
            inp = d["window/x"][t].copy()
            for k in range(self.spec.num_layers):
                cache: Any = _Cache()  # its fields are the cell's CACHE names
                for field in self.cell.CACHE:
                    setattr(cache, field, fields[field][t, k].copy())
                cache.inp, cache.tokens = inp, tokens and k == 0
                step.layers.append(cache)
                inp = self._drop(k, step.index, cache.h)
            step.head_in = inp
            j = t - (n - r)  # the pending steps' targets; none kept before them (never read)
            for key in ("out", "y", "w"):
                pending = d[f"pending/{key}"]
                setattr(
                    step,
                    key,
                    pending[j].copy() if j >= 0 else np.zeros(pending.shape[1:], pending.dtype),
                )
            history.append(step)
        return history

    # ---- forward -----------------------------------------------------------------------------
    def _zero_state(self, B):
        zeros = lambda: np.zeros((B, self.spec.hidden_size), self.dtype)  # noqa: E731
        self._state = [tuple(zeros() for _ in self.cell.STATE) for _ in range(self.spec.num_layers)]

    def _step(self, x_t, tokens, y_t, w_t, reset):
        """Forward one step of every stream and remember it. reset: (B,) bool or None."""
        P = self.spec.parameter_views
        step = _Step()
        step.index, self._steps = self._steps, self._steps + 1
        step.reset = reset if reset is not None and reset.any() else None
        assert self._state is not None  # train() zeroes it before the first step
        step.layers = []
        inp = x_t
        for k in range(self.spec.num_layers):
            prev = self._state[k]
            if step.reset is not None:  # zero the reset streams' state (new arrays: the old
                keep = ~step.reset[:, None]  # ones are still held by the previous step's record)
                prev = tuple(np.where(keep, a, 0) for a in prev)
            cache = self.cell.forward(P, k, inp, tokens and k == 0, prev)
            step.layers.append(cache)
            self._state[k] = tuple(getattr(cache, name) for name in self.cell.STATE)
            inp = self._drop(k, step.index, cache.h)
        step.head_in = inp
        step.out = _head(P, inp)
        step.y, step.w = y_t, w_t
        self._history.append(step)
        self._pending += 1

    def _drop(self, k, index, a):
        """a (B, H), layer k's output (or its gradient) at step `index`, through layer k's
        dropout: a itself, not a copy, when that dropout is off."""
        p = self._dropout[k]
        if p == 0:
            return a
        return a * dropout_mask(
            p,
            self.seed,
            k,
            index,
            a.shape[0],
            self.spec.hidden_size,
            self.dtype,
            self._stream_offset,
        )

    # ---- update ------------------------------------------------------------------------------
    def _update(self):
        """The update over the r pending steps, in phases, each one job (as Engine::update):
        (rerun_stale_window, recompute only) -> backward (the un-normalised gradient, Σ w·loss
        and Σ w, in one buffer) -> reduce (data-parallel: the sum of that buffer over the
        processes) -> apply (normalise, check, clip, optimiser step) -> after_apply (horizon;
        recompute: rerun the steps the next update reads). Returns the loss, or None when no
        pending position carries loss (on any process)."""
        r, self._pending = self._pending, 0
        self._updates += 1
        steps = list(self._history)  # oldest ... newest; the pending steps are the r newest
        window = min(self.k2, len(steps))  # the history starts after a divergence (_drop_pending)
        if self.recompute and steps[-window].index < self._fresh_from:  # phase 0: older weights'
            self._rerun(steps, window)
        weight = float(np.sum([s.w for s in steps[len(steps) - r :]], dtype=np.float64))
        if self._reduce is None and weight == 0:
            return None  # counts as an update, but no optimiser step
        scale = self._backward(steps, r, weight)
        if self._reduce is not None:
            try:
                self._reduce()
            except BaseException:
                self._drop_pending()
                raise
        loss_sum, weight_sum = self._buffer[-2:]
        if weight_sum == 0:
            return None
        self._last_weight_sum = float(weight_sum) / scale
        loss = self._apply(loss_sum, weight_sum)
        self._after_apply(steps, float(weight_sum))
        return loss

    def _after_apply(self, steps, weight_sum):
        """The update's share of the horizon; recompute: the steps the next update's window
        reads, from the one whose state enters it (k2 - k1 + 1 of them), rerun with the new
        weights (none when k2 <= k1)."""
        self._add_to_horizon(min(self.k2, len(steps)), weight_sum)
        self._fresh_from = self._steps
        if self.recompute and self.k2 > self.k1:
            self._rerun(steps, min(self.k2 - self.k1 + 1, len(steps)))

    def _rerun(self, steps, window):
        """The forward over the `window` newest steps again, oldest first, with the current
        weights: from the state that entered the oldest as stored (its resets applied), with the
        steps' own inputs, resets and dropout masks. Replaces each step's caches, head input and
        output (new arrays: `train`'s outputs keep the first forward's), and the carried state."""
        P, L = self.spec.parameter_views, self.spec.num_layers
        state = None  # per layer, the state leaving the step rerun last
        for s in steps[len(steps) - window :]:
            inp, layers = s.layers[0].inp, []
            for k in range(L):
                if state is None:  # the oldest step: the stored state entering it
                    prev = tuple(getattr(s.layers[k], f"{name}_prev") for name in self.cell.STATE)
                elif s.reset is not None:
                    prev = tuple(np.where(~s.reset[:, None], a, 0) for a in state[k])
                else:
                    prev = state[k]
                cache = self.cell.forward(P, k, inp, s.layers[k].tokens, prev)
                layers.append(cache)
                inp = self._drop(k, s.index, cache.h)
            s.layers, s.head_in, s.out = layers, inp, _head(P, inp)
            state = [tuple(getattr(c, name) for name in self.cell.STATE) for c in layers]
        self._state = state
        self._fresh_from = steps[len(steps) - window].index

    def _backward(self, steps, r, weight):
        """Phase 1: into the buffer, the gradient of s·Σ w·loss, then s·Σ w·loss and s·Σ w. s is
        a power of two (exact: the normalised result does not depend on it) near 1 / Σ w, chosen
        from a weight sum every process knows: `weight` (this update's own) with one process, the
        last update's global Σ w when data-parallel. Returns s."""
        known = weight if self._reduce is None else self._last_weight_sum
        info = np.finfo(self.dtype)
        exponent = int(np.clip(np.frexp(known)[1], info.minexp + 1, info.maxexp - 1))
        scale = math.ldexp(1.0, -exponent)
        grad, sums = self._buffer[:-2], self._buffer[-2:]
        grad[...] = 0
        sums[...] = 0
        if weight > 0:  # else no loss here: the gradient is zero
            loss_sum, weight_sum, douts = self._loss(steps[len(steps) - r :], scale)
            sums[...] = loss_sum, weight_sum
            self._backward_window(steps, douts, self._views(grad))
        return scale

    def _apply(self, loss_sum, weight_sum):
        """Phase 3, from the (reduced) buffer, Σ w > 0: normalise by Σ w, check, clip, optimiser
        step. Returns the loss."""
        grad = self._buffer[:-2]
        loss = loss_sum / weight_sum
        grad /= weight_sum
        if not np.isfinite(loss):
            self._diverge(f"the loss is {float(loss)}")
        if not np.isfinite(grad).all():
            G = self._views(grad)
            bad = next(name for name, g in G.items() if not np.isfinite(g).all())
            self._diverge(f"the gradient of {bad!r} is not finite")
        if self.clip_norm is not None:
            grad = self._clip(grad)
        self._optimizer_step(grad)
        return float(loss)

    def _views(self, flat):
        """Named views into a flat vector laid out like model.flat_parameters (state_dict order)."""
        views, offset = {}, 0
        for name, p in self.spec.parameter_views.items():
            views[name] = flat[offset : offset + p.size].reshape(p.shape)
            offset += p.size
        assert offset == flat.size
        return views

    def _loss(self, loss_steps, scale):
        """The un-normalised loss s·Σ_{s,b} w_sb loss_sb and s·Σ w (MSE: loss_sb = mean over O of
        (out - y)^2; cross-entropy: loss_sb = -log softmax(out)[y]); positions with w = 0 are
        left out. Returns both sums and d(s·Σ w·loss)/d out for each loss step, (B, O)."""
        loss, total = self.dtype.type(0), self.dtype.type(0)
        douts = []
        for s in loss_steps:
            carries = s.w > 0
            per_position, dout = loss_terms(s.out, s.y, self.loss)
            weight = s.w * self.dtype.type(scale)
            total = total + np.sum(weight)
            loss = loss + np.sum(np.where(carries, weight * per_position, 0))
            douts.append(np.where(carries[:, None], weight[:, None] * dout, 0))
        return loss, total, douts

    def _backward_window(self, steps, douts, G):
        """Add dL/dθ into G. douts belong to the len(douts) newest steps. The window is the
        min(k2, len(steps)) newest steps; the state entering it is a constant."""
        P, L = self.spec.parameter_views, self.spec.num_layers
        n, r = len(steps), len(douts)

        # The head sees every loss term, also those before the window (k2 < k1).
        for s, dout in zip(steps[n - r :], douts):
            G["head.weight"] += dout.T @ s.head_in
            G["head.bias"] += dout.sum(axis=0)

        # Backpropagation through the window, newest step first. d_next[k]: per name in the
        # cell's STATE (h first), the gradient w.r.t. layer k's state leaving the step being
        # processed, from the step after it.
        window = min(self.k2, n)
        B, H = steps[-1].out.shape[0], self.spec.hidden_size
        # this update's Σ (dL/dh)² ([0]) and Σ (dL/dc)² ([1], cells with a c only)
        squares = self._horizon_squares = np.zeros((2, L, self.k2))
        d_next = [tuple(np.zeros((B, H), self.dtype) for _ in self.cell.STATE) for _ in range(L)]
        for j in range(window):  # j = 0 is the newest step
            s = steps[n - 1 - j]
            need_prev = j < window - 1  # the oldest step's incoming state is a constant
            from_above = douts[r - 1 - j] @ P["head.weight"] if j < r else None
            for k in reversed(range(L)):
                d_state = d_next[k]
                if from_above is not None:  # h feeds the layer above (or the head) too,
                    from_above = self._drop(k, s.index, from_above)  # through its dropout
                    d_state = (d_state[0] + from_above,) + d_state[1:]
                from_above, d_next[k], d_total = self.cell.backward(
                    P, G, k, s.layers[k], d_state, need_prev
                )
                for i, d in enumerate(d_total):
                    squares[i, k, j] = np.sum(np.square(d, dtype=np.float64))
            if need_prev and s.reset is not None:  # no gradient crosses a reset
                for k in range(L):
                    for d in d_next[k]:
                        d[s.reset] = 0

    def _add_to_horizon(self, window, weight_sum):
        """Fold the update just made (its window reached `window` steps back) into the horizon:
        the norms of the normalised loss's gradient (the squares are of the buffer's, not yet
        divided by `weight_sum`)."""
        if self._horizon_sums is None:
            self._horizon_sums = np.zeros((2, self.spec.num_layers, self.k2))
            self._horizon_updates = np.zeros(self.k2, dtype=np.int64)
        assert self._horizon_updates is not None and self._horizon_squares is not None
        norms = np.sqrt(self._horizon_squares[:, :, :window]) / weight_sum
        self._horizon_sums[:, :, :window] += norms
        self._horizon_updates[:window] += 1

    def _drop_pending(self):
        """A failed update: drop its steps, forget the history, zero every stream."""
        self._history.clear()
        self._fresh_from = self._steps
        assert self._state is not None  # an update was under way
        self._zero_state(self._state[0][0].shape[0])
        self._reset_next = False
        self._pending = 0

    def _diverge(self, what):
        """Drop the failed update's steps (see _drop_pending) and raise."""
        self._drop_pending()
        raise FloatingPointError(
            f"update {self._updates} diverged: {what}. It was not applied: the parameters and "
            f"optimiser state are those of the last good update, its steps were dropped and every "
            f"stream's state was reset to zeros. Lower the learning rate or set clip_norm."
        )

    # ---- clipping and optimisers -------------------------------------------------------------
    def _clip(self, grad):
        """As torch.nn.utils.clip_grad_norm_: every gradient scaled by clip / (||g|| + 1e-6) if
        < 1. A new array: the buffer keeps the gradient before clipping (`gradient()`)."""
        total = np.sqrt(np.dot(grad, grad))
        coef = self.dtype.type(self.clip_norm) / (total + self.dtype.type(1e-6))
        return grad * coef if coef < 1 else grad

    def _optimizer_step(self, grad):
        p, opt = self.spec.flat_parameters, self.opt
        self._optimizer_steps += 1
        if opt["name"] == "sgd":  # as torch.optim.SGD(lr, momentum, weight_decay), no nesterov
            step = grad
            if opt.get("weight_decay", 0.0) != 0:  # L2: part of the gradient the step sees
                step = grad + opt["weight_decay"] * p
            if opt["momentum"] != 0:
                if self._momentum_buffer is None:
                    self._momentum_buffer = step.copy()
                else:
                    self._momentum_buffer *= opt["momentum"]
                    self._momentum_buffer += step
                step = self._momentum_buffer
            p -= opt["lr"] * step
        elif opt["name"] in ("adam", "adamw"):  # as torch.optim.Adam / AdamW(lr, betas, eps, wd)
            if opt["name"] == "adamw":  # decoupled: shrink the parameters, then Adam's step
                p *= 1 - opt["lr"] * opt["weight_decay"]
            b1, b2 = opt["betas"]
            m, v = self._adam_m, self._adam_v
            m *= b1
            m += (1 - b1) * grad
            v *= b2
            v += (1 - b2) * grad * grad
            bias_correction1 = 1 - b1**self._optimizer_steps
            bias_correction2 = 1 - b2**self._optimizer_steps
            denom = np.sqrt(v) / math.sqrt(bias_correction2) + opt["eps"]
            p -= (opt["lr"] / bias_correction1) * (m / denom)
        else:
            raise ValueError(f"unknown optimizer {opt['name']!r}")
