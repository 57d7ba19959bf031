"""The data of `tbptt train` and `tbptt sweep`: the defaults per kind of data (written once,
here), and the training and held-out arrays prepared from a text, a CSV column, a built-in
series or a synthetic task."""

from __future__ import annotations

import numpy as np

from .. import data, datasets
from .._table import BadInput, columns_of, read_table
from ..apps import forecast

VALID_SPLIT = 0.9  # the first 90% of the data train, the rest is held out
TASK_STEPS, TASK_VALID_STEPS = 10_000, 2_000  # T of a synthetic task's training / validation data
# The synthetic tasks' own settings (`tbptt sweep --delay --length` may change them).
TASK_SETTINGS = {
    "echo": {"delay": 20},
    "adding": {"length": 50},
    "copy": {"length": 10, "delay": 10},
}

# Defaults per kind of data; a flag given on the command line wins. Text, from the studies in
# docs/main_job.md (benchmarks/main_job_study.py, the same budget for every candidate): on both
# cores a GRU 1 x 384 with dropout 0.25 and a cosine schedule reaches 2.17 bits/char in 110 s
# (1 x 256, dropout 0.2: 2.19), where the LSTM 1 x 128 of before plateaus at 2.38 on one core.
DEFAULTS: dict[str, dict] = {
    "text": dict(
        batch=32,
        k1=50,
        hidden=384,
        lr=5e-3,
        epochs=100,
        max_time=110.0,
        cell="gru",
        dropout=0.25,
        schedule="cosine",
    ),
    "series": dict(batch=1, k1=25, hidden=32, lr=3e-3, epochs=50, max_time=90.0),
    "echo": dict(batch=32, k1=40, hidden=32, lr=1e-2, epochs=10, max_time=90.0),
    "adding": dict(batch=32, k1=50, hidden=32, lr=1e-2, epochs=20, max_time=90.0),
    "copy": dict(batch=32, k1=31, hidden=64, lr=1e-2, epochs=20, max_time=90.0),
}
COMMON_DEFAULTS = dict(
    cell="lstm",
    layers=1,
    dropout=0.0,
    weight_decay=0.0,
    schedule="constant",
    warmup=0.0,
    backend="cpp",
    seed=0,
    recompute=False,
)  # patience: None, no early stopping


SERIES_BATCH = 8  # --batch's default with --series (no more streams than series are made)
SERIES_MIN = 30  # values per series with --series/--features/--known: 90% train, 10% held out


class Prepared:
    """Training and validation arrays (x, y, mask, resets) and what the model file keeps of them."""

    def __init__(
        self, kind, train, valid, loss, input_size, output_size, meta, vocab=None, series=None
    ):
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
    likelihood = getattr(args, "likelihood", None)  # a numeric series: "gaussian" or None
    if kind == "text":
        if args.data is None:
            return _text(datasets.shakespeare(), "Tiny Shakespeare (built-in)", B)
        with open(args.data, encoding="utf-8") as f:
            return _text(f.read(), args.data, B)
    if kind == "series":
        if args.task == "co2":  # a trend: the held-out years lie above every training value
            diff = True if args.diff is None else args.diff
            dates, ppm = datasets.co2()
            return _series(
                ppm, "weekly CO2 at Mauna Loa, ppm (built-in)", B, diff, dates, likelihood
            )
        if args.task == "sunspots":
            years, activity = datasets.sunspots()
            return _series(
                activity,
                "yearly sunspot activity (built-in)",
                B,
                bool(args.diff),
                years,
                likelihood,
            )
        if _covariates(args):
            return _frame(args, B, likelihood)
        _need_column(args)
        ((_, times, values, _),) = read_table(args.data, args.column, time=args.time, least=0)
        return _series(
            values, f"{args.data}, column {args.column}", B, bool(args.diff), times, likelihood
        )
    return _task(kind, B, args.seed)


def _need_column(args) -> None:
    """A CSV file needs --column: a usage error (exit 2) naming the file's columns."""
    if args.column is None and args.subparser is not None:
        args.subparser.error(
            f"--data {args.data} is a CSV file: choose the column to model "
            f"with --column (columns: {', '.join(columns_of(args.data))})"
        )


def _covariates(args) -> bool:
    """Whether the run models covariates or many series (the frame path), not one column."""
    return bool(
        getattr(args, "features", None)
        or getattr(args, "known", None)
        or getattr(args, "series", None)
        or getattr(args, "embed_series", None)
    )


