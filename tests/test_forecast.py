"""tbptt.forecast (one-step predictions, a rollout past the data) and `tbptt forecast`."""

import numpy as np
import pytest

import tbptt
from tbptt import cli
from tbptt.forecast import forecast, one_step


pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--hidden", "8", "--no-progress", "--threads", "1"]


def series(n=60, seed=0):
    t = np.arange(n)
    return 300 + 0.1 * t + 3 * np.sin(t / 4) + np.random.default_rng(seed).normal(0, 0.2, n)


def setup(difference):
    values = series()
    data = np.diff(values) if difference else values
    norm = tbptt.data.Normalizer().fit(data[:50])
    return tbptt.LSTM(1, 6, 1, dtype="float64", seed=2), values, norm


@pytest.mark.parametrize("difference", [False, True])
def test_one_step_is_the_model_on_the_past(difference):
    model, values, norm = setup(difference)
    predicted = one_step(model, values, norm, difference)
    first = 2 if difference else 1
    assert predicted.shape == values.shape and np.isnan(predicted[:first]).all()
    assert np.isfinite(predicted[first:]).all()
    t = 37  # by hand: the model over the inputs before step t
    inputs = norm.transform(np.diff(values[:t]) if difference else values[:t])
    out = norm.inverse_transform(model.predict(inputs[:, None, None])[0][-1, 0, 0])
    assert predicted[t] == pytest.approx(values[t - 1] + out if difference else out, rel=1e-12)


@pytest.mark.parametrize("difference", [False, True])
def test_forecast_feeds_its_own_predictions_back(difference):
    model, values, norm = setup(difference)
    ahead = forecast(model, values, 4, norm, difference)
    assert ahead.shape == (4,) and np.isfinite(ahead).all()
    extended = values.copy()
    for k in range(4):  # each step: the one-step prediction from the data and what came before
        nxt = one_step(model, np.append(extended, 0.0), norm, difference)[-1]
        assert ahead[k] == pytest.approx(nxt, rel=1e-10)
        extended = np.append(extended, nxt)


@pytest.mark.parametrize("difference", [False, True])
def test_no_leak_predictions_use_only_the_past(difference):
    """Data changed after a cut-off change no prediction made before it."""
    model, values, norm = setup(difference)
    cut = 40
    changed = values.copy()
    changed[cut:] = changed[cut:] * 3 - 100
    a, b = one_step(model, values, norm, difference), one_step(model, changed, norm, difference)
    np.testing.assert_array_equal(a[:cut + 1], b[:cut + 1])  # [cut] is made from values[:cut]
    assert not np.allclose(a[cut + 2:], b[cut + 2:])
    np.testing.assert_array_equal(forecast(model, values[:cut], 5, norm, difference),
                                  forecast(model, changed[:cut], 5, norm, difference))


@pytest.mark.parametrize("call, error, match", [
    (lambda m, v, n: forecast(tbptt.LSTM(2, 3, 1), v, 3, n), ValueError, "input_size"),
    (lambda m, v, n: forecast(m, v, 0, n), ValueError, "steps"),
    (lambda m, v, n: forecast(m, v[:, None], 3, n), ValueError, r"values must have shape \(N,\)"),
    (lambda m, v, n: forecast(m, v[:1], 3, n), ValueError, "at least 2"),
    (lambda m, v, n: forecast(m, np.append(v, np.nan), 3, n), ValueError, "finite"),
    (lambda m, v, n: forecast(m, v, 3, tbptt.data.Normalizer()), TypeError, "normalizer"),
    (lambda m, v, n: one_step(m, ["a"], n), TypeError, "values"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(*setup(False))


# ---- the command -----------------------------------------------------------------------------

def test_train_draws_the_held_out_data_and_forecast_prints_csv(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--task", "sunspots", "--epochs", "1", "--out", str(run), *TINY]) == 0
    assert "forecast.png" in capsys.readouterr().out
    assert (run / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert cli.main(["forecast", str(run), "--steps", "5"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "time,forecast" and [line.split(",")[0] for line in lines[1:]] == [
        "2009", "2010", "2011", "2012", "2013"]  # the years after the data's last, 2008
    assert all(np.isfinite(float(line.split(",")[1])) for line in lines[1:])
    assert "forecast_ahead.png" in err and (run / "forecast_ahead.png").exists()

    csv = tmp_path / "ahead.csv"
    picture = tmp_path / "ahead.png"
    assert cli.main(["forecast", str(run / "model.npz"), "--steps", "5", "--out", str(csv),
                     "--plot", str(picture)]) == 0
    assert capsys.readouterr().out == "" and csv.read_text() == out and picture.exists()


def test_forecast_of_a_csv_column_with_differences(tmp_path, capsys):
    table = tmp_path / "level.csv"
    table.write_text("level\n" + "\n".join(f"{v:.4f}" for v in series(200)) + "\n")
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(table), "--column", "level", "--diff",
                     "--epochs", "1", "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    assert cli.main(["forecast", str(run), "--steps", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["200", "201", "202"]  # the row index


def test_forecast_refuses_models_of_other_data(tmp_path, capsys):
    assert cli.main(["train", "--task", "echo", "--epochs", "1", "--out", str(tmp_path), *TINY]) == 0
    capsys.readouterr()
    assert cli.main(["forecast", str(tmp_path), "--steps", "3"]) == 1
    assert "not a model of a numeric series" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        cli.main(["forecast", str(tmp_path)])  # --steps is required
    assert exit.value.code == 2
