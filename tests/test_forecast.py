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
    np.testing.assert_array_equal(a[: cut + 1], b[: cut + 1])  # [cut] is made from values[:cut]
    assert not np.allclose(a[cut + 2 :], b[cut + 2 :])
    np.testing.assert_array_equal(
        forecast(model, values[:cut], 5, norm, difference),
        forecast(model, changed[:cut], 5, norm, difference),
    )


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, v, n: forecast(tbptt.LSTM(2, 3, 1), v, 3, n), ValueError, "input_size"),
        (lambda m, v, n: forecast(m, v, 0, n), ValueError, "steps"),
        (
            lambda m, v, n: forecast(m, v[:, None], 3, n),
            ValueError,
            r"values must have shape \(N,\)",
        ),
        (lambda m, v, n: forecast(m, v[:1], 3, n), ValueError, "at least 2"),
        (lambda m, v, n: forecast(m, np.append(v, np.nan), 3, n), ValueError, "finite"),
        (lambda m, v, n: forecast(m, v, 3, tbptt.data.Normalizer()), TypeError, "normalizer"),
        (lambda m, v, n: one_step(m, ["a"], n), TypeError, "values"),
    ],
)
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
        "2009",
        "2010",
        "2011",
        "2012",
        "2013",
    ]  # the years after the data's last, 2008
    assert all(np.isfinite(float(line.split(",")[1])) for line in lines[1:])
    assert "forecast_ahead.png" in err and (run / "forecast_ahead.png").exists()

    csv = tmp_path / "ahead.csv"
    picture = tmp_path / "ahead.png"
    assert (
        cli.main(
            [
                "forecast",
                str(run / "model.npz"),
                "--steps",
                "5",
                "--out",
                str(csv),
                "--plot",
                str(picture),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "" and csv.read_text() == out and picture.exists()


def test_forecast_of_a_csv_column_with_differences(tmp_path, capsys):
    table = tmp_path / "level.csv"
    table.write_text("level\n" + "\n".join(f"{v:.4f}" for v in series(200)) + "\n")
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(table),
                "--column",
                "level",
                "--diff",
                "--epochs",
                "1",
                "--out",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["forecast", str(run), "--steps", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["200", "201", "202"]  # the row index


def test_forecast_refuses_models_of_other_data(tmp_path, capsys):
    assert (
        cli.main(["train", "--task", "echo", "--epochs", "1", "--out", str(tmp_path), *TINY]) == 0
    )
    capsys.readouterr()
    assert cli.main(["forecast", str(tmp_path), "--steps", "3"]) == 1
    assert "not a model of a numeric series" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        cli.main(["forecast", str(tmp_path)])  # --steps is required
    assert exit.value.code == 2


# ---- covariates, many series, times, backtests -------------------------------------------------

import json  # noqa: E402

from tbptt.forecast import arrays, backtest, scores  # noqa: E402


def shops_csv(path, n=120, shops=("north", "south", "west"), seed=0, promo_effect=5.0, drop=None):
    """A long-format daily CSV: date, shop, sales, promo (known in advance), temp (observed)."""
    rng = np.random.default_rng(seed)
    days = np.datetime64("2024-01-01") + np.arange(n)
    rows = ["date,shop,sales,promo,temp"]
    for k, shop in enumerate(shops):
        promo = (rng.random(n) < 0.3).astype(int)
        temp = rng.normal(size=n)
        sales = (
            10 * (k + 1)
            + 3 * np.sin(2 * np.pi * np.arange(n) / 7)
            + promo_effect * promo
            + rng.normal(0, 0.3, n)
        )
        rows += [
            f"{days[i]},{shop},{sales[i]:.3f},{promo[i]},{temp[i]:.3f}"
            for i in range(n)
            if i != drop
        ]
    path.write_text("\n".join(rows) + "\n")
    return path


def results(run):
    return tbptt._files.load_arrays(str(run / "model.npz"), "model")[0]["results"]


@pytest.mark.parametrize("flag, lag", [("--known", 0), ("--features", 1)])
def test_a_covariate_that_drives_the_target_is_used(tmp_path, capsys, flag, lag):
    """y[t] = 3 x[t - lag] + noise, x random: without x the target is noise to the model; with
    it (known in advance at the step predicted, or observed one step before) the error drops
    far below."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    y = 3 * np.roll(x, lag) + rng.normal(0, 0.1, 400)
    table = tmp_path / "driven.csv"
    table.write_text("x,y\n" + "".join(f"{a:.4f},{b:.4f}\n" for a, b in zip(x, y)))
    common = [
        "train",
        "--data",
        str(table),
        "--column",
        "y",
        "--epochs",
        "20",
        "--batch",
        "4",
        "--k1",
        "10",
        "--lr",
        "1e-2",
        *TINY,
    ]
    assert cli.main([*common, "--out", str(tmp_path / "without")]) == 0
    assert cli.main([*common, flag, "x", "--out", str(tmp_path / "with")]) == 0
    capsys.readouterr()
    without, with_ = (
        results(tmp_path / "without")["val_rmse"],
        results(tmp_path / "with")["val_rmse"],
    )
    assert without > 2.0 and with_ < 0.2 * without  # here about 2.8 and 0.15


def test_many_series_train_one_model_and_forecast_every_series(tmp_path, capsys):
    table = shops_csv(tmp_path / "shops.csv")
    future = tmp_path / "future.csv"
    future.write_text(
        "shop,date,promo\n"
        + "".join(
            f"{shop},{day},{int(day.endswith('1'))}\n"
            for shop in ("west", "north", "south")
            for day in ("2024-04-30", "2024-05-01", "2024-05-02", "2024-04-01")
        )
    )  # one row before
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(table),
                "--column",
                "sales",
                "--series",
                "shop",
                "--known",
                "promo",
                "--embed-series",
                "--epochs",
                "3",
                "--out",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 series by shop" in out and "x 3 streams" in out  # one stream per series (B <= 8)
    header = tbptt._files.load_arrays(str(run / "model.npz"), "model")[0]
    assert header["data"]["series_names"] == ["north", "south", "west"]
    assert tbptt.load(run / "model.npz").input_size == 1 + 1 + 3  # sales, promo, identity

    assert cli.main(["forecast", str(run), "--steps", "3", "--future", str(future)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "series,time,forecast" and len(lines) == 10
    assert [line.rsplit(",", 1)[0] for line in lines[1:4]] == [
        "north,2024-04-30",
        "north,2024-05-01",
        "north,2024-05-02",
    ]  # the data end 2024-04-29
    assert {line.split(",")[0] for line in lines[1:]} == {"north", "south", "west"}

    ran = tbptt.forecast.load(run)  # the same from Python, with the run's own normalisers
    s = ran.series[2]
    assert s.name == "west" and s.start == 108 and s.known.shape == (120, 4)
    assert s.normalizer.to_dict() == header["data"]["normalizers"][2]
    ahead = tbptt.forecast.forecast(
        ran.model,
        s.values,
        3,
        s.normalizer,
        ran.difference,
        known=s.known,
        future=np.c_[[0, 1, 0], np.tile([0, 0, 1], (3, 1))],
    )
    assert [f"{v:.10g}" for v in ahead] == [line.split(",")[2] for line in lines[7:]]

    assert cli.main(["backtest", str(run), "--horizon", "3", "--season", "7"]) == 0
    printed = capsys.readouterr().out
    assert "| model |" in printed and "| seasonal naive (P=7) |" in printed
    found = json.loads((run / "backtest.json").read_text())
    assert {"mae", "rmse", "mase_naive", "mase_seasonal"} <= set(found)
    assert found["origins"] == 3 * (12 - 3 + 1) and found["horizon"] == 3
    assert found["mae"] < found["naive"]["mae"]
    rows = (run / "backtest.csv").read_text().splitlines()
    assert rows[0] == "series,origin,time,horizon,actual,forecast,naive,seasonal_naive"
    assert len(rows) == 1 + 3 * 10 * 3 and rows[1].startswith("north,2024-04-17,2024-04-18,1,")
    assert (run / "backtest.png").exists()


def test_a_date_column_is_found_and_forecasts_go_on_in_dates(tmp_path, capsys):
    days = np.datetime64("2021-03-01") + np.arange(80)
    table = tmp_path / "daily.csv"
    table.write_text("day_of,level\n" + "".join(f"{d},{v:.4f}\n" for d, v in zip(days, series(80))))
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(table),
                "--column",
                "level",
                "--epochs",
                "1",
                "--out",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["forecast", str(run), "--steps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["2021-05-20", "2021-05-21"]
    assert tbptt.forecast.load(run).series[0].times.dtype == np.dtype("datetime64[D]")
    years = tmp_path / "years.csv"  # a column named by --time, numbers
    years.write_text(
        "when,level\n" + "".join(f"{1900 + 5 * i},{v:.4f}\n" for i, v in enumerate(series(40)))
    )
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(years),
                "--column",
                "level",
                "--time",
                "when",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "y"),
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["forecast", str(tmp_path / "y"), "--steps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["2100", "2105"]  # every 5 years


def test_no_leak_with_covariates():
    """A prediction of step t reads the values and observed covariates before t, and the known
    ones up to t: changing anything later moves nothing."""
    rng = np.random.default_rng(3)
    values, features, known = series(80), rng.normal(size=(80, 2)), rng.normal(size=(80, 1))
    norm = tbptt.data.Normalizer(np.r_[300, 0, 0, 0], np.r_[3, 1, 1, 1])
    model = tbptt.LSTM(4, 6, 1, dtype="float64", seed=2)
    cut = 50
    v2, f2, k2 = values.copy(), features.copy(), known.copy()
    v2[cut:] += 40
    f2[cut:] *= -3
    k2[cut + 1 :] += 5
    a = one_step(model, values, norm, features=features, known=known)
    b = one_step(model, v2, norm, features=f2, known=k2)
    np.testing.assert_array_equal(a[: cut + 1], b[: cut + 1])
    assert not np.allclose(a[cut + 2 :], b[cut + 2 :])
    x, y = arrays(values, norm, features=features, known=known)
    assert x.shape == (79, 4) and y.shape == (79, 1)
    np.testing.assert_allclose(x[10], [(values[10] - 300) / 3, *features[10], known[11, 0]])
    # backtests: the forecasts from an origin before the change are the same
    m1 = tbptt.LSTM(2, 6, 1, dtype="float64", seed=2)
    n1 = tbptt.data.Normalizer(np.r_[300, 0], np.r_[3, 1])
    t1 = backtest(m1, values, n1, start=40, horizon=4, known=known)
    t2 = backtest(m1, v2, n1, start=40, horizon=4, known=k2)
    early = t1.origins + 4 < cut
    np.testing.assert_array_equal(t1.forecast[early], t2.forecast[early])


def test_backtest_by_hand():
    """The naive and seasonal-naive forecasts and the MASE scales, on a series one can follow."""
    values = np.array([1.0, 3, 2, 5, 4, 6, 8, 7, 9, 12, 10])
    model, norm = tbptt.LSTM(1, 4, 1, dtype="float64", seed=0), tbptt.data.Normalizer(5.0, 3.0)
    b = backtest(model, values, norm, start=7, horizon=2, season=2)
    np.testing.assert_array_equal(b.origins, [6, 7, 8])  # the last value each forecast knows
    np.testing.assert_array_equal(b.actual, [[7, 9], [9, 12], [12, 10]])
    np.testing.assert_array_equal(b.naive, [[8, 8], [7, 7], [9, 9]])
    np.testing.assert_array_equal(b.seasonal[0], [values[5], values[6]])  # one season back
    assert b.scale_naive == pytest.approx(np.mean(np.abs(np.diff(values[:7]))))
    assert b.scale_seasonal == pytest.approx(np.mean(np.abs(values[2:7] - values[:5])))
    for h in range(2):  # the model's forecast: forecast() from the data up to each origin
        for i, o in enumerate(b.origins):
            assert b.forecast[i, h] == pytest.approx(forecast(model, values[: o + 1], 2, norm)[h])
    found = scores([b])
    naive_errors = (b.naive - b.actual).ravel()
    assert found["naive"]["mae"] == pytest.approx(np.mean(np.abs(naive_errors)))
    assert found["naive"]["mase_naive"] == pytest.approx(
        np.mean(np.abs(naive_errors)) / b.scale_naive
    )
    assert found["rmse"] == pytest.approx(np.sqrt(np.mean((b.forecast - b.actual) ** 2)))
    assert len(found["by_horizon"]["seasonal_naive"]) == 2


def test_observed_covariates_forecast_one_step_only():
    model = tbptt.LSTM(2, 4, 1, dtype="float64")
    values, features = series(40), np.arange(40.0)
    norm = tbptt.data.Normalizer([300.0, 20.0], [3.0, 10.0])
    assert forecast(model, values, 1, norm, features=features).shape == (1,)
    with pytest.raises(ValueError, match="observed alongside the target.*not 3"):
        forecast(model, values, 3, norm, features=features)
    with pytest.raises(ValueError, match="known in advance"):
        forecast(model, values, 2, norm, known=features)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        forecast(model, values, 1, tbptt.data.Normalizer(300.0, 3.0), features=features)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--features", "nope"], "has no column 'nope' (columns: date, shop, sales, promo, temp)"),
        (["--series", "region"], "has no column 'region'"),
        (["--column", "sale"], "has no column 'sale'"),
        (["--features", "shop"], "line 2: column 'shop' holds 'north', not a number"),
        (
            ["--series", "shop", "--known", "promo", "SHORT"],
            "series 'west' has 25 numeric value(s)",
        ),
        (["--time", "shop"], "column 'shop' holds 'north', not a time"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    table = shops_csv(tmp_path / "shops.csv")
    if "SHORT" in argv:
        argv.remove("SHORT")
        lines = table.read_text().splitlines()
        table.write_text("\n".join(lines[:-95]) + "\n")  # west: 25 days
    flags = ["--column", "sales"] if "--column" not in argv else []
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(table), *flags, *argv, "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_forecast_bad_input_exits_2(tmp_path, capsys):
    table = shops_csv(tmp_path / "shops.csv")
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(table),
                "--column",
                "sales",
                "--series",
                "shop",
                "--known",
                "promo",
                "--epochs",
                "1",
                "--out",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    observed, one = tmp_path / "observed", shops_csv(tmp_path / "one.csv", shops=("north",))
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(one),
                "--column",
                "sales",
                "--features",
                "temp",
                "--epochs",
                "1",
                "--out",
                str(observed),
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    short = tmp_path / "short.csv"
    short.write_text(
        "date,shop,promo\n" + "".join(f"2024-04-30,{s},1\n" for s in ("north", "south", "west"))
    )
    lacking = tmp_path / "lacking.csv"
    lacking.write_text("date,shop,price\n2024-04-30,north,1\n")
    for argv, message in [
        ([str(run), "--steps", "2"], "give their values for the 2 step(s) ahead with --future"),
        ([str(run), "--steps", "2", "--future", str(short)], "1 row(s) after the data's end"),
        ([str(run), "--steps", "1", "--future", str(lacking)], "no column 'promo'"),
        ([str(observed), "--steps", "3"], "forecasts 1 step ahead, not 3"),
    ]:
        assert cli.main(["forecast", *argv, "--plot", str(tmp_path / "x.png")]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == "" and not (tmp_path / "x.png").exists()
    assert cli.main(["forecast", str(observed), "--steps", "1"]) == 0  # one step is fine
    assert cli.main(["backtest", str(run), "--horizon", "13"]) == 2
    assert "fewer than --horizon 13" in capsys.readouterr().err


def test_the_forecasting_page_quotes_the_commands_tables(capsys):
    """docs/forecasting.md's backtest tables are what make_forecasting_figures.py prints."""
    import importlib.util
    import os

    root = os.path.join(os.path.dirname(__file__), "..")
    spec = importlib.util.spec_from_file_location(
        "make_forecasting_figures",
        os.path.join(root, "docs", "figures", "make_forecasting_figures.py"),
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--no-pictures"]) == 0
    printed = capsys.readouterr().out
    with open(os.path.join(root, "docs", "forecasting.md"), encoding="utf-8") as f:
        page = f.read()
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "MAE" not in line]
    assert len(rows) == 12
    for row in rows:  # the page's co2 table says "MAE (ppm)": compare the rows
        assert row in page, row
    labels = {
        "coverage_50": "coverage 50%",
        "coverage_80": "coverage 80%",
        "model_crps": "CRPS (ppm)",
    }
    by_horizon = [line for line in printed.splitlines() if " by_horizon " in line]
    assert len(by_horizon) == 3
    for line in by_horizon:  # the gaussian model's scores at 1, 4, 8, 13 weeks: a row of the page
        key, values = line.split(" by_horizon ")[1].split(" ")[0], line.split(": ")[1]
        assert f"| {labels[key]} | {' | '.join(values.split(', '))} |" in page, line
    for line in ("validation: negative log-likelihood", "the 80% band holds 81.7% of them"):
        assert line in printed
