"""Forecasting a numeric series with a model trained for next-step prediction (as `tbptt train`
trains one): one-step predictions over the data, and a rollout past its end that feeds the model
its own predictions.

The model reads the series as it was trained on it: standardised by a `Normalizer` fitted on the
training part, and, for a trend, as changes from one step to the next (`difference=True`). Both
functions take and return values in the data's units. The model runs forward only, from a zero
state at the series' first value, so a prediction for step t uses the values before t and
nothing after them.
"""

from __future__ import annotations

import numpy as np

from . import _checks
from .data import Normalizer


def one_step(model, values, normalizer, difference=False):
    """The model's prediction of each value from the values before it.

    values: (N,) the series in the data's units. Returns (N,) float64: [t] is the prediction of
    values[t] made from values[:t]; NaN where there is none yet (t = 0, and t = 1 when the model
    reads changes).
    """
    values = _series(model, values, normalizer, difference)
    outputs, _ = _run(model, values, normalizer, difference)
    first = 2 if difference else 1  # outputs[i] predicts the model's input i + 1
    predictions = np.full(values.size, np.nan)
    step = normalizer.inverse_transform(outputs[:values.size - first])
    predictions[first:] = values[first - 1:-1] + step if difference else step
    return predictions


def forecast(model, values, steps, normalizer, difference=False):
    """The `steps` values after the end of `values`, each predicted from the ones before it, its
    own predictions included: the model runs over the data, then on its outputs.

    values: (N,) the series in the data's units. Returns (steps,) float64 in the data's units.
    """
    values = _series(model, values, normalizer, difference)
    steps = _checks.positive_int("steps", steps)
    outputs, state = _run(model, values, normalizer, difference)
    ahead = np.empty(steps)
    z = outputs[-1:]  # the prediction of the step after the data, as the model reads it
    for t in range(steps):
        ahead[t] = z[0]
        if t + 1 < steps:
            out, state = model.predict(z[:, None, None].astype(model.dtype), state)
            z = out[:, 0, 0].astype(np.float64)
    ahead = normalizer.inverse_transform(ahead)
    return values[-1] + np.cumsum(ahead) if difference else ahead


def _series(model, values, normalizer, difference):
    """The checked (N,) float64 values; the model must read and predict one value per step."""
    if model.input_size != 1 or model.output_size != 1:
        raise ValueError(f"model must read and predict one value per step (input_size = "
                         f"output_size = 1), got {model.input_size} and {model.output_size}")
    if not isinstance(normalizer, Normalizer) or normalizer.mean is None:
        raise TypeError(f"normalizer must be a fitted tbptt.data.Normalizer, got {normalizer!r}")
    values = _checks.numeric_array("values", values).astype(np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must have shape (N,), got {values.shape}")
    if values.size < 2 + bool(difference):
        raise ValueError(f"values must hold at least {2 + bool(difference)} values, got "
                         f"{values.size}")
    _checks.all_finite("values", values)
    return values


def _run(model, values, normalizer, difference):
    """The model over the whole series from a zero state: outputs (float64, standardised) and
    the final state."""
    inputs = normalizer.transform(np.diff(values) if difference else values)
    outputs, state = model.predict(inputs[:, None, None].astype(model.dtype))
    return outputs[:, 0, 0].astype(np.float64), state


def plot(path, title, lines, cut=None):
    """Write a PNG (atomically) of a series and predictions in the data's units.

    lines: [(x, y, label, style)], style a dict of matplotlib keywords. cut: an x where the
    held-out data or the forecast begins (a vertical line).
    """
    from . import _plots

    fig = _plots.figure("forecast plots", figsize=(9, 4.5))
    ax = fig.add_subplot()
    for x, y, label, style in lines:
        ax.plot(x, y, label=label, **style)
    if cut is not None:
        ax.axvline(cut, color="gray", linestyle=":", linewidth=1)
    ax.set_title(title)
    ax.set_ylabel("value (the data's units)")
    ax.grid(alpha=0.3)
    ax.legend()
    _plots.save(fig, path)
