"""Property-based tests (hypothesis) of the public API.

Random tiny configurations (every cell: LSTM, GRU, RNN tanh / relu; B, H, T = 1 included; k1, k2
in 1..12; 1-2 layers; both dtypes, both losses, features or token ids; bool / int / float masks with
zeros, all-zero masks; resets; reset_state() and flush() between calls; SGD or Adam, with or without
clipping) are driven through three trainers:

- the C++ engine fed odd arrays: Fortran-ordered, strided, reversed-stride, swapped-axes layouts,
  and other dtypes holding the same values (float32 data for a float64 model and float64 for a
  float32 one, uint8 token ids, int16 features, int32 class ids, bool / int masks, uint8 / int8
  resets);
- the C++ engine fed plain C-contiguous arrays of the model's dtype: must be bit-identical to the
  first (the checks convert, the engine is deterministic);
- the NumPy reference fed the plain arrays: must agree (tolerances below).

After every call the returned losses, `updates`, `pending_steps`, `state()` and the parameters are
compared; everything stays finite; `predict` agrees with `tbptt.reference.forward`.
Bad values (NaN / inf, values that overflow float32, negative mask weights, out-of-range ids, wrong
shapes or dtypes, a changed B) raise ValueError / TypeError and leave the trainer as it was.

Examples per property: the hypothesis profile (tests/conftest.py; "ci": 200).
"""

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from helpers import CELLS, make_model
from hypothesis import given, note
from hypothesis import strategies as st

import tbptt
from tbptt import reference

# float64: 1e-9 relative (docs/semantics.md §4 promises 1e-10 on its test grid). Both engines do
# the same arithmetic in another order, so they differ by a few ulps per operation, amplified
# a little over the (at most ~80) updates of an example; measured over 1500 random examples: worst
# 3.8e-13 relative, 1.8e-14 absolute. The absolute floor 1e-12 (the values are O(0.1 .. 1)) covers
# elements that are ~0 up to rounding.
F64 = dict(rtol=1e-9, atol=1e-12)
# float32: the same rounding differences start at ~6e-8 relative per operation, and the two engines
# accumulate differently (the C++ engine sums the loss and the gradient norm in double, the
# reference in float32). The optimiser feeds them back into the weights at every update (up to ~80
# updates here, k1 = 1), and Adam divides by sqrt(v) + eps: where a gradient element is ~0 up to
# float32 rounding, the two steps of that element differ by a visible fraction of lr. Measured over
# 3000 random examples of this file's configurations: worst 3.3e-5 absolute, 1.4e-4 relative (on
# values above 0.01). The tolerances leave a margin of ~7-10x: 1e-3 relative, 3e-4 absolute (the
# values are O(0.1 .. 1), lr <= 0.2). A real error (a wrong gate, a dropped loss term, a window
# off by one step, clipping skipped) shows up as differences of order 1e-2 .. 1.
F32 = dict(rtol=1e-3, atol=3e-4)
TOL = {"float64": F64, "float32": F32}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- strategies ----------------------------------------------------------------------------------

LAYOUTS = ("C", "F", "strided", "reversed", "swapped")


