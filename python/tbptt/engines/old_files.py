"""Engine states of older tbptt versions, converted once, at load, to the current snapshot schema
(`tbptt.engines.snapshot`): the one place that knows the older forms. The engines restore the
current schema only; `Trainer._restore_engine` (files, pickles) calls `upgrade` first.

The forms it reads:
- schema 2, the first schema both backends shared: the same entries as today, but the counters as
  one positional array [B, tokens, steps, pending, updates, reset_next, optimizer_steps],
  "loss_sums" [Σ w·loss, Σ w, last Σ w], and "fresh_from" (1,), optional;
- the C++ engine's own entries (before schema 2): its ring of S = max(k1, k2) + 1 slots (step s
  in slot s % S), counters [B, tokens, steps, first_valid, pending, updates, reset_next,
  optimizer steps (, fresh_from: files from before recompute have 8)], "sums" [Σ w·loss, Σ w
  (, last Σ w: two before data-parallel training)], the pending steps' loss terms "dy" in k1 rows
  (and their outputs, targets and weights, unless the file is older than their keeping: then they
  are unknown, NaN), "c" for "carry" in LSTM files from before cells, "first_moment",
  "second_moment" (empty where the optimiser keeps none);
- the NumPy reference's own entries (before schema 2): "state/<h, c>", "history/x", "history/<each
  field the cell caches>", "history/reset", "history/out", "history/y", "history/w", optimiser
  buffers, counters [B, tokens, pending, updates, reset_next, adam_step, has_momentum, n (, steps:
  not in files from before dropout)].
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..cells import CELLS
from ..contract import Snapshot
from ..losses import LOSSES
from . import snapshot as _snapshot
from .spec import ModelSpec


def upgrade(
    snapshot: Any,
    written_by: str,
    model: ModelSpec,
    k1: int,
    k2: int,
    loss: str,
    optimizer: Dict[str, Any],
) -> Any:
    """`snapshot` in the current schema, from whatever form the `written_by` backend ("cpp" or
    "numpy") wrote for this model and trainer; the current schema, or anything not recognised,
    as it is (the engine's restore then says what is wrong)."""
    if not isinstance(snapshot, dict):
        return snapshot
    try:
        if "schema" in snapshot:
            schema = np.asarray(snapshot["schema"])
            return (
                _from_schema2(snapshot)
                if schema.shape == (1,) and int(schema[0]) == 2
                else snapshot
            )
        if written_by == "cpp" and "sums" in snapshot:
            return _from_cpp(snapshot, model, k1, k2, loss)
        if written_by == "numpy" and "history/x" in snapshot:
            return _from_numpy(snapshot, model, loss, optimizer)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        _snapshot.fail(
            f"an older file's engine state (written by the {written_by} backend) does "
            f"not fit this model and trainer: {type(error).__name__}: {error}"
        )
    return snapshot


def _from_schema2(d: Snapshot) -> Snapshot:
    B, tokens, steps, pending, updates, reset_next, optimizer_steps = (
        int(v) for v in d["counters"]
    )
    loss_sum, weight_sum, last_weight_sum = (float(v) for v in d["loss_sums"])
    fresh_from = int(d["fresh_from"][0]) if "fresh_from" in d else steps - pending
    out = {
        key: value
        for key, value in d.items()
        if key not in ("schema", "counters", "loss_sums", "fresh_from")
    }
    out.update({"schema": np.array(_snapshot.SCHEMA, np.int64)})
    out.update(
        _snapshot.scalars(
            num_streams=B,
            tokens=tokens,
            steps=steps,
            pending=pending,
            updates=updates,
            reset_next=reset_next,
            optimizer_steps=optimizer_steps,
            fresh_from=fresh_from,
            loss_sum=loss_sum,
            weight_sum=weight_sum,
            last_weight_sum=last_weight_sum,
        )
    )
    return out


def _from_cpp(native: Snapshot, model: ModelSpec, k1: int, k2: int, loss: str) -> Snapshot:
    """The C++ engine's ring, oldest held step first."""
    L, H, I, O = model.num_layers, model.hidden_size, model.input_size, model.output_size
    S = max(k1, k2) + 1
    spec = CELLS[model.cell]
    G, E, C = spec.gates * H, spec.extra * H, spec.carried * H
    counters = [int(v) for v in native["counters"]]
    B, tokens, step, first_valid, pending, updates, reset_next, opt_steps = counters[:8]
    fresh_from = counters[8] if len(counters) > 8 else step - pending
    sums = [float(v) for v in native["sums"]] + [0.0]  # two sums before data-parallel training
    oldest = max(first_valid, step - S + 1) if B else step
    n, slots = step - oldest, np.arange(oldest, step) % S

    def ring(key, width):  # a per-layer ring as (L, S, B, width)
        return np.asarray(native[key]).reshape(L, S, B, width)

    h, carry = ring("h", H), ring("carry" if "carry" in native else "c", C)
    gates = ring("gates", G)
    if E:
        gates = np.concatenate([gates, ring("extra", E)], axis=-1)
    if not spec.keeps_gates:
        gates = gates[..., :0]
    held = lambda a: np.ascontiguousarray(a[:, slots].transpose(1, 0, 2, 3))  # noqa: E731
    if tokens:
        x = np.asarray(native["ids"]).reshape(S, B)[slots]
    else:
        x = np.asarray(native["x"]).reshape(S, B, I)[slots]
    reset = np.asarray(native["resets"]).reshape(S, B)[slots] != 0
    d = {
        "window/x": x,
        "window/reset": reset,
        "window/gates": held(gates),
        "window/h": held(h),
        "window/c": held(carry),
    }
    # the state entering the oldest step, its resets applied; zeros when nothing precedes it
    before, keep = (oldest - 1) % S, ~reset[0][None, :, None] if n else True
    cut = oldest == first_valid
    d["window/h_in"] = np.zeros_like(h[:, 0]) if cut else np.where(keep, h[:, before], 0)
    d["window/c_in"] = np.zeros_like(carry[:, 0]) if cut else np.where(keep, carry[:, before], 0)

    spec_loss, dtype = LOSSES[loss], model.dtype

    def rows(key, width, dt):  # the pending rows of k1
        if key not in native:  # older than the keeping of the targets: unknown
            return np.full((pending, B) + width, np.nan if dt != np.int64 else 0, dt)
        return np.asarray(native[key]).reshape((-1, B) + width)[:pending].astype(dt)

    d["pending/out"], d["pending/dy"] = rows("outputs", (O,), dtype), rows("dy", (O,), dtype)
    d["pending/y"] = (
        rows("classes", (), np.int64)
        if spec_loss.classes
        else rows("values", spec_loss.target_shape(O), dtype)
    )
    d["pending/w"] = rows("weights", (), dtype)
    P = model.num_parameters
    for key, name in (("first_moment", "optimizer/m"), ("second_moment", "optimizer/v")):
        moment = np.asarray(native[key], dtype)
        d[name] = moment.copy() if moment.size else np.zeros(P, dtype)
    d.update(_snapshot.header(model))
    d.update(
        _snapshot.scalars(
            num_streams=B,
            tokens=tokens,
            steps=step,
            pending=pending,
            updates=updates,
            reset_next=reset_next,
            optimizer_steps=opt_steps,
            fresh_from=fresh_from,
            loss_sum=sums[0],
            weight_sum=sums[1],
            last_weight_sum=sums[2],
        )
    )
    return d


def _from_numpy(own: Snapshot, model: ModelSpec, loss: str, optimizer: Dict[str, Any]) -> Snapshot:
    """The reference's history of steps, each with its caches and the state entering it."""
    from .reference import pending_loss  # the loss terms the reference's older form did not keep

    counters = [int(v) for v in own["counters"]]
    if len(counters) == 8:  # before dropout: only the n steps held were counted
        counters.append(counters[7])
    B, tokens, pending, updates, reset_next, adam_step, has_momentum, n, steps = counters
    L, H = model.num_layers, model.hidden_size
    spec, dtype = CELLS[model.cell], model.dtype
    zeros = np.zeros((L, B, H), dtype)
    h_prev = own["history/h_prev"]
    d = {
        "window/x": own["history/x"],
        "window/reset": own["history/reset"],
        "window/gates": (
            np.concatenate([own[f"history/{f}"] for f in spec.snapshot_gates], axis=-1)
            if spec.snapshot_gates
            else np.zeros((n, L, B, 0), dtype)
        ),
        "window/h": own["history/h"],
        "window/c": own["history/c"] if spec.carried else np.zeros((n, L, B, 0), dtype),
        "window/h_in": h_prev[0].copy() if n else zeros,
        "window/c_in": (own["history/c_prev"][0].copy() if n else zeros)
        if spec.carried
        else np.zeros((L, B, 0), dtype),
    }
    out, y, w = (own[f"history/{key}"][n - pending :] for key in ("out", "y", "w"))
    dy, loss_sum, weight_sum = pending_loss(out, y, w, loss)
    d.update({"pending/out": out, "pending/y": y, "pending/w": w, "pending/dy": dy})
    sgd = optimizer["name"] == "sgd"
    d["optimizer/m"] = own["optimizer/momentum_buffer" if sgd else "optimizer/adam_m"]
    d["optimizer/v"] = own["optimizer/adam_v"]
    d.update(_snapshot.header(model))
    d.update(
        _snapshot.scalars(
            num_streams=B,
            tokens=tokens,
            steps=steps,
            pending=pending,
            updates=updates,
            reset_next=reset_next,
            optimizer_steps=max(adam_step, has_momentum),
            fresh_from=steps - pending,
            loss_sum=loss_sum,
            weight_sum=weight_sum,
            last_weight_sum=0.0,
        )
    )
    return d
