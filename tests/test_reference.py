"""Tests of the NumPy reference engine (backend="numpy") against an independent plain forward pass.

Gradients are read off one SGD(lr=1) update (delta params = -grad) and compared with central
finite differences of the truncated loss, computed with the tests' own forward pass (helpers.py).
The LSTM here; tests/test_cells.py does the same for the GRU and RNN.
"""

import zlib

import numpy as np
import pytest
from helpers import CELLS, fd_gradient, make_model, plain_run, truncated_loss
from helpers import random_data as make_data

import tbptt
from tbptt import reference
from tbptt.engines import native


def new_model(L=1, I=3, H=3, O=2, seed=0, dtype="float64"):
    return tbptt.LSTM(I, H, O, num_layers=L, dtype=dtype, seed=seed)


VARIANTS = [  # loss, layers, tokens, float mask, resets
    ("mse", 1, False, False, False),
    ("cross_entropy", 2, True, True, True),
    ("mse", 2, False, True, True),
    ("cross_entropy", 1, True, False, True),
    ("gaussian", 2, False, True, True),  # O = 2: one target's mean and raw scale
]
SCHEDULES = [  # k1, k2, T, zero-mask steps before, flush at the end
    pytest.param(5, 5, 5, 0, False, id="full-bptt"),
    pytest.param(5, 2, 5, 0, False, id="k2<k1"),
    pytest.param(3, 5, 3, 0, False, id="k2>k1-first-update"),
    pytest.param(3, 5, 6, 3, False, id="k2>k1-reaches-previous-update"),
    pytest.param(3, 4, 7, 6, True, id="flush-reaches-previous-update"),
]


