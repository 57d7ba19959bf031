"""Forecasting numeric series with a model trained for next-step prediction (as `tbptt train`
trains one): one-step predictions over the data, a rollout past its end that feeds the model its
own predictions, and a rolling-origin backtest against the naive forecasts.

The model reads a series as it was trained on it: standardised by a `Normalizer` fitted on the
training part, and, for a trend, as changes from one step to the next (`difference=True`). Every
function takes and returns values in the data's units. The model runs forward only, from a zero
state at the series' first value, so a prediction for step t uses the values before t and
nothing after them.

Covariates. A series may come with F *observed* covariates (``features``, ``(N, F)``: measured
alongside the target, unknown past the data's end) and K covariates *known in advance*
(``known``, ``(N, K)``: a calendar, a price plan, a series' identity). The input that predicts
step t+1 holds, standardised, the target at step t (or its change), the observed covariates at
step t and the known ones at step t+1, in that order (:func:`arrays` builds these inputs): I =
1 + F + K. The normalizer is then one of ``(1 + F + K,)`` statistics, in the same order (a scalar
one without covariates). A model with observed covariates forecasts one step past the data, not
more (their next values are unknown); known ones past the data come from ``future``.

Distributions. A model trained with ``loss="gaussian"`` (``output_size = 2``: the mean and the raw
scale of the next standardised target, ``tbptt.losses.gaussian_parameters``) predicts a normal
distribution of the next value. :func:`one_step` gives its means and :func:`one_step_scale` its
standard deviations (one step ahead the distribution is exactly normal, in the data's units too);
several steps ahead it is not, and :func:`sample` draws paths, the model fed its own samples
(as DeepAR); :func:`backtest` then scores the paths' quantiles (coverage) and CRPS. Every other
function reads a gaussian model's mean. The model's ``output_size`` says which kind it is: 1 a
point forecast, 2 a gaussian one.

A run of ``tbptt train`` on a numeric series (``--data FILE.csv --column NAME``, ``--task co2``)
is read back with :func:`load`: the model, and each series with its times, values, covariates,
normalizer and where its held-out part starts::

    run = tbptt.forecast.load("runs/shops")
    for s in run.series:
        ahead = forecast(run.model, s.values, 8, s.normalizer, run.difference,
                         features=s.features, known=s.known, future=None)
"""

from __future__ import annotations

import math
import os
import textwrap
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .. import _checks, _table
from ..data import Normalizer
from ..losses import gaussian_parameters

__all__ = [
    "arrays",
    "one_step",
    "one_step_scale",
    "forecast",
    "sample",
    "quantiles",
    "crps",
    "backtest",
    "Backtest",
    "scores",
    "future_times",
    "Series",
    "Run",
    "load",
    "read_run",
    "LEVELS",
    "SAMPLES",
]

SAMPLES = 500  # sampled paths of a gaussian model's forecasts and backtests, by default
# The quantile levels a gaussian model's backtest keeps: the 80% and 50% central intervals and
# the median.
LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def arrays(values, normalizer, difference=False, *, features=None, known=None):
    """The model's inputs and next-step targets over a series, as training uses them.

    values: (N,) the series in the data's units; features: (N, F) observed covariates; known:
    (N, K) covariates known in advance. Returns ``(x, y)``, float64 ``(M, 1 + F + K)`` and
    ``(M, 1)`` with ``M = N - 1`` (``N - 2`` with ``difference``): row i is the input at step
    ``u = i`` (``i + 1`` with ``difference``), ``[target(u), features[u], known[u + 1]]``
    standardised, and ``y[i]`` the standardised target at step ``u + 1``. ``target(u)`` is
    ``values[u]``, or ``values[u] - values[u - 1]`` with ``difference``. Feed one series as one
    stream (``tbptt.data.batchify``) or many as separate sequences (``tbptt.data.pack(xs, B,
    targets=ys)``).
    """
    values, features, known = _series(None, values, normalizer, difference, features, known)
    x = _inputs(values, normalizer, difference, features, known)
    z = _target(normalizer).transform(np.diff(values) if difference else values)
    return x[: z.size - 1], z[1:, None]


