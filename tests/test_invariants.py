"""Invariants of TBPTT(k1, k2) (docs/semantics.md §3), on the C++ engine and, where cheap, on both
backends: stream invariance, full BPTT = the exact gradient, no gradient crosses a reset, T = 0,
fixed B, and divergence handling."""

import numpy as np
import pytest
from helpers import fd_gradient

import tbptt

I, H, O = 3, 4, 2
BACKENDS = ["cpp", "numpy"]


def new_trainer(
    backend, k1, k2, L=2, loss="mse", optimizer=None, clip_norm=None, dtype="float64", seed=5
):
    outputs = 2 * O if loss == "gaussian" else O  # a mean and a raw scale per target
    model = tbptt.LSTM(I, H, outputs, num_layers=L, dtype=dtype, seed=seed, forget_bias=1.0)
    if optimizer is None:
        optimizer = tbptt.Adam(lr=0.03)
    return tbptt.Trainer(
        model, k1, k2, loss=loss, optimizer=optimizer, clip_norm=clip_norm, backend=backend
    )


def data(seed, T, B, loss="mse", tokens=False, mask=False, resets=False):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I))
    y = rng.integers(0, O, size=(T, B)) if loss == "cross_entropy" else rng.normal(size=(T, B, O))
    m = rng.uniform(0, 2, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.25) if mask else None
    r = rng.uniform(size=(T, B)) < 0.1 if resets else None
    return x, y, m, r


def sl(a, lo, hi):
    return None if a is None else a[lo:hi]


def params(trainer):
    return trainer.model.flat_parameters.copy()


def assert_same(a, b, rtol=1e-12, atol=1e-14):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ---- stream invariance --------------------------------------------------------------------------

T_SI = 26


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "k1,k2", [(3, 8), (8, 3), (4, 4), (1, 3)], ids=["k2>k1", "k2<k1", "k1=k2", "k1=1"]
)
@pytest.mark.parametrize(
    "variant", ["mse-features", "ce-tokens-mask-resets", "gaussian-mask-resets"]
)
def test_stream_invariance(backend, k1, k2, variant):
    """train(x) == train(x[:a]); train(x[a:]) for every split a, 0 and T included."""
    loss = {"mse": "mse", "ce": "cross_entropy", "gaussian": "gaussian"}[variant.split("-")[0]]
    extra = variant != "mse-features"
    x, y, m, r = data(1, T_SI, 3, loss, tokens=loss == "cross_entropy", mask=extra, resets=extra)
    splits = range(0, T_SI + 1) if backend == "cpp" else (0, 1, k1, 2 * k1 + 1, 13, T_SI - 1, T_SI)
    whole = new_trainer(backend, k1, k2, loss=loss, clip_norm=0.5)
    l_whole = whole.train(x, y, m, r)
    f_whole = whole.flush()
    for a in splits:
        t = new_trainer(backend, k1, k2, loss=loss, clip_norm=0.5)
        l1 = t.train(x[:a], y[:a], sl(m, 0, a), sl(r, 0, a))
        l2 = t.train(x[a:], y[a:], sl(m, a, None), sl(r, a, None))
        assert_same(np.concatenate([l1, l2]), l_whole)
        assert t.pending_steps == T_SI % k1
        for u, v in zip(t.state(), whole.state()):
            assert_same(u, v)
        f = t.flush()
        assert (f is None) == (f_whole is None)
        if f is not None:
            assert_same(f, f_whole)
        assert t.updates == whole.updates
        assert_same(params(t), params(whole))


