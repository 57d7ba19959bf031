"""The GRU and the Elman RNN (tanh, relu) beside the LSTM (docs/semantics.md §6).

- the models: torch's keys and shapes, the initialisation, `cell`, config, the kind of state;
- stream invariance, checkpoints (model files and exact resume), generate, fit / evaluate;
- bad input: `nonlinearity`, a state of the wrong kind, another cell's state_dict or engine state.

The reference's gradient against finite differences for every cell is in test_reference.py, the
C++ engine against the reference in test_backends.py and test_horizon.py, torch's nn.GRU / nn.RNN
in test_torch.py.
"""

import numpy as np
import pytest
from helpers import CELLS, make_model, random_data

import tbptt
from tbptt import _native, cells, checkpoint, losses, reference

NEW_CELLS = [c for c in CELLS if c != "lstm"]
BACKENDS = ["cpp", "numpy"]
I, H, O, B = 4, 3, 2, 3


# ---- the models --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell,prefix,gates",
    [("lstm", "lstm", 4), ("gru", "gru", 3), ("rnn_tanh", "rnn", 1), ("rnn_relu", "rnn", 1)],
)
def test_keys_shapes_and_cell_as_torch(cell, prefix, gates):
    model = make_model(cell, 5, 4, 3, num_layers=2)
    assert model.cell == cell
    expected = []
    for k, n_in in enumerate((5, 4)):
        expected += [
            (f"{prefix}.weight_ih_l{k}", (gates * 4, n_in)),
            (f"{prefix}.weight_hh_l{k}", (gates * 4, 4)),
            (f"{prefix}.bias_ih_l{k}", (gates * 4,)),
            (f"{prefix}.bias_hh_l{k}", (gates * 4,)),
        ]
    expected += [("head.weight", (3, 4)), ("head.bias", (3,))]
    assert [(name, p.shape) for name, p in model.state_dict().items()] == expected
    assert model.num_parameters == sum(int(np.prod(s)) for _, s in expected)
    assert model.flat_parameters.ctypes.data % 64 == 0


@pytest.mark.parametrize("cell", CELLS)
def test_initialisation_is_one_uniform_draw_in_state_dict_order(cell):
    """Every parameter uniform in (-1/sqrt(H), 1/sqrt(H)), drawn in one go from the seed: the
    LSTM's values for a seed are those of the LSTM-only tbptt."""
    model = make_model(cell, 3, 16, 2, num_layers=2, dtype="float64", seed=42)
    expected = np.random.default_rng(42).uniform(-0.25, 0.25, size=model.num_parameters)
    np.testing.assert_array_equal(model.flat_parameters, expected)
    other = make_model(cell, 3, 16, 2, num_layers=2, dtype="float64", seed=43)
    assert not np.array_equal(other.flat_parameters, model.flat_parameters)


def test_config_repr_and_exports():
    assert tbptt.GRU is tbptt.model.GRU and tbptt.RNN is tbptt.model.RNN
    assert {"GRU", "RNN", "LSTM"} <= set(tbptt.__all__)
    gru = tbptt.GRU(3, 4, 2, num_layers=2, dtype="float64", seed=1)
    rnn = tbptt.RNN(3, 4, 2, nonlinearity="relu")
    lstm = tbptt.LSTM(3, 4, 2, forget_bias=1.0)
    assert gru.config() == dict(
        cell="gru", input_size=3, hidden_size=4, output_size=2, num_layers=2, dtype="float64"
    )
    assert rnn.config() == dict(
        cell="rnn",
        input_size=3,
        hidden_size=4,
        output_size=2,
        num_layers=1,
        dtype="float32",
        nonlinearity="relu",
    )
    assert lstm.config()["cell"] == "lstm" and lstm.config()["forget_bias"] == 1.0
    assert tbptt.RNN(3, 4, 2).cell == "rnn_tanh" and rnn.cell == "rnn_relu"
    assert repr(gru).startswith("GRU(input_size=3") and "nonlinearity='relu'" in repr(rnn)
    for model in (gru, rnn, lstm):
        assert tbptt.model.from_config(model.config()).config() == model.config()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tokens", [False, True], ids=["features", "tokens"])