def one_step(model, values, normalizer, difference=False, *, features=None, known=None):
    """The model's prediction of each value from the values before it.

    values: (N,) the series in the data's units; features (N, F), known (N, K): covariates (see
    the module's docstring). Returns (N,) float64: [t] is the prediction of values[t] made from
    values[:t] (and the covariates the input of step t - 1 holds); NaN where there is none yet
    (t = 0, and t = 1 when the model reads changes).
    """
    values, features, known = _series(model, values, normalizer, difference, features, known)
    first = 2 if difference else 1  # outputs[i] predicts the model's input i + 1
    inputs = _inputs(values, normalizer, difference, features, known)  # known: to u = N - 2
    outputs, _ = _run(model, inputs)
    predictions = np.full(values.size, np.nan)
    step = _target(normalizer).inverse_transform(outputs[: values.size - first])
    predictions[first:] = values[first - 1 : -1] + step if difference else step
    return predictions


def one_step_scale(model, values, normalizer, difference=False, *, features=None, known=None):
    """The standard deviation of a gaussian model's prediction of each value from the values
    before it, in the data's units.

    As :func:`one_step`, for a model trained with ``loss="gaussian"``: (N,) float64, [t] the
    sigma of the normal distribution of values[t] given values[:t] (NaN where there is none).
    Its mean is ``one_step(...)[t]``; a central interval of probability p is mean +- sigma
    Phi^-1((1 + p) / 2) (``statistics.NormalDist().inv_cdf``): 1.2816 sigma for 80%.
    """
    values, features, known = _series(model, values, normalizer, difference, features, known)
    _need_gaussian(model, "one_step_scale")
    first = 2 if difference else 1
    inputs = _inputs(values, normalizer, difference, features, known)
    outputs, _ = model.predict(inputs[:, None, :].astype(model.dtype))
    _, sigma = gaussian_parameters(outputs[:, 0, :].astype(np.float64))
    scales = np.full(values.size, np.nan)
    scales[first:] = sigma[: values.size - first, 0] * _target(normalizer).std
    return scales


def forecast(
    model, values, steps, normalizer, difference=False, *, features=None, known=None, future=None
):
    """The `steps` values after the end of `values`, each predicted from the ones before it, its
    own predictions included: the model runs over the data, then on its outputs.

    values: (N,) the series in the data's units; features (N, F) and known (N, K): covariates;
    future: (steps, K) the known covariates of the steps ahead (needed with ``known``). With
    observed ``features`` only ``steps=1`` is possible. Returns (steps,) float64 in the data's
    units. A gaussian model is fed its own means (:func:`sample` draws its distribution).
    """
    values, features, known = _series(model, values, normalizer, difference, features, known)
    steps = _checks.positive_int("steps", steps)
    inputs, ahead_known = _ahead(values, steps, normalizer, difference, features, known, future)
    outputs, state = _run(model, inputs)
    ahead = np.empty(steps)
    z = outputs[-1]  # the prediction of the step after the data, as the model reads it
    for t in range(steps):
        ahead[t] = z
        if t + 1 < steps:
            row = np.array([z]) if ahead_known is None else np.append(z, ahead_known[t + 1])
            out, state = model.predict(row[None, None, :].astype(model.dtype), state)
            z = float(out[0, 0, 0])
    ahead = _target(normalizer).inverse_transform(ahead)
    return values[-1] + np.cumsum(ahead) if difference else ahead


def sample(
    model,
    values,
    steps,
    normalizer,
    difference=False,
    *,
    features=None,
    known=None,
    future=None,
    samples=SAMPLES,
    seed=0,
):
    """`samples` paths of the `steps` values after the end of `values`, drawn from a gaussian
    model fed its own samples: the model runs over the data, then at each step ahead draws the
    next value from its normal distribution and reads that draw as the step's value.

    Arguments as for :func:`forecast`; the model must be trained with ``loss="gaussian"``.
    seed: the draws' (``numpy.random.default_rng(seed)``; the same seed, the same paths).
    Returns (samples, steps) float64 in the data's units; :func:`quantiles` sums them up, their
    mean over axis 0 is the forecast's mean.
    """
    values, features, known = _series(model, values, normalizer, difference, features, known)
    _need_gaussian(model, "sample")
    steps = _checks.positive_int("steps", steps)
    samples = _checks.positive_int("samples", samples)
    inputs, ahead_known = _ahead(values, steps, normalizer, difference, features, known, future)
    outputs, state = model.predict(inputs[:, None, :].astype(model.dtype))
    state = _repeat(state, samples)
    known_ahead = None if ahead_known is None else (lambda t: ahead_known[t][None])
    draws = _draw(
        outputs[-1:, 0, :], samples, steps, model, state, known_ahead, np.random.default_rng(seed)
    )[0]  # (samples, steps)
    ahead = _target(normalizer).inverse_transform(draws)
    return values[-1] + np.cumsum(ahead, axis=1) if difference else ahead


