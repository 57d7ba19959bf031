"""`tbptt backtest RUN [--horizon H] [--season P]`: a rolling-origin evaluation of a series model
over the held-out part of its data, against the naive and seasonal-naive forecasts (MAE, RMSE,
MASE; for a --likelihood model also the CRPS and the coverage of its 50% and 80% intervals): a
table on the terminal, backtest.csv, backtest.json and backtest.png."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np

from .. import _files
from ..apps import forecast
from . import _args, _data, _folder

CSV, JSON, PLOT = "backtest.csv", "backtest.json", "backtest.png"


def add_parser(commands) -> None:
    test = commands.add_parser(
        "backtest",
        help="rolling-origin MAE, RMSE and MASE of a series model against the naive forecasts",
        description="From every origin of the held-out part of the run's data (the last 10%% of "
        "each series), forecast 1..H steps with the model (its state run over the "
        "data up to the origin, then fed its own predictions; not refitted), and "
        "score them with the naive forecast (the value at the origin) and, with "
        "--season, the seasonal-naive one: MAE and RMSE in the data's units, MASE "
        "(MAE over the in-sample one-step naive / seasonal-naive MAE of the "
        "training part). A model trained with --likelihood draws --samples paths "
        "from every origin, each fed its own samples: its forecast is their mean, "
        "and it is scored by the CRPS (a point forecast's is its absolute error) "
        "and the share of actual values inside the paths' central 50%% and 80%% "
        "intervals (coverage_50, coverage_80). Prints a table; writes backtest.csv "
        "(every forecast), backtest.json (mae, rmse, mase_naive, mase_seasonal "
        "[, crps, coverage_50, coverage_80] over every origin and horizon; the "
        "baselines' too; each series' own) and backtest.png (MAE by horizon).",
    )
    test.add_argument(
        "folder", metavar="RUN", help="the output folder of `tbptt train` or its model.npz"
    )
    test.add_argument(
        "--horizon",
        type=_args.number(int, 0),
        default=1,
        help="forecast 1..H steps from each origin (default 1)",
    )
    test.add_argument(
        "--season",
        type=_args.number(int, 1),
        metavar="P",
        help="the season's length in steps (52 for weekly data with a yearly "
        "cycle): adds the seasonal-naive forecast and mase_seasonal",
    )
    test.add_argument(
        "--samples",
        type=_args.number(int, 0),
        default=forecast.SAMPLES,
        help=f"a --likelihood model: paths drawn from each origin (default {forecast.SAMPLES})",
    )
    test.add_argument("--seed", type=int, default=0, help="the paths' draws (default 0)")
    test.add_argument(
        "--out", metavar="FOLDER", help="where to write the files (default: beside the model)"
    )
    test.set_defaults(run=run)


def run(args) -> int:
    path = _folder.model_path(args.folder)
    model, header = _folder.load_model(path)
    ran = forecast.read_run(model, header, path)
    if ran.features and args.horizon > 1:
        raise _data.BadInput(forecast._observed_message(len(ran.features), args.horizon))
    tests = []
    for s in ran.series:
        where = f"series {s.name!r}: " if s.name else ""
        if s.values.size - s.start < args.horizon:
            raise _data.BadInput(
                f"{where}the held-out part has {s.values.size - s.start} "
                f"value(s), fewer than --horizon {args.horizon}"
            )
        if args.season is not None and s.start <= args.season:
            raise _data.BadInput(
                f"{where}the training part has {s.start} value(s): too short "
                f"for --season {args.season}"
            )
        tests.append(
            forecast.backtest(
                model,
                s.values,
                s.normalizer,
                ran.difference,
                start=s.start,
                horizon=args.horizon,
                season=args.season,
                features=s.features,
                known=s.known,
                samples=args.samples,
                seed=args.seed,
            )
        )
    result = forecast.scores(tests)
    result["season"] = args.season
    if len(tests) > 1:  # each series' own figures too
        result["series"] = {
            s.name: {
                k: v for k, v in forecast.scores([b]).items() if k not in ("by_horizon", "horizon")
            }
            for s, b in zip(ran.series, tests)
        }
    folder = args.out or os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    print(table(result, ran.source))
    text = json.dumps(result, indent=1).encode("utf-8")
    _files.atomic_write(os.path.join(folder, JSON), lambda f: f.write(text))
    rows = _rows(ran, tests)
    _files.atomic_write(os.path.join(folder, CSV), lambda f: f.write(rows.encode("utf-8")))
    written = [CSV, JSON]
    if importlib.util.find_spec("matplotlib") is not None:
        _plot(os.path.join(folder, PLOT), result, ran.source)
        written.append(PLOT)
    print(f"wrote {', '.join(os.path.join(folder, name) for name in written)}")
    return 0


def table(result, source) -> str:
    """The terminal's table: a row per forecast (model, naive, seasonal naive), MAE, RMSE, MASE;
    with a likelihood, the CRPS and the model's interval coverage too."""
    seasonal, sampled = "seasonal_naive" in result, "crps" in result
    head = ["", "MAE", "RMSE", "MASE (naive)"] + (["MASE (seasonal)"] if seasonal else [])
    if sampled:
        head += ["CRPS", "coverage 50%", "coverage 80%"]
    rows = [("model", result), ("naive (last value)", result["naive"])]
    if seasonal:
        rows.append((f"seasonal naive (P={result['season']})", result["seasonal_naive"]))
    lines = [
        f"backtest of {source}: {result['origins']:,} origins x horizons 1..{result['horizon']}",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, r in result.get("series", {}).items():
        rows += [(f"series {name}: model", r), (f"series {name}: naive", r["naive"])]
    for name, r in rows:
        cells = [name] + [f"{r[key]:.4g}" for key in ("mae", "rmse", "mase_naive")]
        if seasonal:
            cells.append(f"{r['mase_seasonal']:.4g}")
        if sampled:
            cells.append(f"{r['crps']:.4g}")
            cells += (
                [f"{r[key]:.1%}" for key in ("coverage_50", "coverage_80")]
                if "coverage_50" in r
                else ["", ""]
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rows(ran, tests) -> str:
    """backtest.csv: one row per series, origin and horizon (with a likelihood, the paths'
    quantiles and CRPS too)."""
    seasonal, sampled = tests[0].seasonal is not None, tests[0].quantiles is not None
    out = [
        "series,origin,time,horizon,actual,forecast,naive"
        + (",seasonal_naive" if seasonal else "")
        + ("".join(f",q{q:g}" for q in forecast.LEVELS) + ",crps" if sampled else "")
    ]
    for s, b in zip(ran.series, tests):
        for i, o in enumerate(b.origins):
            for h in range(b.actual.shape[1]):
                cells = [
                    s.name,
                    str(s.times[o]),
                    str(s.times[o + h + 1]),
                    str(h + 1),
                    f"{b.actual[i, h]:.10g}",
                    f"{b.forecast[i, h]:.10g}",
                    f"{b.naive[i, h]:.10g}",
                ]
                if seasonal:
                    cells.append(f"{b.seasonal[i, h]:.10g}")
                if sampled:
                    cells += [f"{v:.10g}" for v in (*b.quantiles[i, h], b.crps[i, h])]
                out.append(",".join(cells))
    return "\n".join(out) + "\n"


def _plot(path, result, source):
    """backtest.png: the MAE at each horizon of the model and the naive forecasts."""
    from .. import _plots

    fig = _plots.figure("the backtest plot", figsize=(7, 4))
    ax = fig.add_subplot()
    horizons = np.arange(1, result["horizon"] + 1)
    styles = {
        "model": dict(color="tab:blue", marker="o"),
        "model_crps": dict(color="tab:blue", linestyle="-.", marker="x"),
        "naive": dict(color="tab:orange", linestyle="--", marker="s"),
        "seasonal_naive": dict(color="tab:green", linestyle=":", marker="^"),
    }
    labels = {
        "model": f"model (MAE {result['mae']:.4g})",
        "naive": f"naive, the last value (MAE {result['naive']['mae']:.4g})",
    }
    if "seasonal_naive" in result:
        labels["seasonal_naive"] = (
            f"seasonal naive, P={result['season']} (MAE {result['seasonal_naive']['mae']:.4g})"
        )
    if "crps" in result:  # the naive forecasts' CRPS is their MAE: the same curves
        labels["model_crps"] = (
            f"model's CRPS (mean {result['crps']:.4g}; 80% interval covers "
            f"{result['coverage_80']:.1%})"
        )
        for name in ("naive", "seasonal_naive"):
            if name in labels:
                labels[name] = labels[name][:-1] + ", also its CRPS)"
    for name, mae in result["by_horizon"].items():
        if name in labels:  # not the coverages: shares, not the data's units
            ax.plot(horizons, mae, label=labels[name], **styles[name])
    ax.set_xlabel("horizon (steps ahead)")
    ax.set_ylabel("MAE" + (" and CRPS" if "crps" in result else "") + " (the data's units)")
    ax.set_title(f"backtest: {source}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _plots.save(fig, path)