@pytest.mark.parametrize("k1,k2", [(3, 8), (8, 3)])
def test_stream_invariance_many_random_splits(k1, k2):
    """Chopping the stream into many calls of random lengths (zeros included) changes nothing."""
    x, y, m, r = data(2, 60, 2, mask=True, resets=True)
    whole = new_trainer("cpp", k1, k2, optimizer=tbptt.SGD(0.2, momentum=0.5))
    l_whole = whole.train(x, y, m, r)
    rng = np.random.default_rng(3)
    for _ in range(5):
        cuts = np.sort(rng.integers(0, 61, size=12))
        edges = [0, *cuts, 60]
        t = new_trainer("cpp", k1, k2, optimizer=tbptt.SGD(0.2, momentum=0.5))
        losses = [t.train(x[a:b], y[a:b], m[a:b], r[a:b]) for a, b in zip(edges[:-1], edges[1:])]
        assert_same(np.concatenate(losses), l_whole)
        assert_same(params(t), params(whole))
        assert t.updates == whole.updates and t.pending_steps == whole.pending_steps


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_state_equals_a_resets_row(backend):
    x, y, _, _ = data(4, 20, 2)
    a = new_trainer(backend, 3, 7)
    la = list(a.train(x[:8], y[:8]))
    a.reset_state()
    h, c = a.state()
    assert not h.any() and not c.any() and a.pending_steps == 2  # pending steps stay pending
    la += list(a.train(x[8:], y[8:]))
    resets = np.zeros((20, 2), bool)
    resets[8] = True
    b = new_trainer(backend, 3, 7)
    lb = b.train(x, y, resets=resets)
    assert_same(la, lb)
    assert_same(params(a), params(b))


# ---- k1 = k2 = T is full BPTT: the exact gradient ------------------------------------------------


def predict_loss(model, flat, x, y, mask, resets, loss):
    """The plain full-sequence loss, from model.predict (one step at a time to apply resets)."""
    saved = model.flat_parameters.copy()
    model.flat_parameters[:] = flat
    try:
        T, B = x.shape[0], x.shape[1]
        shape = (model.num_layers, B, model.hidden_size)
        if resets is None:
            out, _ = model.predict(x)
        else:
            state = (np.zeros(shape), np.zeros(shape))
            outs = []
            for t in range(T):
                keep = ~resets[t].astype(bool)[None, :, None]
                state = (state[0] * keep, state[1] * keep)
                o, state = model.predict(x[t : t + 1], state=state)
                outs.append(o)
            out = np.concatenate(outs)
    finally:
        model.flat_parameters[:] = saved
    if loss == "mse":
        per = np.mean((out - y) ** 2, axis=2)
    else:
        top = out.max(axis=2, keepdims=True)
        lse = top[..., 0] + np.log(np.exp(out - top).sum(axis=2))
        per = lse - np.take_along_axis(out, y[..., None], axis=2)[..., 0]
    w = np.ones((T, B)) if mask is None else mask
    return float(np.sum(w * per) / np.sum(w))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["mse-features-L2", "ce-tokens-mask-L1", "mse-mask-resets-L2"])
def test_full_bptt_is_the_exact_gradient(backend, variant):
    loss = "cross_entropy" if "ce" in variant else "mse"
    L = 2 if variant.endswith("L2") else 1
    T, B = 7, 2
    x, y, m, r = data(
        6,
        T,
        B,
        loss,
        tokens="tokens" in variant,
        mask="mask" in variant,
        resets="resets" in variant,
    )
    if r is not None:
        r[:] = False
        r[3, 0] = r[5, 1] = True
    trainer = new_trainer(backend, T, T, L=L, loss=loss, optimizer=tbptt.SGD(lr=1.0))
    model = trainer.model
    theta0 = params(trainer)
    losses = trainer.train(x, y, m, r)
    assert len(losses) == 1 and trainer.updates == 1 and trainer.pending_steps == 0
    grad = theta0 - params(trainer)

    def J(theta):
        return predict_loss(model, theta, x, y, m, r, loss)

    assert losses[0] == pytest.approx(J(theta0), rel=1e-12)
    fd = fd_gradient(J, theta0, eps=1e-6)
    # central differences: truncation O(eps^2) ~ 1e-12, rounding ~ 1e-16 / eps = 1e-10
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
    assert np.linalg.norm(grad - fd) <= 1e-7 * np.linalg.norm(fd)


