"""tbptt.river.Forecaster: river's time-series protocol (learn_one(y, x=None), forecast(horizon,
xs=None)), a forecast that disturbs nothing, bad input refused with the forecaster unchanged."""

import copy
import pickle

import numpy as np
import pytest

import tbptt
from tbptt.river import Forecaster


def _series(n=200, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (50 + 10 * np.sin(2 * np.pi * t / 12) + 0.2 * t + rng.normal(size=n)).tolist()


def _with_features(n=200):
    values = _series(n)
    return [({"month": float(i % 12), "noise": float(np.cos(i))}, v) for i, v in enumerate(values)]


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_forecasting_disturbs_nothing(backend):
    stream = _with_features(80)
    busy, quiet = (
        Forecaster(backend=backend, hidden_size=8),
        Forecaster(backend=backend, hidden_size=8),
    )
    future = [{"month": 1.0, "noise": 0.5}] * 5
    for x, y in stream:
        first = busy.forecast(5, xs=future)
        assert busy.forecast(5, xs=future) == first and busy.forecast(3) == busy.forecast(3)
        busy.learn_one(y, x)
        quiet.learn_one(y, x)
    assert busy.forecast(5, xs=future) == quiet.forecast(5, xs=future)
    np.testing.assert_array_equal(
        busy.trainer_.model.flat_parameters, quiet.trainer_.model.flat_parameters
    )
    for a, b in zip(busy.trainer_.state(), quiet.trainer_.state()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_the_first_forecast_is_the_next_step_prediction(backend):
    stream = _with_features(60)
    forecaster = Forecaster(backend=backend, hidden_size=8)
    for x, y in stream[:-1]:
        forecaster.learn_one(y, x)
    x = stream[-1][0]
    values = forecaster.forecast(4, xs=[x] * 4)
    assert isinstance(values, list) and len(values) == 4 and all(type(v) is float for v in values)
    np.testing.assert_allclose(values[0], forecaster._predict_sample(x), rtol=1e-6)
    assert values[1] != values[0]  # the state went on: the later steps are not a repeat


def test_before_and_just_after_the_first_samples():
    forecaster = Forecaster()
    assert forecaster.forecast(3) == [0.0, 0.0, 0.0]
    forecaster.learn_one(7.0)
    assert forecaster.forecast(2) == [7.0, 7.0]  # the last value until a change's scale is known
    forecaster.learn_one(8.0, {"a": 1.0, "when": "2024-01-01"})  # text is not a feature
    assert forecaster.keys_ == ("a",) and forecaster.forecast(1) == [8.0]


def test_the_features_of_the_future_matter():
    forecaster = Forecaster(hidden_size=8, gate=False, changes=False)
    for x, y in _with_features(120):
        forecaster.learn_one(y, x)
    assert forecaster.keys_ == ("month", "noise")
    low = forecaster.forecast(3, xs=[{"month": 0.0, "noise": 0.0}] * 3)
    high = forecaster.forecast(3, xs=[{"month": 11.0, "noise": 0.0}] * 3)
    assert low != high
    # without xs the features are missing: their running means (and with changes=True their
    # changes the running means of the changes, which x = the means would not give)
    means = {k: forecaster._stats.mean[i] for i, k in enumerate(forecaster.keys_)}
    np.testing.assert_allclose(
        forecaster.forecast(3), forecaster.forecast(3, xs=[means] * 3), rtol=1e-6
    )


def _horizon_mae(forecaster, values, horizon=12, start=12):
    """MAE per horizon, river's evaluate.evaluate loop written out (no river needed)."""
    errors = np.zeros(horizon)
    count = 0
    for t, y in enumerate(values):
        if t >= start and t + horizon <= len(values):
            errors += np.abs(np.array(forecaster.forecast(horizon)) - values[t : t + horizon])
            count += 1
        forecaster.learn_one(y)
    return errors / count


def test_it_beats_the_last_value_on_sunspots_and_co2():
    class Last:
        def __init__(self):
            self.last = 0.0

        def learn_one(self, y):
            self.last = y

        def forecast(self, horizon):
            return [self.last] * horizon

    for load in (tbptt.datasets.sunspots, lambda: tbptt.datasets.co2()[:1000]):
        values = [float(v) for v in load()[1][:1000]]
        assert _horizon_mae(Forecaster(), values).mean() < 0.9 * _horizon_mae(Last(), values).mean()


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "save"])
def test_a_copied_forecaster_goes_on_bit_for_bit(how, tmp_path):
    stream = _with_features(90)
    original = Forecaster(hidden_size=8)
    for x, y in stream[:50]:
        original.learn_one(y, x)
    if how == "save":
        original.save(tmp_path / "f.npz")
        twin = tbptt.river.load(tmp_path / "f.npz")
    else:
        twin = pickle.loads(pickle.dumps(original)) if how == "pickle" else copy.deepcopy(original)
    assert type(twin) is Forecaster
    for x, y in stream[50:]:
        assert twin.forecast(6, xs=[x] * 6) == original.forecast(6, xs=[x] * 6)
        twin.learn_one(y, x)
        original.learn_one(y, x)


NAN = float("nan")


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda f: f.forecast(0), ValueError, "horizon must be >= 1"),
        (lambda f: f.forecast(2.0), TypeError, "horizon must be an int"),
        (lambda f: f.forecast(3, xs=[{}] * 2), ValueError, "xs must hold horizon = 3"),
        (lambda f: f.forecast(2, xs={"a": 1.0}), TypeError, "xs must be a list"),
        (
            lambda f: f.forecast(2, xs=[{}, {"month": NAN}]),
            ValueError,
            r"xs\[1\]\['month'\] must be finite",
        ),
        (lambda f: f.forecast(2, xs=[{}, 3.0]), TypeError, r"xs\[1\] must be a dict"),
        (lambda f: f.learn_one(NAN), ValueError, "y must be finite"),
        (lambda f: f.learn_one("3"), TypeError, "y must be a real number"),
        (lambda f: f.learn_one(None), TypeError, "y must be a real number"),
        (lambda f: f.learn_one(1.0, [1.0]), TypeError, "x must be a dict"),
        (
            lambda f: f.learn_one(1.0, {"month": float("inf")}),
            ValueError,
            r"x\['month'\] must be finite",
        ),
    ],
)
@pytest.mark.parametrize("when", [0, 30])
def test_a_refused_call_changes_nothing(call, error, match, when):
    stream = _with_features(50)
    forecaster, twin = Forecaster(hidden_size=8), Forecaster(hidden_size=8)
    for i, (x, y) in enumerate(stream):
        if i == when:
            with pytest.raises(error, match=match):
                call(forecaster)
        assert forecaster.forecast(4, xs=[x] * 4) == twin.forecast(4, xs=[x] * 4)
        forecaster.learn_one(y, x)
        twin.learn_one(y, x)
    np.testing.assert_array_equal(
        forecaster.trainer_.model.flat_parameters, twin.trainer_.model.flat_parameters
    )


def test_river_evaluate_and_its_series():
    pytest.importorskip("river")
    from river import datasets, evaluate, metrics, time_series

    assert isinstance(Forecaster(), time_series.base.Forecaster)
    # river's series carry a date in x: not a feature, left out
    metric = evaluate.evaluate(
        datasets.AirlinePassengers(), Forecaster(), metrics.MAE(), horizon=12
    )
    maes = [m.get() for m in metric.metrics]
    assert len(maes) == 12 and all(np.isfinite(maes)) and maes[0] < 45
