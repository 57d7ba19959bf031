"""The models: a stack of recurrent layers (LSTM, GRU or Elman RNN) and a linear head, with
PyTorch's equations and parameter names, and a forward-only `predict`.

Legend used in shapes: T = time steps, B = streams, I = input features, H = hidden size,
L = layers, O = outputs.

All parameters live in one contiguous 1-D array (`flat_parameters`) in `state_dict` order; each
named parameter (`parameter_views`) is a view into it. The engines and the optimisers work on that
flat vector, so the trainer updates the model in place and one global norm covers every gradient.

The three classes differ only in their cell: `cell` names it for the engines ("lstm", "gru",
"rnn_tanh", "rnn_relu") and `STATE` lists the state tensors it carries (LSTM: h and c; GRU and
RNN: h alone).
"""

from __future__ import annotations

import os
import types
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from . import _checks, _files, _pickled, _sizes
from .cells import CELLS
from .engines import BACKENDS, default_backend, forward
from .engines.spec import ModelSpec, parameter_shapes

_DTYPES: Dict[str, Any] = {"float32": np.float32, "float64": np.float64}

NONLINEARITIES = tuple(name[len("rnn_") :] for name, spec in CELLS.items() if spec.model == "rnn")


def _aligned_empty(n, dtype, alignment=64):
    """An empty 1-D array whose data starts on an `alignment`-byte boundary: the C++ engine's
    vectorised loops then split the same way in every run, so identical runs give identical bits."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n * itemsize + alignment, dtype=np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset : offset + n * itemsize].view(dtype)


class Recurrent:
    """What LSTM, GRU and RNN share: a stack of `num_layers` recurrent layers, then a linear head
    on the top layer's h: `y_t = head(h_t)`. Not meant to be built directly."""

    cell: str  # the engines' name of the cell (a key of tbptt.cells.CELLS), set by each subclass

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int = 1,
        dtype: Any = "float32",
        seed: Optional[int] = None,
        dropout: float = 0.0,
        head_dropout: float = 0.0,
    ) -> None:
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
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0 or None, got {seed}")
        # Dropout while training (torch's `dropout`: on every layer's output but the last), and on
        # the top layer's output before the head; masks drawn by the Trainer's seed.
        self.dropout = _checks.finite_float("dropout", dropout, minimum=0.0, below=1.0)
        self.head_dropout = _checks.finite_float(
            "head_dropout", head_dropout, minimum=0.0, below=1.0
        )
        _sizes.check_model(
            self.input_size,
            self.hidden_size,
            self.output_size,
            self.num_layers,
            self.dtype,
            gates=CELLS[self.cell].gates,
        )  # before allocating: a
        # clear error, not NumPy's

        self._shapes = parameter_shapes(
            self.input_size, self.hidden_size, self.output_size, self.num_layers, self.cell
        )
        self._flat = _aligned_empty(sum(int(np.prod(s)) for _, s in self._shapes), self.dtype)
        self._params: Dict[str, np.ndarray] = {}
        offset = 0
        for name, shape in self._shapes:
            size = int(np.prod(shape))
            self._params[name] = self._flat[offset : offset + size].reshape(shape)
            offset += size

        # PyTorch's initialisation: every parameter uniform in (-1/sqrt(H), 1/sqrt(H)).
        bound = 1.0 / np.sqrt(self.hidden_size)
        rng = np.random.default_rng(seed)
        self._flat[:] = rng.uniform(-bound, bound, size=self._flat.size)

    @property
    def STATE(self) -> Tuple[str, ...]:
        """The state tensors the cell carries, each (L, B, H): ("h", "c") or ("h",)."""
        return CELLS[self.cell].state

    @property
    def spec(self) -> ModelSpec:
        """What an engine needs to know of this model (`tbptt.engines.spec.ModelSpec`): its cell,
        sizes, dtype and dropout, and its live parameters (not a copy)."""
        return ModelSpec(
            cell=self.cell,
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            output_size=self.output_size,
            num_layers=self.num_layers,
            dtype=self.dtype,
            dropout=self.dropout,
            head_dropout=self.head_dropout,
            flat_parameters=self._flat,
            parameter_views=types.MappingProxyType(self._params),
        )

    # ---- parameters ---------------------------------------------------------------------------
    @property
    def num_parameters(self) -> int:
        """P, the number of parameters (the length of `flat_parameters`)."""
        return int(self._flat.size)

    @property
    def flat_parameters(self) -> np.ndarray:
        """Every parameter in one contiguous (P,) array of the model's dtype, in `state_dict`
        order: the live array, not a copy. Writing into it (`model.flat_parameters[:] = v`)
        changes the model; the trainer's engine updates it in place."""
        return self._flat

    @property
    def parameter_views(self) -> Mapping[str, np.ndarray]:
        """A read-only mapping from torch's names (`lstm.weight_ih_l0`, ..., `head.bias`) to
        views into `flat_parameters`, with their shapes: live, not copies (see `state_dict`)."""
        return types.MappingProxyType(self._params)

    def config(self) -> Dict[str, Any]:
        """The constructor arguments (without seed) and the class as "cell" ("lstm", "gru",
        "rnn"): enough for `from_config` to rebuild an identical model."""
        return dict(
            cell=type(self).__name__.lower(),
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            output_size=self.output_size,
            num_layers=self.num_layers,
            dtype=self.dtype.name,
            **self._extra_config(),
        )

    def _extra_config(self) -> Dict[str, Any]:
        """The subclass's own arguments, and dropout where it is on (files stay as they were)."""
        extra: Dict[str, Any] = {}
        if self.dropout:
            extra["dropout"] = self.dropout
        if self.head_dropout:
            extra["head_dropout"] = self.head_dropout
        return extra

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters under torch's names (`gru.weight_ih_l0`, ..., `head.bias`)."""
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Copy parameters in; every key must be present with its exact shape (torch tensors work
        too)."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in self._params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self._params]
        if missing:
            raise ValueError(
                f"state_dict is missing key {missing[0]!r} (missing: {missing})"
                + _other_cell_hint(unexpected, type(self).__name__)
            )
        if unexpected:
            raise ValueError(
                f"state_dict has unexpected key {unexpected[0]!r} (unexpected: {unexpected})"
            )
        converted = {}
        for name, target in self._params.items():
            value = state_dict[name]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            value = _checks.numeric_array(f"state_dict[{name!r}]", value)
            if value.shape != target.shape:
                raise ValueError(
                    f"state_dict[{name!r}] has shape {value.shape}, expected {target.shape}"
                )
            value = _checks._convert(f"state_dict[{name!r}]", value, self.dtype)  # finite in dtype
            converted[name] = value
        for name, value in converted.items():  # all checked first: a bad dict changes nothing
            self._params[name][...] = value

    # ---- state --------------------------------------------------------------------------------
    def _state_parts(self, state, B):
        """The user's `state` (None, (h, c) for an LSTM, h for the others) as a tuple with one
        checked array (L, B, H) per entry of STATE, in the model's dtype."""
        shape = (self.num_layers, B, self.hidden_size)
        if state is None:
            return tuple(np.zeros(shape, self.dtype) for _ in self.STATE)
        if len(self.STATE) > 1:
            names = ", ".join(self.STATE)
            if not isinstance(state, (tuple, list)) or len(state) != len(self.STATE):
                raise TypeError(
                    f"state of tbptt.{type(self).__name__} must be a tuple ({names}), "
                    f"each {shape}; got {_describe(state)}"
                )
            return tuple(
                _checks.float_array(f"state[{i}] ({name})", part, self.dtype, shape)
                for i, (name, part) in enumerate(zip(self.STATE, state))
            )
        if isinstance(state, (tuple, list)):
            raise TypeError(
                f"state of tbptt.{type(self).__name__} is h alone, an array {shape} "
                f"(only an LSTM's state is a tuple (h, c)); got {_describe(state)}"
            )
        return (_checks.float_array("state (h)", state, self.dtype, shape),)

    def _user_state(self, parts):
        """The state as users see it: (h, c) for an LSTM, h for a GRU or RNN."""
        return tuple(parts) if len(self.STATE) > 1 else parts[0]

    # ---- forward ------------------------------------------------------------------------------
    def predict(
        self, x: Any, state: Any = None, backend: Optional[str] = None
    ) -> Tuple[np.ndarray, Any]:
        """Run the model forward over `x` from `state` (zeros if None).

        x: (T, B, I) features, or (T, B) integer token ids in [0, input_size). Time-major: a
            batch-first (B, T, I) array is taken as B steps of T streams without an error (pass
            x.swapaxes(0, 1)); with a `state`, whose B is known, the error says so.
        state: LSTM: a tuple (h, c); GRU and RNN: h; each (num_layers, B, H).
        backend: "cpp" (the compiled engine: an ImportError if it does not import, as
            `Trainer(backend="cpp")` raises) or "numpy" (the NumPy reference); None (the default):
            "cpp" where the compiled engine imports, else "numpy". The two give the same outputs
            to rounding.
        Returns outputs (T, B, O) and the final state, of the same kind as `state`.
        """
        backend = default_backend() if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
        x, tokens = _checks.inputs("x", x, self.input_size, self.dtype)
        T, B = x.shape[0], x.shape[1]
        if B == 0:
            raise ValueError("x must have at least one stream: got B = 0 (x.shape[1])")
        try:
            parts = self._state_parts(state, B)
        except ValueError as error:
            first = state[0] if isinstance(state, (tuple, list)) and state else state
            state_B = np.shape(first)[1] if np.ndim(first) == 3 else None
            hint = _checks.batch_first_hint(x.shape, state_B) if state_B is not None else ""
            if not hint:
                raise
            raise ValueError(f"{error}{hint}") from None
        if T == 0:
            return (
                np.zeros((0, B, self.output_size), self.dtype),
                self._user_state([a.copy() for a in parts]),
            )
        outputs, parts = forward(backend, self.spec, x, tokens, parts)
        return outputs, self._user_state(parts)

    # ---- files --------------------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the model to `path` atomically (npz with a JSON header; no pickle)."""
        _files.save_arrays(path, {"kind": "model", "config": self.config()}, self.state_dict())

    # ---- pickle and copy.deepcopy --------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        """The config and the parameters (tbptt._pickled): the unpickled model has its own
        aligned `flat_parameters`, bit for bit these."""
        return _pickled.state("tbptt.model", config=self.config(), parameters=self._flat.copy())

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = _pickled.check(state, "tbptt.model")
        model = from_config(state["config"])
        parameters = state["parameters"]
        if (
            not isinstance(parameters, np.ndarray)
            or parameters.shape != model._flat.shape
            or parameters.dtype != model.dtype
        ):
            raise ValueError(f"the pickled parameters do not fit {model!r}")
        model._flat[:] = parameters
        self.__dict__.update(model.__dict__)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._extra_config().items())
        return (
            f"{type(self).__name__}(input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, output_size={self.output_size}, "
            f"num_layers={self.num_layers}, dtype='{self.dtype.name}'{extra})"
        )


class LSTM(Recurrent):
    """A stack of `num_layers` LSTM layers and a linear head, with PyTorch's equations.

    Gates are stacked (i, f, g, o) in the rows of `weight_ih_l{k}` / `weight_hh_l{k}`:
    `c_t = f * c_{t-1} + i * g`, `h_t = o * tanh(c_t)`, outputs `y_t = head(h_t)` of the top layer.
    `forget_bias` is added to the forget-gate slice [H:2H] of every `bias_ih_l{k}` after the
    initialisation. The state is (h, c).
    """

    cell = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int = 1,
        dtype: Any = "float32",
        seed: Optional[int] = None,
        forget_bias: float = 0.0,
        dropout: float = 0.0,
        head_dropout: float = 0.0,
    ) -> None:
        self.forget_bias = _checks.finite_float("forget_bias", forget_bias)
        super().__init__(
            input_size, hidden_size, output_size, num_layers, dtype, seed, dropout, head_dropout
        )
        H = self.hidden_size
        for k in range(self.num_layers):
            self._params[f"lstm.bias_ih_l{k}"][H : 2 * H] += self.forget_bias

    def _extra_config(self) -> Dict[str, Any]:
        return {"forget_bias": self.forget_bias, **super()._extra_config()}


class GRU(Recurrent):
    """A stack of `num_layers` GRU layers and a linear head, with PyTorch's equations.

    Gates are stacked (r, z, n) in the rows of `weight_ih_l{k}` / `weight_hh_l{k}`:
    `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(W_iz x + b_iz + W_hz h + b_hz)`,
    `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`, `h' = (1 - z) * n + z * h`.
    The state is h alone.
    """

    cell = "gru"


class RNN(Recurrent):
    """A stack of `num_layers` Elman RNN layers and a linear head, with PyTorch's equations:
    `h' = act(W_ih x + b_ih + W_hh h + b_hh)`, act = tanh or relu (`nonlinearity`).
    The state is h alone.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        dtype: Any = "float32",
        seed: Optional[int] = None,
        dropout: float = 0.0,
        head_dropout: float = 0.0,
    ) -> None:
        if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.cell = f"rnn_{nonlinearity}"
        super().__init__(
            input_size, hidden_size, output_size, num_layers, dtype, seed, dropout, head_dropout
        )

    def _extra_config(self) -> Dict[str, Any]:
        return {"nonlinearity": self.nonlinearity, **super()._extra_config()}