def quantiles(paths, levels):
    """The quantiles of sampled paths at each step: paths (S, steps), levels (Q,) in (0, 1);
    returns (steps, Q), non-decreasing along Q for increasing levels (numpy's linear
    interpolation between order statistics)."""
    levels = _levels(levels)
    paths = np.asarray(paths, dtype=np.float64)
    if paths.ndim != 2 or paths.shape[0] == 0:
        raise ValueError(f"paths must have shape (S, steps) with S >= 1, got {paths.shape}")
    return np.quantile(paths, levels, axis=0).T


def crps(draws, actual):
    """The continuous ranked probability score of sampled forecasts: draws (..., S), actual
    (...); returns (...): E|X - y| - ½ E|X - X'| over the S draws (the energy form; for one
    draw, a point forecast, it is the absolute error). Lower is better; in the data's units."""
    draws = np.sort(np.asarray(draws, dtype=np.float64), axis=-1)
    S = draws.shape[-1]
    spread = 2.0 * np.sum((2.0 * np.arange(1, S + 1) - S - 1) * draws, axis=-1) / (S * S)
    return np.mean(np.abs(draws - np.asarray(actual)[..., None]), axis=-1) - 0.5 * spread


def _ahead(values, steps, normalizer, difference, features, known, future):
    """The standardised inputs over the data (the first step ahead's known covariates included)
    and the known covariates of the steps ahead ((steps, K) standardised, or None); ValueError
    for observed covariates and more than one step, or a `future` that does not cover them."""
    if features is not None and steps > 1:
        raise ValueError(_observed_message(features.shape[1], steps))
    ahead_known = None
    if known is not None:
        if future is None:
            raise ValueError(
                f"the model reads {known.shape[1]} covariate(s) known in advance: "
                f"give their values for the {steps} step(s) ahead as future, "
                f"({steps}, {known.shape[1]})"
            )
        future = _checks.numeric_array("future", future).astype(np.float64)
        if future.ndim == 1 and known.shape[1] == 1:
            future = future[:, None]
        if future.ndim != 2 or future.shape[0] < steps or future.shape[1] != known.shape[1]:
            raise ValueError(
                f"future must hold the {known.shape[1]} known covariate(s) of the "
                f"{steps} step(s) ahead, shape ({steps}, {known.shape[1]}), got "
                f"{future.shape}"
            )
        _checks.all_finite("future", future)
        ahead_known = _standard(normalizer, future[:steps], -known.shape[1])
        known = np.concatenate([known, future[:1]])  # known[N]: the first step ahead's
    return _inputs(values, normalizer, difference, features, known), ahead_known


class Backtest(NamedTuple):
    """A rolling-origin backtest of one series (:func:`backtest`), in the data's units.

    origins: (M,) the index of the last value each forecast knows. actual, forecast, naive:
    (M, H): the values at ``origins + h`` (h = 1..H), the model's forecasts, and the naive ones
    (the value at the origin). seasonal: (M, H) the seasonal-naive forecasts (the value one
    season before, ``values[o + h - P * ceil(h / P)]``), or None without a season. scale_naive,
    scale_seasonal: the mean absolute error of the one-step naive (and seasonal-naive) forecast
    over the training part, which MASE divides by. For a gaussian model, ``forecast`` is the
    mean of the sampled paths, quantiles (M, H, 5) their quantiles at :data:`LEVELS` (0.1,
    0.25, 0.5, 0.75, 0.9) and crps (M, H) their CRPS (:func:`crps`); None for a point model.
    """

    origins: np.ndarray
    actual: np.ndarray
    forecast: np.ndarray
    naive: np.ndarray
    seasonal: Optional[np.ndarray]
    scale_naive: float
    scale_seasonal: Optional[float]
    quantiles: Optional[np.ndarray] = None
    crps: Optional[np.ndarray] = None