@st.composite
def configs(draw):
    c = {}
    c["cell"] = draw(st.sampled_from(CELLS))
    c["dtype"] = draw(st.sampled_from(["float64", "float32"]))
    c["L"] = draw(st.integers(1, 2))
    c["I"] = draw(st.integers(1, 4))
    c["H"] = draw(st.integers(1, 4))
    c["O"] = draw(st.integers(1, 3))
    c["B"] = draw(st.integers(1, 6))  # B >= 4: the C++ engine packs its weights (packed_gemm.h)
    c["k1"] = draw(st.integers(1, 12))
    c["k2"] = draw(st.integers(1, 12))
    c["loss"] = draw(st.sampled_from(["mse", "cross_entropy"]))
    c["inputs"] = draw(st.sampled_from(["float", "tokens", "int-features"]))
    c["mask"] = draw(st.sampled_from([None, "bool", "int", "float", "zeros"]))
    c["resets"] = draw(st.sampled_from([None, "bool", "uint8", "int8"]))
    c["optimizer"] = draw(st.sampled_from(["sgd", "sgd-momentum", "adam"]))
    c["lr"] = draw(st.sampled_from([0.0, 0.003, 0.02, 0.05]))
    c["clip_norm"] = draw(st.sampled_from([None, None, 0.05, 1.0]))
    c["forget_bias"] = draw(st.sampled_from([0.0, 1.0]))
    c["scale"] = draw(st.sampled_from([0.01, 1.0, 4.0]))  # of the float inputs and targets
    c["seed"] = draw(st.integers(0, 2**31 - 1))
    # the calls: ("train", T) with T in 0..14, reset_state() and flush() in between
    op = st.one_of(
        st.tuples(st.just("train"), st.integers(0, 14)),
        st.just(("train", 1)),
        st.just(("reset", 0)),
        st.just(("flush", 0)),
    )
    c["ops"] = draw(st.lists(op, min_size=1, max_size=6))
    c["layouts"] = draw(
        st.fixed_dictionaries({k: st.sampled_from(LAYOUTS) for k in ("x", "y", "mask", "resets")})
    )
    c["odd_dtypes"] = draw(st.booleans())  # feed the first trainer other dtypes of the same values
    return c


def exact_float(rng, shape, scale):
    """Normal values that are exact in float32 (so float32 data for a float64 model is exact)."""
    return (scale * rng.normal(size=shape)).astype(np.float32).astype(np.float64)


def make_data(c, T):
    """Plain arrays (x, y, mask, resets): C-contiguous, the model's dtype, int64 ids, bool
    resets."""
    rng = np.random.default_rng(c["seed"])
    B, I, O, dtype = c["B"], c["I"], c["O"], np.dtype(c["dtype"])
    if c["inputs"] == "tokens":
        x = rng.integers(0, I, size=(T, B))
    elif c["inputs"] == "int-features":
        x = rng.integers(-3, 4, size=(T, B, I)).astype(dtype)
    else:
        x = exact_float(rng, (T, B, I), c["scale"]).astype(dtype)
    if c["loss"] == "cross_entropy":
        y = rng.integers(0, O, size=(T, B))
    else:
        y = exact_float(rng, (T, B, O), c["scale"]).astype(dtype)
    kind, mask = c["mask"], None
    if kind == "bool":
        mask = (rng.uniform(size=(T, B)) > 0.3).astype(dtype)
    elif kind == "int":
        mask = rng.integers(0, 4, size=(T, B)).astype(dtype)
    elif kind == "float":  # multiples of 1/8: exact in every dtype; ~30% zeros
        mask = (rng.integers(1, 17, size=(T, B)) / 8 * (rng.uniform(size=(T, B)) > 0.3)).astype(
            dtype
        )
    elif kind == "zeros":
        mask = np.zeros((T, B), dtype)
    resets = None if c["resets"] is None else rng.uniform(size=(T, B)) < 0.15
    return x, y, mask, resets


def lay_out(a, how):
    """The same values in another memory layout (a view that is not C-contiguous)."""
    if a is None or a.ndim < 2 or how == "C":
        return a
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":  # every other element of a twice as wide buffer along the last axis
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if how == "reversed":  # negative strides along time
        return np.ascontiguousarray(a[::-1])[::-1]
    if how == "swapped":  # (B, T, ...) storage seen as (T, B, ...)
        return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)
    raise AssertionError(how)


