"""`tbptt forecast RUN --steps N`: a numeric series N steps past its end, with the model that
`tbptt train` trained on it, fed its own predictions."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import numpy as np

from .. import _files
from .. import data, forecast
from . import _args, _data, _folder
from .train import SETTINGS


def add_parser(commands) -> None:
    ahead = commands.add_parser(
        "forecast", help="forecast a numeric series past its end with a model trained on it",
        description="Run a model written by `tbptt train` on a numeric series (--task co2|sunspots, "
                    "--data FILE.csv --column NAME) over the run's data as they are now, then N "
                    "steps past their end, feeding it its own predictions. Prints CSV (time, "
                    "forecast) and draws the forecast after the data.")
    ahead.add_argument("folder", metavar="RUN", help="the output folder of `tbptt train` or its "
                       "model.npz")
    ahead.add_argument("--steps", type=_args.number(int, 0), required=True,
                       help="how many steps past the end of the data")
    ahead.add_argument("--out", metavar="FILE", help="write the CSV there (default: stdout)")
    ahead.add_argument("--plot", metavar="FILE", help=f"the picture (default: "
                       f"{_folder.FORECAST_PLOT} beside the model)")
    ahead.set_defaults(run=run)


def run(args) -> int:
    path = _folder.model_path(args.folder)
    model, header = _folder.load_model(path)
    meta, settings = header.get("data") or {}, header.get("settings") or {}
    if meta.get("kind") != "series" or "task" not in settings:
        raise ValueError(f"{path} is not a model of a numeric series written by `tbptt train` "
                         f"(--task co2|sunspots or --data FILE.csv --column NAME)")
    prepare_args = argparse.Namespace(**{name: settings[name] for name in SETTINGS}, subparser=None)
    values, times = _data.prepare(prepare_args, "series").series
    ahead = forecast.forecast(model, values, args.steps,
                              data.Normalizer.from_dict(meta["normalizer"]), meta["difference"])
    future = times[-1] + (times[-1] - times[-2]) * np.arange(1, args.steps + 1)
    text = "time,forecast\n" + "".join(f"{t},{v:.10g}\n" for t, v in zip(future, ahead))
    if args.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()  # before the report on stderr, in a terminal showing both
    else:
        _files.atomic_write(args.out, lambda f: f.write(text.encode("utf-8")))
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no picture (pip install tbptt[plot])", file=sys.stderr)
        return 0
    picture = args.plot or os.path.join(os.path.dirname(os.path.abspath(path)),
                                           _folder.FORECAST_PLOT)
    shown = max(3 * args.steps, 100)  # the end of the data, then the forecast
    forecast.plot(picture, f"{meta['source']}: {args.steps} steps ahead", [
        (times[-shown:], values[-shown:], "data", dict(color="black", linewidth=1.2)),
        (np.concatenate([times[-1:], future]), np.concatenate([values[-1:], ahead]),
         "forecast (the model on its own predictions)", dict(color="tab:blue", linewidth=1.5)),
    ], cut=times[-1])
    print(f"wrote {args.out + ', ' if args.out else ''}{picture}", file=sys.stderr)
    return 0
