"""The gaussian likelihood head, loss="gaussian" (docs/semantics.md §1, §3): its values against
the density written out by hand, its gradient against finite differences, the C++ kernel
against the NumPy definition, the output size, clipping, divergence, evaluate and checkpoints.

The C++ engine against the reference over the schedule grid, the reference's gradient through
the recurrence, stream invariance and recompute run with loss="gaussian" in test_backends.py,
test_reference.py, test_invariants.py and test_recompute.py.
"""

import math
import pickle

import numpy as np
import pytest
from helpers import fd_gradient, gaussian_nll

import tbptt
from tbptt import checkpoint, losses

BACKENDS = ["cpp", "numpy"]
SPEC = losses.LOSSES["gaussian"]


def by_hand(mu, raw, y):
    """-log of the normal density at y, sigma = log(1 + e^raw) + 1e-6, in plain Python."""
    sigma = math.log1p(math.exp(raw)) + 1e-6
    return -math.log(math.exp(-0.5 * ((y - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)))


def test_values_are_the_negative_log_density():
    """Per position: the mean over the targets of ½ log 2π + log σ + ½ z², the constant included."""
    rng = np.random.default_rng(0)
    out, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))  # B = 5, two targets
    loss, dout = SPEC.terms(out, y)
    assert loss.shape == (5,) and dout.shape == (5, 4)
    for b in range(5):
        expected = np.mean([by_hand(out[b, j], out[b, 2 + j], y[b, j]) for j in range(2)])
        assert loss[b] == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(loss, gaussian_nll(out, y), rtol=1e-13)
    # at mu = y and sigma = 1 (raw = log(e - 1)), the loss is ½ log 2π (+ the ε's log)
    one = np.array([[0.3, math.log(math.e - 1)]])
    assert SPEC.terms(one, np.array([[0.3]]))[0][0] == pytest.approx(
        0.5 * math.log(2 * math.pi), abs=2e-6
    )


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    out, y = rng.normal(size=(3, 6)) * 2, rng.normal(size=(3, 3))
    _, dout = SPEC.terms(out, y)
    for b in range(3):
        fd = fd_gradient(
            lambda o, b=b: float(SPEC.terms(o[None], y[b : b + 1])[0][0]), out[b].copy()
        )
        np.testing.assert_allclose(dout[b], fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_extreme_scales_stay_finite(dtype):
    """softplus without overflow (raw = 800) and σ ≥ ε where it underflows (raw = -800)."""
    out = np.array([[0.0, 800.0], [0.0, -800.0], [0.5, 0.0]], dtype=dtype)
    y = np.array([[1.0], [1e-7], [0.5]], dtype=dtype)
    loss, dout = SPEC.terms(out, y)
    assert np.isfinite(loss).all() and np.isfinite(dout).all() and dout.dtype == np.dtype(dtype)
    mu, sigma = losses.gaussian_parameters(out)
    assert sigma[0, 0] == pytest.approx(800.0) and sigma[1, 0] == pytest.approx(1e-6, rel=1e-3)


@pytest.mark.parametrize("k1,k2", [(4, 4), (3, 7), (7, 3)])
def test_cpp_kernel_is_the_numpy_definition(k1, k2):
    """One SGD(lr=1) update on both backends: the same loss and the same gradient, float64 1e-10,
    with a float mask (zeros included) and resets; the loss is the hand formula's weighted mean."""
    rng = np.random.default_rng(k1 * 10 + k2)
    T, B = k1, 3
    x, y = rng.normal(size=(T, B, 2)), rng.normal(size=(T, B, 2))
    mask = rng.uniform(0, 2, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.3)
    mask[-1, 0] = 1.0
    resets = rng.uniform(size=(T, B)) < 0.2
    results = {}
    for backend in BACKENDS:
        model = tbptt.GRU(2, 5, 4, dtype="float64", seed=3)
        before = model.flat_parameters.copy()
        trainer = tbptt.Trainer(
            model, k1, k2, loss="gaussian", optimizer=tbptt.SGD(lr=1.0), backend=backend
        )
        (loss,) = trainer.train(x, y, mask, resets)
        results[backend] = loss, before - model.flat_parameters
    (lc, gc), (ln, gn) = results["cpp"], results["numpy"]
    assert lc == pytest.approx(ln, rel=1e-10)
    np.testing.assert_allclose(gc, gn, rtol=1e-10, atol=1e-13)
    # without resets, the loss is the mask-weighted mean of the density's -log over predict's
    # outputs
    model = tbptt.GRU(2, 5, 4, dtype="float64", seed=3)
    out, _ = model.predict(x)
    (loss,) = tbptt.Trainer(model, k1, k2, loss="gaussian").train(x, y, mask)
    nll = gaussian_nll(out.reshape(-1, 4), y.reshape(-1, 2)).reshape(T, B)
    assert loss == pytest.approx(float((mask * nll).sum() / mask.sum()), rel=1e-12)


def test_output_size_must_be_even():
    model = tbptt.LSTM(2, 4, 3)
    with pytest.raises(
        ValueError,
        match=r"loss='gaussian' takes 2 outputs per target: the "
        r"model's output_size \(3\)",
    ):
        tbptt.Trainer(model, 4, 4, loss="gaussian")
    trainer = tbptt.Trainer(tbptt.LSTM(2, 4, 2), 4, 4, loss="gaussian")
    with pytest.raises(
        ValueError,
        match=r"y must have shape \(T, B, output_size / 2\) = "
        r"\(4, 1, 1\)",
    ):
        trainer.train(np.zeros((4, 1, 2)), np.zeros((4, 1, 2)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_bounds_the_step(backend):
    """A target far from the mean makes a large gradient; clip_norm bounds the SGD step."""
    x, y = np.ones((3, 1, 1)), np.full((3, 1, 1), 50.0)
    model = tbptt.LSTM(1, 3, 2, dtype="float64", seed=0)
    before = model.flat_parameters.copy()
    trainer = tbptt.Trainer(
        model, 3, 3, loss="gaussian", optimizer=tbptt.SGD(lr=1.0), clip_norm=0.1, backend=backend
    )
    trainer.train(x, y)
    assert np.linalg.norm(trainer.engine.gradient()) > 10
    assert np.linalg.norm(model.flat_parameters - before) == pytest.approx(0.1, rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_keeps_the_last_good_update(backend):
    """A target of 1e200: z² overflows, the update is not applied (docs/semantics.md §3 item 6)."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 2, 1)), rng.normal(size=(6, 2, 1))
    y[4, 1] = 1e200
    model = tbptt.LSTM(1, 3, 2, dtype="float64", seed=0)
    trainer = tbptt.Trainer(
        model, 3, 3, loss="gaussian", optimizer=tbptt.Adam(0.01), backend=backend
    )
    trainer.train(x[:3], y[:3])
    good = model.flat_parameters.copy()
    with pytest.raises(tbptt.errors.Divergence):
        trainer.train(x[3:], y[3:])
    np.testing.assert_array_equal(model.flat_parameters, good)


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluate_is_the_training_loss(backend):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 2, 1)), rng.normal(size=(8, 2, 1))
    mask = rng.uniform(size=(8, 2))
    model = tbptt.LSTM(1, 3, 2, dtype="float64", seed=1)
    trainer = tbptt.Trainer(
        model, 8, 8, loss="gaussian", optimizer=tbptt.SGD(lr=0.0), backend=backend
    )
    result = trainer.evaluate(x, y, mask)
    assert set(result) == {"loss"}
    (loss,) = trainer.train(x, y, mask)
    assert result["loss"] == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_and_pickle_resume_exactly(backend, tmp_path):
    """Stopped midway (pending steps), saved, loaded: the rest of training is the same bits."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 2, 2)), rng.normal(size=(20, 2, 1))

    def new():
        return tbptt.Trainer(
            tbptt.LSTM(2, 4, 2, dtype="float64", seed=2),
            4,
            6,
            loss="gaussian",
            optimizer=tbptt.Adam(0.02),
            backend=backend,
        )

    whole = new()
    expected = whole.train(x, y)
    first = new()
    head = first.train(x[:11], y[:11])
    path = tmp_path / "t.npz"
    first.save(path)
    for again in (checkpoint.load_trainer(path), pickle.loads(pickle.dumps(first))):
        assert again.loss == "gaussian"
        rest = again.train(x[11:], y[11:])
        np.testing.assert_array_equal(np.concatenate([head, rest]), expected)
        np.testing.assert_array_equal(again.model.flat_parameters, whole.model.flat_parameters)


def test_torch_trainer_refuses_it_with_a_pointer():
    torch = pytest.importorskip("torch")
    from tbptt.torch import Trainer

    with pytest.raises(
        ValueError, match="loss='gaussian' is tbptt.Trainer's; for a torch module pass a callable"
    ):
        Trainer(torch.nn.LSTM(1, 3), 4, 4, loss="gaussian")


def test_the_torch_docs_callable_is_the_same_loss():
    """docs/torch.md's callable computes what SPEC.terms computes."""
    torch = pytest.importorskip("torch")

    def gaussian(out, y):  # as in docs/torch.md
        n = y.shape[-1]
        var = (torch.nn.functional.softplus(out[..., n:]) + 1e-6) ** 2
        nll = torch.nn.GaussianNLLLoss(reduction="none", full=True, eps=0.0)
        return nll(out[..., :n], y, var).mean(-1)

    rng = np.random.default_rng(6)
    out, y = rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 2, 2))
    ours = SPEC.terms(out, y)[0]
    theirs = gaussian(torch.from_numpy(out), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-12)


# ---- forecasting with a gaussian model (tbptt.forecast) -----------------------------------------

NOISE = 0.5  # the synthetic series' known noise


@pytest.fixture(scope="module")
def synthetic():
    """A seasonal series with N(0, 0.5²) noise, a gaussian LSTM trained on its first 1100 values:
    (model, values, normalizer, start). About half a second."""
    from tbptt import forecast as fc
    from tbptt.data import Normalizer, batchify

    rng = np.random.default_rng(0)
    t = np.arange(1500)
    values = 10 + 3 * np.sin(2 * np.pi * t / 25) + rng.normal(0, NOISE, t.size)
    start = 1100
    norm = Normalizer().fit(values[:start])
    x, y = fc.arrays(values[:start], norm)
    model = tbptt.LSTM(1, 16, 2, seed=0, forget_bias=1.0)
    trainer = tbptt.Trainer(
        model, 25, 25, loss="gaussian", optimizer=tbptt.Adam(1e-2), clip_norm=5.0
    )
    trainer.fit(batchify(x, 8), batchify(y, 8), epochs=30)
    return model, values, norm, start


def test_the_80_percent_interval_covers_80_percent(synthetic):
    """One step ahead: the model's sigma is the noise's, and mean +- 1.2816 sigma holds 75-85% of
    the 400 held-out values; the backtest's sampled intervals cover as much."""
    from tbptt import forecast as fc

    model, values, norm, start = synthetic
    mean = fc.one_step(model, values, norm)[start:]
    sigma = fc.one_step_scale(model, values, norm)[start:]
    assert np.median(sigma) == pytest.approx(NOISE, rel=0.15)
    inside = np.abs(values[start:] - mean) <= 1.2815515655446004 * sigma
    assert 0.75 <= inside.mean() <= 0.85
    result = fc.scores([fc.backtest(model, values, norm, start=start, horizon=3, samples=200)])
    assert 0.75 <= result["coverage_80"] <= 0.85 and 0.42 <= result["coverage_50"] <= 0.58
    assert result["crps"] < 0.5 * result["naive"]["crps"]  # the naive's CRPS is its MAE
    assert result["naive"]["crps"] == result["naive"]["mae"]


def test_sampled_paths_and_their_quantiles(synthetic):
    from tbptt import forecast as fc

    model, values, norm, start = synthetic
    paths = fc.sample(model, values, 12, norm, samples=300, seed=3)
    assert paths.shape == (300, 12) and np.isfinite(paths).all()
    np.testing.assert_array_equal(paths, fc.sample(model, values, 12, norm, samples=300, seed=3))
    assert not np.array_equal(paths, fc.sample(model, values, 12, norm, samples=300, seed=4))
    q = fc.quantiles(paths, [0.1, 0.25, 0.5, 0.75, 0.9])
    assert (
        q.shape == (12, 5)
        and np.all(np.diff(q, axis=1) >= 0)
        and np.all(np.diff(q, axis=1)[:, [0, 3]] > 0)
    )
    # the first step ahead is normal: its draws' mean and spread are the model's
    mean = fc.forecast(model, values, 1, norm)[0]
    assert paths[:, 0].mean() == pytest.approx(mean, abs=4 * NOISE / np.sqrt(300))
    with pytest.raises(ValueError, match=r"levels must be quantile levels in \(0, 1\)"):
        fc.quantiles(paths, [0.1, 1.0])


def test_crps_of_draws():
    """The energy form against its definition by pairs; one draw: the absolute error."""
    from tbptt import forecast as fc

    rng = np.random.default_rng(7)
    draws, y = rng.normal(size=(4, 9)), rng.normal(size=4)
    pairs = np.abs(draws[:, :, None] - draws[:, None, :]).mean(axis=(1, 2))
    expected = np.abs(draws - y[:, None]).mean(axis=1) - 0.5 * pairs
    np.testing.assert_allclose(fc.crps(draws, y), expected, rtol=1e-12)
    np.testing.assert_allclose(fc.crps(draws[:, :1], y), np.abs(draws[:, 0] - y), rtol=1e-15)


def test_point_models_have_no_distribution():
    from tbptt import forecast as fc
    from tbptt.data import Normalizer

    values = np.sin(np.arange(40.0))
    model, norm = tbptt.LSTM(1, 4, 1), Normalizer().fit(values)
    for call in (
        lambda: fc.sample(model, values, 3, norm),
        lambda: fc.one_step_scale(model, values, norm),
    ):
        with pytest.raises(
            ValueError,
            match=r"needs a model trained with loss='gaussian' "
            r"\(output_size 2",
        ):
            call()
    assert fc.backtest(model, values, norm, start=30, horizon=2).quantiles is None
    with pytest.raises(ValueError, match=r"output_size = 1, or 2 for loss='gaussian'"):
        fc.one_step(tbptt.LSTM(1, 4, 3), values, norm)


# ---- the command line: train --likelihood, forecast --quantiles, backtest ------------------------


def _noisy_csv(path, n, seed=0):
    """A daily CSV with a weekly cycle and N(0, 0.5²) noise."""
    rng = np.random.default_rng(seed)
    days = np.datetime64("2024-01-01") + np.arange(n)
    values = 20 + 3 * np.sin(2 * np.pi * np.arange(n) / 7) + rng.normal(0, NOISE, n)
    path.write_text("date,y\n" + "".join(f"{d},{v:.4f}\n" for d, v in zip(days, values)))
    return path


TINY = ["--hidden", "8", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def likelihood_run(tmp_path_factory):
    """`tbptt train --likelihood gaussian` on a noisy weekly cycle: the run folder."""
    from tbptt import cli

    folder = tmp_path_factory.mktemp("likelihood")
    table = _noisy_csv(folder / "noisy.csv", n=800)
    run = folder / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(table),
                "--column",
                "y",
                "--likelihood",
                "gaussian",
                "--epochs",
                "40",
                "--batch",
                "4",
                "--k1",
                "14",
                "--lr",
                "1e-2",
                "--out",
                str(run),
                *TINY,
                "--hidden",
                "16",
            ]
        )
        == 0
    )
    return run