def odd_arrays(c, x, y, mask, resets):
    """The first trainer's arrays: other layouts and (if c["odd_dtypes"]) other dtypes."""
    if c["odd_dtypes"]:
        other = np.float32 if c["dtype"] == "float64" else np.float64
        if c["inputs"] == "tokens":
            x = x.astype(np.uint8 if c["I"] < 256 else np.int32)
        elif c["inputs"] == "int-features":
            x = x.astype(np.int16)
        else:
            x = x.astype(other)
        y = y.astype(np.int32) if c["loss"] == "cross_entropy" else y.astype(other)
        if mask is not None:
            if c["mask"] in ("bool", "zeros"):
                mask = mask.astype(bool)
            elif c["mask"] == "int":
                mask = mask.astype(np.int64)
            else:
                mask = mask.astype(other)
        if resets is not None:
            resets = resets.astype({"bool": bool, "uint8": np.uint8, "int8": np.int8}[c["resets"]])
    L = c["layouts"]
    return (
        lay_out(x, L["x"]),
        lay_out(y, L["y"]),
        lay_out(mask, L["mask"]),
        lay_out(resets, L["resets"]),
    )


def make_trainer(c, backend):
    model = make_model(
        c["cell"],
        c["I"],
        c["H"],
        c["O"],
        num_layers=c["L"],
        dtype=c["dtype"],
        seed=c["seed"] % 1000,
        forget_bias=c["forget_bias"],
    )
    if c["optimizer"] == "adam":
        optimizer = tbptt.Adam(lr=c["lr"])
    else:
        optimizer = tbptt.SGD(
            lr=c["lr"] * 4, momentum=0.9 if c["optimizer"] == "sgd-momentum" else 0.0
        )
    return tbptt.Trainer(
        model,
        c["k1"],
        c["k2"],
        loss=c["loss"],
        optimizer=optimizer,
        clip_norm=c["clip_norm"],
        backend=backend,
    )


def sl(a, lo, hi):
    return None if a is None else a[lo:hi]


def drive(trainer, c, arrays):
    """Run the example's calls; after each, record what the public API shows."""
    x, y, mask, resets = arrays
    records, t = [], 0
    for op, n in c["ops"]:
        try:
            if op == "train":
                out = trainer.train(
                    x[t : t + n], y[t : t + n], sl(mask, t, t + n), sl(resets, t, t + n)
                )
                t += n
                assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.ndim == 1
            elif op == "reset":
                trainer.reset_state()
                out = None
            else:
                out = trainer.flush()
                assert out is None or isinstance(out, float)
                out = None if out is None else np.array([out])
        except FloatingPointError as error:  # allowed, if both backends agree on it
            out = "diverged: " + str(error).split(":")[0]
            t += n if op == "train" else 0
        state = trainer.state()  # (h, c) of an LSTM, h of the others: recorded as a tuple
        if state is not None and not isinstance(state, tuple):
            state = (state,)
        records.append(
            dict(
                op=op,
                out=out,
                updates=trainer.updates,
                pending=trainer.pending_steps,
                state=None if state is None else tuple(s.copy() for s in state),
                params=trainer.model.flat_parameters.copy(),
            )
        )
    return records


def check_finite(records):
    for r in records:
        assert np.isfinite(r["params"]).all()
        if isinstance(r["out"], np.ndarray):
            assert np.isfinite(r["out"]).all() and (r["out"] >= 0).all()
        if r["state"] is not None:
            assert all(np.isfinite(s).all() for s in r["state"])


def compare(a_records, b_records, tol, what):
    for i, (a, b) in enumerate(zip(a_records, b_records)):
        where = f"{what}, after call {i} ({a['op']})"
        assert (a["updates"], a["pending"]) == (b["updates"], b["pending"]), where
        if isinstance(a["out"], str) or isinstance(b["out"], str):
            assert a["out"] == b["out"], where
        elif a["out"] is None or b["out"] is None:
            assert a["out"] is None and b["out"] is None, where
        else:
            assert a["out"].shape == b["out"].shape, where
            close(a["out"], b["out"], tol, where + ": losses")
        assert (a["state"] is None) == (b["state"] is None), where
        if a["state"] is not None:
            for u, v, name in zip(a["state"], b["state"], "hc"):
                assert u.dtype == v.dtype and u.shape == v.shape, where
                close(u, v, tol, f"{where}: state {name}")
        close(a["params"], b["params"], tol, where + ": parameters")