@pytest.mark.parametrize("k1,k2,T,silent,flush", SCHEDULES)
@pytest.mark.parametrize("loss,L,tokens,mask,resets", VARIANTS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradient_matches_finite_differences(
    cell, k1, k2, T, silent, flush, loss, L, tokens, mask, resets
):
    rng = np.random.default_rng(
        zlib.crc32(repr((cell, k1, k2, T, loss, L, tokens, mask, resets)).encode())
    )
    B = 3
    model = make_model(cell, 4, 3, 2, num_layers=L, dtype="float64", seed=1)
    if cell == "rnn_relu":  # keep most units active: a dead unit has a zero gradient to check
        model.flat_parameters[:] += 0.2 * np.sign(model.flat_parameters)
    x, y, m, rs = make_data(rng, T, B, 4, 2, loss, tokens, mask, resets)
    if silent:  # the earlier updates carry no loss: no step, so the weights stay those of theta0
        m = np.ones((T, B)) if m is None else m
        m[:silent] = 0
    theta0 = model.flat_parameters.copy()
    trainer = tbptt.Trainer(model, k1, k2, loss=loss, optimizer=tbptt.SGD(lr=1.0), backend="numpy")
    losses = list(trainer.train(x, y, mask=m, resets=rs))
    if flush:
        losses.append(trainer.flush())
        r = T - (T // k1) * k1
    else:
        r = k1
    assert len(losses) == 1 and trainer.pending_steps == 0
    grad = theta0 - model.flat_parameters
    assert np.count_nonzero(grad) > grad.size // 2

    def J(theta):
        return truncated_loss(model, theta, theta0, x, tokens, y, m, rs, loss, T, r, k2)

    assert losses[0] == pytest.approx(J(theta0), rel=1e-12)
    g_fd = fd_gradient(J, theta0)
    assert np.linalg.norm(grad - g_fd) <= 1e-6 * np.linalg.norm(g_fd)
    np.testing.assert_allclose(grad, g_fd, rtol=1e-5, atol=1e-8)


# ---- optimisers and clipping -------------------------------------------------------------------


def segment_gradient(params, x, y, loss="mse"):
    """Gradient of one full-BPTT update over x from zero state at `params` (one SGD(lr=1) step)."""
    model = new_model(L=2)
    model.flat_parameters[:] = params
    tbptt.Trainer(
        model, len(x), len(x), loss=loss, optimizer=tbptt.SGD(lr=1.0), backend="numpy"
    ).train(x, y)
    return params - model.flat_parameters


def clip(g, norm):
    if norm is None:
        return g
    coef = norm / (np.sqrt(np.sum(g * g)) + 1e-6)
    return g * coef if coef < 1 else g


@pytest.mark.parametrize("clip_norm", [None, 0.05])
@pytest.mark.parametrize("opt", ["adam", "sgd-momentum"])
def test_optimizer_steps_as_torch(opt, clip_norm):
    """Three updates: A, an empty one (mask 0: no step, Adam's counter stays), C after a reset."""
    rng = np.random.default_rng(5)
    k, B = 4, 2
    x, y = rng.normal(size=(3 * k, B, 3)), rng.normal(size=(3 * k, B, 2))
    mask = np.ones((3 * k, B))
    mask[k : 2 * k] = 0
    resets = np.zeros((3 * k, B), bool)
    resets[2 * k] = True
    model = new_model(L=2)
    p0 = model.flat_parameters.copy()
    optimizer = (
        tbptt.Adam(lr=0.01, betas=(0.8, 0.9), eps=1e-7)
        if opt == "adam"
        else tbptt.SGD(lr=0.1, momentum=0.7)
    )
    trainer = tbptt.Trainer(model, k, k, optimizer=optimizer, clip_norm=clip_norm, backend="numpy")
    losses = trainer.train(x, y, mask=mask, resets=resets)
    assert len(losses) == 2 and trainer.updates == 3

    gA = clip(segment_gradient(p0, x[:k], y[:k]), clip_norm)
    if opt == "adam":
        b1, b2, eps, lr = 0.8, 0.9, 1e-7, 0.01
        m = (1 - b1) * gA
        v = (1 - b2) * gA * gA
        p1 = p0 - lr / (1 - b1) * m / (np.sqrt(v) / np.sqrt(1 - b2) + eps)
        gC = clip(segment_gradient(p1, x[2 * k :], y[2 * k :]), clip_norm)
        m = b1 * m + (1 - b1) * gC
        v = b2 * v + (1 - b2) * gC * gC
        p2 = p1 - lr / (1 - b1**2) * m / (np.sqrt(v) / np.sqrt(1 - b2**2) + eps)
    else:
        p1 = p0 - 0.1 * gA
        gC = clip(segment_gradient(p1, x[2 * k :], y[2 * k :]), clip_norm)
        p2 = p1 - 0.1 * (0.7 * gA + gC)
    np.testing.assert_allclose(model.flat_parameters, p2, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("ratio", [0.8, 0.999, 1.2])
def test_clipping_threshold(ratio):
    """clip_norm = ratio * ||g||: scaled by clip / (||g|| + 1e-6) when that is < 1, else
    untouched."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(4, 2, 3)), rng.normal(size=(4, 2, 2))
    model = new_model(L=2)
    p0 = model.flat_parameters.copy()
    g = segment_gradient(p0, x, y)
    norm = np.sqrt(np.sum(g * g))
    tbptt.Trainer(
        model, 4, 4, optimizer=tbptt.SGD(lr=1.0), clip_norm=ratio * norm, backend="numpy"
    ).train(x, y)
    coef = ratio * norm / (norm + 1e-6)
    expected = g * coef if coef < 1 else g
    np.testing.assert_allclose(p0 - model.flat_parameters, expected, rtol=1e-9, atol=1e-15)


def test_parameters_updated_in_place_float32():
    model = tbptt.LSTM(3, 4, 2, seed=0)
    flat, view = model.flat_parameters, model.parameter_views["lstm.weight_hh_l0"]
    before = flat.copy()
    rng = np.random.default_rng(0)
    losses = tbptt.Trainer(model, 3, 3, backend="numpy").train(
        rng.normal(size=(6, 2, 3)), rng.normal(size=(6, 2, 2))
    )
    assert losses.dtype == np.float64 and len(losses) == 2 and np.all(np.isfinite(losses))
    assert (
        model.flat_parameters is flat and flat.dtype == np.float32 and np.shares_memory(view, flat)
    )
    assert not np.array_equal(before, flat)


# ---- stream invariance, flush, reset_state -----------------------------------------------------


def run_in_pieces(splits, k1, k2, loss, x, y, mask, resets):
    model = new_model(L=2, I=4, H=3, O=2, seed=3)
    trainer = tbptt.Trainer(
        model, k1, k2, loss=loss, optimizer=tbptt.Adam(lr=0.05), clip_norm=0.5, backend="numpy"
    )
    losses, edges = [], [0, *splits, len(x)]
    for a, b in zip(edges[:-1], edges[1:]):
        losses += list(trainer.train(x[a:b], y[a:b], mask=mask[a:b], resets=resets[a:b]))
    return model.flat_parameters.copy(), np.array(losses), trainer


@pytest.mark.parametrize("k1,k2", [(3, 5), (4, 2), (1, 4), (5, 5)])
@pytest.mark.parametrize("loss,tokens", [("mse", False), ("cross_entropy", True)])
def test_stream_invariance(k1, k2, loss, tokens):
    rng = np.random.default_rng(11)
    T = 20
    x, y, m, rs = make_data(rng, T, 3, 4, 2, loss, tokens, True, True)
    p_ref, l_ref, t_ref = run_in_pieces([], k1, k2, loss, x, y, m, rs)
    assert len(l_ref) > 0
    for splits in ([1], [0, 7, 8], [3, 6, 9, 12, 15, 18], [19, 20], list(range(1, T))):
        p, l, t = run_in_pieces(splits, k1, k2, loss, x, y, m, rs)
        assert np.array_equal(p, p_ref) and np.array_equal(l, l_ref)
        assert (t.pending_steps, t.updates) == (t_ref.pending_steps, t_ref.updates)
        assert all(np.array_equal(a, b) for a, b in zip(t.state(), t_ref.state()))


def test_flush_semantics():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 2, 4)), rng.normal(size=(20, 2, 2))
    model = new_model(I=4)
    trainer = tbptt.Trainer(model, 3, 5, optimizer=tbptt.SGD(lr=0.1), backend="numpy")
    assert trainer.flush() is None and trainer.updates == 0  # nothing pending: no update
    assert len(trainer.train(x[:7], y[:7])) == 2 and trainer.pending_steps == 1
    loss = trainer.flush()
    assert isinstance(loss, float) and trainer.updates == 3 and trainer.pending_steps == 0
    assert trainer.flush() is None and trainer.updates == 3
    # the next regular update comes k1 steps after the flush
    assert len(trainer.train(x[7:9], y[7:9])) == 0 and trainer.pending_steps == 2
    assert len(trainer.train(x[9:10], y[9:10])) == 1 and trainer.updates == 4
    # a flush over pending steps without loss counts as an update but makes no step
    trainer.train(x[10:12], y[10:12], mask=np.zeros((2, 2)))
    before = model.flat_parameters.copy()
    assert trainer.flush() is None and trainer.updates == 5 and trainer.pending_steps == 0
    assert np.array_equal(before, model.flat_parameters)


def test_reset_state_acts_as_a_resets_row():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(10, 2, 4)), rng.normal(size=(10, 2, 2))
    a = tbptt.Trainer(new_model(I=4), 3, 5, optimizer=tbptt.Adam(0.01), backend="numpy")
    assert a.state() is None
    la = list(a.train(x[:4], y[:4]))
    h, c = a.state()
    assert h.shape == (1, 2, 3) and np.any(h != 0) and np.any(c != 0)
    a.reset_state()
    assert a.pending_steps == 1
    h, c = a.state()
    assert not h.any() and not c.any()
    la += list(a.train(x[4:], y[4:]))
    resets = np.zeros((10, 2), bool)
    resets[4] = True
    b = tbptt.Trainer(new_model(I=4), 3, 5, optimizer=tbptt.Adam(0.01), backend="numpy")
    lb = b.train(x, y, resets=resets)
    assert np.array_equal(la, lb) and np.array_equal(
        a.model.flat_parameters, b.model.flat_parameters
    )


@pytest.mark.parametrize("per_stream", [False, True])
def test_no_gradient_crosses_a_reset(per_stream):
    """Junk steps (mask 0), then a reset, then real steps: the update equals one over the real
    steps alone from a zero state. Per stream: stream 1 has no reset and no loss at all."""
    rng = np.random.default_rng(8)
    x_real, y_real = rng.normal(size=(5, 1, 4)), rng.normal(size=(5, 1, 2))
    x = np.concatenate([100 * rng.normal(size=(3, 1, 4)), x_real])
    y = np.concatenate([rng.normal(size=(3, 1, 2)), y_real])
    mask = np.ones((8, 1))
    mask[:3] = 0
    resets = np.zeros((8, 1), bool)
    resets[3] = True
    if per_stream:
        x = np.concatenate([x, rng.normal(size=(8, 1, 4))], axis=1)
        y = np.concatenate([y, rng.normal(size=(8, 1, 2))], axis=1)
        mask = np.concatenate([mask, np.zeros((8, 1))], axis=1)
        resets = np.concatenate([resets, np.zeros((8, 1), bool)], axis=1)
    a = tbptt.Trainer(new_model(L=2, I=4), 8, 8, optimizer=tbptt.SGD(0.5), backend="numpy")
    la = a.train(x, y, mask=mask, resets=resets)
    b = tbptt.Trainer(new_model(L=2, I=4), 5, 5, optimizer=tbptt.SGD(0.5), backend="numpy")
    lb = b.train(x_real, y_real)
    np.testing.assert_allclose(la, lb, rtol=1e-13)
    np.testing.assert_allclose(
        a.model.flat_parameters, b.model.flat_parameters, rtol=1e-12, atol=1e-15
    )


def test_empty_mask_updates():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(9, 2, 4)), rng.normal(size=(9, 2, 2))
    mask = np.ones((9, 2))
    mask[3:6] = 0
    model = new_model(I=4)
    trainer = tbptt.Trainer(model, 3, 3, optimizer=tbptt.SGD(0.1), backend="numpy")
    assert len(trainer.train(x[:3], y[:3], mask=mask[:3])) == 1
    before = model.flat_parameters.copy()
    assert len(trainer.train(x[3:6], y[3:6], mask=mask[3:6])) == 0
    assert trainer.updates == 2 and np.array_equal(before, model.flat_parameters)
    assert len(trainer.train(x[6:], y[6:], mask=mask[6:])) == 1 and trainer.updates == 3


def test_batch_fixed_and_empty_call():
    rng = np.random.default_rng(0)
    model = new_model(I=4)
    trainer = tbptt.Trainer(model, 2, 2, backend="numpy")
    assert len(trainer.train(np.zeros((0, 3, 4)), np.zeros((0, 3, 2)))) == 0
    assert trainer.state() is None and trainer.updates == 0
    trainer.train(rng.normal(size=(3, 3, 4)), rng.normal(size=(3, 3, 2)))
    before, state = model.flat_parameters.copy(), trainer.state()
    assert len(trainer.train(np.zeros((0, 3, 4)), np.zeros((0, 3, 2)))) == 0
    assert trainer.pending_steps == 1 and np.array_equal(before, model.flat_parameters)
    assert np.array_equal(state[0], trainer.state()[0])
    with pytest.raises(ValueError, match="B = 2"):
        trainer.train(rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 2, 2)))


def test_memory_is_bounded():
    rng = np.random.default_rng(0)
    trainer = tbptt.Trainer(new_model(I=4), 3, 7, backend="numpy")
    for _ in range(5):
        trainer.train(rng.normal(size=(40, 2, 4)), rng.normal(size=(40, 2, 2)))
    assert len(trainer.engine._history) == 7


# ---- divergence --------------------------------------------------------------------------------


def test_divergence_keeps_last_good_update_and_goes_on():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(9, 2, 4)), rng.normal(size=(9, 2, 2))
    y[3:6] = 1e200  # (out - y)^2 overflows: the loss of update 2 is inf
    x2, y2 = rng.normal(size=(6, 2, 4)), rng.normal(size=(6, 2, 2))

    def trainer():
        return tbptt.Trainer(new_model(L=2, I=4), 3, 3, optimizer=tbptt.Adam(0.01), backend="numpy")

    a, b = trainer(), trainer()
    with pytest.raises(FloatingPointError, match="update 2"):
        a.train(x, y)
    assert a.updates == 2 and a.pending_steps == 0
    h, c = a.state()
    assert not h.any() and not c.any()
    b.train(x[:3], y[:3])
    assert np.array_equal(a.model.flat_parameters, b.model.flat_parameters)
    b.reset_state()
    la, lb = a.train(x2, y2), b.train(x2, y2)  # Adam's state is the same too
    assert (
        len(la) == 2
        and np.array_equal(la, lb)
        and np.array_equal(a.model.flat_parameters, b.model.flat_parameters)
    )


def test_divergence_forgets_history():
    """k2 > k1: after a divergence the windows do not reach before it."""
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(6, 2, 4)), rng.normal(size=(6, 2, 2))
    y[2:4] = 1e200
    x2, y2 = rng.normal(size=(6, 2, 4)), rng.normal(size=(6, 2, 2))
    a = tbptt.Trainer(new_model(I=4), 2, 6, optimizer=tbptt.SGD(0.1), backend="numpy")
    with pytest.raises(FloatingPointError, match="update 2"):
        a.train(x, y)
    fresh = new_model(I=4)
    fresh.flat_parameters[:] = a.model.flat_parameters
    b = tbptt.Trainer(fresh, 2, 6, optimizer=tbptt.SGD(0.1), backend="numpy")
    la, lb = a.train(x2, y2), b.train(x2, y2)
    assert np.array_equal(la, lb) and np.array_equal(
        a.model.flat_parameters, b.model.flat_parameters
    )
    assert a.updates == 5


# ---- forward -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [False, True])
def test_forward_matches_plain_forward(tokens):
    rng = np.random.default_rng(1)
    model = new_model(L=2, I=4, H=3, O=2)
    x = rng.integers(0, 4, size=(6, 2)) if tokens else rng.normal(size=(6, 2, 4))
    h0, c0 = rng.normal(size=(2, 2, 3)), rng.normal(size=(2, 2, 3))
    out, (h, c) = reference.forward(model, x, tokens, (h0, c0))
    tops, (hp, cp) = plain_run(
        model, model.flat_parameters, x, tokens, None, (list(h0), list(c0)), range(6)
    )
    P = model.parameter_views
    expected = np.stack([tops[t] @ P["head.weight"].T + P["head.bias"] for t in range(6)])
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h, np.stack(hp), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c, np.stack(cp), rtol=1e-12, atol=1e-14)


def test_forward_matches_predict():
    try:
        native.core()
    except ImportError:
        pytest.skip("the compiled engine is not built")
    rng = np.random.default_rng(1)
    model = new_model(L=2, I=4, H=3, O=2)
    x = rng.normal(size=(6, 2, 4))
    h0, c0 = rng.normal(size=(2, 2, 3)), rng.normal(size=(2, 2, 3))
    out, (h, c) = reference.forward(model, x, False, (h0, c0))
    out_p, (h_p, c_p) = model.predict(x, (h0, c0))
    np.testing.assert_allclose(out, out_p, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(h, h_p, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(c, c_p, rtol=1e-10, atol=1e-13)
