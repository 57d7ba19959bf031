"""The LSTM model: parameters in one flat buffer, torch-compatible names, forward-only predict.

Legend used in shapes: T = time steps, B = streams, I = input features, H = hidden size,
L = layers, O = outputs.

All parameters live in one contiguous 1-D array (`_flat`) in `state_dict` order; each named
parameter is a view into it. The C++ engine and the optimisers work on that flat vector, so
the trainer updates the model in place and one global norm covers every gradient.
"""

from __future__ import annotations

import numpy as np

from . import _checks, _native, _sizes

_DTYPES = {"float32": np.float32, "float64": np.float64}


def parameter_shapes(input_size, hidden_size, output_size, num_layers):
    """[(name, shape)] in torch's `state_dict` order for `lstm = nn.LSTM(I, H, L)`, `head = nn.Linear(H, O)`."""
    shapes = []
    for k in range(num_layers):
        n_in = input_size if k == 0 else hidden_size
        shapes += [
            (f"lstm.weight_ih_l{k}", (4 * hidden_size, n_in)),
            (f"lstm.weight_hh_l{k}", (4 * hidden_size, hidden_size)),
            (f"lstm.bias_ih_l{k}", (4 * hidden_size,)),
            (f"lstm.bias_hh_l{k}", (4 * hidden_size,)),
        ]
    shapes += [("head.weight", (output_size, hidden_size)), ("head.bias", (output_size,))]
    return shapes


def _aligned_empty(n, dtype, alignment=64):
    """An empty 1-D array whose data starts on an `alignment`-byte boundary: the C++ engine's
    vectorised loops then split the same way in every run, so identical runs give identical bits."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n * itemsize + alignment, dtype=np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset:offset + n * itemsize].view(dtype)


class LSTM:
    """A stack of `num_layers` LSTM layers and a linear head, with PyTorch's equations.

    Gates are stacked (i, f, g, o) in the rows of `weight_ih_l{k}` / `weight_hh_l{k}`:
    `c_t = f * c_{t-1} + i * g`, `h_t = o * tanh(c_t)`, outputs `y_t = head(h_t)` of the top layer.
    """

    def __init__(self, input_size, hidden_size, output_size, num_layers=1, dtype="float32",
                 seed=None, forget_bias=0.0):
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.output_size = _checks.positive_int("output_size", output_size)
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        try:
            key = None if dtype is None else np.dtype(dtype).name
        except TypeError:
            key = None
        if key not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = np.dtype(_DTYPES[key])
        self.forget_bias = _checks.finite_float("forget_bias", forget_bias)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0 or None, got {seed}")
        _sizes.check_model(self.input_size, self.hidden_size, self.output_size, self.num_layers,
                           self.dtype)  # before allocating: a clear error, not NumPy's

        self._shapes = parameter_shapes(self.input_size, self.hidden_size, self.output_size,
                                        self.num_layers)
        self._flat = _aligned_empty(sum(int(np.prod(s)) for _, s in self._shapes), self.dtype)
        self._params = {}
        offset = 0
        for name, shape in self._shapes:
            size = int(np.prod(shape))
            self._params[name] = self._flat[offset:offset + size].reshape(shape)
            offset += size

        # PyTorch's initialisation: every parameter uniform in (-1/sqrt(H), 1/sqrt(H)).
        bound = 1.0 / np.sqrt(self.hidden_size)
        rng = np.random.default_rng(seed)
        self._flat[:] = rng.uniform(-bound, bound, size=self._flat.size)
        H = self.hidden_size
        for k in range(self.num_layers):
            self._params[f"lstm.bias_ih_l{k}"][H:2 * H] += self.forget_bias

    # ---- parameters ---------------------------------------------------------------------------
    @property
    def num_parameters(self) -> int:
        return int(self._flat.size)

    def config(self) -> dict:
        """The constructor arguments (without seed), enough to rebuild an identical model."""
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    output_size=self.output_size, num_layers=self.num_layers,
                    dtype=self.dtype.name, forget_bias=self.forget_bias)

    def state_dict(self) -> dict:
        """Copies of the parameters under torch's names (`lstm.weight_ih_l0`, ..., `head.bias`)."""
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict) -> None:
        """Copy parameters in; every key must be present with its exact shape (torch tensors work too)."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in self._params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._params]
        if missing:
            raise ValueError(f"state_dict is missing key {missing[0]!r} (missing: {missing})")
        if unexpected:
            raise ValueError(f"state_dict has unexpected key {unexpected[0]!r} (unexpected: {unexpected})")
        converted = {}
        for name, target in self._params.items():
            value = state_dict[name]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            value = _checks.numeric_array(f"state_dict[{name!r}]", value)
            if value.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] has shape {value.shape}, expected {target.shape}")
            value = _checks._convert(f"state_dict[{name!r}]", value, self.dtype)  # finite in dtype
            converted[name] = value
        for name, value in converted.items():  # all checked first: a bad dict changes nothing
            self._params[name][...] = value

    # ---- forward ------------------------------------------------------------------------------
    def predict(self, x, state=None):
        """Run the model forward over `x` from `state` (zeros if None).

        x: (T, B, I) features, or (T, B) integer token ids in [0, input_size).
        state: (h, c), each (num_layers, B, H).
        Returns outputs (T, B, O) and the final state (h, c), each (num_layers, B, H).
        """
        x, tokens = _checks.inputs("x", x, self.input_size, self.dtype)
        T, B = x.shape[0], x.shape[1]
        if B == 0:
            raise ValueError("x must have at least one stream: got B = 0 (x.shape[1])")
        shape = (self.num_layers, B, self.hidden_size)
        if state is None:
            h0 = np.zeros(shape, self.dtype)
            c0 = np.zeros(shape, self.dtype)
        else:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError("state must be a tuple (h, c)")
            h0 = _checks.float_array("state[0] (h)", state[0], self.dtype, shape)
            c0 = _checks.float_array("state[1] (c)", state[1], self.dtype, shape)
        if T == 0:
            return np.zeros((0, B, self.output_size), self.dtype), (h0.copy(), c0.copy())
        try:
            core = _native.core()
        except ImportError:  # no compiled engine: the NumPy reference computes the same thing
            from .reference import forward
            outputs, h, c = forward(self, x, tokens, h0, c0)
            return outputs, (h, c)
        outputs, h, c = core.predict(self._flat, self.input_size, self.hidden_size, self.output_size,
                                     self.num_layers, x, tokens, h0, c0)
        return outputs, (h, c)

    # ---- files --------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model to `path` atomically (npz with a JSON header; no pickle)."""
        from . import checkpoint
        checkpoint.save_model(self, path)

    def __repr__(self) -> str:
        return (f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"output_size={self.output_size}, num_layers={self.num_layers}, "
                f"dtype='{self.dtype.name}', forget_bias={self.forget_bias})")
