"""`tbptt forecast RUN --steps N [--quantiles 0.1,0.5,0.9] [--future FILE.csv]`: numeric series
N steps past their end, with the model that `tbptt train` trained on them, fed its own
predictions (a --likelihood model: its own samples, and the paths' quantiles); the covariates
known in advance come from --future."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from .. import _files, _table
from ..apps import forecast
from . import _args, _data, _folder


def add_parser(commands) -> None:
    ahead = commands.add_parser(
        "forecast",
        help="forecast a numeric series past its end with a model trained on it",
        description="Run a model written by `tbptt train` on a numeric series "
        "(--task co2|sunspots, --data FILE.csv --column NAME) over the run's data "
        "as they are now, then N steps past their end, feeding it its own "
        "predictions. Prints CSV (time, "
        "forecast; series first with --series), in the data's own times, and draws "
        "the forecast after the data. A model with covariates observed alongside "
        "the target forecasts one step; covariates known in advance come from "
        "--future.",
    )
    ahead.add_argument(
        "folder", metavar="RUN", help="the output folder of `tbptt train` or its model.npz"
    )
    ahead.add_argument(
        "--steps",
        type=_args.number(int, 0),
        required=True,
        help="how many steps past the end of the data",
    )
    ahead.add_argument(
        "--future",
        metavar="FILE.csv",
        help="the covariates known in advance "
        "(--known) of the steps ahead: their columns (and the series column, and "
        "the time column if the data had one: the rows after the data's end "
        "are used; else the first N rows of each series)",
    )
    ahead.add_argument(
        "--quantiles",
        metavar="Q,...",
        help="a model trained with --likelihood: the quantiles of the sampled "
        "paths at these levels in (0, 1), as columns q0.1, ... of the CSV; "
        "the picture shades the band between each pair of levels (default "
        "for the picture: 0.1 and 0.9, the 80%% band)",
    )
    ahead.add_argument(
        "--samples",
        type=_args.number(int, 0),
        help=f"a --likelihood model: how many paths to draw, each fed its own "
        f"samples (default {forecast.SAMPLES})",
    )
    ahead.add_argument("--seed", type=int, default=0, help="the paths' draws (default 0)")
    ahead.add_argument("--out", metavar="FILE", help="write the CSV there (default: stdout)")
    ahead.add_argument(
        "--plot",
        metavar="FILE",
        help=f"the picture (default: {_folder.FORECAST_PLOT} beside the model)",
    )
    ahead.set_defaults(run=run)


def _quantile_levels(text):
    """--quantiles: comma-separated levels in (0, 1), sorted ([] without the flag); BadInput
    (one line, exit 2) for anything else."""
    if text is None:
        return []
    try:
        levels = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise _data.BadInput(
            f"--quantiles {text}: expected comma-separated numbers in (0, 1), such as 0.1,0.5,0.9"
        ) from None
    if not levels or not all(0 < q < 1 for q in levels):
        raise _data.BadInput(
            f"--quantiles {text}: quantile levels must be in (0, 1), such as 0.1,0.5,0.9"
        )
    return sorted(set(levels))


def run(args) -> int:
    path = _folder.model_path(args.folder)
    model, header = _folder.load_model(path)
    ran = forecast.read_run(model, header, path)
    levels = _quantile_levels(args.quantiles)
    if ran.likelihood is None and (levels or args.samples is not None):
        asked = "quantiles" if levels else "paths to sample (--samples)"
        raise _data.BadInput(
            f"{path} is a point model (one value per step): it has no "
            f"{asked}; train with --likelihood gaussian for them"
        )
    if ran.features and args.steps > 1:
        raise _data.BadInput(forecast._observed_message(len(ran.features), args.steps))
    given = [name for name in ran.known if not name.startswith("series=")]
    if given and args.future is None:
        raise _data.BadInput(
            f"the model reads covariates known in advance ({', '.join(given)}): "
            f"give their values for the {args.steps} step(s) ahead with "
            f"--future FILE.csv"
        )
    future = _read_future(args.future, ran, args.steps, header) if args.future else {}
    drawn = sorted({*levels, 0.1, 0.9})  # the picture's 80% band without --quantiles
    rows, shown = [], []
    for s in ran.series:
        known_ahead, times = future.get(s.name, (None, None))
        if s.known is not None:
            known_ahead = _with_identity(known_ahead, ran, s, args.steps)
        bands: dict = {}  # quantile level -> (steps,), a likelihood model's
        of_series = (model, s.values, args.steps, s.normalizer, ran.difference)
        covariates = dict(features=s.features, known=s.known, future=known_ahead)
        if ran.likelihood is None:
            ahead = forecast.forecast(*of_series, **covariates)
        else:  # the mean of the paths, and their quantiles
            samples = forecast.SAMPLES if args.samples is None else args.samples
            paths = forecast.sample(*of_series, **covariates, samples=samples, seed=args.seed)
            ahead, bands = paths.mean(axis=0), dict(zip(drawn, forecast.quantiles(paths, drawn).T))
        if times is None:
            times = forecast.future_times(s.times, args.steps)
        rows += [
            (s.name, t, v, [bands[q][i] for q in levels])
            for i, (t, v) in enumerate(zip(times, ahead))
        ]
        shown.append((s, times, ahead, bands))
    many = len(ran.series) > 1 or ran.header["data"].get("series_column") is not None
    head = ["series"] * many + ["time", "forecast"] + [f"q{q:g}" for q in levels]
    text = (
        ",".join(head)
        + "\n"
        + "".join(
            (f"{name}," if many else "")
            + f"{t},{v:.10g}"
            + "".join(f",{x:.10g}" for x in qs)
            + "\n"
            for name, t, v, qs in rows
        )
    )
    if args.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()  # before the report on stderr, in a terminal showing both
    else:
        _files.atomic_write(args.out, lambda f: f.write(text.encode("utf-8")))
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no picture (pip install tbptt[plot])", file=sys.stderr)
        return 0
    picture = args.plot or os.path.join(
        os.path.dirname(os.path.abspath(path)), _folder.FORECAST_PLOT
    )
    _plot(picture, ran, shown, args.steps)
    print(f"wrote {args.out + ', ' if args.out else ''}{picture}", file=sys.stderr)
    return 0


def _plot(picture, ran, shown, steps):
    """The end of the data and the forecast after it (with a likelihood, the bands between
    each pair of quantile levels): one picture, or a panel per series."""
    panels = []
    for s, future, ahead, bands in shown:
        last = max(3 * steps, 100)  # the end of the data, then the forecast
        what = (
            "forecast (the mean of the paths fed their own samples)"
            if bands
            else "forecast (the model on its own predictions)"
        )
        shaded = []
        if bands:  # the outermost pair palest
            levels = sorted(bands)
            for low, high in zip(levels, levels[::-1]):
                if low >= high:
                    break
                shaded.append(
                    (
                        future,
                        bands[low],
                        bands[high],
                        f"{high - low:.0%} band (q{low:g} to q{high:g})",
                        dict(color="tab:blue", alpha=0.15, linewidth=0),
                    )
                )
        panels.append(
            (
                s.name,
                [
                    (s.times[-last:], s.values[-last:], "data", dict(color="black", linewidth=1.2)),
                    (
                        np.concatenate([s.times[-1:], future]),
                        np.concatenate([s.values[-1:], ahead]),
                        what,
                        dict(color="tab:blue", linewidth=1.5),
                    ),
                ],
                s.times[-1],
                shaded,
            )
        )
    title = f"{ran.source}: {steps} steps ahead"
    if len(panels) == 1:
        forecast.plot(picture, title, panels[0][1], cut=panels[0][2], bands=panels[0][3])
    else:
        forecast.plot_panels(picture, title, panels[: forecast.PANELS])


def _with_identity(known_ahead, ran, s, steps):
    """The known covariates ahead, the series' identity columns (constant) appended."""
    identity = [name for name in ran.known if name.startswith("series=")]
    if not identity:
        return known_ahead
    ones = s.known[-1:, s.known.shape[1] - len(identity) :]  # the series' own one-hot row
    ones = np.repeat(ones, steps, axis=0)
    return ones if known_ahead is None else np.column_stack([known_ahead, ones])