def _text(text, source, B):
    """Characters in B contiguous streams; the held-out last 10% in streams of >= 100 characters."""
    vocab = data.Vocabulary(text)
    train, valid = data.split(text, 0.9)
    x, y = data.next_step(data.batchify(vocab.encode(train), B))
    vx, vy = data.next_step(data.batchify(vocab.encode(valid), max(1, min(B, len(valid) // 100))))
    meta = {
        "kind": "text",
        "source": source,
        "vocabulary": vocab.to_dict(),
        "train_characters": len(train),
        "valid_characters": len(valid),
    }
    return Prepared(
        "text",
        (x, y, None, None),
        (vx, vy, None, None),
        "cross_entropy",
        vocab.size,
        vocab.size,
        meta,
        vocab,
    )


def _series(values, source, B, diff, times=None, likelihood=None):
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
    meta = {
        "kind": "series",
        "source": source,
        "difference": diff,
        "normalizer": norm.to_dict(),
        "train_values": len(train),
        "valid_values": len(valid),
        "persistence_rmse": persistence,
        "likelihood": likelihood,
    }
    times = np.arange(values.size) if times is None else np.asarray(times)
    loss, outputs = _head(likelihood)
    return Prepared(
        "series",
        (x, y, None, None),
        (vx, vy, None, None),
        loss,
        1,
        outputs,
        meta,
        series=[forecast.Series("", times, values, None, None, norm, start)],
    )


def _head(likelihood):
    """(loss, output_size) of a series model: one value and MSE, or a distribution's two
    parameters and its negative log-likelihood."""
    return ("gaussian", 2) if likelihood == "gaussian" else ("mse", 1)


def _names(text):
    """The column names of a comma-separated flag value (None: none)."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _frame(args, B, likelihood=None):
    """Series with covariates, or many series (--series), each standardised by its own training
    part's statistics; one series is cut into B streams as a plain column is, many are packed
    into B streams (tbptt.data.pack) with a reset at each one's start. The held-out last 10% of
    every series: one stream each, from a zero state."""
    known = _names(args.known)
    observed = [name for name in _names(args.features) if name not in known]
    _need_column(args)
    tables = read_table(
        args.data, args.column, observed + known, args.series, args.time, least=SERIES_MIN
    )
    names = [str(table[0]) for table in tables]
    identity = [f"series={name}" for name in names] if args.embed_series else []
    diff = bool(args.diff)
    series, xs, ys, vxs, vys = [], [], [], [], []  # type: list, list, list, list, list
    for i, (name, times, values, covariates) in enumerate(tables):
        F = len(observed)
        features = None if not F else covariates[:, :F]
        own = covariates[:, F:] if known else np.empty((values.size, 0))
        if identity:
            own = np.column_stack([own, np.tile(np.eye(len(names))[i], (values.size, 1))])
        start = len(data.split(values, VALID_SPLIT)[0])
        target = data.Normalizer().fit(np.diff(values[:start]) if diff else values[:start])
        assert target.mean is not None and target.std is not None  # fitted: for the type checker
        means, stds = [np.atleast_1d(target.mean)], [np.atleast_1d(target.std)]
        if covariates is not None:
            columns = data.Normalizer().fit(covariates[:start])
            assert columns.mean is not None and columns.std is not None  # fitted
            means.append(columns.mean)
            stds.append(columns.std)
        means.append(np.zeros(len(identity)))
        stds.append(np.ones(len(identity)))
        norm = data.Normalizer(np.concatenate(means), np.concatenate(stds))
        own = own if own.shape[1] else None
        series.append(forecast.Series(name, times, values, features, own, norm, start))
        for part, xs_, ys_ in ((slice(None, start), xs, ys), (slice(start, None), vxs, vys)):
            x, y = forecast.arrays(
                values[part],
                norm,
                diff,
                features=None if features is None else features[part],
                known=None if own is None else own[part],
            )
            xs_.append(x)
            ys_.append(y)
    if args.series is None:  # one series: B contiguous streams, as a plain column
        train: tuple = (data.batchify(xs[0], B), data.batchify(ys[0], B), None, None)
        valid: tuple = (vxs[0][:, None], vys[0][:, None], None, None)
    else:
        train = tuple(data.pack(xs, B, targets=ys)[:4])
        valid = tuple(data.pack(vxs, len(vxs), targets=vys)[:4])
    naive = np.concatenate([np.diff(s.values[s.start - 1 :]) for s in series])
    what = [f"column {args.column}"]
    if observed:
        what.append(f"features {', '.join(observed)}")
    if known:
        what.append(f"known in advance {', '.join(known)}")
    if args.series is not None:
        what.append(
            f"{len(series)} series by {args.series}"
            + (" (with their identity)" if identity else "")
        )
    meta = {
        "kind": "series",
        "source": f"{args.data}, {'; '.join(what)}",
        "difference": diff,
        "features": observed,
        "known": known + identity,
        "series_column": args.series,
        "series_names": names,
        "starts": [s.start for s in series],
        "normalizers": [s.normalizer.to_dict() for s in series],
        "train_values": sum(s.start for s in series),
        "valid_values": sum(s.values.size - s.start for s in series),
        "persistence_rmse": float(np.sqrt(np.mean(naive**2))),
        "likelihood": likelihood,
    }
    loss, outputs = _head(likelihood)
    return Prepared("series", train, valid, loss, xs[0].shape[1], outputs, meta, series=series)


def _task(name: str, B: int, seed: int) -> Prepared:
    """A synthetic task with its default settings, TASK_STEPS steps (validation: another seed)."""
    train, valid = task_sets(name, B, seed)
    meta = {"kind": "task", "task": name, "source": train.description}
    train_arrays, valid_arrays = [(t.x, t.y, t.mask, t.resets) for t in (train, valid)]
    return Prepared(
        name, train_arrays, valid_arrays, train.loss, train.input_size, train.output_size, meta
    )


def task_sets(name: str, B: int, seed: int, steps: int = TASK_STEPS, **given) -> tuple:
    """(training, validation) Tasks of the synthetic task `name`: `steps` steps with `seed`,
    TASK_VALID_STEPS with seed + 1. given: TASK_SETTINGS to change (None: the default)."""
    settings = {**TASK_SETTINGS[name], **{k: v for k, v in given.items() if v is not None}}
    if name == "echo":

        def make(T, s):
            return datasets.echo(T, B, delay=settings["delay"], seed=s)
    elif name == "adding":

        def make(T, s):
            return datasets.adding(T, B, seq_len=settings["length"], seed=s)
    else:

        def make(T, s):
            return datasets.copy(T, B, length=settings["length"], delay=settings["delay"], seed=s)

    return make(steps, seed), make(TASK_VALID_STEPS, seed + 1)
