"""What an engine needs to know of a model: `ModelSpec`, the lowest module of the engines.

The engines (the C++ adapter `cpp`, the NumPy `reference`, the snapshot schema and the old files'
conversion) are typed against `ModelSpec`, never against the model classes: those sit above the
engines (`tbptt.model`: `Recurrent.predict` runs one) and each builds its spec
(`Recurrent.spec`). The spec holds the live parameter array, not a copy: an engine updates the
model's parameters in place through it.

Legend used in shapes: I = input features, H = hidden size, L = layers, O = outputs,
P = parameters.
"""

from __future__ import annotations

from typing import List, Mapping, NamedTuple, Tuple

import numpy as np

from ..cells import CELLS


def parameter_shapes(
    input_size: int, hidden_size: int, output_size: int, num_layers: int, cell: str = "lstm"
) -> List[Tuple[str, Tuple[int, ...]]]:
    """[(name, shape)] in torch's `state_dict` order for a module with attributes
    `<prefix> = nn.LSTM | nn.GRU | nn.RNN(I, H, L)` and `head = nn.Linear(H, O)`."""
    prefix, gates = CELLS[cell].prefix, CELLS[cell].gates
    shapes = []
    for k in range(num_layers):
        n_in = input_size if k == 0 else hidden_size
        shapes += [
            (f"{prefix}.weight_ih_l{k}", (gates * hidden_size, n_in)),
            (f"{prefix}.weight_hh_l{k}", (gates * hidden_size, hidden_size)),
            (f"{prefix}.bias_ih_l{k}", (gates * hidden_size,)),
            (f"{prefix}.bias_hh_l{k}", (gates * hidden_size,)),
        ]
    shapes += [("head.weight", (output_size, hidden_size)), ("head.bias", (output_size,))]
    return shapes


class ModelSpec(NamedTuple):
    """A model as the engines see it: its cell, sizes, dtype and dropout, and its parameters.

    cell: the engines' name of the cell, a key of `tbptt.cells.CELLS` ("lstm", "gru",
        "rnn_tanh", "rnn_relu").
    dtype: np.float32 or np.float64, the parameters' and the activations' type.
    dropout: on every layer's output but the top one's; head_dropout: on the top layer's output,
        before the head (both while training only).
    flat_parameters: the live (P,) array of every parameter in `state_dict` order
        (`parameter_shapes`); parameter_views: the named views into it, with their shapes.

    A model (`tbptt.model.Recurrent`) has every one of these attributes under the same name, so
    an engine given the model itself, as older code and tests do, reads the same values."""

    cell: str
    input_size: int
    hidden_size: int
    output_size: int
    num_layers: int
    dtype: np.dtype
    dropout: float
    head_dropout: float
    flat_parameters: np.ndarray
    parameter_views: Mapping[str, np.ndarray]

    @property
    def num_parameters(self) -> int:
        """P, the length of `flat_parameters`."""
        return int(self.flat_parameters.size)

    @property
    def STATE(self) -> Tuple[str, ...]:
        """The state tensors the cell carries, each (L, B, H): ("h", "c") or ("h",)."""
        return CELLS[self.cell].state
