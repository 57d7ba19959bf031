"""Dropout (torch's meaning between stacked layers, plus the top layer's output before the head):
masks from a counter-based generator, a function of (seed, layer, step, stream, unit) that both
backends implement, so a run is reproducible from its seed, resumes exactly, and the C++ engine is
checked against the reference with dropout on; off in predict and evaluate."""

import numpy as np
import pytest
from helpers import CELLS, fd_gradient, make_model, random_data, truncated_loss

import tbptt
from tbptt.reference import dropout_mask

BACKENDS = ["cpp", "numpy"]


def dropout_model(cell, L=2, dtype="float64", p=0.3, q=0.2, I=4, H=6, O=2):
    model = make_model(cell, I, H, O, num_layers=L, dtype=dtype, seed=3, dropout=p, head_dropout=q)
    if cell == "rnn_relu":  # keep most units active: a dead unit has a zero gradient to check
        model.flat_parameters[:] += 0.2 * np.sign(model.flat_parameters)
    return model


def test_masks_drop_the_asked_fraction_and_scale_the_rest():
    mask = dropout_mask(0.3, 7, 1, 12345, 64, 512, np.dtype("float64"))
    kept = mask != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_array_equal(mask[kept], 1 / 0.7)
    same = dropout_mask(0.3, 7, 1, 12345, 64, 512, np.dtype("float64"))
    np.testing.assert_array_equal(mask, same)  # a pure function of its arguments
    for other in [dict(seed=8), dict(layer=2), dict(step=12346)]:
        args = dict(seed=7, layer=1, step=12345) | other
        different = dropout_mask(
            0.3, args["seed"], args["layer"], args["step"], 64, 512, np.dtype("float64")
        )
        assert 0.3 < np.mean((different != 0) != kept) < 0.5  # independent: ~2 p (1 - p)
    assert (mask[0] != mask[1]).any() and (mask[:, 0] != mask[:, 1]).any()  # streams, units


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("k1,k2,T", [(4, 4, 4), (3, 5, 6), (5, 2, 5)])
@pytest.mark.parametrize("tokens", [False, True])
def test_gradient_with_dropout_matches_finite_differences(cell, k1, k2, T, tokens):
    rng = np.random.default_rng(k1 * 100 + k2 * 10 + T)
    model = dropout_model(cell)
    x, y, m, rs = random_data(rng, T, 3, 4, 2, "cross_entropy", tokens, False, True)
    trainer = tbptt.Trainer(
        model, k1, k2, loss="cross_entropy", optimizer=tbptt.SGD(lr=1.0), backend="numpy", seed=11
    )
    theta0 = model.flat_parameters.copy()
    m = np.ones((T, 3))
    m[: T - k1] = 0  # only the last update carries loss: the weights before it stay theta0
    losses = trainer.train(x, y, mask=m, resets=rs)
    grad = theta0 - model.flat_parameters
    dtype = np.dtype("float64")

    def masks(k, t):
        p = model.dropout if k < model.num_layers - 1 else model.head_dropout
        return dropout_mask(p, 11, k, t, 3, model.hidden_size, dtype)

    def J(theta):
        return truncated_loss(
            model, theta, theta0, x, tokens, y, m, rs, "cross_entropy", T, k1, k2, masks
        )

    assert losses[-1] == pytest.approx(J(theta0), rel=1e-12)
    g_fd = fd_gradient(J, theta0)
    assert np.linalg.norm(grad - g_fd) <= 1e-6 * np.linalg.norm(g_fd)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("k1,k2", [(3, 7), (5, 2), (4, 4)])