def backtest(
    model,
    values,
    normalizer,
    difference=False,
    *,
    start,
    horizon=1,
    season=None,
    features=None,
    known=None,
    samples=SAMPLES,
    seed=0,
) -> Backtest:
    """Forecasts of 1..`horizon` steps from every origin of the held-out part, against the
    naive and seasonal-naive forecasts.

    values: (N,) the series in the data's units; features, known: covariates as for
    :func:`forecast` (known ones are read from the data at the steps forecast). start: the
    index of the held-out part's first value (the training part is ``values[:start]``). The
    origins are ``start - 1 .. N - 1 - horizon``: every forecast lands in the held-out part, and
    every origin has all `horizon` steps. The model is not refitted: at each origin it has run
    over the values up to it, then on its own predictions. season: P >= 2 steps, for the
    seasonal-naive forecast. A gaussian model draws `samples` paths from every origin (as
    :func:`sample`, the draws from ``default_rng(seed)``): its forecast is their mean, and the
    Backtest holds their quantiles and CRPS. Returns a :class:`Backtest`; :func:`scores` sums up
    one or more.
    """
    values, features, known = _series(model, values, normalizer, difference, features, known)
    N, first = values.size, 1 + bool(difference)
    horizon, start, season = _backtest_span(N, first, horizon, start, season, features)
    inputs = _inputs(values, normalizer, difference, features, known)[: N - first]  # u = d..N-2
    origins = np.arange(start - 1, N - horizon)
    u0 = first - 1  # the step of the first input
    _, state = _run(model, inputs[: origins[0] - u0]) if origins[0] > u0 else (None, None)
    firsts, states = np.empty((origins.size, model.output_size)), []
    for i, o in enumerate(
        origins
    ):  # one step at a time over the held-out part: every origin's state
        out, state = model.predict(inputs[o - u0][None, None, :].astype(model.dtype), state)
        firsts[i] = out[0, 0]
        states.append(state)
    target = _target(normalizer)
    steps = origins[:, None] + np.arange(1, horizon + 1)
    if model.output_size == 2:
        samples = _checks.positive_int("samples", samples)
        K = 0 if known is None else known.shape[1]
        known_ahead = None if not K else (lambda h: inputs[origins + h - u0, inputs.shape[1] - K :])
        draws = _draw(
            firsts,
            samples,
            horizon,
            model,
            _repeat(_stack(states), samples),
            known_ahead,
            np.random.default_rng(seed),
        )  # (M, samples, H)
        paths = target.inverse_transform(draws)
        if difference:
            paths = values[origins, None, None] + np.cumsum(paths, axis=2)
        ahead = paths.mean(axis=1)
        levels = np.moveaxis(np.quantile(paths, LEVELS, axis=1), 0, -1)  # (M, H, 5)
        scored = crps(np.swapaxes(paths, 1, 2), values[steps])
        return _baselines(values, origins, steps, start, season, ahead, levels, scored)
    z = firsts[:, 0]
    changes = np.empty((origins.size, horizon))
    changes[:, 0] = target.inverse_transform(z)
    state = _stack(states)
    for h in range(1, horizon):  # every origin at once, B = M, fed its own predictions
        row = z[:, None]
        if known is not None:
            row = np.concatenate(
                [row, inputs[origins + h - u0, inputs.shape[1] - known.shape[1] :]], 1
            )
        out, state = model.predict(row[None].astype(model.dtype), state)
        z = out[0, :, 0].astype(np.float64)
        changes[:, h] = target.inverse_transform(z)
    ahead = values[origins, None] + np.cumsum(changes, axis=1) if difference else changes
    return _baselines(values, origins, steps, start, season, ahead)


def _backtest_span(N, first, horizon, start, season, features) -> Tuple[int, int, Optional[int]]:
    """backtest's horizon, start and season, checked against a series of N values whose first
    `first` have no input before them."""
    horizon = _checks.positive_int("horizon", horizon)
    start = _checks.positive_int("start", start)
    if season is not None:
        season = _checks.positive_int("season", season)
        if season < 2:
            raise ValueError(f"season must be >= 2 steps, got {season}")
    if features is not None and horizon > 1:
        raise ValueError(_observed_message(features.shape[1], horizon))
    least = max(first, season or 0) + 1
    if start < least:
        raise ValueError(f"start must leave at least {least} values to train on, got {start}")
    if N - start < horizon:
        raise ValueError(
            f"the held-out part has {N - start} value(s), fewer than the horizon {horizon}"
        )
    return horizon, start, season


