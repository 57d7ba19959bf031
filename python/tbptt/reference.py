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

import numpy as np

__all__ = ["ReferenceEngine", "forward", "LSTMCell", "GRUCell", "RNNCell", "cell_of"]


# ---- what every cell shares: the two affine maps of a layer ------------------------------------

def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class _Cache:
    """What the backward pass needs from one layer at one step: the layer's input `inp`
    ((B, I or H) floats, or (B,) token ids when `tokens`) and the cell's CACHE fields, each (B, H)."""


def _weights(P, prefix, k):
    return (P[f"{prefix}.weight_ih_l{k}"], P[f"{prefix}.weight_hh_l{k}"],
            P[f"{prefix}.bias_ih_l{k}"], P[f"{prefix}.bias_hh_l{k}"])


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
        np.add.at(G[f"{prefix}.weight_ih_l{k}"].T, cache.inp, d_a)  # row `id` of W_ih^T; repeats add up
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

    prefix = "lstm"
    STATE = ("h", "c")
    CACHE = ("h_prev", "c_prev", "i", "f", "g", "o", "c", "tanh_c", "h")

    def forward(self, P, k, inp, tokens, prev):
        W_ih, W_hh, b_ih, b_hh = _weights(P, self.prefix, k)
        h_prev, c_prev = prev
        z = _input_part(W_ih, inp, tokens) + h_prev @ W_hh.T + (b_ih + b_hh)   # (B, 4H)
        H = h_prev.shape[1]
        cache = _Cache()
        cache.inp, cache.tokens, cache.h_prev, cache.c_prev = inp, tokens, h_prev, c_prev
        cache.i = _sigmoid(z[:, 0 * H:1 * H])
        cache.f = _sigmoid(z[:, 1 * H:2 * H])
        cache.g = np.tanh(z[:, 2 * H:3 * H])
        cache.o = _sigmoid(z[:, 3 * H:4 * H])
        cache.c = cache.f * c_prev + cache.i * cache.g
        cache.tanh_c = np.tanh(cache.c)
        cache.h = cache.o * cache.tanh_c
        return cache

    def backward(self, P, G, k, cache, d_state, need_prev):
        dh, dc = d_state
        i, f, g, o, tanh_c = cache.i, cache.f, cache.g, cache.o, cache.tanh_c
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)      # h_t = o * tanh(c_t)
        do = dh * tanh_c
        di = dc * g                                     # c_t = f * c_{t-1} + i * g
        df = dc * cache.c_prev
        dg = dc * i
        dz = np.concatenate([di * i * (1.0 - i),        # through the activations: sigmoid' = s (1 - s),
                             df * f * (1.0 - f),        # tanh' = 1 - tanh^2
                             dg * (1.0 - g * g),
                             do * o * (1.0 - o)], axis=1)   # (B, 4H)
        d_inp, dh_prev = _affine_backward(P, G, self.prefix, k, cache, dz, dz, need_prev)
        d_prev = (dh_prev, dc * f) if need_prev else None
        return d_inp, d_prev, (dh, dc)