# ---- no gradient crosses a reset -----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k1,k2", [(3, 50), (4, 4), (6, 2)])
def test_no_gradient_crosses_a_reset(backend, k1, k2):
    """Trainer A sees a prefix of junk (huge inputs, no loss) of length r (a multiple of k1), then
    every stream resets, then the real data. Trainer B sees only the real data. With k2 large, A's
    windows reach back into the prefix: had any gradient crossed the reset, the junk (whose
    activations are far from B's zero state) would change A's updates. A's zero-loss prefix updates
    make no optimiser step, so A and B must end equal."""
    rng = np.random.default_rng(7)
    r, Treal, Bs = 2 * k1, 18, 3
    x_real, y_real = rng.normal(size=(Treal, Bs, I)), rng.normal(size=(Treal, Bs, O))
    x = np.concatenate([50 * rng.normal(size=(r, Bs, I)), x_real])
    y = np.concatenate([rng.normal(size=(r, Bs, O)), y_real])
    mask = np.ones((r + Treal, Bs))
    mask[:r] = 0
    resets = np.zeros((r + Treal, Bs), bool)
    resets[r] = True
    a = new_trainer(backend, k1, k2)
    la = a.train(x, y, mask, resets)
    b = new_trainer(backend, k1, k2)
    lb = b.train(x_real, y_real)
    assert a.updates == b.updates + r // k1
    assert len(lb) > 2
    assert_same(la, lb)
    assert_same(params(a), params(b))
    for u, v in zip(a.state(), b.state()):
        assert_same(u, v)


def test_no_gradient_crosses_a_reset_control():
    """The control for the test above: without the reset, A and B differ (so the test can fail)."""
    rng = np.random.default_rng(7)
    k1, k2, r, Treal, Bs = 3, 50, 6, 18, 3
    x_real, y_real = rng.normal(size=(Treal, Bs, I)), rng.normal(size=(Treal, Bs, O))
    x = np.concatenate([50 * rng.normal(size=(r, Bs, I)), x_real])
    y = np.concatenate([rng.normal(size=(r, Bs, O)), y_real])
    mask = np.ones((r + Treal, Bs))
    mask[:r] = 0
    a = new_trainer("cpp", k1, k2)
    a.train(x, y, mask)
    b = new_trainer("cpp", k1, k2)
    b.train(x_real, y_real)
    assert np.max(np.abs(params(a) - params(b))) > 1e-3


# ---- T = 0, fixed B ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_call_does_nothing(backend):
    t = new_trainer(backend, 3, 5)
    out = t.train(np.zeros((0, 4, I)), np.zeros((0, 4, O)))
    assert isinstance(out, np.ndarray) and out.shape == (0,)
    assert t.state() is None and t.updates == 0 and t.pending_steps == 0
    x, y, _, _ = data(8, 7, 2)  # an empty call does not fix B: B = 2 here is fine
    t.train(x, y)
    before, state = params(t), t.state()
    for empty in [
        (np.zeros((0, 2, I)), np.zeros((0, 2, O))),
        (np.zeros((0, 2, I)), np.zeros((0, 2, O)), np.zeros((0, 2)), np.zeros((0, 2), bool)),
    ]:
        assert t.train(*empty).shape == (0,)
    assert t.pending_steps == 1 and t.updates == 2
    assert np.array_equal(params(t), before)
    assert all(np.array_equal(u, v) for u, v in zip(t.state(), state))
    # and the stream goes on as if the empty calls had not happened
    ref = new_trainer(backend, 3, 5)
    x2, y2, _, _ = data(9, 5, 2)
    ref.train(np.concatenate([x, x2]), np.concatenate([y, y2]))
    t.train(x2, y2)
    assert_same(params(t), params(ref))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_B_is_required(backend):
    t = new_trainer(backend, 3, 3)
    x, y, _, _ = data(10, 4, 3)
    t.train(x, y)
    before = params(t)
    for B in (2, 4):
        x2, y2, _, _ = data(11, 4, B)
        with pytest.raises(ValueError, match=r"x\.shape\[1\]|B = "):
            t.train(x2, y2)
    assert np.array_equal(params(t), before) and t.pending_steps == 1 and t.updates == 1
    t.train(x, y)  # the right B still works
    assert t.updates == 2


# ---- divergence --------------------------------------------------------------------------------