def test_train_with_a_likelihood_draws_the_80_percent_band(likelihood_run, capsys):
    from tbptt import _files

    header = _files.load_arrays(str(likelihood_run / "model.npz"), "model")[0]
    assert (
        header["data"]["likelihood"] == "gaussian"
        and header["settings"]["likelihood"] == "gaussian"
    )
    assert tbptt.load(likelihood_run / "model.npz").output_size == 2
    assert 0.65 <= header["results"]["val_coverage_80"] <= 0.95  # 80 held-out days: 76%
    assert (likelihood_run / "forecast.png").read_bytes()[:4] == b"\x89PNG"
    trainer = checkpoint.load_trainer(likelihood_run / "trainer.npz")
    assert trainer.loss == "gaussian"


def test_forecast_prints_the_quantiles_of_sampled_paths(likelihood_run, tmp_path, capsys):
    from tbptt import cli

    argv = [
        "forecast",
        str(likelihood_run),
        "--steps",
        "10",
        "--quantiles",
        "0.9,0.1,0.5",
        "--samples",
        "200",
        "--plot",
        str(tmp_path / "ahead.png"),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "time,forecast,q0.1,q0.5,q0.9" and len(lines) == 11
    assert lines[1].startswith("2026-03-11,")  # the day after the data's last, 2026-03-10
    table = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:]])
    assert np.all(table[:, 1] < table[:, 2]) and np.all(table[:, 2] < table[:, 3])
    assert np.all((table[:, 1] < table[:, 0]) & (table[:, 0] < table[:, 3]))
    assert np.all(table[:, 3] - table[:, 1] > 2 * 1.28 * NOISE * 0.7)  # about ±1.28 sigma
    assert (tmp_path / "ahead.png").exists()
    assert cli.main(argv) == 0 and capsys.readouterr().out == out  # seeded
    assert cli.main([*argv, "--seed", "1"]) == 0 and capsys.readouterr().out != out
    # the same from Python, with the run read back
    from tbptt import forecast as fc

    ran = fc.load(likelihood_run)
    assert ran.likelihood == "gaussian"
    s = ran.series[0]
    paths = fc.sample(ran.model, s.values, 10, s.normalizer, ran.difference, samples=200, seed=0)
    assert [f"{v:.10g}" for v in paths.mean(axis=0)] == [line.split(",")[1] for line in lines[1:]]


