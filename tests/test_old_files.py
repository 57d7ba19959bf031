"""Files written before GRU and RNN existed (tbptt 0.1.0 at commit 1e4b9aa, by
tests/data/make_v0_files.py) still load, and a trainer resumed from one continues exactly as the
old version did: the same losses and parameters after the same further steps."""

import json
import pathlib

import numpy as np
import pytest

import tbptt

DATA = pathlib.Path(__file__).parent / "data"


def continued():
    return json.loads((DATA / "lstm_v0_continued.json").read_text())


def test_an_old_model_file_loads_as_an_lstm():
    model = tbptt.load(DATA / "lstm_model_v0.npz")
    assert type(model) is tbptt.LSTM and model.cell == "lstm" and model.num_layers == 2
    np.testing.assert_array_equal(model.flat_parameters, continued()["numpy"]["params"])


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_an_old_trainer_resumes_exactly(backend):
    trainer = tbptt.load_trainer(DATA / f"lstm_trainer_v0_{backend}.npz")
    assert trainer.backend == backend and type(trainer.model) is tbptt.LSTM
    rng = np.random.default_rng(0)  # the data make_v0_files.py trained on
    x, y = rng.integers(0, 5, (30, 3)), rng.integers(0, 4, (30, 3))
    losses = trainer.train(x[17:], y[17:])
    old = continued()[backend]
    np.testing.assert_allclose(losses, old["losses"], rtol=1e-12)
    np.testing.assert_allclose(trainer.model.flat_parameters, old["params"], rtol=1e-12, atol=1e-15)


def test_an_old_lstm_trainer_does_not_load_onto_a_gru():
    trainer = tbptt.load_trainer(DATA / "lstm_trainer_v0_cpp.npz")
    gru = tbptt.GRU(5, 6, 4, num_layers=2, dtype="float64")
    with pytest.raises(ValueError, match="weight_ih_l0"):
        gru.load_state_dict(trainer.model.state_dict())


def test_an_old_numpy_trainer_resumes_with_the_cpp_engine():
    """A file older than the shared snapshot schema, written by the reference, resumes with the
    C++ engine too (the reference translates its entries) and goes on as the old version did, to
    rounding."""
    trainer = tbptt.load_trainer(DATA / "lstm_trainer_v0_numpy.npz", backend="cpp")
    assert trainer.backend == "cpp" and trainer.pending_steps == 1
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (30, 3)), rng.integers(0, 4, (30, 3))
    losses = trainer.train(x[17:], y[17:])
    old = continued()["numpy"]
    np.testing.assert_allclose(losses, old["losses"], rtol=1e-12)
    np.testing.assert_allclose(trainer.model.flat_parameters, old["params"], rtol=0, atol=1e-13)


def test_an_old_cpp_trainer_with_pending_steps_does_not_resume_with_the_reference():
    """The C++ engine's older entries hold the pending steps' loss terms but not their targets,
    which the reference needs: refused, saying what to do."""
    with pytest.raises(ValueError, match="backend='cpp'"):
        tbptt.load_trainer(DATA / "lstm_trainer_v0_cpp.npz", backend="numpy")


# ---- files of the first shared schema (positional counters), by tests/data/make_schema2_files.py


def schema2_continued():
    return json.loads((DATA / "schema2_continued.json").read_text())


def schema2_data(name):
    rng = np.random.default_rng(2)  # the data make_schema2_files.py trained on
    x_f, y_f = rng.standard_normal((30, 3, 4)), rng.standard_normal((30, 3, 2))
    x_t, y_t = rng.integers(0, 5, (30, 3)), rng.integers(0, 4, (30, 3))
    return (x_f, y_f) if name == "gru" else (x_t, y_t)


@pytest.mark.parametrize("name", ["gru", "lstm"])
@pytest.mark.parametrize("writer", ["cpp", "numpy"])
@pytest.mark.parametrize("target", ["cpp", "numpy"])
def test_a_schema2_trainer_resumes_as_it_did(name, writer, target):
    """Saved with pending steps, a pending reset_state(), dropout and recompute (the GRU), loaded
    with either backend: it goes on as that version went on, exactly with the same backend."""
    trainer = tbptt.load_trainer(DATA / f"{name}_trainer_schema2_{writer}.npz", backend=target)
    assert trainer.backend == target and trainer.pending_steps == 2
    x, y = schema2_data(name)
    losses = list(trainer.train(x[17:], y[17:])) + [trainer.flush()]
    old = schema2_continued()[f"{name}_{writer}_{target}"]
    np.testing.assert_allclose([v for v in losses if v is not None], old["losses"], rtol=1e-12)
    np.testing.assert_allclose(trainer.model.flat_parameters, old["params"], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_a_schema2_pickle_unpickles_and_goes_on_as_it_did(backend):
    """A trainer pickled by that version (its snapshot in schema 2) unpickles through the same
    conversion as a file, and continues as that version's file did."""
    import pickle

    with open(DATA / f"gru_trainer_schema2_{backend}.pickle", "rb") as f:
        trainer = pickle.load(f)
    assert trainer.backend == backend and trainer.pending_steps == 2
    x, y = schema2_data("gru")
    losses = list(trainer.train(x[17:], y[17:])) + [trainer.flush()]
    old = schema2_continued()[f"gru_{backend}_{backend}"]
    np.testing.assert_allclose([v for v in losses if v is not None], old["losses"], rtol=1e-12)
    np.testing.assert_allclose(trainer.model.flat_parameters, old["params"], rtol=1e-12, atol=1e-15)