MODELS: Dict[str, type] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}  # config()["cell"] -> class


def from_config(config: Mapping[str, Any]) -> Recurrent:
    """The model `config` describes (seeded with None: load the parameters after). A config
    without "cell" (files written before GRU and RNN existed) is an LSTM's."""
    config = dict(config)
    cell = config.pop("cell", "lstm")
    if not isinstance(cell, str) or cell not in MODELS:
        raise ValueError(f"cell must be one of {tuple(MODELS)}, got {cell!r}")
    return MODELS[cell](**config)


def _describe(value):
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}" + (
        f" of shape {value.shape}" if hasattr(value, "shape") else ""
    )


def _other_cell_hint(unexpected, model_name):
    """For a state_dict of another cell: say which model it seems to belong to."""
    owners = {spec.prefix: MODELS[spec.model].__name__ for spec in CELLS.values()}
    prefixes = {k.split(".", 1)[0] for k in unexpected} & set(owners)
    if len(prefixes) != 1:
        return ""
    other = owners[prefixes.pop()]
    return f"; it holds {unexpected[0]!r}: parameters of tbptt.{other}, not of tbptt.{model_name}"


def build(
    cell: str,
    input_size: int,
    hidden_size: int,
    output_size: int,
    num_layers: int = 1,
    dtype: Any = "float32",
    seed: Optional[int] = None,
    forget_bias: float = 1.0,
    dropout: float = 0.0,
) -> Recurrent:
    """A model of the cell named "lstm", "gru" or "rnn" (tanh): what the command line and the
    sweep build. `forget_bias` applies to the LSTM only (the others have no forget gate);
    `dropout` to every layer's output, the top layer's before the head included."""
    if cell not in MODELS:
        raise ValueError(f"cell must be one of {tuple(MODELS)}, got {cell!r}")
    extra = {"forget_bias": forget_bias} if cell == "lstm" else {}
    return MODELS[cell](
        input_size,
        hidden_size,
        output_size,
        num_layers=num_layers,
        dtype=dtype,
        seed=seed,
        dropout=dropout,
        head_dropout=dropout,
        **extra,
    )