def _baselines(values, origins, steps, start, season, ahead, levels=None, scored=None):
    """The Backtest of the model's forecasts `ahead` (M, H), with the naive ones beside them."""
    horizon = steps.shape[1]
    seasonal = scale_seasonal = None
    if season is not None:
        seasonal = values[steps - season * -(-(steps - origins[:, None]) // season)]
        scale_seasonal = float(np.mean(np.abs(values[season:start] - values[: start - season])))
    scale = float(np.mean(np.abs(np.diff(values[:start]))))
    return Backtest(
        origins,
        values[steps],
        ahead,
        np.repeat(values[origins, None], horizon, 1),
        seasonal,
        scale,
        scale_seasonal,
        levels,
        scored,
    )


def scores(backtests: Sequence[Backtest]) -> Dict[str, Any]:
    """MAE, RMSE and MASE over every origin and horizon of one or more backtests (several series:
    pooled; MAE and RMSE then mix the series' units, MASE scales each series by its own naive
    error first).

    Returns ``{"mae", "rmse", "mase_naive"[, "mase_seasonal"]}`` of the model (the seasonal key
    when the backtests have a season), the same for ``"naive"`` and ``"seasonal_naive"``
    forecasts, and ``"by_horizon"``: the MAE at each horizon of each of them (lists of H floats).
    Backtests of a gaussian model add ``"crps"`` (the mean CRPS of the sampled paths; the
    baselines' is their MAE, the CRPS of a point forecast), ``"coverage_50"`` and
    ``"coverage_80"``: the share of actual values inside the paths' central 50% and 80%
    intervals (between the 0.25 and 0.75, and the 0.1 and 0.9 quantiles), which should be near
    0.5 and 0.8; and ``by_horizon["model_crps"]``, ``["coverage_50"]`` and ``["coverage_80"]``,
    the model's CRPS and coverages at each horizon.
    MASE: MAE divided by the one-step naive (seasonal-naive) forecast's MAE over the training
    part (Hyndman & Koehler, 2006); below 1 beats that in-sample benchmark.
    """
    if not backtests:
        raise ValueError("scores need at least one backtest")
    seasonal = all(b.seasonal is not None for b in backtests)
    sampled = all(b.quantiles is not None for b in backtests)

    def summary(name):
        errors = [getattr(b, name) - b.actual for b in backtests]
        flat = np.concatenate([e.ravel() for e in errors])
        out = {"mae": float(np.mean(np.abs(flat))), "rmse": math.sqrt(float(np.mean(flat**2)))}
        out["mase_naive"] = _scaled(errors, [b.scale_naive for b in backtests])
        if seasonal:
            out["mase_seasonal"] = _scaled(errors, [b.scale_seasonal for b in backtests])
        if sampled:  # a point forecast's CRPS is its absolute error
            out["crps"] = (
                out["mae"]
                if name != "forecast"
                else float(
                    np.mean(
                        np.concatenate([b.crps.ravel() for b in backtests if b.crps is not None])
                    )
                )
            )
        by_horizon = np.concatenate([np.abs(e) for e in errors]).mean(axis=0)
        return out, [float(v) for v in by_horizon]

    model, by_model = summary("forecast")
    result: Dict[str, Any] = dict(model)
    if sampled:
        actual = np.concatenate([b.actual.ravel() for b in backtests])
        q = np.concatenate([np.asarray(b.quantiles).reshape(-1, len(LEVELS)) for b in backtests])
        result["coverage_50"] = float(np.mean((q[:, 1] <= actual) & (actual <= q[:, 3])))
        result["coverage_80"] = float(np.mean((q[:, 0] <= actual) & (actual <= q[:, 4])))
    naive, by_naive = summary("naive")
    result["naive"] = naive
    result["by_horizon"] = {"model": by_model, "naive": by_naive}
    if sampled:
        by = result["by_horizon"]
        by["model_crps"] = [
            float(v) for v in np.concatenate([np.asarray(b.crps) for b in backtests]).mean(axis=0)
        ]
        actual = np.concatenate([b.actual for b in backtests])  # (M, H)
        q = np.concatenate([np.asarray(b.quantiles) for b in backtests])  # (M, H, 5)
        for key, lo, hi in (("coverage_50", 1, 3), ("coverage_80", 0, 4)):
            inside = (q[..., lo] <= actual) & (actual <= q[..., hi])
            by[key] = [float(v) for v in inside.mean(axis=0)]
    if seasonal:
        result["seasonal_naive"], result["by_horizon"]["seasonal_naive"] = summary("seasonal")
    result["origins"] = int(sum(b.origins.size for b in backtests))
    result["horizon"] = int(backtests[0].actual.shape[1])
    return result


def _scaled(errors, scales):
    flat = np.concatenate(
        [np.abs(e).ravel() / (s if s > 0 else np.nan) for e, s in zip(errors, scales)]
    )
    return float(np.mean(flat))


def future_times(times, steps):
    """The `steps` times after the end of `times` ((N,) numbers or numpy datetime64, N >= 2), at
    the usual spacing (the median step): years after years, weeks after weeks."""
    times = np.asarray(times)
    steps = _checks.nonnegative_int("steps", steps)
    if times.ndim != 1 or times.size < 2:
        raise ValueError(f"times must have shape (N,) with N >= 2, got {times.shape}")
    gaps = np.sort(np.diff(times))
    return times[-1] + gaps[gaps.size // 2] * np.arange(1, steps + 1)


class Series(NamedTuple):
    """One series of a run, as `tbptt train` read it (and :func:`load` reads it again).

    name: the series' id (``""`` for a file of one series). times: (N,) its times: numpy
    datetime64 dates, numbers (years), or the row numbers. values: (N,) float64, gaps filled
    linearly. features: (N, F) observed covariates, known: (N, K) covariates known in advance
    (None when there are none). normalizer: the training part's statistics, as :func:`arrays`
    takes them. start: the first held-out value's index (training: ``values[:start]``).
    """

    name: str
    times: np.ndarray
    values: np.ndarray
    features: Optional[np.ndarray]
    known: Optional[np.ndarray]
    normalizer: Normalizer
    start: int


class Run(NamedTuple):
    """A `tbptt train` run on numeric series, read back by :func:`load`.

    model: the model (the run's best). series: its :class:`Series` (the data as the file is now,
    with the run's normalizers). difference: whether the model reads changes. features, known:
    the covariates' column names (the series' identity, with ``--series-id``, is among the known
    ones, as ``series=<name>``). source: what the data are. header: the model file's header.
    likelihood: "gaussian" for a model of a distribution (``--likelihood``), else None.
    """

    model: Any
    series: List[Series]
    difference: bool
    features: List[str]
    known: List[str]
    source: str
    header: Dict[str, Any]
    likelihood: Optional[str] = None


def load(path) -> Run:
    """The model of a `tbptt train` run on numeric series (its folder, or its model.npz) and the
    run's data read again from their file, each series with the normalizer of the run: the
    normaliser a command-line run trained with, for :func:`one_step`, :func:`forecast` and
    :func:`backtest`. ValueError for a model of other data."""
    from .. import _files, checkpoint

    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.npz")
    return read_run(checkpoint.load(path), _files.load_arrays(path, "model")[0], path)


def read_run(model, header, path) -> Run:
    """A :class:`Run` of `model` and the data of the run whose model file (at `path`) has the
    header `header`: the data read again as they are now, with the run's normalizers and
    held-out starts."""
    meta, settings = header.get("data") or {}, header.get("settings") or {}
    if meta.get("kind") != "series" or "task" not in settings:
        raise ValueError(
            f"{path} is not a model of a numeric series written by `tbptt train` "
            f"(--task co2|sunspots or --data FILE.csv --column NAME)"
        )
    observed = list(meta.get("features", []))
    known = [name for name in meta.get("known", []) if not name.startswith("series=")]
    identity = [name for name in meta.get("known", []) if name.startswith("series=")]
    if "normalizers" in meta:
        names, starts = meta["series_names"], meta["starts"]
        norms = [Normalizer.from_dict(d) for d in meta["normalizers"]]
    else:  # one column, or a run of an older tbptt
        names, norms = [""], [Normalizer.from_dict(meta["normalizer"])]
        starts = [meta["train_values"] + bool(meta["difference"])]
    of = {name: i for i, name in enumerate(names)}
    series = []
    for name, times, values, columns in _run_data(settings, observed + known):
        if name not in of:
            raise _table.BadInput(
                f"{settings.get('data')}: series {name!r} was not in the "
                f"run's training data ({path})"
            )
        i = of[name]
        own = columns[:, len(observed) :] if known else np.empty((values.size, 0))
        if identity:
            own = np.column_stack([own, np.tile(np.eye(len(identity))[i], (values.size, 1))])
        series.append(
            Series(
                name,
                times,
                values,
                columns[:, : len(observed)] if observed else None,
                own if own.shape[1] else None,
                norms[i],
                starts[i],
            )
        )
    return Run(
        model,
        series,
        bool(meta["difference"]),
        observed,
        known + identity,
        meta["source"],
        header,
        meta.get("likelihood"),
    )


def _run_data(settings, covariates):
    """[(name, times, values, covariates)] of a run's data as they are now."""
    from .. import datasets

    if settings.get("task") == "co2":
        dates, ppm = datasets.co2()
        return [("", dates, ppm, None)]
    if settings.get("task") == "sunspots":
        years, activity = datasets.sunspots()
        return [("", years, activity, None)]
    return _table.read_table(
        settings["data"],
        settings["column"],
        covariates,
        settings.get("series"),
        settings.get("time"),
        least=1,
    )


# ---- internals ------------------------------------------------------------------------------


def _observed_message(F, steps):
    return (
        f"the model reads {F} covariate(s) observed alongside the target, whose values past "
        f"the data's end are not known: it forecasts 1 step ahead, not {steps} (covariates "
        f"known in advance, as a calendar, are marked as such when training: --known)"
    )


def _target(normalizer):
    """The target's own normalizer (the first of a vector normalizer's columns)."""
    if normalizer.mean.ndim == 0:
        return normalizer
    return Normalizer(normalizer.mean[0], normalizer.std[0])


def _standard(normalizer, columns, first):
    """Covariate columns standardised by the normalizer's columns from `first` on."""
    stop = first + columns.shape[1] or None
    return (columns - normalizer.mean[first:stop]) / normalizer.std[first:stop]


def _series(model, values, normalizer, difference, features=None, known=None):
    """The checked (N,) float64 values and (N, F) / (N, K) covariates (None if absent); the
    model must read 1 + F + K values per step and predict one."""
    if not isinstance(normalizer, Normalizer) or normalizer.mean is None:
        raise TypeError(f"normalizer must be a fitted tbptt.data.Normalizer, got {normalizer!r}")
    values = _checks.numeric_array("values", values).astype(np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must have shape (N,), got {values.shape}")
    if values.size < 2 + bool(difference):
        raise ValueError(
            f"values must hold at least {2 + bool(difference)} values, got {values.size}"
        )
    _checks.all_finite("values", values)
    columns = []
    for name, cov in (("features", features), ("known", known)):
        if cov is not None:
            cov = _checks.numeric_array(name, cov).astype(np.float64)
            if cov.ndim == 1:
                cov = cov[:, None]
            if cov.ndim != 2 or cov.shape[0] != values.size:
                raise ValueError(
                    f"{name} must have shape (N, F) with N = {values.size} (the "
                    f"values'), got {cov.shape}"
                )
            _checks.all_finite(name, cov)
            if cov.shape[1] == 0:
                cov = None
        columns.append(cov)
    features, known = columns
    size = 1 + sum(c.shape[1] for c in columns if c is not None)
    if normalizer.mean.shape not in ((), (size,)) or (size > 1 and normalizer.mean.ndim == 0):
        raise ValueError(
            f"normalizer must hold the statistics of the target and the "
            f"{size - 1} covariate(s), ({size},), got {normalizer.mean.shape}"
        )
    if model is not None and (model.input_size != size or model.output_size not in (1, 2)):
        raise ValueError(
            f"model must read {size} value(s) per step (the target"
            f"{' and the covariates' if size > 1 else ''}) and predict one value "
            f"(input_size = {size}, output_size = 1, or 2 for loss='gaussian'), "
            f"got {model.input_size} and {model.output_size}"
        )
    return values, features, known


def _inputs(values, normalizer, difference, features, known):
    """The standardised inputs (float64) for the steps u = d .. N-1 (d = 1 with differences):
    [target(u), features[u], known[u + 1]]; known may hold one row more than values (the first
    step ahead's), else the last row has no known covariates and is left out."""
    target = np.diff(values) if difference else values
    z = _target(normalizer).transform(target)[:, None]
    if features is None and known is None:
        return z
    d = int(bool(difference))
    rows = values.size - d if known is None or known.shape[0] > values.size else values.size - d - 1
    parts = [z[:rows]]
    if features is not None:
        parts.append(_standard(normalizer, features[d : d + rows], 1))
    if known is not None:
        parts.append(_standard(normalizer, known[d + 1 : d + 1 + rows], -known.shape[1]))
    return np.concatenate(parts, axis=1)


def _run(model, inputs):
    """The model over (M, I) inputs from a zero state: outputs (M,) float64, standardised, and
    the final state."""
    outputs, state = model.predict(inputs[:, None, :].astype(model.dtype))
    return outputs[:, 0, 0].astype(np.float64), state


def _repeat(state, times):
    """A state of B streams as one of B x `times`, each stream's copies side by side."""
    if isinstance(state, tuple):
        return tuple(np.repeat(part, times, axis=1) for part in state)
    return np.repeat(state, times, axis=1)


def _draw(first, samples, steps, model, state, known_ahead, rng):
    """Sampled paths of G origins, standardised: (G, samples, steps). first: (G, 2) the gaussian
    outputs that predict each origin's first step ahead; state: the model's state after each
    origin, each repeated `samples` times (B = G x samples, origin-major); known_ahead(t): the
    standardised known covariates (G, K) of step t ahead, or None. At each step every stream
    draws its value and reads it as its next input."""
    G = first.shape[0]
    draws = np.empty((G, samples, steps))
    mu, sigma = (np.repeat(p[:, 0], samples) for p in gaussian_parameters(first.astype(np.float64)))
    for t in range(steps):
        z = mu + sigma * rng.standard_normal(G * samples)
        draws[:, :, t] = z.reshape(G, samples)
        if t + 1 < steps:
            row = z[:, None]
            if known_ahead is not None:
                row = np.concatenate([row, np.repeat(known_ahead(t + 1), samples, axis=0)], 1)
            out, state = model.predict(row[None].astype(model.dtype), state)
            mu, sigma = (p[:, 0] for p in gaussian_parameters(out[0].astype(np.float64)))
    return draws


def _need_gaussian(model, what):
    """ValueError unless `model` has a gaussian head (output_size 2)."""
    if model.output_size != 2:
        raise ValueError(
            f"{what} needs a model trained with loss='gaussian' (output_size 2: a "
            f"mean and a scale), got a point model (output_size "
            f"{model.output_size}): it has no distribution"
        )


def _levels(levels):
    """Quantile levels: a (Q,) float64 array of values in (0, 1); ValueError naming `levels`."""
    array = _checks.numeric_array("levels", levels).astype(np.float64).ravel()
    if array.size == 0 or not np.all((array > 0) & (array < 1)):
        raise ValueError(f"levels must be quantile levels in (0, 1), got {list(array)}")
    return array


def _stack(states):
    """States of B = 1 each, one per origin, as one state of B = len(states)."""
    if isinstance(states[0], tuple):
        return tuple(np.concatenate(parts, axis=1) for parts in zip(*states))
    return np.concatenate(states, axis=1)


def plot(path, title, lines, cut=None, bands=()):
    """Write a PNG (atomically) of a series and predictions in the data's units.

    lines: [(x, y, label, style)], style a dict of matplotlib keywords. cut: an x where the
    held-out data or the forecast begins (a vertical line). bands: [(x, low, high, label,
    style)], shaded intervals drawn under the lines.
    """
    from .. import _plots

    fig = _plots.figure("forecast plots", figsize=(9, 4.5))
    ax = fig.add_subplot()
    for x, low, high, label, style in bands:
        ax.fill_between(x, low, high, label=label, **style)
    for x, y, label, style in lines:
        ax.plot(x, y, label=label, **style)
    if cut is not None:
        ax.axvline(cut, color="gray", linestyle=":", linewidth=1)
    ax.set_title(title)
    ax.set_ylabel("value (the data's units)")
    ax.grid(alpha=0.3)
    ax.legend()
    _plots.save(fig, path)


PANELS = 12  # the most series a picture draws, one panel each


def plot_panels(path, title, panels, ylabel="value (the data's units)"):
    """Write a PNG (atomically) of one panel per series: panels [(name, lines, cut)] or
    [(name, lines, cut, bands)], lines and bands as for :func:`plot`; the first panel holds the
    legend."""
    from .. import _plots

    columns = 1 if len(panels) < 3 else 2 if len(panels) <= 8 else 3
    rows = -(-len(panels) // columns)
    fig = _plots.figure("forecast plots", figsize=(5 * columns + 1, 2.6 * rows + 0.6))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (name, lines, cut, *bands) in zip(axes.ravel(), panels):
        for x, low, high, label, style in bands[0] if bands else ():
            ax.fill_between(x, low, high, label=label, **style)
        for x, y, label, style in lines:
            ax.plot(x, y, label=label, **style)
        if np.issubdtype(np.asarray(lines[0][0]).dtype, np.datetime64):  # short date labels
            from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

            locator = AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        if cut is not None:
            ax.axvline(cut, color="gray", linestyle=":", linewidth=1)
        ax.set_title(str(name), fontsize=10)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].set_ylabel(ylabel)
    fig.suptitle(textwrap.fill(title, 30 + 40 * columns), fontsize=10)  # ~1 line per 5 inches
    _plots.save(fig, path)