def test_backtest_scores_coverage_and_crps(likelihood_run, tmp_path, capsys):
    import json

    from tbptt import cli

    assert (
        cli.main(
            [
                "backtest",
                str(likelihood_run),
                "--horizon",
                "3",
                "--season",
                "7",
                "--samples",
                "200",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| CRPS | coverage 50% | coverage 80% |" in printed
    found = json.loads((tmp_path / "backtest.json").read_text())
    assert {
        "mae",
        "rmse",
        "mase_naive",
        "mase_seasonal",
        "crps",
        "coverage_50",
        "coverage_80",
    } <= set(found)
    assert 0.6 <= found["coverage_80"] <= 0.95 and 0.3 <= found["coverage_50"] <= 0.7
    assert found["crps"] < found["mae"] < found["naive"]["mae"] == found["naive"]["crps"]
    assert [
        len(found["by_horizon"][key]) for key in ("model_crps", "coverage_50", "coverage_80")
    ] == [3, 3, 3]
    assert np.mean(found["by_horizon"]["coverage_80"]) == pytest.approx(found["coverage_80"])
    rows = (tmp_path / "backtest.csv").read_text().splitlines()
    assert rows[0].endswith(",seasonal_naive,q0.1,q0.25,q0.5,q0.75,q0.9,crps")
    q = np.array([[float(v) for v in row.split(",")[8:13]] for row in rows[1:]])
    assert np.all(np.diff(q, axis=1) >= 0)
    assert (tmp_path / "backtest.png").exists()


def test_bad_quantiles_and_point_models_exit_2_and_write_nothing(likelihood_run, tmp_path, capsys):
    from tbptt import cli

    point = tmp_path / "point"
    table = _noisy_csv(tmp_path / "noisy.csv", n=60)
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(table),
                "--column",
                "y",
                "--epochs",
                "1",
                "--out",
                str(point),
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    picture, csv = tmp_path / "x.png", tmp_path / "x.csv"
    for run, asked, message in [
        (
            likelihood_run,
            ["--quantiles", "0.1,1.0"],
            "--quantiles 0.1,1.0: quantile levels must be in (0, 1)",
        ),
        (likelihood_run, ["--quantiles", "0,0.5"], "quantile levels must be in (0, 1)"),
        (likelihood_run, ["--quantiles", "0.1,x"], "expected comma-separated numbers in (0, 1)"),
        (
            point,
            ["--quantiles", "0.1,0.9"],
            "is a point model (one value per step): it has no quantiles; train "
            "with --likelihood gaussian",
        ),
        (
            point,
            ["--samples", "100"],
            "is a point model (one value per step): it has no paths to sample (--samples)",
        ),
    ]:
        assert (
            cli.main(
                [
                    "forecast",
                    str(run),
                    "--steps",
                    "3",
                    *asked,
                    "--out",
                    str(csv),
                    "--plot",
                    str(picture),
                ]
            )
            == 2
        )
        captured = capsys.readouterr()
        assert message in captured.err and len(captured.err.strip().splitlines()) == 1
        assert captured.out == "" and not picture.exists() and not csv.exists()
    with pytest.raises(SystemExit) as exit:  # a likelihood for text: a usage error
        cli.main(["train", "--task", "echo", "--likelihood", "gaussian", *TINY])
    assert (
        exit.value.code == 2
        and "--likelihood goes with a numeric series" in capsys.readouterr().err
    )


def test_many_series_and_covariates_with_a_likelihood(tmp_path, capsys):
    """--series, --known and --features with --likelihood: one model, every series' quantiles;
    observed covariates still allow one step only."""
    from test_forecast import shops_csv

    from tbptt import cli

    table = shops_csv(tmp_path / "shops.csv")
    future = tmp_path / "future.csv"
    future.write_text(
        "shop,date,promo\n"
        + "".join(
            f"{shop},{day},1\n"
            for shop in ("west", "north", "south")
            for day in ("2024-04-30", "2024-05-01", "2024-05-02")
        )
    )
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
                "--likelihood",
                "gaussian",
                "--epochs",
                "3",
                "--out",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        cli.main(
            [
                "forecast",
                str(run),
                "--steps",
                "3",
                "--future",
                str(future),
                "--quantiles",
                "0.1,0.9",
                "--samples",
                "50",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "series,time,forecast,q0.1,q0.9" and len(lines) == 10
    assert {line.split(",")[0] for line in lines[1:]} == {"north", "south", "west"}
    assert all(float(line.split(",")[3]) < float(line.split(",")[4]) for line in lines[1:])
    assert cli.main(["backtest", str(run), "--horizon", "2", "--samples", "50"]) == 0
    printed = capsys.readouterr().out
    assert "| series west: model |" in printed and "coverage 80%" in printed
    observed = tmp_path / "observed"
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
                "--features",
                "temp",
                "--likelihood",
                "gaussian",
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
    assert cli.main(["forecast", str(observed), "--steps", "3", "--quantiles", "0.5"]) == 2
    assert "forecasts 1 step ahead, not 3" in capsys.readouterr().err
    assert (
        cli.main(
            ["forecast", str(observed), "--steps", "1", "--quantiles", "0.5", "--samples", "20"]
        )
        == 0
    )
    assert cli.main(["backtest", str(observed), "--samples", "20"]) == 0  # one step ahead
    assert "coverage 80%" in capsys.readouterr().out


def test_a_likelihood_run_resumes_as_one_that_never_stopped(tmp_path, capsys):
    """--resume keeps the loss: two sessions of 1 + 2 epochs write the model of one of 3."""
    from tbptt import cli

    table = _noisy_csv(tmp_path / "noisy.csv", n=100)
    common = ["--data", str(table), "--column", "y", "--likelihood", "gaussian", *TINY]
    assert cli.main(["train", *common, "--epochs", "3", "--out", str(tmp_path / "whole")]) == 0
    assert cli.main(["train", *common, "--epochs", "1", "--out", str(tmp_path / "split")]) == 0
    assert (
        cli.main(["train", "--resume", str(tmp_path / "split"), "--epochs", "3", "--no-progress"])
        == 0
    )
    capsys.readouterr()
    whole, split = (
        checkpoint.load_trainer(tmp_path / name / "trainer.npz") for name in ("whole", "split")
    )
    assert split.loss == "gaussian"
    np.testing.assert_array_equal(split.model.flat_parameters, whole.model.flat_parameters)


@pytest.mark.parametrize("difference", [False, True])
def test_sampled_paths_are_the_model_fed_its_own_draws(difference):
    """Each step of a path is the one-step normal that one_step and one_step_scale give after
    the data and the path's earlier draws (with differences: the last value plus the change),
    at the draws of default_rng(seed), one (samples,) array per step."""
    from tbptt import forecast as fc
    from tbptt.data import Normalizer

    rng = np.random.default_rng(8)
    values = np.cumsum(rng.normal(size=80)) if difference else rng.normal(size=80)
    norm = Normalizer().fit(np.diff(values) if difference else values)
    model = tbptt.GRU(1, 6, 2, dtype="float64", seed=1)
    S = 50
    paths = fc.sample(model, values, 3, norm, difference, samples=S, seed=5)
    noise = np.random.default_rng(5).standard_normal((3, S))
    for i in (0, 17, 49):
        known = values
        for t in range(3):
            ahead = np.append(known, 0.0)  # one_step's prediction of the value after `known`
            mean = fc.one_step(model, ahead, norm, difference)[-1]
            sigma = fc.one_step_scale(model, ahead, norm, difference)[-1]
            assert paths[i, t] == pytest.approx(mean + sigma * noise[t, i], rel=1e-10)
            known = np.append(known, paths[i, t])


def test_backtest_paths_are_those_sampled_at_each_origin():
    """A gaussian backtest's forecast, quantiles and CRPS at an origin are those of its paths:
    the model run over the values up to the origin, then fed its own draws (default_rng(seed):
    one (origins x samples,) array per step, origin-major), rebuilt here with one_step."""
    from tbptt import forecast as fc
    from tbptt.data import Normalizer

    rng = np.random.default_rng(9)
    values = np.cumsum(rng.normal(size=60))
    norm = Normalizer().fit(np.diff(values[:50]))
    model = tbptt.LSTM(1, 5, 2, dtype="float64", seed=4)
    S, H = 5, 2
    b = fc.backtest(model, values, norm, True, start=50, horizon=H, samples=S, seed=2)
    M = b.origins.size
    assert M == 60 - H - 49 and b.quantiles.shape == (M, H, 5) and b.crps.shape == (M, H)
    noise = np.random.default_rng(2).standard_normal((H, M * S))
    for i in (0, M - 1):
        paths = np.empty((S, H))
        for j in range(S):
            known = values[: b.origins[i] + 1]
            for h in range(H):
                ahead = np.append(known, 0.0)
                mean = fc.one_step(model, ahead, norm, True)[-1]
                sigma = fc.one_step_scale(model, ahead, norm, True)[-1]
                paths[j, h] = mean + sigma * noise[h, i * S + j]
                known = np.append(known, paths[j, h])
        np.testing.assert_allclose(b.forecast[i], paths.mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(
            b.quantiles[i], np.quantile(paths, fc.LEVELS, axis=0).T, rtol=1e-10
        )
        np.testing.assert_allclose(b.crps[i], fc.crps(paths.T, b.actual[i]), rtol=1e-9)