def close(a, b, tol, what):
    if tol is None:  # bit-identical
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        np.testing.assert_allclose(
            np.asarray(a, np.float64), np.asarray(b, np.float64), err_msg=what, **tol
        )


def describe(c):
    return {k: v for k, v in c.items() if k != "seed"} | {"seed": c["seed"]}


# ---- properties: valid inputs --------------------------------------------------------------------


@given(c=configs())
def test_engine_equals_reference_on_random_configurations(c):
    note(describe(c))
    T = sum(n for op, n in c["ops"] if op == "train")
    plain = make_data(c, T)
    odd = odd_arrays(c, *plain)

    cpp_odd = drive(make_trainer(c, "cpp"), c, odd)
    cpp = drive(make_trainer(c, "cpp"), c, plain)
    ref = drive(make_trainer(c, "numpy"), c, plain)

    compare(cpp_odd, cpp, None, "cpp with odd layouts/dtypes vs cpp with plain arrays")
    compare(cpp, ref, TOL[c["dtype"]], "cpp vs numpy reference")
    check_finite(cpp)
    check_finite(ref)
    # the schedule: one update per k1 steps since the previous one (flush() makes one early)
    last = cpp[-1]
    assert 0 <= last["pending"] < c["k1"]
    if not any(op == "flush" for op, _ in c["ops"]) and not any(
        isinstance(r["out"], str) for r in cpp
    ):
        assert last["updates"] == T // c["k1"] and last["pending"] == T % c["k1"]