class GRUCell:
    """torch's nn.GRU layer: gates (r, z, n), state h."""

    prefix = "gru"
    STATE = ("h",)
    CACHE = ("h_prev", "r", "z", "n", "hn", "h")   # hn = W_hn h_prev + b_hn, the reset gate's operand

    def forward(self, P, k, inp, tokens, prev):
        W_ih, W_hh, b_ih, b_hh = _weights(P, self.prefix, k)
        (h_prev,) = prev
        a = _input_part(W_ih, inp, tokens) + b_ih       # (B, 3H)
        b = h_prev @ W_hh.T + b_hh                      # (B, 3H)
        H = h_prev.shape[1]
        cache = _Cache()
        cache.inp, cache.tokens, cache.h_prev = inp, tokens, h_prev
        cache.r = _sigmoid(a[:, 0 * H:1 * H] + b[:, 0 * H:1 * H])
        cache.z = _sigmoid(a[:, 1 * H:2 * H] + b[:, 1 * H:2 * H])
        cache.hn = b[:, 2 * H:3 * H]
        cache.n = np.tanh(a[:, 2 * H:3 * H] + cache.r * cache.hn)
        cache.h = (1.0 - cache.z) * cache.n + cache.z * h_prev
        return cache

    def backward(self, P, G, k, cache, d_state, need_prev):
        (dh,) = d_state
        r, z, n = cache.r, cache.z, cache.n
        dn = dh * (1.0 - z)                             # h_t = (1 - z) n + z h_{t-1}
        dz = dh * (cache.h_prev - n)
        da_n = dn * (1.0 - n * n)                       # n = tanh(a_n + r * hn)
        dr = da_n * cache.hn
        da_r = dr * r * (1.0 - r)
        da_z = dz * z * (1.0 - z)
        d_a = np.concatenate([da_r, da_z, da_n], axis=1)            # (B, 3H)
        d_b = np.concatenate([da_r, da_z, da_n * r], axis=1)        # hn enters through r * hn
        d_inp, dh_prev = _affine_backward(P, G, self.prefix, k, cache, d_a, d_b, need_prev)
        d_prev = (dh_prev + dh * z,) if need_prev else None
        return d_inp, d_prev, (dh,)


class RNNCell:
    """torch's nn.RNN layer (Elman): h_t = act(W_ih x + b_ih + W_hh h_{t-1} + b_hh), state h."""

    prefix = "rnn"
    STATE = ("h",)
    CACHE = ("h_prev", "h")   # act' is read off h: tanh' = 1 - h^2, relu' = [h > 0]

    def __init__(self, nonlinearity):
        self.nonlinearity = nonlinearity   # "tanh" or "relu"

    def forward(self, P, k, inp, tokens, prev):
        W_ih, W_hh, b_ih, b_hh = _weights(P, self.prefix, k)
        (h_prev,) = prev
        a = _input_part(W_ih, inp, tokens) + h_prev @ W_hh.T + (b_ih + b_hh)   # (B, H)
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


_CELLS = {"lstm": LSTMCell(), "gru": GRUCell(), "rnn_tanh": RNNCell("tanh"),
          "rnn_relu": RNNCell("relu")}


def cell_of(model):
    """The reference cell of `model` (its `cell` attribute: "lstm", "gru", "rnn_tanh", "rnn_relu")."""
    try:
        return _CELLS[model.cell]
    except KeyError:
        raise ValueError(f"model.cell must be one of {tuple(_CELLS)}, got {model.cell!r}") from None


def _head(P, h_top):
    return h_top @ P["head.weight"].T + P["head.bias"]


# ---- forward only ------------------------------------------------------------------------------

