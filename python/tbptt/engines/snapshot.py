"""The engine snapshot: one schema with named fields, spoken by both backends, so a trainer saved
with one resumes with the other (docs/semantics.md, "Checkpoints"). The C++ engine writes and reads
it through its bindings, the NumPy reference holds it as it is; files of older versions are
converted to it once, at load (`tbptt.engines.old_files`).

A snapshot is a dict of named scalars (0-d arrays) and plain arrays (checkpoints are .npz files
read without pickle). Legend: n = steps held (<= max(k1, k2)), the oldest first; r = pending
steps, the r newest held; B = streams (0 before the first call), I, H, L, O as everywhere,
P = parameters; "float" is the model's dtype.

    schema          int64 ()        SCHEMA
    cell            str ()          the model's cell: "lstm", "gru", "rnn_tanh" or "rnn_relu"
    num_streams     int64 ()        B
    tokens          bool ()         layer 0 reads token ids
    steps           int64 ()        time steps since training began
    pending         int64 ()        r
    updates         int64 ()        updates made (those without an optimiser step too)
    reset_next      bool ()         reset_state() was called: every stream starts afresh next
    optimizer_steps int64 ()        optimiser steps taken
    fresh_from      int64 ()        the oldest held step as the current weights compute it
                                    (recompute, docs/semantics.md §3)
    loss_sum        float64 ()      Σ w·loss of the pending steps
    weight_sum      float64 ()      Σ w of the pending steps
    last_weight_sum float64 ()      the last update's Σ w (over every process)
    window/x        (n, B, I) float, or (n, B) int64 token ids: layer 0's inputs
    window/reset    (n, B) bool     the state was zeroed before that step
    window/gates    (n, L, B, K) float: what the backward pass needs of the cell's gates, activated
                                    (tbptt.cells, CellSpec.snapshot_gates):
                                    LSTM (i, f, g, o), GRU (r, z, n, hn = W_hn h + b_hn), K = 4H;
                                    RNN nothing, K = 0 (h alone gives act')
    window/h        (n, L, B, H) float: h leaving each step
    window/c        (n, L, B, C) float: c leaving each step (LSTM, C = H; else C = 0)
    window/h_in     (L, B, H), window/c_in (L, B, C): the state entering the oldest held step,
                                    its resets applied; zeros where nothing precedes it
    pending/out     (r, B, O) float  the pending steps' outputs
    pending/y       (r, B) + the loss's target_shape(O), float, or (r, B) int64 class ids: their
                                    targets
    pending/w       (r, B) float     their loss weights (the mask; ones without one; NaN where a
                                    file older than the targets' keeping did not hold them)
    pending/dy      (r, B, O) float  w · dloss/dout of each position (0 where w = 0)
    optimizer/m     (P,) float       Adam's first moment, or SGD's momentum buffer (else zeros)
    optimizer/v     (P,) float       Adam's second moment (else zeros)

The carried state is the newest held step's h (and c), zeros when n = 0. Dropout masks are not
stored: they are a function of (seed, layer, step, stream, unit).

The pending steps' loss is there twice on purpose: as targets (out, y, w), which the NumPy
reference turns into loss terms when the update comes, and as loss terms (dy, loss_sum,
weight_sum), which the C++ engine computes as each step goes by. Each backend restores exactly
from its own half and computes the other half when it writes a snapshot; across backends the two
agree to rounding.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from ..cells import CELLS
from ..losses import LOSSES
from .spec import ModelSpec

SCHEMA = 3  # 2: the first shared schema, positional counters; 1: each backend's own entries
#: The named scalars, and their dtypes.
SCALARS: Dict[str, np.dtype] = {
    **{
        name: np.dtype(np.int64)
        for name in ("num_streams", "steps", "pending", "updates", "optimizer_steps", "fresh_from")
    },
    "tokens": np.dtype(bool),
    "reset_next": np.dtype(bool),
    **{name: np.dtype(np.float64) for name in ("loss_sum", "weight_sum", "last_weight_sum")},
}


def fail(what: str):
    """Raise the ValueError every schema problem becomes."""
    raise ValueError(f"engine state: {what}")


def header(model: ModelSpec) -> Dict[str, np.ndarray]:
    """The entries that tag a snapshot: its schema and the model's cell."""
    return {"schema": np.array(SCHEMA, np.int64), "cell": np.array(model.cell)}


def scalars(**values: Any) -> Dict[str, np.ndarray]:
    """The named scalars as 0-d arrays of their dtypes (every one of SCALARS must be given)."""
    return {name: np.array(values[name], dtype) for name, dtype in SCALARS.items()}


