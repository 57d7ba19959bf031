"""The C++ engine (backend="cpp") against the NumPy reference (backend="numpy").

Each test drives two trainers with the same calls (several train calls of uneven lengths, an empty
call, reset_state() and flush() in between, then more training) and checks after every call that the
returned losses, `updates`, `pending_steps`, `state()` and every parameter agree.

float64: 1e-10 relative (docs/semantics.md §4), with an absolute floor of 1e-12 for values near
zero. float32: see FLOAT32_RTOL below. The LSTM runs the whole grid; the GRU and the RNN (tanh,
relu) a grid with one optimiser (the optimisers do not depend on the cell).
"""

import zlib

import numpy as np
import pytest
from helpers import CELLS, make_model

import tbptt

NEW_CELLS = [c for c in CELLS if c != "lstm"]

I, H, O, B = 4, 3, 3, 3
T1, T2 = 23, 9  # phase 1 (23 is a multiple of no k1 below but 1 and 23)
SPLITS1 = (0, 5, 5, 11, T1)  # calls x[0:5], x[5:5] (T = 0), x[5:11], reset_state(), x[11:23]
SPLITS2 = (0, 4, T2)

# The largest discrepancies seen, for the report test at the end of this file.
WORST = {}


def assert_close(actual, expected, rtol, atol, what, key):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, what
    if actual.size:
        err = np.abs(actual - expected)
        rel = float(
            np.max(err / np.maximum(np.abs(expected), 1e-300) * (np.abs(expected) > 1e3 * atol))
        )
        WORST[key] = max(WORST.get(key, (0.0, 0.0)), (rel, float(err.max())))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# float64: both backends do the same arithmetic in a different order (Eigen blocks, BLAS vs
# loops), so they differ by a few ulps per operation, amplified mildly over a few updates.
F64 = dict(rtol=1e-10, atol=1e-12)
# float32: the same rounding differences are ~1e-7 relative per operation (and the C++ engine
# accumulates the loss in double, the reference in float32). Over the ~12 updates of a run (Adam,
# SGD with momentum 0.9 and lr 0.3) they grow: measured at most 2.3e-6 absolute, ~1e-4 relative
# on parameters of size ~0.02 (see the report test at the end). Adam divides by sqrt(v): for a
# gradient element that is ~0 (a rounding residue in one backend) the step can differ by a
# fraction of lr = 0.02, hence the absolute floor 2e-5, about 10x the largest difference seen.
F32 = dict(rtol=1e-4, atol=2e-5)


KS = [
    pytest.param(4, 4, id="k1=k2=4"),
    pytest.param(3, 7, id="k2>k1"),
    pytest.param(7, 3, id="k2<k1"),
    pytest.param(1, 5, id="k1=1"),
    pytest.param(T1, T1, id="full-bptt"),
    pytest.param(5, 5, id="T-not-multiple-of-k1"),
]
EXTRAS = ["plain", "mask", "resets", "mask-resets-holes"]
OPTIMIZERS = ["sgd-momentum", "adam", "adam-clip"]


def make_optimizer(name):
    if name == "sgd-momentum":
        return tbptt.SGD(lr=0.3, momentum=0.9), None
    if name == "adam":
        return tbptt.Adam(lr=0.02, betas=(0.8, 0.95), eps=1e-7), None
    return tbptt.Adam(lr=0.02), 0.01  # gradients here have norms ~0.05-1: 0.01 always clips


