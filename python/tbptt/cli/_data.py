"""The data of `tbptt train` and `tbptt sweep`: the defaults per kind of data (written once,
here), and the training and held-out arrays prepared from a text, a CSV column, a built-in
series or a synthetic task."""

from __future__ import annotations

import csv
import math
import re

import numpy as np

from .. import data, datasets, forecast

VALID_SPLIT = 0.9  # the first 90% of the data train, the rest is held out
TASK_STEPS, TASK_VALID_STEPS = 10_000, 2_000  # T of a synthetic task's training / validation data
# The synthetic tasks' own settings (`tbptt sweep --delay --length` may change them).
TASK_SETTINGS = {"echo": {"delay": 20}, "adding": {"length": 50},
                 "copy": {"length": 10, "delay": 10}}

# Defaults per kind of data; a flag given on the command line wins. Text, from the studies in
# docs/main_job.md (benchmarks/main_job_study.py, the same budget for every candidate): on both
# cores a GRU 1 x 384 with dropout 0.25 and a cosine schedule reaches 2.17 bits/char in 110 s
# (1 x 256, dropout 0.2: 2.19), where the LSTM 1 x 128 of before plateaus at 2.38 on one core.
DEFAULTS: dict[str, dict] = {
    "text": dict(batch=32, k1=50, hidden=384, lr=5e-3, epochs=100, max_time=110.0, cell="gru",
                 dropout=0.25, schedule="cosine"),
    "series": dict(batch=1, k1=25, hidden=32, lr=3e-3, epochs=50, max_time=90.0),
    "echo": dict(batch=32, k1=40, hidden=32, lr=1e-2, epochs=10, max_time=90.0),
    "adding": dict(batch=32, k1=50, hidden=32, lr=1e-2, epochs=20, max_time=90.0),
    "copy": dict(batch=32, k1=31, hidden=64, lr=1e-2, epochs=20, max_time=90.0),
}
COMMON_DEFAULTS = dict(cell="lstm", layers=1, dropout=0.0, weight_decay=0.0, schedule="constant",
                       warmup=0.0, backend="cpp", seed=0, recompute=False)  # patience: None, no early stopping


class BadInput(ValueError):
    """Data the command cannot use (a column not in the file, a value that is not a number, a
    series too short): one line on stderr and exit status 2, nothing written. A ValueError, as
    the library raises."""


# A column is taken for the data's times (when --time does not name one) if its name is one of
# these, or its first value looks like an ISO date (2001-12-29, 2001-12, 2001-12-29 10:00).
TIME_NAMES = ("date", "time", "timestamp", "datetime", "ds", "year", "month", "week", "day",
              "period")
ISO_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?)?$")
SERIES_BATCH = 8  # --batch's default with --series (no more streams than series are made)
SERIES_MIN = 30  # values per series with --series/--features/--known: 90% train, 10% held out


class Prepared:
    """Training and validation arrays (x, y, mask, resets) and what the model file keeps of them."""

    def __init__(self, kind, train, valid, loss, input_size, output_size, meta, vocab=None,
                 series=None):
        self.kind, self.train, self.valid, self.loss = kind, train, valid, loss
        self.input_size, self.output_size = input_size, output_size
        self.meta, self.vocab = meta, vocab
        self.series = series  # numeric series: a list of tbptt.forecast.Series


def kind_of_data(args) -> str:
    """text, series, or the name of a synthetic task, from --task, --data and --column."""
    if args.task in ("co2", "sunspots"):
        return "series"
    if args.task:
        return args.task
    if args.data is not None and (args.column is not None or args.data.lower().endswith(".csv")):
        return "series"
    return "text"


def prepare(args, kind: str) -> Prepared:
    """The training and held-out data of a run, as `tbptt train` and `tbptt sweep` use them."""
    B = args.batch
    if kind == "text":
        if args.data is None:
            return _text(datasets.shakespeare(), "Tiny Shakespeare (built-in)", B)
        with open(args.data, encoding="utf-8") as f:
            return _text(f.read(), args.data, B)
    if kind == "series":
        if args.task == "co2":  # a trend: the held-out years lie above every training value
            diff = True if args.diff is None else args.diff
            dates, ppm = datasets.co2()
            return _series(ppm, "weekly CO2 at Mauna Loa, ppm (built-in)", B, diff, dates)
        if args.task == "sunspots":
            years, activity = datasets.sunspots()
            return _series(activity, "yearly sunspot activity (built-in)", B, bool(args.diff),
                           years)
        if _covariates(args):
            return _frame(args, B)
        (_, times, values, _), = read_table(args.data, args.column, time=args.time, least=0,
                                            subparser=args.subparser)
        return _series(values, f"{args.data}, column {args.column}", B, bool(args.diff), times)
    return _task(kind, B, args.seed)