@given(c=configs(), with_state=st.booleans(), T=st.integers(0, 9))
def test_predict_equals_reference_forward(c, with_state, T):
    note(describe(c))
    model = make_trainer(c, "cpp").model
    x, _, _, _ = make_data(c, T)
    rng = np.random.default_rng(c["seed"] + 1)
    shape = (c["L"], c["B"], c["H"])
    n = len(model.STATE)  # (h, c) of an LSTM, h of the others
    parts = tuple(rng.normal(size=shape) for _ in range(n)) if with_state else None
    state = None if parts is None else parts if n > 1 else parts[0]
    xo = lay_out(x, c["layouts"]["x"])
    out, final = model.predict(xo, state)
    final = final if n > 1 else (final,)
    assert out.shape == (T, c["B"], c["O"]) and out.dtype == model.dtype
    assert all(a.shape == shape and a.dtype == model.dtype for a in final)
    assert np.isfinite(out).all() and all(np.isfinite(a).all() for a in final)
    start = tuple(
        np.zeros(shape, model.dtype) if parts is None else a.astype(model.dtype)
        for a in (parts or range(n))
    )
    if T == 0:
        for a, b in zip(final, start):
            np.testing.assert_array_equal(a, b)
        return
    tokens = c["inputs"] == "tokens"
    ro, ref_final = reference.forward(model, x if tokens else x.astype(model.dtype), tokens, start)
    tol = dict(rtol=1e-12, atol=1e-14) if c["dtype"] == "float64" else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, ro, **tol)
    for a, b in zip(final, ref_final):
        np.testing.assert_allclose(a, b, **tol)
    # predict in two pieces, the state carried, is the same
    if T > 1:
        o1, s1 = model.predict(xo[: T // 2], state)
        o2, s2 = model.predict(xo[T // 2 :], s1)
        np.testing.assert_allclose(np.concatenate([o1, o2]), out, **tol)
        np.testing.assert_allclose(s2[0] if n > 1 else s2, final[0], **tol)


# ---- properties: bad values are refused ----------------------------------------------------------


def corruptions(c):
    """The bad things that apply to configuration c: (name, argument, exception types)."""
    kinds = [
        ("x-wrong-input-size", "x", ValueError),
        ("x-ndim", "x", ValueError),
        ("y-wrong-T", "y", ValueError),
        ("x-strings", "x", TypeError),
        ("mask-shape", "mask", ValueError),
        ("mask-negative", "mask", ValueError),
        ("mask-nan", "mask", ValueError),
        ("mask-inf", "mask", ValueError),
        ("resets-shape", "resets", ValueError),
        ("resets-two", "resets", ValueError),
        ("resets-float", "resets", TypeError),
        ("B-changed", "", ValueError),
    ]
    if c["inputs"] == "tokens":
        kinds += [("token-too-large", "x", ValueError), ("token-negative", "x", ValueError)]
    else:
        kinds += [
            ("x-nan", "x", ValueError),
            ("x-inf", "x", ValueError),
            ("x-objects", "x", TypeError),
        ]
        if c["dtype"] == "float32":
            kinds += [("x-overflows-float32", "x", ValueError)]
    if c["loss"] == "cross_entropy":
        kinds += [
            ("class-too-large", "y", ValueError),
            ("class-negative", "y", ValueError),
            ("y-float-classes", "y", TypeError),
        ]
    else:
        kinds += [("y-nan", "y", ValueError), ("y-wrong-output-size", "y", ValueError)]
    return kinds


def corrupt(kind, arrays, c, rng):
    x, y, mask, resets = (None if a is None else a.copy() for a in arrays)
    T, B = x.shape[0], x.shape[1]
    t, b = rng.integers(T), rng.integers(B)
    mask = np.ones((T, B)) if mask is None else mask
    resets = np.zeros((T, B), bool) if resets is None else resets
    if kind == "x-wrong-input-size":
        x = np.zeros((T, B, c["I"] + 1))
    elif kind == "x-ndim":
        x = np.zeros((T, B, c["I"], 1)) if rng.integers(2) else np.zeros(T)
    elif kind == "y-wrong-T":
        y = np.concatenate([y, y[:1]])
    elif kind == "x-strings":
        x = np.full(x.shape, "a")
    elif kind == "x-objects":
        x = x.astype(object)
    elif kind == "mask-shape":
        mask = np.ones((T, B + 1)) if rng.integers(2) else np.ones((T, B, 1))
    elif kind == "mask-negative":
        mask = mask.astype(np.float64)
        mask[t, b] = -rng.choice([1e-3, 1.0, 1e300])
    elif kind == "mask-nan":
        mask = mask.astype(np.float64)
        mask[t, b] = np.nan
    elif kind == "mask-inf":
        mask = mask.astype(np.float64)
        mask[t, b] = np.inf
    elif kind == "resets-shape":
        resets = np.zeros((T + 1, B), bool)
    elif kind == "resets-two":
        resets = resets.astype(np.int64)
        resets[t, b] = 2
    elif kind == "resets-float":
        resets = resets.astype(np.float64)
    elif kind == "B-changed":
        x = np.concatenate([x, x[:, :1]], axis=1)
        y = np.concatenate([y, y[:, :1]], axis=1)
        mask = np.concatenate([mask, mask[:, :1]], axis=1)
        resets = np.concatenate([resets, resets[:, :1]], axis=1)
    elif kind == "token-too-large":
        x[t, b] = c["I"] + rng.integers(3)
    elif kind == "token-negative":
        x[t, b] = -1 - rng.integers(3)
    elif kind in ("x-nan", "x-inf"):
        x = x.astype(np.float64)
        x[t, b, rng.integers(c["I"])] = np.nan if kind == "x-nan" else -np.inf
    elif kind == "x-overflows-float32":
        x = x.astype(np.float64)
        x[t, b, rng.integers(c["I"])] = 1e39
    elif kind == "class-too-large":
        y[t, b] = c["O"] + rng.integers(3)
    elif kind == "class-negative":
        y[t, b] = -1
    elif kind == "y-float-classes":
        y = y.astype(np.float64)
    elif kind == "y-nan":
        y = y.astype(np.float64)
        y[t, b, rng.integers(c["O"])] = np.nan
    elif kind == "y-wrong-output-size":
        y = np.zeros((T, B, c["O"] + 1))
    else:
        raise AssertionError(kind)
    return x, y, mask, resets


@given(c=configs(), backend=st.sampled_from(["cpp", "numpy"]), data=st.data())
def test_bad_values_raise_and_change_nothing(c, backend, data):
    note(describe(c))
    kind, name, exc = data.draw(st.sampled_from(corruptions(c)), label="corruption")
    T = data.draw(st.integers(1, 8), label="T of the bad call")
    trainer = make_trainer(c, backend)
    warm = make_data(c | {"seed": c["seed"] + 1}, 5)  # B fixed, state and pending steps set
    trainer.train(*odd_arrays(c, *warm))
    before = (
        trainer.model.flat_parameters.copy(),
        trainer.updates,
        trainer.pending_steps,
        tuple(s.copy() for s in trainer.state()),
    )
    bad = corrupt(kind, make_data(c, T), c, np.random.default_rng(c["seed"]))
    with pytest.raises(exc, match=name or None):
        trainer.train(*bad)
    assert np.array_equal(trainer.model.flat_parameters, before[0])
    assert (trainer.updates, trainer.pending_steps) == before[1:3]
    assert all(np.array_equal(u, v) for u, v in zip(trainer.state(), before[3]))
    # the trainer goes on exactly as a twin that never saw the bad call (both may diverge: an
    # rnn_relu configuration can, and then both must, alike)
    twin = make_trainer(c, backend)
    twin.train(*odd_arrays(c, *warm))
    outcomes = []
    for t in (trainer, twin):
        try:
            outcomes.append(t.train(*make_data(c, T)))
        except FloatingPointError as error:
            outcomes.append(str(error))
    if isinstance(outcomes[0], str):
        assert outcomes[0] == outcomes[1]
    else:
        assert trainer.updates == before[1] + (before[2] + T) // c["k1"]
        np.testing.assert_array_equal(outcomes[0], outcomes[1])
    assert np.array_equal(trainer.model.flat_parameters, twin.model.flat_parameters)
    assert (trainer.updates, trainer.pending_steps) == (twin.updates, twin.pending_steps)


@given(c=configs(), data=st.data())
def test_bad_predict_inputs_raise(c, data):
    note(describe(c))
    model = make_trainer(c, "cpp").model
    x, _, _, _ = make_data(c, 4)
    shape = (c["L"], c["B"], c["H"])
    kind = data.draw(
        st.sampled_from(
            ["nan-x", "big-id", "x-shape", "state-shape", "state-nan", "state-wrong-kind", "B-zero"]
        )
    )
    state, exc = None, ValueError
    lstm = len(model.STATE) > 1

    def of_kind(*parts):  # (h, c) for an LSTM, h for the others
        return parts if lstm else parts[-1]

    if kind == "nan-x":
        if c["inputs"] == "tokens":
            x = x.astype(np.float64)[..., None].repeat(c["I"], axis=2)
        x = x.astype(np.float64)
        x[0, 0, 0] = np.nan
    elif kind == "big-id":
        x = np.full((4, c["B"]), c["I"], np.int64)
    elif kind == "x-shape":
        x = np.zeros((4, c["B"], c["I"] + 1))
    elif kind == "state-shape":
        state = of_kind(np.zeros(shape), np.zeros((c["L"], c["B"] + 1, c["H"])))
    elif kind == "state-nan":
        state = of_kind(np.zeros(shape), np.full(shape, np.nan))
    elif kind == "state-wrong-kind":  # an LSTM takes a pair, the others an array
        state, exc = (np.zeros(shape) if lstm else (np.zeros(shape),)), TypeError
    elif kind == "B-zero":
        x = np.zeros((4, 0, c["I"]))
    with pytest.raises(exc):
        model.predict(x, state)