def divergence_data(huge, seed=12):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(14, 2, I)), rng.normal(size=(14, 2, O))
    y[9, 1, 0] = huge  # finite; (out - y)^2 overflows: update 3 (steps 9..12) diverges
    return x, y


# float64 with y = 1e200: (out - y)^2 = 1e400 overflows float64 in any implementation.
# float32 with y = 3e38: finite in float32; its square (9e76) is not, and neither is the
# float32 gradient's square in Adam's second moment.
HUGE = {"float64": 1e200, "float32": 3e38}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_divergence_raises_naming_the_update_and_keeps_the_last_good_update(backend, dtype):
    x, y = divergence_data(HUGE[dtype])
    assert np.isfinite(y.astype(dtype)).all()
    good = new_trainer(backend, 4, 6, dtype=dtype)
    good.train(x[:8], y[:8])  # updates 1 and 2
    a = new_trainer(backend, 4, 6, dtype=dtype)
    with pytest.raises(FloatingPointError, match=r"update 3\b"):
        a.train(x, y)  # 14 steps: update 3 fails at step 12; steps 13, 14 are not processed
    assert np.array_equal(params(a), params(good))
    assert a.pending_steps == 0
    h, c = a.state()
    assert not h.any() and not c.any()
    # it goes on, from a zero state, with the optimiser state of the last good update
    a.lr = 0.01
    good.lr = 0.01
    good.reset_state()
    x2, y2, _, _ = data(13, 9, 2)
    la, lg = a.train(x2, y2), good.train(x2, y2)
    assert len(la) == 2 and np.isfinite(la).all()
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == "float64" else dict(rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(la, lg, **tol)
    np.testing.assert_allclose(params(a), params(good), **tol)
    assert a.pending_steps == good.pending_steps == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_float32_training_never_leaves_non_finite_parameters_silently(backend, optimizer):
    """Finite float32 inputs whose loss overflows float32: either the update raises
    FloatingPointError (and is not applied), or the parameters it leaves are finite."""
    x, y = divergence_data(3e38)
    opt = tbptt.Adam(0.01) if optimizer == "adam" else tbptt.SGD(0.01)
    t = new_trainer(backend, 4, 6, dtype="float32", optimizer=opt)
    try:
        losses = t.train(x, y)
    except FloatingPointError:
        losses = None
    assert np.isfinite(params(t)).all(), f"non-finite parameters after returning losses {losses}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_from_a_huge_learning_rate(backend):
    """float32, SGD with a huge lr: the first update is finite but wrecks the weights; a later
    update is not finite. The weights stay those of the last good update; lowering lr goes on."""
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(40, 2, I)), 10 * rng.normal(size=(40, 2, O))
    t = new_trainer(backend, 2, 2, dtype="float32", optimizer=tbptt.SGD(lr=1e35))
    snapshots = []
    with pytest.raises(FloatingPointError, match=r"update \d+") as info:
        for s in range(0, 40, 2):
            t.train(x[s : s + 2], y[s : s + 2])
            snapshots.append(params(t))
    n = int(info.value.args[0].split("update ")[1].split()[0])
    assert n == len(snapshots) + 1 >= 2
    assert np.array_equal(params(t), snapshots[-1]) and np.isfinite(snapshots[-1]).all()
    assert t.pending_steps == 0
    t.model.load_state_dict(new_trainer(backend, 2, 2, dtype="float32").model.state_dict())
    t.lr = 1e-3
    losses = t.train(x[:10], y[:10])
    assert len(losses) == 5 and np.isfinite(losses).all() and np.isfinite(params(t)).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_during_flush(backend):
    x, y = divergence_data(HUGE["float64"])
    t = new_trainer(backend, 4, 6)
    t.train(x[:10], y[:10])  # updates 1, 2; steps 9, 10 pending (step 10 holds the huge target)
    before = params(t)
    with pytest.raises(FloatingPointError, match=r"update 3\b"):
        t.flush()
    assert np.array_equal(params(t), before) and t.pending_steps == 0
    assert t.flush() is None
    assert len(t.train(x[10:], y[10:])) == 1
