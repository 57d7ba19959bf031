"""The engines' face (tbptt.engines): what an engine knows of a model (`ModelSpec`), and the
backend chosen by name, for `predict` as for `Trainer`: never a silent fall-back from the
compiled engine to the reference when "cpp" was asked for."""

import numpy as np
import pytest
from helpers import CELLS, make_model

import tbptt
from tbptt import engines
from tbptt.engines import native
from tbptt.engines.spec import ModelSpec

I, H, O, L, B, T = 3, 4, 2, 2, 3, 6


def no_compiled_engine():
    raise ImportError("no compiled tbptt engine (simulated)")


@pytest.mark.parametrize("cell", CELLS)
def test_the_spec_holds_the_models_live_parameters(cell):
    model = make_model(cell, I, H, O, num_layers=L, dtype="float64", seed=1, dropout=0.25)
    spec = model.spec
    assert isinstance(spec, ModelSpec)
    assert (spec.cell, spec.input_size, spec.hidden_size, spec.output_size, spec.num_layers) == (
        model.cell,
        I,
        H,
        O,
        L,
    )
    assert spec.dtype == np.float64 and spec.dropout == 0.25 and spec.STATE == model.STATE
    assert spec.flat_parameters is model.flat_parameters
    assert spec.num_parameters == model.num_parameters
    assert list(spec.parameter_views) == list(model.parameter_views)
    model.flat_parameters[:] = 0.5  # the views are the model's, live
    assert all((view == 0.5).all() for view in spec.parameter_views.values())


@pytest.mark.parametrize("backend", engines.BACKENDS)
def test_an_engine_is_built_from_a_spec_alone(backend):
    model = make_model("gru", I, H, O, num_layers=L, dtype="float64", seed=2)
    before = model.flat_parameters.copy()
    engine = engines.make_engine(backend, model.spec, 2, 3, "mse", tbptt.SGD(0.1).config(), None, 0)
    rng = np.random.default_rng(0)
    engine.train(rng.normal(size=(T, B, I)), False, rng.normal(size=(T, B, O)), None, None)
    assert engine.updates == T // 2
    assert not np.array_equal(model.flat_parameters, before)  # updated in place, via the spec


@pytest.mark.parametrize("cell", CELLS)
def test_predict_on_either_backend_and_by_default(cell):
    model = make_model(cell, I, H, O, num_layers=L, dtype="float64", seed=3)
    x = np.random.default_rng(1).normal(size=(T, B, I))
    cpp, state_cpp = model.predict(x, backend="cpp")
    ref, state_ref = model.predict(x, None, "numpy")
    default, _ = model.predict(x)  # the compiled engine imports here: "cpp"
    np.testing.assert_allclose(cpp, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(default, cpp)
    for a, b in zip(
        state_cpp if isinstance(state_cpp, tuple) else (state_cpp,),
        state_ref if isinstance(state_ref, tuple) else (state_ref,),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    first, state = model.predict(x[:3])  # SPEC: outputs, state = model.predict(x, state=None)
    rest, _ = model.predict(x[3:], state)
    np.testing.assert_allclose(np.concatenate([first, rest]), cpp, rtol=1e-10, atol=1e-12)


def test_an_unknown_backend_is_refused():
    model = make_model("lstm", I, H, O)
    with pytest.raises(ValueError, match="backend must be one of"):
        model.predict(np.zeros((T, B, I), np.float32), backend="torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        engines.forward("gpu", model.spec, np.zeros((T, B, I), np.float32), False, ())


def test_without_the_compiled_engine_cpp_raises_and_only_the_default_falls_back(monkeypatch):
    monkeypatch.setattr(native, "core", no_compiled_engine)
    model = make_model("lstm", I, H, O, num_layers=L, dtype="float64", seed=4)
    x = np.random.default_rng(2).normal(size=(T, B, I))
    with pytest.raises(ImportError, match="simulated"):
        model.predict(x, backend="cpp")
    with pytest.raises(ImportError, match="simulated"):
        tbptt.Trainer(model, 2, 2, backend="cpp")  # as the trainer does
    assert engines.default_backend() == "numpy"
    outputs, _ = model.predict(x)  # not told: the reference
    expected, _ = model.predict(x, backend="numpy")
    np.testing.assert_array_equal(outputs, expected)