def _covariates(args) -> bool:
    """Whether the run models covariates or many series (the frame path), not one column."""
    return bool(getattr(args, "features", None) or getattr(args, "known", None)
                or getattr(args, "series", None) or getattr(args, "embed_series", None))


def _text(text, source, B):
    """Characters in B contiguous streams; the held-out last 10% in streams of >= 100 characters."""
    vocab = data.Vocabulary(text)
    train, valid = data.split(text, 0.9)
    x, y = data.next_step(data.batchify(vocab.encode(train), B))
    vx, vy = data.next_step(data.batchify(vocab.encode(valid), max(1, min(B, len(valid) // 100))))
    meta = {"kind": "text", "source": source, "vocabulary": vocab.to_dict(),
            "train_characters": len(train), "valid_characters": len(valid)}
    return Prepared("text", (x, y, None, None), (vx, vy, None, None), "cross_entropy", vocab.size,
                    vocab.size, meta, vocab)


def _series(values, source, B, diff, times=None):
    """Next-step prediction of a standardised series (statistics of the training part only), or
    of its changes when `diff`; the held-out last 10% is one stream. Errors of the next change are
    errors of the next value, so RMSE means the same in both modes. times: the values' dates or
    years, if known (else their index)."""
    values = np.asarray(values, dtype=np.float64)
    known = ~np.isnan(values)
    if known.sum() < 20:
        raise BadInput(f"{source}: need at least 20 numeric values, got {int(known.sum())}")
    index = np.arange(values.size)
    values = np.interp(index, index[known], values[known])  # fill gaps linearly
    train, valid = data.split(values, VALID_SPLIT)
    start = len(train)
    if diff:
        train, valid = np.diff(train), np.diff(valid)
        persistence = float(np.sqrt(np.mean(valid[1:] ** 2)))  # "no change", for scale
    else:
        persistence = float(np.sqrt(np.mean(np.diff(valid) ** 2)))
    norm = data.Normalizer().fit(train)
    x, y = data.next_step(data.batchify(norm.transform(train)[:, None], B))
    vx, vy = data.next_step(data.batchify(norm.transform(valid)[:, None], 1))
    meta = {"kind": "series", "source": source, "difference": diff, "normalizer": norm.to_dict(),
            "train_values": len(train), "valid_values": len(valid), "persistence_rmse": persistence}
    times = np.arange(values.size) if times is None else np.asarray(times)
    return Prepared("series", (x, y, None, None), (vx, vy, None, None), "mse", 1, 1, meta,
                    series=[forecast.Series("", times, values, None, None, norm, start)])


def _names(text):
    """The column names of a comma-separated flag value (None: none)."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def read_table(path, column, covariates=(), series=None, time=None, least=20, subparser=None):
    """The series of a CSV file with a header row: [(name, times, values, covariates)], one per
    value of the `series` column in the order they first appear (one, named "", without it),
    each sorted by its times. times: (N,) datetime64 or numbers from the `time` column (or one
    found by itself: TIME_NAMES, or ISO dates), else the row numbers. values: (N,) float64 of
    `column`, covariates (N, C) of the `covariates` columns (None if none), gaps (empty cells)
    filled linearly in each series. BadInput for a column not in the file, a cell that is not a
    number, a series with fewer than `least` values."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if column is None:
            if subparser is None:
                raise BadInput(f"{path} is a CSV file: choose the column to model (columns: "
                               f"{', '.join(columns)})")
            subparser.error(f"--data {path} is a CSV file: choose the column to model "
                            f"with --column (columns: {', '.join(columns)})")
        for name in [column, *covariates, series, time]:
            if name is not None and name not in columns:
                raise BadInput(f"{path} has no column {name!r} (columns: {', '.join(columns)})")
        found = time is None
        if found:
            time = _time_column(path, columns, {column, series, *covariates})
        numeric = [column, *covariates]
        groups = {}  # series name -> (rows, time cells, line numbers)
        for line, row in enumerate(reader, start=2):
            cells = []
            for name in numeric:
                cell = (row[name] or "").strip()
                try:
                    cells.append(float(cell) if cell else math.nan)
                except ValueError:
                    raise BadInput(f"{path}, line {line}: column {name!r} holds {cell!r}, not a "
                                   f"number") from None
            key = "" if series is None else (row[series] or "").strip()
            group = groups.setdefault(key, ([], [], []))
            group[0].append(cells)
            group[1].append((row[time] or "").strip() if time is not None else None)
            group[2].append(line)
    if not groups:
        raise BadInput(f"{path} holds no rows of data")
    times_of = {key: _times(path, time, group[1], group[2], found) if time is not None else None
                for key, group in groups.items()}
    if found and any(t is None for t in times_of.values()):
        times_of = {key: None for key in groups}  # a column that only looked like times
    tables = []
    for key, (rows, _, lines) in groups.items():
        table = np.array(rows, dtype=np.float64).reshape(len(rows), len(numeric))
        times = times_of[key]
        if times is None:
            times = np.arange(len(rows))
        else:
            order = np.argsort(times, kind="stable")
            times, table = times[order], table[order]
            same = np.flatnonzero(times[1:] == times[:-1])
            if same.size:
                where = f"series {key!r}: " if series is not None else ""
                hint = "" if series is not None else "; many series in one file? --series ID"
                raise BadInput(f"{path}: {where}the time {times[same[0]]} appears twice (column "
                               f"{time!r}{hint})")
        name = f"series {key!r}" if series is not None else f"column {column!r}"
        counted = int((~np.isnan(table[:, 0])).sum())
        if counted < least:
            raise BadInput(f"{path}: {name} has {counted} numeric value(s) of {column!r}: too "
                           f"short, at least {least} are needed (90% to train on, 10% held out)")
        if least:
            table = np.column_stack([_fill(path, name, numeric[i], table[:, i])
                                     for i in range(len(numeric))])
        tables.append((key, times, table[:, 0],
                       table[:, 1:] if covariates else None))
    return tables


def _fill(path, name, column, values):
    """`values` with their gaps (NaN) filled linearly (the ends by the nearest value)."""
    known = ~np.isnan(values)
    if not known.any():
        raise BadInput(f"{path}: {name} has no numeric value in column {column!r}")
    index = np.arange(values.size)
    return np.interp(index, index[known], values[known])


def _time_column(path, columns, used):
    """The column of the data's times when --time names none: one named as times are, or whose
    first value is an ISO date; None if there is none."""
    for name in columns:
        if name not in used and name.strip().lower() in TIME_NAMES:
            return name
    with open(path, newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f), None) or {}
    for name in columns:
        if name not in used and ISO_DATE.match((first.get(name) or "").strip()):
            return name
    return None


def _times(path, column, cells, lines, found):
    """(N,) times from the cells of the time column: integers (years), numbers, or ISO dates
    (numpy datetime64 at the unit the text gives). A cell that is none of them is BadInput, or
    None for a column found by itself (then the row numbers are the times)."""
    for kind in (np.int64, np.float64):
        try:
            return np.array([kind(cell) for cell in cells])
        except ValueError:
            pass
    try:
        return np.array(cells, dtype="datetime64")
    except ValueError:
        if found:
            return None
    for cell, line in zip(cells, lines):
        try:
            np.datetime64(cell)
        except ValueError:
            raise BadInput(f"{path}, line {line}: column {column!r} holds {cell!r}, not a time "
                           f"(a number, or a date as 2001-12-29)") from None
    raise BadInput(f"{path}: column {column!r} mixes kinds of times")


def _frame(args, B):
    """Series with covariates, or many series (--series), each standardised by its own training
    part's statistics; one series is cut into B streams as a plain column is, many are packed
    into B streams (tbptt.data.pack) with a reset at each one's start. The held-out last 10% of
    every series: one stream each, from a zero state."""
    known = _names(args.known)
    observed = [name for name in _names(args.features) if name not in known]
    tables = read_table(args.data, args.column, observed + known, args.series, args.time,
                        least=SERIES_MIN, subparser=args.subparser)
    names = [str(table[0]) for table in tables]
    identity = [f"series={name}" for name in names] if args.embed_series else []
    diff = bool(args.diff)
    series, xs, ys, vxs, vys = [], [], [], [], []
    for i, (name, times, values, covariates) in enumerate(tables):
        F = len(observed)
        features = None if not F else covariates[:, :F]
        own = covariates[:, F:] if known else np.empty((values.size, 0))
        if identity:
            own = np.column_stack([own, np.tile(np.eye(len(names))[i], (values.size, 1))])
        start = len(data.split(values, VALID_SPLIT)[0])
        target = data.Normalizer().fit(np.diff(values[:start]) if diff else values[:start])
        means, stds = [np.atleast_1d(target.mean)], [np.atleast_1d(target.std)]
        if covariates is not None:
            columns = data.Normalizer().fit(covariates[:start])
            means.append(columns.mean)
            stds.append(columns.std)
        means.append(np.zeros(len(identity)))
        stds.append(np.ones(len(identity)))
        norm = data.Normalizer(np.concatenate(means), np.concatenate(stds))
        own = own if own.shape[1] else None
        series.append(forecast.Series(name, times, values, features, own, norm, start))
        for part, xs_, ys_ in ((slice(None, start), xs, ys), (slice(start, None), vxs, vys)):
            x, y = forecast.arrays(values[part], norm, diff,
                                   features=None if features is None else features[part],
                                   known=None if own is None else own[part])
            xs_.append(x)
            ys_.append(y)
    if args.series is None:  # one series: B contiguous streams, as a plain column
        train = (data.batchify(xs[0], B), data.batchify(ys[0], B), None, None)
        valid = (vxs[0][:, None], vys[0][:, None], None, None)
    else:
        train = tuple(data.pack(xs, B, targets=ys)[:4])
        valid = tuple(data.pack(vxs, len(vxs), targets=vys)[:4])
    naive = np.concatenate([np.diff(s.values[s.start - 1:]) for s in series])
    what = [f"column {args.column}"]
    if observed:
        what.append(f"features {', '.join(observed)}")
    if known:
        what.append(f"known in advance {', '.join(known)}")
    if args.series is not None:
        what.append(f"{len(series)} series by {args.series}" + (" (with their identity)"
                                                                 if identity else ""))
    meta = {"kind": "series", "source": f"{args.data}, {'; '.join(what)}", "difference": diff,
            "features": observed, "known": known + identity, "series_column": args.series,
            "series_names": names, "starts": [s.start for s in series],
            "normalizers": [s.normalizer.to_dict() for s in series],
            "train_values": sum(s.start for s in series),
            "valid_values": sum(s.values.size - s.start for s in series),
            "persistence_rmse": float(np.sqrt(np.mean(naive ** 2)))}
    return Prepared("series", train, valid, "mse", xs[0].shape[1], 1, meta, series=series)


def read_run(model, header, path):
    """A tbptt.forecast.Run: `model` and the data of the run whose model file header is
    `header` (read again as they are now), with the run's normalizers and held-out starts."""
    import argparse

    from .train import SETTINGS

    meta, settings = header.get("data") or {}, header.get("settings") or {}
    if meta.get("kind") != "series" or "task" not in settings:
        raise ValueError(f"{path} is not a model of a numeric series written by `tbptt train` "
                         f"(--task co2|sunspots or --data FILE.csv --column NAME)")
    args = argparse.Namespace(**{name: settings.get(name) for name in SETTINGS}, subparser=None)
    prepared = prepare(args, "series")
    difference = bool(meta["difference"])
    if "normalizers" not in meta:  # one column, or a run of an older tbptt
        norms = [data.Normalizer.from_dict(meta["normalizer"])]
        starts = [meta["train_values"] + difference]
        names = [""]
    else:
        norms = [data.Normalizer.from_dict(d) for d in meta["normalizers"]]
        starts, names = meta["starts"], meta["series_names"]
    by_name = dict(zip(names, zip(norms, starts)))
    series = []
    for s in prepared.series:
        if s.name not in by_name:
            raise BadInput(f"{settings.get('data')}: series {s.name!r} was not in the run's "
                           f"training data ({path})")
        norm, start = by_name[s.name]
        series.append(s._replace(normalizer=norm, start=start))
    return forecast.Run(model, series, difference, list(meta.get("features", [])),
                        list(meta.get("known", [])), meta["source"], header)


def _task(name: str, B: int, seed: int) -> Prepared:
    """A synthetic task with its default settings, TASK_STEPS steps (validation: another seed)."""
    train, valid = task_sets(name, B, seed)
    meta = {"kind": "task", "task": name, "source": train.description}
    train_arrays, valid_arrays = [(t.x, t.y, t.mask, t.resets) for t in (train, valid)]
    return Prepared(name, train_arrays, valid_arrays, train.loss, train.input_size,
                    train.output_size, meta)


def task_sets(name: str, B: int, seed: int, steps: int = TASK_STEPS, **given) -> tuple:
    """(training, validation) Tasks of the synthetic task `name`: `steps` steps with `seed`,
    TASK_VALID_STEPS with seed + 1. given: TASK_SETTINGS to change (None: the default)."""
    settings = {**TASK_SETTINGS[name], **{k: v for k, v in given.items() if v is not None}}
    if name == "echo":
        make = lambda T, s: datasets.echo(T, B, delay=settings["delay"], seed=s)
    elif name == "adding":
        make = lambda T, s: datasets.adding(T, B, seq_len=settings["length"], seed=s)
    else:
        make = lambda T, s: datasets.copy(T, B, length=settings["length"],
                                          delay=settings["delay"], seed=s)
    return make(steps, seed), make(TASK_VALID_STEPS, seed + 1)