def make_data(seed, T, k1, loss, tokens, extras, dtype):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, O, size=(T, B))
    else:
        y = rng.normal(size=(T, B, O)).astype(dtype)
    mask = resets = None
    if "mask" in extras:  # float weights, ~30% zeros
        mask = (rng.uniform(0.0, 2.0, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.3)).astype(dtype)
        mask[T // 2, 0] = 1.25
    if "resets" in extras:
        resets = rng.uniform(size=(T, B)) < 0.15
    if "holes" in extras:
        # a whole update without loss (counts for the schedule, no optimiser step) and pending
        # steps without loss at the end of phase 1 (flush() then returns None)
        if 2 * k1 <= T:
            mask[k1 : 2 * k1] = 0
        if T == T1:
            mask[21:] = 0
    return x, y, mask, resets


def sl(a, lo, hi):
    return None if a is None else a[lo:hi]


def make_trainer(backend, k1, k2, L, loss, opt, dtype, cell="lstm"):
    outputs = 2 * O if loss == "gaussian" else O  # gaussian: a mean and a raw scale per target
    model = make_model(cell, I, H, outputs, num_layers=L, dtype=dtype, seed=7, forget_bias=0.5)
    optimizer, clip = make_optimizer(opt)
    return tbptt.Trainer(
        model, k1, k2, loss=loss, optimizer=optimizer, clip_norm=clip, backend=backend
    )


def compare(cpp, ref, tol, key, what):
    assert cpp.updates == ref.updates, what
    assert cpp.pending_steps == ref.pending_steps, what
    sc, sr = cpp.state(), ref.state()
    assert (sc is None) == (sr is None), what
    if sc is not None:
        assert type(sc) is type(sr), what  # (h, c) for an LSTM, h for the others
        if not isinstance(sc, tuple):
            sc, sr = (sc,), (sr,)
        for a, b, name in zip(sc, sr, "hc"):
            assert a.dtype == b.dtype == cpp.model.dtype
            assert_close(a, b, **tol, what=f"{what}: state {name}", key=key)
    pc, pr = cpp.model.state_dict(), ref.model.state_dict()
    assert pc.keys() == pr.keys()
    for name in pc:
        assert_close(pc[name], pr[name], **tol, what=f"{what}: {name}", key=key)


def run_both(k1, k2, L, loss, tokens, extras, opt, dtype, tol, cell="lstm"):
    seed = zlib.crc32(repr((k1, k2, L, loss, tokens, extras, opt, dtype)).encode())
    key = f"cpp vs numpy, {dtype}" + ("" if cell == "lstm" else f", {cell}")
    cpp = make_trainer("cpp", k1, k2, L, loss, opt, dtype, cell)
    ref = make_trainer("numpy", k1, k2, L, loss, opt, dtype, cell)
    compare(cpp, ref, tol, key, "before training")
    p0 = cpp.model.state_dict()
    total_losses = 0
    for phase, (T, splits) in enumerate([(T1, SPLITS1), (T2, SPLITS2)]):
        x, y, mask, resets = make_data(seed + phase, T, k1, loss, tokens, extras, dtype)
        for call, (a, b) in enumerate(zip(splits[:-1], splits[1:])):
            if phase == 0 and call == 3:
                cpp.reset_state()
                ref.reset_state()
                compare(cpp, ref, tol, key, "after reset_state()")
            args = (x[a:b], y[a:b], sl(mask, a, b), sl(resets, a, b))
            lc, lr = cpp.train(*args), ref.train(*args)
            what = f"phase {phase}, call x[{a}:{b}]"
            assert isinstance(lc, np.ndarray) and lc.dtype == np.float64, what
            assert isinstance(lr, np.ndarray) and lr.dtype == np.float64, what
            assert_close(lc, lr, **tol, what=f"{what}: losses", key=key)
            total_losses += len(lc)
            compare(cpp, ref, tol, key, what)
        if (
            phase == 0
        ):  # a reset requested before a flush applies at the next step (phase 2's first)
            cpp.reset_state()
            ref.reset_state()
        fc, fr = cpp.flush(), ref.flush()
        assert (fc is None) == (fr is None), f"phase {phase}: flush() returned {fc} vs {fr}"
        if fc is not None:
            total_losses += 1
            assert_close(fc, fr, **tol, what=f"phase {phase}: flush loss", key=key)
        compare(cpp, ref, tol, key, f"phase {phase}: after flush()")
        assert cpp.pending_steps == 0
    assert total_losses > 0
    changed = any(not np.array_equal(p0[n], v) for n, v in cpp.model.state_dict().items())
    assert changed, "training did not change the parameters"
    return cpp, ref


@pytest.mark.parametrize("opt", OPTIMIZERS)
@pytest.mark.parametrize("extras", EXTRAS)
@pytest.mark.parametrize("tokens", [False, True], ids=["features", "tokens"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "gaussian"])
@pytest.mark.parametrize("L", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("k1,k2", KS)
def test_cpp_matches_numpy_float64(k1, k2, L, loss, tokens, extras, opt):
    run_both(k1, k2, L, loss, tokens, extras, opt, "float64", F64)


@pytest.mark.parametrize("opt", ["sgd-momentum", "adam-clip"])
@pytest.mark.parametrize(
    "loss,tokens", [("mse", False), ("cross_entropy", True), ("gaussian", False)]
)
@pytest.mark.parametrize("k1,k2", KS)
def test_cpp_matches_numpy_float32(k1, k2, loss, tokens, opt):
    run_both(k1, k2, 2, loss, tokens, "mask-resets-holes", opt, "float32", F32)


@pytest.mark.parametrize("extras", ["plain", "mask-resets-holes"])
@pytest.mark.parametrize("tokens", [False, True], ids=["features", "tokens"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "gaussian"])
@pytest.mark.parametrize("L", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("k1,k2", KS)
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_cpp_matches_numpy_float64_cells(cell, k1, k2, L, loss, tokens, extras):
    run_both(k1, k2, L, loss, tokens, extras, "adam-clip", "float64", F64, cell)


@pytest.mark.parametrize("loss,tokens", [("mse", False), ("cross_entropy", True)])
@pytest.mark.parametrize("k1,k2", KS)
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_cpp_matches_numpy_float32_cells(cell, k1, k2, loss, tokens):
    # Adam with clipping: SGD with momentum 0.9 at lr 0.3 over k1 = 1's 32 updates drives an RNN's
    # float32 rounding differences past F32 (measured 4e-5 absolute); bounded steps stay within.
    run_both(k1, k2, 2, loss, tokens, "mask-resets-holes", "adam-clip", "float32", F32, cell)


def first_gradient(clip_norm, backend="cpp"):
    """theta0 - theta1 of one SGD(lr=1) update of the grid's model on the grid's first 4 steps."""
    model = tbptt.LSTM(I, H, O, num_layers=1, dtype="float64", seed=7, forget_bias=0.5)
    trainer = tbptt.Trainer(
        model, 4, 4, optimizer=tbptt.SGD(lr=1.0), clip_norm=clip_norm, backend=backend
    )
    x, y, _, _ = make_data(0, 4, 4, "mse", False, "plain", "float64")
    before = model.flat_parameters.copy()
    trainer.train(x, y)
    return before - model.flat_parameters, trainer


def test_clip_norm_in_the_grid_really_clips():
    """The raw gradient norm of the grid's first update is well above the clip_norm it uses."""
    _, clip = make_optimizer("adam-clip")
    raw, _ = first_gradient(None)
    assert np.linalg.norm(raw) > 5 * clip
    clipped, _ = first_gradient(clip)
    np.testing.assert_allclose(clipped, raw * clip / (np.linalg.norm(raw) + 1e-6), rtol=1e-10)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_engine_gradient_is_the_gradient_before_clipping(backend):
    """`Engine.gradient()` (tbptt.contract) is dL/dθ of the last update, before clipping, in both
    backends."""
    raw, _ = first_gradient(None)
    _, trainer = first_gradient(0.01, backend)
    np.testing.assert_allclose(trainer.engine.gradient(), raw, rtol=1e-10, atol=1e-14)


def test_flush_over_zero_weight_steps_counts_but_makes_no_step():
    for backend in ("cpp", "numpy"):
        tr = make_trainer(backend, 4, 6, 1, "mse", "adam", "float64")
        x, y, _, _ = make_data(1, 6, 4, "mse", False, "plain", "float64")
        assert tr.flush() is None and tr.updates == 0
        tr.train(x, y, mask=np.ones((6, B)))
        before = tr.model.state_dict()
        tr.train(x[:2], y[:2], mask=np.zeros((2, B)))  # completes update 2 over steps 5..8
        assert tr.updates == 2 and tr.pending_steps == 0
        tr.train(x[:3], y[:3], mask=np.zeros((3, B)))
        assert tr.pending_steps == 3
        assert tr.flush() is None and tr.updates == 3 and tr.pending_steps == 0
        after = tr.model.state_dict()
        assert not all(np.array_equal(before[k], after[k]) for k in before)  # update 2 stepped


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("k1,k2", [(5, 13), (13, 5), (4, 50)])
def test_cpp_matches_numpy_many_streams_multi_block_backward(k1, k2, cell):
    """B = 48: the C++ backward walks a window in blocks of ceil(256 / B) = 6 steps, so k2 = 13
    takes three blocks; 40 steps wrap its ring of max(k1, k2) + 1 steps; k2 = 50 exceeds every
    window the stream has so far."""
    Bm, T = 48, 40
    rng = np.random.default_rng(k1 * 100 + k2)
    x = rng.integers(0, I, size=(T, Bm))
    y = rng.normal(size=(T, Bm, O))
    mask = rng.uniform(0, 2, size=(T, Bm)) * (rng.uniform(size=(T, Bm)) > 0.2)
    resets = rng.uniform(size=(T, Bm)) < 0.05

    def make(backend):
        model = make_model(cell, I, H, O, num_layers=2, dtype="float64", seed=4)
        return tbptt.Trainer(model, k1, k2, optimizer=tbptt.SGD(0.5, momentum=0.5), backend=backend)

    train_both_and_compare(make, (x, y, mask, resets), split=17, label="after training")


def train_both_and_compare(make, data, split, label):
    """make(backend) -> Trainer; both backends train data[:split], data[split:], then flush, and
    must agree (float64) on the losses and on everything `compare` checks."""
    x, y, mask, resets = data
    trainers = []
    for backend in ("cpp", "numpy"):
        t = make(backend)
        losses = [
            t.train(x[a:b], y[a:b], mask[a:b], resets[a:b])
            for a, b in ((0, split), (split, len(x)))
        ]
        losses.append(np.array([t.flush()]))
        trainers.append((t, np.concatenate(losses)))
    (cpp, lc), (ref, lr) = trainers
    key = "cpp vs numpy, float64"
    assert_close(lc, lr, **F64, what="losses", key=key)
    compare(cpp, ref, F64, key, label)


@pytest.mark.parametrize("Bp", [1, 2, 3, 4, 5, 6, 7, 9])
@pytest.mark.parametrize("Hp", [17, 40])
@pytest.mark.parametrize("cell", CELLS)
def test_cpp_matches_numpy_at_every_tile_shape_of_the_recurrent_products(cell, Bp, Hp):
    """csrc/packed_gemm.h: with B >= 4 streams W_hh is packed into panels of 2 SIMD packets (8, 16
    or 32 columns) and rows go in tiles of 4 plus 1-3 left over; with B < 4 rows pair up over
    several panels, and W_hh is not packed. 4H = 68 and 160, H = 17 and 40 leave partial panels at
    every SIMD width (and so do the GRU's 3H = 51, 120 and the RNN's H); B = 1..9 covers every
    row tail."""
    T, k1, k2 = 11, 3, 5
    rng = np.random.default_rng(Bp * 100 + Hp)
    x = rng.normal(size=(T, Bp, I))
    y = rng.normal(size=(T, Bp, O))
    mask = rng.uniform(0, 2, size=(T, Bp))
    resets = rng.uniform(size=(T, Bp)) < 0.1

    def make(backend):
        model = make_model(cell, I, Hp, O, num_layers=2, dtype="float64", seed=5)
        return tbptt.Trainer(model, k1, k2, optimizer=tbptt.SGD(0.3, momentum=0.5), backend=backend)

    train_both_and_compare(make, (x, y, mask, resets), split=4, label=f"B={Bp}, H={Hp}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("loss,tokens", [("mse", False), ("cross_entropy", True)])
@pytest.mark.parametrize("cell", CELLS)
def test_cpp_matches_numpy_with_streams_split_over_threads(cell, threads, loss, tokens):
    """B * H >= 1024: the C++ engine may split the streams over threads inside a layer."""
    Bt, Ht, T, k1, k2 = 16, 64, 14, 3, 7
    rng = np.random.default_rng(threads)
    x = rng.integers(0, I, size=(T, Bt)) if tokens else rng.normal(size=(T, Bt, I))
    y = rng.integers(0, O, size=(T, Bt)) if loss == "cross_entropy" else rng.normal(size=(T, Bt, O))
    mask = rng.uniform(0, 2, size=(T, Bt)) * (rng.uniform(size=(T, Bt)) > 0.2)
    resets = rng.uniform(size=(T, Bt)) < 0.1
    saved = tbptt.get_num_threads()
    tbptt.set_num_threads(threads)
    try:

        def make(backend):
            model = make_model(cell, I, Ht, O, num_layers=2, dtype="float64", seed=2)
            return tbptt.Trainer(
                model, k1, k2, loss=loss, optimizer=tbptt.Adam(0.01), clip_norm=0.5, backend=backend
            )

        train_both_and_compare(make, (x, y, mask, resets), split=8, label=f"{threads} threads")
    finally:
        tbptt.set_num_threads(saved)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_input_layouts_and_dtypes_do_not_matter(backend):
    """Non-contiguous / Fortran-ordered arrays, int32 token ids, float32 data for a float64 model
    (exactly representable values), bool / int / float masks and int resets: same results."""
    T, Bs = 12, 3
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, I, size=(T, Bs))
    y = rng.normal(size=(T, Bs, O)).astype(np.float32).astype(np.float64)
    mask = rng.uniform(size=(T, Bs)) > 0.3
    resets = rng.uniform(size=(T, Bs)) < 0.2

    def run(x, y, mask, resets):
        model = tbptt.LSTM(I, H, O, num_layers=2, dtype="float64", seed=9)
        t = tbptt.Trainer(model, 4, 6, optimizer=tbptt.Adam(0.01), backend=backend)
        losses = t.train(x, y, mask, resets)
        return losses, model.flat_parameters.copy()

    base = run(tokens, y, mask.astype(np.float64), resets)
    wide = np.zeros((T, 2 * Bs), np.int32)
    wide[:, ::2] = tokens
    variants = [
        (wide[:, ::2], y, mask, resets.astype(np.uint8)),  # strided int32
        (
            tokens.astype(np.uint8),
            np.asfortranarray(y),
            mask.astype(np.int64),
            resets.astype(np.int8),
        ),
        (tokens, y.astype(np.float32), np.asfortranarray(mask.astype(np.float32)), resets),
    ]
    for v in variants:
        got = run(*v)
        np.testing.assert_array_equal(got[0], base[0])
        np.testing.assert_array_equal(got[1], base[1])


def test_predict_many_streams():
    """B > 4096: the C++ predict runs one step per chunk."""
    model = tbptt.LSTM(I, 2, O, dtype="float64", seed=0)
    x = np.random.default_rng(0).normal(size=(3, 5000, I))
    out, (h, c) = model.predict(x)
    parts = [model.predict(x[:, b : b + 1000]) for b in range(0, 5000, 1000)]
    np.testing.assert_allclose(
        out, np.concatenate([p[0] for p in parts], axis=1), rtol=1e-13, atol=1e-15
    )
    np.testing.assert_allclose(
        h, np.concatenate([p[1][0] for p in parts], axis=1), rtol=1e-13, atol=1e-15
    )


# ---- predict against tbptt.reference.forward -------------------------------------------------


def reference_forward():
    from tbptt import reference

    forward = getattr(reference, "forward", None)
    if forward is None:
        pytest.skip("tbptt.reference.forward does not exist yet")
    return forward


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
@pytest.mark.parametrize("tokens", [False, True], ids=["features", "tokens"])
@pytest.mark.parametrize("L", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", CELLS)
def test_predict_matches_reference_forward(cell, L, tokens, with_state, dtype):
    forward = reference_forward()
    rng = np.random.default_rng(L * 8 + tokens * 4 + with_state * 2 + (dtype == "float64"))
    model = make_model(cell, I, 5, O, num_layers=L, dtype=dtype, seed=3, forget_bias=1.0)
    T, Bp = 17, 4
    x = rng.integers(0, I, size=(T, Bp)) if tokens else rng.normal(size=(T, Bp, I)).astype(dtype)
    # (h0, c0) for an LSTM, (h0,) for the others
    parts = tuple(
        (1 + i) * rng.normal(size=(L, Bp, 5)).astype(dtype)
        if with_state
        else np.zeros((L, Bp, 5), dtype)
        for i in range(len(model.STATE))
    )
    out, state = model.predict(x, state=model._user_state(parts) if with_state else None)
    ref_out, ref_parts = forward(model, x, tokens, parts)
    assert type(state) is (tuple if cell == "lstm" else np.ndarray)
    parts = state if cell == "lstm" else (state,)
    assert out.shape == (T, Bp, O) and out.dtype == np.dtype(dtype)
    # one forward pass, no compounding over updates: float32 agrees to a few ulps of O(1) values
    tol = F64 if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
    key = f"predict vs reference.forward, {dtype}"
    assert_close(out, ref_out, **tol, what="outputs", key=key)
    for a, b, name in zip(parts, ref_parts, model.STATE):
        assert a.shape == (L, Bp, 5) and a.dtype == np.dtype(dtype)
        assert_close(a, b, **tol, what=name, key=key)


def test_predict_continues_from_its_own_state():
    """predict(x) == predict(x[:a]) then predict(x[a:], state) — and it leaves a trainer alone."""
    rng = np.random.default_rng(0)
    model = tbptt.LSTM(I, H, O, num_layers=2, dtype="float64", seed=1)
    trainer = tbptt.Trainer(model, 3, 3, backend="cpp")
    trainer.train(rng.normal(size=(4, 2, I)), rng.normal(size=(4, 2, O)))
    state, pending = trainer.state(), trainer.pending_steps
    x = rng.normal(size=(9000, 2, I))  # longer than the engine's internal chunk of steps
    out, (h, c) = model.predict(x)
    out1, s1 = model.predict(x[:4001])
    out2, (h2, c2) = model.predict(x[4001:], state=s1)
    np.testing.assert_allclose(np.concatenate([out1, out2]), out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h2, h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c2, c, rtol=1e-12, atol=1e-14)
    assert trainer.pending_steps == pending
    assert all(np.array_equal(a, b) for a, b in zip(trainer.state(), state))


def test_zz_report_largest_discrepancies():
    """Run with -s to see the largest relative / absolute discrepancies of this file's
    comparisons."""
    for key, (rel, err) in sorted(WORST.items()):
        print(f"\n[discrepancy] {key}: max relative {rel:.3g}, max absolute {err:.3g}")