def _read_future(path, ran, steps, header):
    """{series name: ((steps, K) known covariates, (steps,) times or None)} from --future's CSV.
    BadInput for a missing column, a value that is not a number, or too few rows."""
    settings = header.get("settings") or {}
    series_column = header["data"].get("series_column")
    names = [name for name in ran.known if not name.startswith("series=")]
    if not names:
        raise _data.BadInput(
            f"--future {path}: the model reads no covariates known in advance; leave --future out"
        )
    columns = _table.columns_of(path)
    time = settings.get("time")
    if time is None:
        time = _table.time_column(path, columns, {*names, series_column})
    wanted = [*names, *([series_column] if series_column else [])]
    for name in wanted:
        if name not in columns:
            raise _data.BadInput(
                f"--future {path} has no column {name!r}, which the model reads "
                f"(columns: {', '.join(columns)})"
            )
    tables = _table.read_table(
        path, names[0], names[1:], series_column, time if time in columns else None, least=0
    )
    future = {}
    by_name = {s.name: s for s in ran.series}
    for key, times, first, rest in tables:
        if key not in by_name:
            continue
        values = first[:, None] if rest is None else np.column_stack([first, rest])
        s = by_name[key]
        if time in columns and np.issubdtype(times.dtype, np.datetime64) == np.issubdtype(
            s.times.dtype, np.datetime64
        ):
            after = times > s.times[-1]
            times, values = times[after], values[after]
        else:
            times = None
        if values.shape[0] < steps:
            where = f"series {key!r}: " if series_column else ""
            raise _data.BadInput(
                f"--future {path}: {where}{values.shape[0]} row(s) after the "
                f"data's end ({s.times[-1]}), --steps {steps} needs {steps}"
            )
        values = values[:steps]
        if np.isnan(values).any():
            raise _data.BadInput(
                f"--future {path}: {key + ': ' if key else ''}an empty cell "
                f"among the known covariates of the {steps} step(s) ahead"
            )
        future[key] = (values, None if times is None else times[:steps])
    missing = [s.name for s in ran.series if s.name not in future]
    if missing:
        raise _data.BadInput(
            f"--future {path} has no rows of series {', '.join(map(repr, missing))}"
        )
    return future
