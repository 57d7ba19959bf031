"""The cells' facts, in one table: every other place that needs one derives it from `CELLS`.

The model (parameter names and shapes, state), the size checks (`_sizes`), the engine snapshot's
schema (`_snapshot`), the C++ engine's adapter (`engine`), the NumPy reference's cells and the
benchmark read it; the C++ core has the same facts in each cell's `CellTraits`
(csrc/cells/cell.h), and tests/test_cells.py checks this table against the core's
`cell_traits(name)` for every cell. Adding a cell: docs/cells.md, "How to add a fourth cell".

Legend: H = hidden size, L = layers, B = streams.
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Tuple


class CellSpec(NamedTuple):
    """One cell. `prefix` and `gates` come first: `CELLS[name][0]` and `[1]` are those two."""

    prefix: str  # torch's attribute of the recurrent module: the parameter
    # names' prefix (`lstm.weight_ih_l0`)
    gates: int  # gate rows per hidden unit in weight_ih / weight_hh / biases
    gate_names: Tuple[str, ...]  # those blocks of H rows, in order (len = gates)
    extra_names: Tuple[str, ...]  # values per unit a step keeps besides the gates and h (GRU: hn)
    state: Tuple[str, ...]  # the state tensors it carries, each (L, B, H): h, then the rest
    keeps_gates: bool  # backward reads the activated gates (else h alone: the RNN)
    separate_recurrence: bool  # W_hh h + b_hh is kept apart from the input projection (GRU)
    model: str  # the model's config()["cell"]: "lstm", "gru", "rnn"
    torch_module: str  # torch.nn's class of the recurrent module
    title: str  # how messages name it

    @property
    def extra(self) -> int:
        """Values per hidden unit a step keeps besides the gates, h and the carried state."""
        return len(self.extra_names)

    @property
    def carried(self) -> int:
        """State tensors besides h (the LSTM's c: 1)."""
        return len(self.state) - 1

    @property
    def window_values(self) -> int:
        """Values per hidden unit, layer, stream and step in the C++ engine's window
        (csrc/window.h): the gates, the extra values, the carried state and h."""
        return self.gates + self.extra + self.carried + 1

    @property
    def snapshot_gates(self) -> Tuple[str, ...]:
        """The names of what the shared snapshot's window/gates holds, H values each, in the order
        the C++ engine stores them (gates, then extra); empty if backward needs h alone."""
        return self.gate_names + self.extra_names if self.keeps_gates else ()

    def core_traits(self) -> Dict[str, object]:
        """The C++ core's CellTraits of this cell, as `_core.cell_traits(name)` returns them."""
        return {
            "gates": self.gates,
            "extra": self.extra,
            "carried": self.carried,
            "separate_recurrence": self.separate_recurrence,
            "keeps_gates": self.keeps_gates,
        }


# The engines' names (`model.cell`) -> the cell.
CELLS: Dict[str, CellSpec] = {
    "lstm": CellSpec(
        "lstm",
        4,
        ("i", "f", "g", "o"),
        (),
        ("h", "c"),
        keeps_gates=True,
        separate_recurrence=False,
        model="lstm",
        torch_module="LSTM",
        title="tbptt.LSTM",
    ),
    "gru": CellSpec(
        "gru",
        3,
        ("r", "z", "n"),
        ("hn",),
        ("h",),
        keeps_gates=True,
        separate_recurrence=True,
        model="gru",
        torch_module="GRU",
        title="tbptt.GRU",
    ),
    "rnn_tanh": CellSpec(
        "rnn",
        1,
        ("a",),
        (),
        ("h",),
        keeps_gates=False,
        separate_recurrence=False,
        model="rnn",
        torch_module="RNN",
        title="tbptt.RNN (tanh)",
    ),
    "rnn_relu": CellSpec(
        "rnn",
        1,
        ("a",),
        (),
        ("h",),
        keeps_gates=False,
        separate_recurrence=False,
        model="rnn",
        torch_module="RNN",
        title="tbptt.RNN (relu)",
    ),
}

for _name, _spec in CELLS.items():  # what the table must hold, checked once at import
    assert len(_spec.gate_names) == _spec.gates and _spec.state[0] == "h", _name