def expected_shapes(
    model: ModelSpec, loss: str, B: int, tokens: bool, n: int, r: int
) -> Dict[str, Tuple[tuple, np.dtype]]:
    """{entry: (shape, dtype)} of a snapshot of this model and loss with B streams, n steps held
    and r pending."""
    L, H, I, O, P = (
        model.num_layers,
        model.hidden_size,
        model.input_size,
        model.output_size,
        model.num_parameters,
    )
    f, i64 = np.dtype(model.dtype), np.dtype(np.int64)
    spec = CELLS[model.cell]
    K, C = len(spec.snapshot_gates) * H, spec.carried * H
    return {
        "schema": ((), i64),
        "cell": ((), np.dtype(f"<U{len(model.cell)}")),
        **{name: ((), dtype) for name, dtype in SCALARS.items()},
        "window/x": ((n, B), i64) if tokens else ((n, B, I), f),
        "window/reset": ((n, B), np.dtype(bool)),
        "window/gates": ((n, L, B, K), f),
        "window/h": ((n, L, B, H), f),
        "window/c": ((n, L, B, C), f),
        "window/h_in": ((L, B, H), f),
        "window/c_in": ((L, B, C), f),
        "pending/out": ((r, B, O), f),
        "pending/y": ((r, B) + LOSSES[loss].target_shape(O), LOSSES[loss].target_dtype(f)),
        "pending/w": ((r, B), f),
        "pending/dy": ((r, B, O), f),
        "optimizer/m": ((P,), f),
        "optimizer/v": ((P,), f),
    }


def check(snapshot, model: ModelSpec, k1: int, k2: int, loss: str) -> Dict[str, int]:
    """Check a snapshot in this schema against the model and trainer; returns its integer scalars
    by name, and "held" (n). ValueError naming the entry that does not fit."""
    if not isinstance(snapshot, dict):
        fail(f"expected a dict of arrays, got {type(snapshot).__name__}")
    if "schema" not in snapshot:
        fail(
            "no 'schema' entry: an older file's engine state, which tbptt.load_trainer converts "
            "(an engine's restore takes the current schema only)"
        )
    cell = snapshot.get("cell")
    if isinstance(cell, np.ndarray) and cell.shape == () and str(cell) != model.cell:
        other = CELLS[str(cell)].title if str(cell) in CELLS else repr(str(cell))
        fail(f"it holds the state of a {other}, not of a {CELLS[model.cell].title}")
    schema = np.asarray(snapshot["schema"])
    if schema.shape != () or schema.dtype.kind not in "iu" or int(schema) != SCHEMA:
        fail(
            f"'schema' must be {SCHEMA}, got {snapshot['schema']!r}: "
            + (
                "written by a newer tbptt?"
                if schema.size == 1
                and schema.dtype.kind in "iu"
                and int(schema.ravel()[0]) > SCHEMA
                else "not this schema"
            )
        )
    for name, dtype in SCALARS.items():
        value = np.asarray(snapshot.get(name, np.zeros(0)))
        if value.shape != () or value.dtype.kind != dtype.kind:
            fail(
                f"{name!r} must be a scalar of dtype {dtype}, got {snapshot[name]!r}"
                if name in snapshot
                else f"missing {name!r}"
            )
    c = {name: int(snapshot[name]) for name in SCALARS if SCALARS[name].kind in "ib"}
    h = snapshot.get("window/h")
    c["held"] = n = h.shape[0] if isinstance(h, np.ndarray) and h.ndim == 4 else -1
    _check_counters(c, k1, k2)
    shapes = expected_shapes(model, loss, c["num_streams"], bool(c["tokens"]), n, c["pending"])
    missing, extra = sorted(set(shapes) - set(snapshot)), sorted(set(snapshot) - set(shapes))
    if missing:
        fail(f"missing {missing}" + (f", unexpected {extra}" if extra else ""))
    if extra:
        fail(f"unexpected entries {extra}")
    for key, (shape, dtype) in shapes.items():
        a = snapshot[key]
        if key in SCALARS or key == "schema":
            continue  # checked above, numpy scalars allowed
        if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype:
            got = (
                f"shape {a.shape} and dtype {a.dtype}"
                if isinstance(a, np.ndarray)
                else f"a {type(a).__name__}"
            )
            fail(
                f"{key!r} has {got}, expected shape {shape} and dtype {dtype} for this model, "
                f"B = {c['num_streams']}, {n} steps held, {c['pending']} pending (a snapshot "
                f"of another configuration?)"
            )
    _check_ids(snapshot, model, loss, bool(c["tokens"]))
    return c


def _check_counters(c: Dict[str, int], k1: int, k2: int) -> None:
    n, capacity = c["held"], max(k1, k2)
    if n < 0:
        fail("'window/h' must be an array of shape (n, L, B, H)")
    if (
        min(c["num_streams"], c["pending"], c["updates"], c["optimizer_steps"]) < 0
        or c["steps"] < n
    ):
        fail(f"counters out of range: {c}")
    if n > capacity:
        fail(f"the window holds {n} steps, more than max(k1, k2) = {capacity}")
    if c["pending"] >= k1 or c["pending"] > n:
        fail(f"{c['pending']} pending steps do not fit k1 = {k1} and {n} steps held")
    if c["num_streams"] == 0 and (n or c["updates"] or c["reset_next"]):
        fail("no streams (B = 0) but steps or updates are recorded")
    if not c["steps"] - n <= c["fresh_from"] <= c["steps"]:
        fail(f"'fresh_from' = {c['fresh_from']} is not among the steps held")


def _check_ids(snapshot, model: ModelSpec, loss: str, tokens: bool) -> None:
    x, y = snapshot["window/x"], snapshot["pending/y"]
    if tokens and x.size and (x.min() < 0 or x.max() >= model.input_size):
        fail(f"'window/x' holds token ids outside [0, {model.input_size})")
    if LOSSES[loss].classes and y.size and (y.min() < 0 or y.max() >= model.output_size):
        fail(f"'pending/y' holds class ids outside [0, {model.output_size})")