def forward(model, x, tokens, state):
    """Run `model` over x (T, B, I), or (T, B) token ids when `tokens`, from `state`: a tuple
    with one (L, B, H) array per name in the cell's STATE ((h0, c0) for an LSTM, (h0,) else).
    No resets. Returns outputs (T, B, O) and the final state, a tuple like `state`."""
    cell, P, L = cell_of(model), model._params, model.num_layers
    T, B = x.shape[0], x.shape[1]
    layers = [tuple(np.array(part[k], dtype=model.dtype) for part in state) for k in range(L)]
    outputs = np.empty((T, B, model.output_size), dtype=model.dtype)
    with np.errstate(all="ignore"):
        for t in range(T):
            inp = x[t]
            for k in range(L):
                cache = cell.forward(P, k, inp, tokens and k == 0, layers[k])
                layers[k] = tuple(getattr(cache, name) for name in cell.STATE)
                inp = cache.h
            outputs[t] = _head(P, inp)
    return outputs, tuple(np.stack([layer[i] for layer in layers]) for i in range(len(cell.STATE)))


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
        key = _mix(np.array([seed], np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(layer + 1))
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


class ReferenceEngine:
    """TBPTT(k1, k2) in NumPy; the `backend="numpy"` engine behind `tbptt.Trainer`.

    Keeps the activations of the last max(k1, k2) steps (each step's record also holds the state
    that entered it), the carried state (the cell's STATE: (h, c) or h) and the optimiser state.
    Updates `model._flat` in place.
    """

    def __init__(self, model, k1, k2, loss, optimizer, clip_norm, seed=0):
        self.model = model
        self.cell = cell_of(model)
        self.seed = int(seed)
        # dropout on each layer's output as the layer above (the head, for the top) reads it
        L = model.num_layers
        self._dropout = [model.dropout] * (L - 1) + [model.head_dropout]
        self._steps = 0           # steps processed since training began (the masks' counter)
        self.k1, self.k2 = int(k1), int(k2)
        self.loss = loss
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.opt = dict(optimizer)
        self.dtype = model.dtype
        self._history = collections.deque(maxlen=max(self.k1, self.k2))
        self._state = None        # carried state: per layer, a tuple of (B, H) arrays, one per
                                  # name in cell.STATE; None before train
        self._reset_next = False  # reset_state() was called: zero every stream at the next step
        self._pending = 0
        self._updates = 0
        # optimiser state, flat like model._flat
        self._momentum_buffer = None             # SGD
        self._adam_step = 0                      # Adam
        self._adam_m = np.zeros_like(model._flat)
        self._adam_v = np.zeros_like(model._flat)
        # the gradient horizon: sums over updates of ||dL/dh||, ||dL/dc|| per layer and step back
        self._horizon_sums = None                # (2, L, k2) float64; None until an update adds
        self._horizon_updates = None             # (k2,) int64: updates whose window reached j back
        self._horizon_squares = None             # (2, L, k2) of the update being made
        # the update's buffer [gradient (P,), Σ w·loss, Σ w] (one all-reduce when data-parallel)
        self._buffer = np.zeros(model._flat.size + 2, self.dtype)
        self._reduce = None                      # data-parallel: sums the buffer over processes
        self._last_weight_sum = 0.0              # the last update's global Σ w (see _backward_...)

    # ---- public ------------------------------------------------------------------------------
    @property
    def pending_steps(self):
        return self._pending

    @property
    def updates(self):
        return self._updates

    def set_lr(self, lr):
        self.opt["lr"] = float(lr)

    def reset_state(self):
        self._reset_next = True

    def set_reduce(self, reduce):
        """Data-parallel training: `reduce()` replaces reduce_buffer() by its sum over the
        processes, between backward and step of every update; None for one process."""
        self._reduce = reduce

    def reduce_buffer(self):
        """The update's buffer [gradient (P,), Σ w·loss, Σ w], the array itself (no copy)."""
        return self._buffer

    def horizon(self):
        """(sums, updates) as the C++ engine returns them: sums (2, L, k2) float64, the sum over
        updates of ||dL/dh_{t-j}|| ([0]) and ||dL/dc_{t-j}|| ([1], zeros for cells without c) of
        every layer (Frobenius over all streams), for j = 0 .. k2-1 steps back from each update's
        newest step t; updates (k2,) int64, how many updates' windows reached j steps back.
        Updates that made no optimiser step (no loss, or diverged) are not counted. Before any
        counted update (or after `reset_horizon()`) both are empty: (2, L, 0) and (0,)."""
        if self._horizon_sums is None:
            return (np.zeros((2, self.model.num_layers, 0)), np.zeros(0, dtype=np.int64))
        return self._horizon_sums.copy(), self._horizon_updates.copy()

    def reset_horizon(self):
        self._horizon_sums = self._horizon_updates = None

    def state(self):
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
        return tuple(np.stack([layer[i] for layer in self._state])
                     for i in range(len(self.cell.STATE)))

    def train(self, x, tokens, y, mask, resets, outputs=None):
        """outputs: None, or a (T, B, O) array that receives each step's head outputs as the
        forward pass computed them (before the update that uses the step's target)."""
        T, B = x.shape[0], x.shape[1]
        if self._state is None:
            self._zero_state(B)
        losses = []
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
                        error.losses = np.asarray(losses, dtype=np.float64)  # applied before it
                        raise
                    if loss is not None:
                        losses.append(loss)
        return losses

    def peek(self, x, tokens, outputs):
        """The next step's outputs for x, (B, I) features or (B,) token ids, into `outputs`
        (B, O): one step forward from the carried state, nothing stored or advanced."""
        if self._state is None:
            self._zero_state(x.shape[0])
        P, inp = self.model._params, x
        with np.errstate(all="ignore"):
            for k in range(self.model.num_layers):
                prev = self._state[k]
                if self._reset_next:
                    prev = tuple(np.zeros_like(a) for a in prev)
                inp = self.cell.forward(P, k, inp, tokens and k == 0, prev).h
            outputs[...] = _head(P, inp)

    def flush(self):
        if self._pending == 0:
            return None
        with np.errstate(all="ignore"):
            return self._update()

    # ---- checkpoints -------------------------------------------------------------------------
    # The engine's state as a flat dict of plain arrays (no objects: checkpoints are .npz files
    # read with allow_pickle=False). n = steps held in the history (<= max(k1, k2)).
    #   counters            int64 [num_streams B (0 before train), tokens, pending, updates,
    #                              reset_next, adam_step, has_momentum, n, steps since training
    #                              began] (files from before dropout have no last entry)
    #   state/<name>        (L, B, H) the carried state, for each name in the cell's STATE
    #                       (LSTM: state/h, state/c; GRU, RNN: state/h)
    #   history/x           (n, B, I) layer-0 inputs, or (n, B) int64 token ids
    #   history/<field>     (n, L, B, H) for each field in the cell's CACHE, every layer
    #                       (LSTM: h_prev c_prev i f g o c tanh_c h; GRU: h_prev r z n hn h;
    #                       RNN: h_prev h)
    #   history/reset       (n, B) bool (all False: no reset before that step)
    #   history/out         (n, B, O); history/y (n, B, O) or (n, B) int64 ids; history/w (n, B)
    #   optimizer/momentum_buffer (P,) (zeros while has_momentum = 0), optimizer/adam_m, adam_v (P,)
    # The LSTM's entries are those of the files written before GRU and RNN existed.
    _COUNTERS = ("num_streams", "tokens", "pending", "updates", "reset_next", "adam_step",
                 "has_momentum", "steps_held", "steps")

    def snapshot(self):
        """Everything the next steps depend on besides the parameters, as {name: ndarray}."""
        L, H, I, O = (self.model.num_layers, self.model.hidden_size, self.model.input_size,
                      self.model.output_size)
        B = 0 if self._state is None else self._state[0][0].shape[0]
        steps = list(self._history)
        n = len(steps)
        tokens = bool(steps and steps[0].layers[0].tokens)
        counters = [B, int(tokens), self._pending, self._updates, int(self._reset_next),
                    self._adam_step, int(self._momentum_buffer is not None), n, self._steps]
        d = {"counters": np.array(counters, dtype=np.int64)}
        parts = (tuple(np.zeros((L, 0, H), self.dtype) for _ in self.cell.STATE)
                 if self._state is None else self._stacked_state())
        for name, part in zip(self.cell.STATE, parts):
            d[f"state/{name}"] = part
        if tokens:
            d["history/x"] = np.array([s.layers[0].inp for s in steps], dtype=np.int64).reshape(n, B)
        else:
            d["history/x"] = np.array([s.layers[0].inp for s in steps], dtype=self.dtype).reshape(n, B, I)
        for field in self.cell.CACHE:
            d[f"history/{field}"] = np.array(
                [[getattr(cache, field) for cache in s.layers] for s in steps],
                dtype=self.dtype).reshape(n, L, B, H)
        d["history/reset"] = np.array(
            [np.zeros(B, bool) if s.reset is None else s.reset for s in steps], dtype=bool).reshape(n, B)
        d["history/out"] = np.array([s.out for s in steps], dtype=self.dtype).reshape(n, B, O)
        if self.loss == "mse":
            d["history/y"] = np.array([s.y for s in steps], dtype=self.dtype).reshape(n, B, O)
        else:
            d["history/y"] = np.array([s.y for s in steps], dtype=np.int64).reshape(n, B)
        d["history/w"] = np.array([s.w for s in steps], dtype=self.dtype).reshape(n, B)
        momentum = self._momentum_buffer
        d["optimizer/momentum_buffer"] = (np.zeros_like(self.model._flat) if momentum is None
                                          else momentum.copy())
        d["optimizer/adam_m"] = self._adam_m.copy()
        d["optimizer/adam_v"] = self._adam_v.copy()
        return d

    def restore(self, state):
        """Take the state `snapshot()` returned (of an engine with the same model, k1, k2, loss and
        optimiser). ValueError naming the entry that does not fit; the engine is unchanged then."""
        arrays = self._entries(state)
        B, tokens, pending, updates, reset_next, adam_step, has_momentum, n, total = (
            self._counters(arrays["counters"]))
        self._check_shapes(arrays, B, bool(tokens), n)
        # Everything fits: rebuild (copies, so the caller's arrays stay theirs).
        self._history = self._rebuilt_history(arrays, bool(tokens), n, total)
        if B == 0:
            self._state = None
        else:
            self._state = [tuple(arrays[f"state/{name}"][k].copy() for name in self.cell.STATE)
                           for k in range(self.model.num_layers)]
        self._pending, self._updates, self._steps = pending, updates, total
        self._reset_next = bool(reset_next)
        self._adam_step = adam_step
        self._momentum_buffer = arrays["optimizer/momentum_buffer"].copy() if has_momentum else None
        self._adam_m = arrays["optimizer/adam_m"].copy()
        self._adam_v = arrays["optimizer/adam_v"].copy()
        self.reset_horizon()  # as the C++ engine: a restored engine starts a fresh horizon

    @staticmethod
    def _fail(what):
        raise ValueError(f"engine state (numpy backend): {what} (a checkpoint of another "
                         f"backend or configuration?)")

    def _entries(self, state) -> dict:
        """restore's `state` as {name: ndarray}, with exactly this cell's entries."""
        fail = self._fail
        if not isinstance(state, dict):
            fail(f"expected a dict of arrays, got {type(state).__name__}")
        expected = _snapshot_entries(self.cell)
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        for other in _CELLS.values():
            if other.prefix != self.cell.prefix and _snapshot_entries(other) == set(state):
                fail(f"it holds the state of a tbptt.{other.prefix.upper()}, not of a "
                     f"tbptt.{self.cell.prefix.upper()}")
        if missing:
            fail(f"missing {missing}" + (f", unexpected {extra}" if extra else ""))
        if extra:
            fail(f"unexpected entries {extra}")
        arrays = {}
        for key in expected:
            value = state[key]
            if not isinstance(value, np.ndarray):
                fail(f"{key!r} is a {type(value).__name__}, not a numpy array")
            arrays[key] = value
        return arrays

    def _counters(self, counters: np.ndarray) -> tuple:
        """The checked counters (see _COUNTERS), as ints."""
        fail = self._fail
        if counters.dtype == np.int64 and counters.shape == (len(self._COUNTERS) - 1,):
            counters = np.append(counters, counters[-1])  # before dropout: only n steps counted
        if counters.dtype != np.int64 or counters.shape != (len(self._COUNTERS),):
            fail(f"'counters' must be int64 of shape ({len(self._COUNTERS)},), got "
                 f"{counters.dtype} {counters.shape}")
        B, tokens, pending, updates, reset_next, adam_step, has_momentum, n, total = (
            int(v) for v in counters)
        if min(B, pending, updates, adam_step, n, total - n) < 0 or tokens not in (0, 1) \
                or reset_next not in (0, 1) or has_momentum not in (0, 1):
            fail(f"'counters' out of range: {dict(zip(self._COUNTERS, counters.tolist()))}")
        capacity = max(self.k1, self.k2)
        if n > capacity:
            fail(f"the history holds {n} steps, more than max(k1, k2) = {capacity}")
        if pending >= self.k1 or pending > n:
            fail(f"{pending} pending steps do not fit k1 = {self.k1} and {n} steps held")
        if B == 0 and (n or pending or updates or reset_next):
            fail("no streams (B = 0) but steps or updates are recorded")
        return B, tokens, pending, updates, reset_next, adam_step, has_momentum, n, total

    def _check_shapes(self, arrays: dict, B: int, tokens: bool, n: int) -> None:
        """Every entry's shape and dtype, and the ids' range, for this model, B and n steps."""
        L, H, I, O = (self.model.num_layers, self.model.hidden_size, self.model.input_size,
                      self.model.output_size)
        P = self.model._flat.size
        shapes = {"history/x": (((n, B), np.int64) if tokens else ((n, B, I), self.dtype)),
                  "history/reset": ((n, B), np.bool_),
                  "history/out": ((n, B, O), self.dtype),
                  "history/y": (((n, B, O), self.dtype) if self.loss == "mse"
                                else ((n, B), np.int64)),
                  "history/w": ((n, B), self.dtype),
                  "optimizer/momentum_buffer": ((P,), self.dtype),
                  "optimizer/adam_m": ((P,), self.dtype), "optimizer/adam_v": ((P,), self.dtype)}
        shapes.update({f"state/{name}": ((L, B, H), self.dtype) for name in self.cell.STATE})
        shapes.update({f"history/{f}": ((n, L, B, H), self.dtype) for f in self.cell.CACHE})
        for key, (shape, dtype) in shapes.items():
            a = arrays[key]
            if a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
                self._fail(f"{key!r} has shape {a.shape} and dtype {a.dtype}, expected shape "
                           f"{tuple(shape)} and dtype {np.dtype(dtype)} for this model, B = {B}, "
                           f"{n} steps held")
        if tokens and n and (arrays["history/x"].min() < 0 or arrays["history/x"].max() >= I):
            self._fail(f"'history/x' holds token ids outside [0, {I})")
        if self.loss != "mse" and n and (arrays["history/y"].min() < 0 or arrays["history/y"].max() >= O):
            self._fail(f"'history/y' holds class ids outside [0, {O})")

    def _rebuilt_history(self, arrays: dict, tokens: bool, n: int, total: int) -> collections.deque:
        """The window of the n steps held, from the snapshot's arrays (copied)."""
        history = collections.deque(maxlen=max(self.k1, self.k2))
        for t in range(n):
            step = _Step()
            step.index = total - n + t
            reset = arrays["history/reset"][t].copy()
            step.reset = reset if reset.any() else None
            step.layers = []
            inp = arrays["history/x"][t].copy()
            for k in range(self.model.num_layers):
                cache = _Cache()
                for field in self.cell.CACHE:
                    setattr(cache, field, arrays[f"history/{field}"][t, k].copy())
                cache.inp, cache.tokens = inp, tokens and k == 0
                step.layers.append(cache)
                inp = self._drop(k, step.index, cache.h)
            step.head_in = inp
            step.out = arrays["history/out"][t].copy()
            step.y = arrays["history/y"][t].copy()
            step.w = arrays["history/w"][t].copy()
            history.append(step)
        return history

    # ---- forward -----------------------------------------------------------------------------
    def _zero_state(self, B):
        zeros = lambda: np.zeros((B, self.model.hidden_size), self.dtype)  # noqa: E731
        self._state = [tuple(zeros() for _ in self.cell.STATE) for _ in range(self.model.num_layers)]

    def _step(self, x_t, tokens, y_t, w_t, reset):
        """Forward one step of every stream and remember it. reset: (B,) bool or None."""
        P = self.model._params
        step = _Step()
        step.index, self._steps = self._steps, self._steps + 1
        step.reset = reset if reset is not None and reset.any() else None
        step.layers = []
        inp = x_t
        for k in range(self.model.num_layers):
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
        return a * dropout_mask(p, self.seed, k, index, a.shape[0], self.model.hidden_size,
                                self.dtype)

    # ---- update ------------------------------------------------------------------------------
    def _update(self):
        """The update over the r pending steps, in phases: backward (the un-normalised gradient,
        Σ w·loss and Σ w, in one buffer) -> reduce (data-parallel: the sum of that buffer over the
        processes) -> step (normalise, check, clip, optimiser step). Returns the loss, or None when
        no pending position carries loss (on any process)."""
        r, self._pending = self._pending, 0
        self._updates += 1
        steps = list(self._history)  # oldest ... newest; the pending steps are the r newest
        weight = float(np.sum([s.w for s in steps[len(steps) - r:]], dtype=np.float64))
        if self._reduce is None and weight == 0:
            return None  # counts as an update, but no optimiser step
        scale = self._backward_unnormalised(steps, r, weight)
        if self._reduce is not None:
            try:
                self._reduce()
            except BaseException:
                self._drop_pending()
                raise
        return self._step_phase(steps, scale)

    def _backward_unnormalised(self, steps, r, weight):
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
            loss_sum, weight_sum, douts = self._loss(steps[len(steps) - r:], scale)
            sums[...] = loss_sum, weight_sum
            self._backward(steps, douts, self._views(grad))
        return scale

    def _step_phase(self, steps, scale):
        """Phase 3, from the (reduced) buffer: normalise by Σ w, check, clip, optimiser step."""
        grad, (loss_sum, weight_sum) = self._buffer[:-2], self._buffer[-2:]
        if weight_sum == 0:
            return None
        self._last_weight_sum = float(weight_sum) / scale
        loss = loss_sum / weight_sum
        grad /= weight_sum
        if not np.isfinite(loss):
            self._diverge(f"the loss is {float(loss)}")
        if not np.isfinite(grad).all():
            G = self._views(grad)
            bad = next(name for name, g in G.items() if not np.isfinite(g).all())
            self._diverge(f"the gradient of {bad!r} is not finite")

        self._add_to_horizon(min(self.k2, len(steps)), float(weight_sum))
        if self.clip_norm is not None:
            self._clip(grad)
        self._optimizer_step(grad)
        return float(loss)

    def _views(self, flat):
        """Named views into a flat vector laid out like model._flat (state_dict order)."""
        views, offset = {}, 0
        for name, p in self.model._params.items():
            views[name] = flat[offset:offset + p.size].reshape(p.shape)
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
            if self.loss == "mse":
                diff = s.out - s.y                                   # (B, O)
                per_position = np.sum(diff * diff, axis=1) / diff.shape[1]
                dout = diff * (2.0 / diff.shape[1])
            else:
                B = s.out.shape[0]
                shifted = s.out - s.out.max(axis=1, keepdims=True)   # stable log-softmax
                log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
                per_position = -log_probs[np.arange(B), s.y]
                dout = np.exp(log_probs)
                dout[np.arange(B), s.y] -= 1.0                       # softmax - onehot(y)
            weight = s.w * self.dtype.type(scale)
            total = total + np.sum(weight)
            loss = loss + np.sum(np.where(carries, weight * per_position, 0))
            douts.append(np.where(carries[:, None], weight[:, None] * dout, 0))
        return loss, total, douts

    def _backward(self, steps, douts, G):
        """Add dL/dθ into G. douts belong to the len(douts) newest steps. The window is the
        min(k2, len(steps)) newest steps; the state entering it is a constant."""
        P, L = self.model._params, self.model.num_layers
        n, r = len(steps), len(douts)

        # The head sees every loss term, also those before the window (k2 < k1).
        for s, dout in zip(steps[n - r:], douts):
            G["head.weight"] += dout.T @ s.head_in
            G["head.bias"] += dout.sum(axis=0)

        # Backpropagation through the window, newest step first. d_next[k]: per name in the
        # cell's STATE (h first), the gradient w.r.t. layer k's state leaving the step being
        # processed, from the step after it.
        window = min(self.k2, n)
        B, H = steps[-1].out.shape[0], self.model.hidden_size
        # this update's Σ (dL/dh)² ([0]) and Σ (dL/dc)² ([1], cells with a c only)
        squares = self._horizon_squares = np.zeros((2, L, self.k2))
        d_next = [tuple(np.zeros((B, H), self.dtype) for _ in self.cell.STATE) for _ in range(L)]
        for j in range(window):                 # j = 0 is the newest step
            s = steps[n - 1 - j]
            need_prev = j < window - 1          # the oldest step's incoming state is a constant
            from_above = douts[r - 1 - j] @ P["head.weight"] if j < r else None
            for k in reversed(range(L)):
                d_state = d_next[k]
                if from_above is not None:      # h feeds the layer above (or the head) too,
                    from_above = self._drop(k, s.index, from_above)  # through its dropout
                    d_state = (d_state[0] + from_above,) + d_state[1:]
                from_above, d_next[k], d_total = self.cell.backward(P, G, k, s.layers[k], d_state,
                                                                    need_prev)
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
            self._horizon_sums = np.zeros((2, self.model.num_layers, self.k2))
            self._horizon_updates = np.zeros(self.k2, dtype=np.int64)
        norms = np.sqrt(self._horizon_squares[:, :, :window]) / weight_sum
        self._horizon_sums[:, :, :window] += norms
        self._horizon_updates[:window] += 1

    def _drop_pending(self):
        """A failed update: drop its steps, forget the history, zero every stream."""
        self._history.clear()
        self._zero_state(self._state[0][0].shape[0])
        self._reset_next = False
        self._pending = 0

    def _diverge(self, what):
        """Drop the failed update's steps (see _drop_pending) and raise."""
        self._drop_pending()
        raise FloatingPointError(
            f"update {self._updates} diverged: {what}. It was not applied: the parameters and "
            f"optimiser state are those of the last good update, its steps were dropped and every "
            f"stream's state was reset to zeros. Lower the learning rate or set clip_norm.")

    # ---- clipping and optimisers -------------------------------------------------------------
    def _clip(self, grad):
        """As torch.nn.utils.clip_grad_norm_: scale every gradient by clip / (||g|| + 1e-6) if < 1."""
        total = np.sqrt(np.dot(grad, grad))
        coef = self.dtype.type(self.clip_norm) / (total + self.dtype.type(1e-6))
        if coef < 1:
            grad *= coef

    def _optimizer_step(self, grad):
        p, opt = self.model._flat, self.opt
        if opt["name"] == "sgd":      # as torch.optim.SGD(lr, momentum, weight_decay), no nesterov
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
            self._adam_step += 1
            m *= b1
            m += (1 - b1) * grad
            v *= b2
            v += (1 - b2) * grad * grad
            bias_correction1 = 1 - b1 ** self._adam_step
            bias_correction2 = 1 - b2 ** self._adam_step
            denom = np.sqrt(v) / math.sqrt(bias_correction2) + opt["eps"]
            p -= (opt["lr"] / bias_correction1) * (m / denom)
        else:
            raise ValueError(f"unknown optimizer {opt['name']!r}")


def _snapshot_entries(cell):
    """The names of the entries of a snapshot of an engine with this cell (see snapshot())."""
    return ({"counters", "history/x", "history/reset", "history/out", "history/y", "history/w",
             "optimizer/momentum_buffer", "optimizer/adam_m", "optimizer/adam_v"}
            | {f"state/{name}" for name in cell.STATE}
            | {f"history/{field}" for field in cell.CACHE})