def test_predict_state_kind_and_continuation(cell, tokens):
    """LSTM: (h, c); GRU, RNN: h alone, (L, B, H). predict in two pieces with the state carried
    equals one call; predict(x, state) agrees with the reference's forward."""
    model = make_model(cell, I, H, O, num_layers=2, dtype="float64", seed=3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, I, size=(9, B)) if tokens else rng.normal(size=(9, B, I))
    out, state = model.predict(x)
    if cell == "lstm":
        assert isinstance(state, tuple) and len(state) == 2
    else:
        assert isinstance(state, np.ndarray)
    for part in model._state_parts(state, B):
        assert part.shape == (2, B, H) and part.dtype == np.float64
    out1, s1 = model.predict(x[:4])
    out2, s2 = model.predict(x[4:], s1)
    np.testing.assert_allclose(np.concatenate([out1, out2]), out, rtol=1e-12, atol=1e-14)
    for a, b in zip(model._state_parts(s2, B), model._state_parts(state, B)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    ref_out, ref_state = reference.forward(model, x[4:], tokens, model._state_parts(s1, B))
    np.testing.assert_allclose(ref_out, out2, rtol=1e-10, atol=1e-13)
    for a, b in zip(ref_state, model._state_parts(s2, B)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    empty, same = model.predict(x[:0], state)
    assert empty.shape == (0, B, O)
    for a, b in zip(model._state_parts(same, B), model._state_parts(state, B)):
        assert np.array_equal(a, b)


def test_rnn_relu_is_not_tanh():
    """The two nonlinearities share parameters' layout, not the forward pass."""
    x = np.random.default_rng(0).normal(size=(5, 2, I))
    h_tanh = tbptt.RNN(I, H, O, nonlinearity="tanh", dtype="float64", seed=0).predict(x)[1]
    h_relu = tbptt.RNN(I, H, O, nonlinearity="relu", dtype="float64", seed=0).predict(x)[1]
    assert (h_relu >= 0).all() and (h_tanh < 0).any()


# ---- the one table of cell facts (tbptt.cells) against the core and the reference ---------------


@pytest.fixture
def core():
    try:
        return _native.core()
    except ImportError:
        pytest.skip("no compiled engine")


@pytest.mark.parametrize(
    "table,traits,unknown,message",
    [
        (cells.CELLS, "cell_traits", "lstm2", "cell must be"),
        (losses.LOSSES, "loss_traits", "mae", "loss must be"),
    ],
)
def test_the_tables_are_the_cores(core, table, traits, unknown, message):
    """tbptt.cells.CELLS and tbptt.losses.LOSSES say of every cell and loss what the C++ core's
    CellTraits and LossTraits say; the core refuses a name it does not have."""
    for name, spec in table.items():
        assert getattr(core, traits)(name) == spec.core_traits(), name
    with pytest.raises(ValueError, match=message):
        getattr(core, traits)(unknown)


@pytest.mark.parametrize("cell", CELLS)
def test_the_cell_table_is_the_references(cell):
    """The reference cell keeps, under the table's names, what the snapshot's window/gates holds."""
    spec, ref = cells.CELLS[cell], reference._CELLS[cell]
    assert (ref.prefix, ref.STATE) == (spec.prefix, spec.state)
    assert set(spec.snapshot_gates) <= set(ref.CACHE)


# ---- stream invariance -------------------------------------------------------------------------


def new_trainer(cell, backend, k1, k2, loss="mse", dtype="float64"):
    model = make_model(cell, I, H, O, num_layers=2, dtype=dtype, seed=5)
    return tbptt.Trainer(
        model, k1, k2, loss=loss, optimizer=tbptt.Adam(0.05), clip_norm=0.5, backend=backend
    )


def train_in_pieces(trainer, data, edges):
    x, y, m, r = data
    return np.concatenate(
        [trainer.train(x[a:b], y[a:b], m[a:b], r[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k1,k2", [(3, 8), (8, 3), (4, 4), (1, 3)])
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_stream_invariance(cell, k1, k2, backend):
    """train(x) == train(x[:a]); train(x[a:]) == many calls; flush() then agrees too."""
    T = 26
    data = random_data(
        np.random.default_rng(k1 * 10 + k2), T, B, I, O, "cross_entropy", True, True, True
    )
    whole = new_trainer(cell, backend, k1, k2, loss="cross_entropy")
    l_whole = train_in_pieces(whole, data, [0, T])
    for edges in ([0, 1, T], [0, 7, 7, 8, T], [0, 3, 6, 9, 12, 15, 18, 21, 24, T], [0, T - 1, T]):
        t = new_trainer(cell, backend, k1, k2, loss="cross_entropy")
        np.testing.assert_allclose(train_in_pieces(t, data, edges), l_whole, rtol=1e-12, atol=1e-14)
        assert (t.pending_steps, t.updates) == (whole.pending_steps, whole.updates)
        assert isinstance(t.state(), np.ndarray) and t.state().shape == (2, B, H)
        np.testing.assert_allclose(t.state(), whole.state(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            t.model.flat_parameters, whole.model.flat_parameters, rtol=1e-12, atol=1e-14
        )
    f, f_whole = t.flush(), whole.flush()
    assert (f is None) == (f_whole is None)
    np.testing.assert_allclose(
        t.model.flat_parameters, whole.model.flat_parameters, rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_state_reset_and_horizon(cell, backend):
    """state() is h; reset_state() zeroes it for the next step; the horizon has dh, not dc."""
    trainer = new_trainer(cell, backend, 3, 5)
    assert trainer.state() is None
    x, y, _, _ = random_data(np.random.default_rng(1), 7, B, I, O, "mse", False, False, False)
    trainer.train(x, y)
    h = trainer.state()
    assert isinstance(h, np.ndarray) and h.shape == (2, B, H) and np.abs(h).sum() > 0
    trainer.reset_state()
    assert np.array_equal(trainer.state(), np.zeros((2, B, H)))
    horizon = trainer.horizon()
    assert set(horizon) == {"dh", "updates"}
    assert horizon["dh"].shape == (2, 5) and list(horizon["updates"]) == [2, 2, 2, 1, 1]
    assert np.isfinite(horizon["dh"]).all() and (horizon["dh"] > 0).all()
    sums, _ = trainer.engine.horizon()
    assert sums.shape == (2, 2, 5) and not sums[1].any()  # no c: its row stays zero


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_divergence_keeps_the_last_good_update(cell, backend):
    """docs/semantics.md §3.6 for every cell: update 5 overflows; updates 1..4 stay applied, h is
    zeroed, and the trainer goes on."""
    x, y, _, _ = random_data(np.random.default_rng(0), 30, B, I, O, "mse", False, False, False)
    y[22] = 1e200
    trainer = new_trainer(cell, backend, 5, 5)
    good = new_trainer(cell, backend, 5, 5)
    losses = good.train(x[:20], y[:20])
    with pytest.raises(FloatingPointError, match="update 5") as error:
        trainer.train(x, y)
    np.testing.assert_array_equal(error.value.losses, losses)
    np.testing.assert_array_equal(trainer.model.flat_parameters, good.model.flat_parameters)
    assert trainer.pending_steps == 0 and not trainer.state().any()
    assert np.isfinite(trainer.train(x[:10], y[:10])).all()


# ---- checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_model_file_round_trip(tmp_path, cell):
    model = make_model(cell, I, H, O, num_layers=2, dtype="float64", seed=7)
    model.save(tmp_path / "m.npz")
    loaded = tbptt.load(tmp_path / "m.npz")
    assert type(loaded) is type(model) and loaded.cell == cell
    assert loaded.config() == model.config()
    assert np.array_equal(loaded.flat_parameters, model.flat_parameters)
    x = np.random.default_rng(0).normal(size=(5, 2, I))
    np.testing.assert_array_equal(loaded.predict(x)[0], model.predict(x)[0])


def test_model_file_without_a_cell_loads_as_lstm(tmp_path):
    """Files written before GRU and RNN existed have no "cell" in their config."""
    model = tbptt.LSTM(I, H, O, num_layers=2, seed=1, forget_bias=1.0)
    config = model.config()
    del config["cell"]
    checkpoint.save_arrays(
        tmp_path / "old.npz", {"kind": "model", "config": config}, model.state_dict()
    )
    loaded = tbptt.load(tmp_path / "old.npz")
    assert isinstance(loaded, tbptt.LSTM) and loaded.config() == model.config()
    assert np.array_equal(loaded.flat_parameters, model.flat_parameters)


def test_trainer_file_without_a_cell_loads_as_lstm(tmp_path):
    trainer = tbptt.Trainer(tbptt.LSTM(I, H, O, dtype="float64", seed=1), 3, 5, backend="numpy")
    x, y, _, _ = random_data(np.random.default_rng(1), 7, B, I, O, "mse", False, False, False)
    trainer.train(x, y)
    trainer.save(tmp_path / "t.npz")
    header, arrays = checkpoint.load_arrays(tmp_path / "t.npz", "trainer")
    del header["model"]["cell"], header["format"], header["version"]
    checkpoint.save_arrays(tmp_path / "old.npz", header, arrays)
    loaded = tbptt.load_trainer(tmp_path / "old.npz")
    assert isinstance(loaded.model, tbptt.LSTM) and loaded.pending_steps == 1
    assert all(np.array_equal(a, b) for a, b in zip(loaded.state(), trainer.state()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k1,k2", [(3, 7), (5, 2)])
@pytest.mark.parametrize("tokens,loss", [(False, "mse"), (True, "cross_entropy")])
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_resume_equals_not_stopping(tmp_path, cell, tokens, loss, k1, k2, backend):
    """Train, save mid-update, load, train on: as if never stopped (same split of calls)."""
    T = 23
    data = random_data(np.random.default_rng(3), T, B, I, O, loss, tokens, True, True)
    ref = new_trainer(cell, backend, k1, k2, loss=loss)
    l_ref = train_in_pieces(ref, data, [0, 11, T])
    first = new_trainer(cell, backend, k1, k2, loss=loss)
    losses = list(train_in_pieces(first, data, [0, 11]))
    first.save(tmp_path / "t.npz")
    resumed = tbptt.load_trainer(tmp_path / "t.npz")
    assert type(resumed.model) is type(first.model) and resumed.model.cell == cell
    assert np.array_equal(resumed.state(), first.state())
    losses += list(train_in_pieces(resumed, data, [11, T]))
    assert (resumed.updates, resumed.pending_steps) == (ref.updates, ref.pending_steps)
    tol = 0 if backend == "numpy" else 1e-14  # the C++ engine: a few ulps (see test_checkpoint.py)
    np.testing.assert_allclose(losses, l_ref, rtol=tol, atol=0)
    np.testing.assert_allclose(
        resumed.model.flat_parameters, ref.model.flat_parameters, rtol=0, atol=tol
    )
    np.testing.assert_allclose(resumed.state(), ref.state(), rtol=0, atol=tol)


# ---- generate, fit, evaluate -------------------------------------------------------------------


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_generate_fit_and_evaluate(cell):
    """A token GRU / RNN learns a repeating sequence with fit and continues it with generate;
    evaluate carries h over the data and through its resets."""
    V = 4
    seq = np.tile(np.arange(V), 60)
    x, y = seq[:-1].reshape(-1, 1), seq[1:].reshape(-1, 1)
    model = make_model(cell, V, 16, V, seed=0)
    trainer = tbptt.Trainer(model, 8, 8, loss="cross_entropy", optimizer=tbptt.Adam(0.05))
    history = trainer.fit(x, y, epochs=5, progress=False, validation=(x, y))
    assert history.val_accuracy[-1] > 0.95
    out = tbptt.generate(model, None, np.array([0, 1]), 8, temperature=0)
    np.testing.assert_array_equal(out, [2, 3, 0, 1, 2, 3, 0, 1])
    resets = np.zeros(x.shape, bool)
    resets[::20] = True
    result = trainer.evaluate(x, y, resets=resets, block=7)
    assert 0 <= result["loss"] < history.val_loss[-1] + 0.5 and result["accuracy"] > 0.9


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("nonlinearity", ["sigmoid", "Tanh", "", None, 1, ["tanh"]])
def test_bad_nonlinearity(nonlinearity):
    with pytest.raises(ValueError, match="nonlinearity"):
        tbptt.RNN(3, 4, 2, nonlinearity=nonlinearity)


@pytest.mark.parametrize(
    "make",
    [
        lambda: tbptt.GRU(I, 0, O),
        lambda: tbptt.RNN(I, H, O, num_layers=0),
        lambda: tbptt.GRU(I, H, O, dtype="float16"),
        lambda: tbptt.RNN(I, H, O, seed=-1),
    ],
)
def test_bad_sizes_are_refused_as_for_the_lstm(make):
    with pytest.raises(ValueError, match="hidden_size|num_layers|dtype|seed"):
        make()


def test_gru_and_rnn_take_no_forget_bias():
    with pytest.raises(TypeError, match="forget_bias"):
        tbptt.GRU(I, H, O, forget_bias=1.0)


S = (1, B, H)


@pytest.mark.parametrize(
    "cell,state,exc,match",
    [
        ("gru", (np.zeros(S),), TypeError, "state"),
        ("gru", (np.zeros(S), np.zeros(S)), TypeError, "state"),
        ("rnn_relu", [np.zeros(S)], TypeError, "state"),
        ("gru", np.zeros((1, B + 1, H)), ValueError, "state"),
        ("rnn_tanh", np.zeros((B, H)), ValueError, "state"),
        ("gru", np.full(S, np.nan), ValueError, "state"),
        ("gru", np.full(S, "a"), TypeError, "state"),
        ("lstm", np.zeros(S), TypeError, "state"),
        ("lstm", (np.zeros(S),), TypeError, "state"),
    ],
)
def test_state_of_the_wrong_kind(cell, state, exc, match):
    model = make_model(cell, I, H, O)
    with pytest.raises(exc, match=match):
        model.predict(np.zeros((2, B, I)), state)


@pytest.mark.parametrize(
    "source,target", [("gru", "lstm"), ("lstm", "gru"), ("rnn_tanh", "gru"), ("gru", "rnn_relu")]
)
def test_another_cells_state_dict_is_refused_naming_the_key(source, target):
    sd = make_model(source, I, H, O, num_layers=2).state_dict()
    model = make_model(target, I, H, O, num_layers=2)
    before = model.flat_parameters.copy()
    expected_key = f"{target.split('_')[0]}.weight_ih_l0"
    with pytest.raises(ValueError, match=expected_key.replace(".", r"\.")) as error:
        model.load_state_dict(sd)
    assert f"tbptt.{type(make_model(source, 1, 1, 1)).__name__}" in str(error.value)
    assert np.array_equal(model.flat_parameters, before)


def test_rnn_state_dicts_move_between_nonlinearities():
    """Same keys, same shapes (as torch): only the forward pass differs."""
    tanh = tbptt.RNN(I, H, O, seed=1)
    relu = tbptt.RNN(I, H, O, nonlinearity="relu", seed=2)
    relu.load_state_dict(tanh.state_dict())
    assert np.array_equal(relu.flat_parameters, tanh.flat_parameters)


def trained(cell, backend):
    trainer = new_trainer(cell, backend, 3, 5)
    x, y, _, _ = random_data(np.random.default_rng(1), 7, B, I, O, "mse", False, False, False)
    trainer.train(x, y)
    return trainer


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source,target", [("lstm", "gru"), ("gru", "lstm"), ("gru", "rnn_tanh")])
def test_another_cells_engine_state_is_refused(source, target, backend):
    state = trained(source, backend).engine.snapshot()
    trainer = trained(target, backend)
    before = trainer.engine.snapshot()
    with pytest.raises(ValueError, match="engine state"):
        trainer.engine.restore(state)
    after = trainer.engine.snapshot()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing changed


def test_numpy_engine_names_the_cell_of_a_foreign_state():
    state = trained("lstm", "numpy").engine.snapshot()
    with pytest.raises(ValueError, match=r"tbptt\.LSTM, not of a tbptt\.GRU"):
        trained("gru", "numpy").engine.restore(state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_trainer_checkpoint_does_not_load_onto_a_gru(tmp_path, backend):
    """A checkpoint whose header says GRU but whose arrays are an LSTM trainer's: ValueError."""
    trained("lstm", backend).save(tmp_path / "lstm.npz")
    header, arrays = checkpoint.load_arrays(tmp_path / "lstm.npz", "trainer")
    header["model"] = trained("gru", backend).model.config()
    del header["format"], header["version"]
    checkpoint.save_arrays(tmp_path / "forged.npz", header, arrays)
    with pytest.raises(ValueError, match=r"gru\.weight_ih_l0"):
        tbptt.load_trainer(tmp_path / "forged.npz")


@pytest.mark.parametrize("cell", ["GRU", "gru_tanh", "", 3, None])
def test_model_file_with_an_unknown_cell(tmp_path, cell):
    model = tbptt.GRU(I, H, O)
    header = {"kind": "model", "config": dict(model.config(), cell=cell)}
    checkpoint.save_arrays(tmp_path / "m.npz", header, model.state_dict())
    with pytest.raises(ValueError, match="cell"):
        tbptt.load(tmp_path / "m.npz")


def test_trainer_and_generate_refuse_other_models():
    with pytest.raises(TypeError, match="model"):
        tbptt.Trainer(object(), 3, 3)
    with pytest.raises(TypeError, match="model"):
        tbptt.generate("a model", None, np.array([0]), 3)