def test_cpp_matches_the_reference_with_dropout(cell, k1, k2):
    rng = np.random.default_rng(0)
    x, y, m, rs = random_data(rng, 29, 5, 4, 2, "mse", False, True, True)
    results = []
    for backend in BACKENDS:
        model = dropout_model(cell, L=3)
        trainer = tbptt.Trainer(
            model, k1, k2, optimizer=tbptt.Adam(0.02), clip_norm=1.0, backend=backend, seed=4
        )
        losses = np.concatenate(
            [
                trainer.train(x[:11], y[:11], m[:11], rs[:11]),
                trainer.train(x[11:], y[11:], m[11:], rs[11:]),
            ]
        )
        results.append((losses, model.flat_parameters.copy()))
    (a, pa), (b, pb) = results
    np.testing.assert_allclose(a, b, rtol=1e-10)
    np.testing.assert_allclose(pa, pb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_reproducible_from_the_seed_and_changes_training(backend):
    rng = np.random.default_rng(1)
    x, y, _, _ = random_data(rng, 40, 4, 4, 2, "mse", False, False, False)

    def run(seed, p=0.4):
        model = dropout_model("lstm", p=p, q=p)
        trainer = tbptt.Trainer(model, 5, 5, optimizer=tbptt.Adam(0.02), backend=backend, seed=seed)
        return trainer.train(x, y), model

    (a, _), (b, _), (c, _), (off, plain) = run(1), run(1), run(2), run(1, p=0.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, off)
    reference = make_model("lstm", 4, 6, 2, num_layers=2, dtype="float64", seed=3)
    tbptt.Trainer(reference, 5, 5, optimizer=tbptt.Adam(0.02), backend=backend).train(x, y)
    np.testing.assert_array_equal(
        plain.flat_parameters, reference.flat_parameters
    )  # p = 0 is no dropout at all


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_with_dropout_is_exact(tmp_path, backend):
    rng = np.random.default_rng(2)
    x, y, _, _ = random_data(rng, 30, 3, 4, 2, "mse", False, False, False)
    model = dropout_model("gru")
    trainer = tbptt.Trainer(model, 4, 6, optimizer=tbptt.Adam(0.02), backend=backend, seed=9)
    trainer.train(x[:13], y[:13])
    trainer.save(tmp_path / "t.npz")
    expected = trainer.train(x[13:], y[13:])
    resumed = tbptt.load_trainer(tmp_path / "t.npz")
    assert resumed.seed == 9 and resumed.model.dropout == 0.3 and resumed.model.head_dropout == 0.2
    np.testing.assert_array_equal(resumed.train(x[13:], y[13:]), expected)
    np.testing.assert_array_equal(resumed.model.flat_parameters, model.flat_parameters)


def test_predict_and_evaluate_run_without_dropout():
    rng = np.random.default_rng(3)
    x, y, _, _ = random_data(rng, 12, 2, 4, 2, "mse", False, False, False)
    model = dropout_model("lstm", p=0.5, q=0.5)
    plain = make_model("lstm", 4, 6, 2, num_layers=2, dtype="float64", seed=3)
    np.testing.assert_array_equal(model.predict(x)[0], plain.predict(x)[0])
    trainer = tbptt.Trainer(model, 4, 4, seed=1)
    assert trainer.evaluate(x, y) == tbptt.Trainer(plain, 4, 4).evaluate(x, y)


@pytest.mark.parametrize(
    "value, error",
    [(1.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError), ("0.5", TypeError)],
)
@pytest.mark.parametrize("name", ["dropout", "head_dropout"])
def test_bad_dropout(name, value, error):
    with pytest.raises(error, match=name):
        tbptt.GRU(3, 4, 2, **{name: value})


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        tbptt.Trainer(tbptt.LSTM(3, 4, 2), 2, 2, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        tbptt.Trainer(tbptt.LSTM(3, 4, 2), 2, 2, seed=1.5)


def test_a_model_file_keeps_its_dropout(tmp_path):
    model = tbptt.RNN(3, 4, 2, nonlinearity="relu", dropout=0.25, head_dropout=0.1)
    model.save(tmp_path / "m.npz")
    again = tbptt.load(tmp_path / "m.npz")
    assert (again.dropout, again.head_dropout, again.nonlinearity) == (0.25, 0.1, "relu")
    assert "dropout" not in tbptt.LSTM(3, 4, 2).config()  # files without dropout stay as they were
