"""The `tbptt` command: train an LSTM with TBPTT(k1, k2) on built-in or your own data, sample from
it, and describe the files it wrote.

    tbptt train                              char-level LSTM on Shakespeare, about 2 minutes
    tbptt train --data notes.txt             your text
    tbptt train --data log.csv --column load next-step prediction of a numeric column (MSE)
    tbptt train --task echo|adding|copy|co2|sunspots
    tbptt train --resume runs/<stamp> --epochs 20   go on with a run that stopped (or ended)
    tbptt forecast runs/<stamp> --steps 52    a numeric series' next 52 values (CSV and a PNG)
    tbptt generate runs/<stamp> --prime "ROMEO:" --length 500
    tbptt info runs/<stamp>
    tail -f log.csv | tbptt online --column load   learn a live stream, one update per line
    tbptt sweep --task echo --k1 5,10 --k2 5,10,20,40   compare TBPTT configurations (tbptt/sweep.py)

Under an MPI launcher with more than one rank (`mpiexec -n 4 python -m mpi4py -m tbptt train ...`,
or `srun`), `train` is data-parallel: the --batch streams are split over the ranks, every rank
trains its share of one model (Trainer(comm=...)), rank 0 prints and writes the files (every
rank writes its own trainer state beside trainer.npz); `sweep` spreads the grid's configurations
over the ranks and rank 0 writes the table and the plots. This needs mpi4py (tbptt[mpi]).

It is a thin layer over the library (tbptt.data, Trainer.fit, tbptt.generate); it adds no
training logic of its own. The model file it writes is a normal tbptt model file (tbptt.load reads
it) whose header also holds what `generate` and `info` need: the vocabulary or the normalisation,
the settings and the results.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import importlib.util
import json
import math
import os
import sys
import warnings

import numpy as np

from . import _sizes, checkpoint, data, datasets, forecast
from .generate import generate
from .history import History
from .model import MODELS, build, from_config
from .optim import Adam, AdamW
from .schedules import SHAPES, Schedule
from .trainer import BACKENDS, Trainer

MODEL, TRAINER, HISTORY, PLOT = "model.npz", "trainer.npz", "history.json", "loss.png"
HELD_OUT_PLOT, FORECAST_PLOT = "forecast.png", "forecast_ahead.png"
VALID_SPLIT = 0.9  # the first 90% of the data train, the rest is held out
TASKS = ("echo", "adding", "copy", "co2", "sunspots")

# Defaults per kind of data; a flag given on the command line wins. Text, from the study in
# docs/main_job.md (benchmarks/main_job_study.py, the same budget for every candidate): a GRU
# 1 x 256 with dropout 0.2 and a cosine schedule reaches 2.21 bits/char in 110 s, where the
# LSTM 1 x 128 of before plateaus at 2.38 (then overfits) and 1 x 256 LSTMs without dropout at 2.32.
DEFAULTS = {
    "text": dict(batch=32, k1=50, hidden=256, lr=5e-3, epochs=100, max_time=110.0, cell="gru",
                 dropout=0.2, schedule="cosine"),
    "series": dict(batch=1, k1=25, hidden=32, lr=3e-3, epochs=50, max_time=90.0),
    "echo": dict(batch=32, k1=40, hidden=32, lr=1e-2, epochs=10, max_time=90.0),
    "adding": dict(batch=32, k1=50, hidden=32, lr=1e-2, epochs=20, max_time=90.0),
    "copy": dict(batch=32, k1=31, hidden=64, lr=1e-2, epochs=20, max_time=90.0),
}
COMMON_DEFAULTS = dict(cell="lstm", layers=1, dropout=0.0, weight_decay=0.0, schedule="constant",
                       warmup=0.0, backend="cpp", seed=0)  # patience: None, no early stopping
# A run's settings (kept in its trainer.npz, so that --resume prepares the same data) and the flags
# a resumed run refuses, as they would change its data or its model.
SETTINGS = ("task", "data", "column", "diff", "cell", "k1", "k2", "hidden", "layers", "batch",
            "lr", "dropout", "weight_decay", "schedule", "warmup", "patience", "epochs", "max_time",
            "backend", "seed")
FIXED_FLAGS = {"task": "--task", "data": "--data", "column": "--column", "diff": "--diff",
               "cell": "--cell", "k1": "--k1", "k2": "--k2", "hidden": "--hidden",
               "layers": "--layers", "batch": "--batch", "lr": "--lr", "dropout": "--dropout",
               "weight_decay": "--weight-decay", "schedule": "--schedule", "warmup": "--warmup",
               "patience": "--patience", "backend": "--backend", "seed": "--seed", "out": "--out"}
TASK_STEPS, TASK_VALID_STEPS = 10_000, 2_000  # T of a synthetic task's training / validation data
SAMPLE_LENGTH, SAMPLE_TEMPERATURE = 300, 0.8


# ---- the parser -----------------------------------------------------------------------------

def _parser():
    parser = argparse.ArgumentParser(prog="tbptt", description="Train LSTMs with Truncated "
                                     "Backpropagation Through Time, TBPTT(k1, k2).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train", help="train a model (default: a character-level GRU on Shakespeare)",
        description="Train a recurrent model with TBPTT(k1, k2) and write model.npz, trainer.npz, "
                    "history.json and loss.png (and, for a numeric series, forecast.png) into an "
                    "output folder; --resume goes on with a run from its trainer.npz.",
        epilog="Defaults depend on the data: text a GRU, B=32, k=50, H=256, dropout 0.2, lr 5e-3 "
               "with a cosine schedule, 110 s; otherwise an LSTM (forget bias 1): a numeric "
               "series B=1, k=25, H=32, lr 3e-3, 50 epochs; echo (delay 20) k=40, H=32, lr 1e-2; "
               "adding (length 50) k=50; copy (10 symbols, delay 10) k=31, H=64. Always Adam "
               "(AdamW with --weight-decay), clip 5.")
    _add_data_arguments(train)
    train.add_argument("--k1", type=_number(int, 0), help="steps between updates")
    train.add_argument("--k2", type=_number(int, 0), help="steps each update backpropagates "
                       "through (default: k1)")
    train.add_argument("--hidden", type=_number(int, 0), help="hidden units per layer")
    train.add_argument("--cell", choices=tuple(MODELS),
                       help="the recurrent cell: lstm (default), gru or rnn (tanh)")
    train.add_argument("--layers", type=_number(int, 0), help="layers (default 1)")
    train.add_argument("--batch", type=_number(int, 0), help="B, the number of parallel streams")
    train.add_argument("--lr", type=_number(float, 0), help="Adam's learning rate")
    train.add_argument("--dropout", type=_probability, metavar="P",
                       help="dropout on every layer's output, the top layer's before the head too "
                            "(default 0)")
    train.add_argument("--weight-decay", type=_number(float, 0, strict=False), metavar="W",
                       help="decoupled weight decay (AdamW; default 0: Adam)")
    train.add_argument("--schedule", choices=SHAPES, help="the learning rate over the run: "
                       "constant (default), or cosine / linear decay to 0 over the epochs or "
                       "--max-time, whichever ends first")
    train.add_argument("--warmup", type=_probability, metavar="SHARE",
                       help="share of the run over which the learning rate rises from 0 (default 0)")
    train.add_argument("--patience", type=_number(int, 0), metavar="EPOCHS",
                       help="stop after this many epochs without a better validation loss")
    train.add_argument("--epochs", type=_number(int, 0), help="passes over the training data")
    train.add_argument("--max-time", type=_number(float, 0, strict=False), metavar="SECONDS",
                       help="stop training after this long (default 90; 0: no limit)")
    train.add_argument("--threads", type=_number(int, 0), default=1,
                       help="threads of the C++ engine (default 1: these models gain little from "
                            "a second, and on a busy machine a second thread slows it down)")
    train.add_argument("--backend", choices=BACKENDS,
                       help="cpp (default, compiled) or numpy (the reference)")
    train.add_argument("--seed", type=int, help="for the model and the tasks (default 0)")
    train.add_argument("--out", metavar="FOLDER", help="output folder (default runs/<timestamp>)")
    train.add_argument("--resume", metavar="RUN_FOLDER", help="go on with a run that stopped "
                       "(Ctrl-C, --max-time) or ended, from its trainer.npz: its data and "
                       "settings, --epochs as the run's total; the history is appended")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=_train, subparser=train)  # subparser.error(): exit 2 with its usage

    gen = commands.add_parser("generate", help="sample text from a model trained on text",
                              description="Sample text from a model written by `tbptt train`.")
    gen.add_argument("checkpoint", metavar="CHECKPOINT", help="the output folder of `tbptt train` "
                     "or its model.npz")
    gen.add_argument("--prime", help="text the model reads first (default: a newline)")
    gen.add_argument("--length", type=_number(int, 0), default=500, help="characters (default 500)")
    gen.add_argument("--temperature", type=_number(float, 0, strict=False),
                     default=SAMPLE_TEMPERATURE,
                     help=f"softmax temperature; 0 = most likely (default {SAMPLE_TEMPERATURE})")
    gen.add_argument("--seed", type=int, help="the same seed gives the same text")
    gen.set_defaults(run=_generate)

    ahead = commands.add_parser(
        "forecast", help="forecast a numeric series past its end with a model trained on it",
        description="Run a model written by `tbptt train` on a numeric series (--task co2|sunspots, "
                    "--data FILE.csv --column NAME) over the run's data as they are now, then N "
                    "steps past their end, feeding it its own predictions. Prints CSV (time, "
                    "forecast) and draws the forecast after the data.")
    ahead.add_argument("folder", metavar="RUN", help="the output folder of `tbptt train` or its "
                       "model.npz")
    ahead.add_argument("--steps", type=_number(int, 0), required=True,
                       help="how many steps past the end of the data")
    ahead.add_argument("--out", metavar="FILE", help="write the CSV there (default: stdout)")
    ahead.add_argument("--plot", metavar="FILE", help=f"the picture (default: {FORECAST_PLOT} "
                       f"beside the model)")
    ahead.set_defaults(run=_forecast)

    online = commands.add_parser(
        "online", help="learn a CSV stream's column line by line as it arrives, printing "
                       "predictions (tail -f log.csv | tbptt online --column load)",
        description="Learn a numeric column of a CSV stream online, one TBPTT(1, k2) update per "
                    "line, reading each line as it arrives. Prints line,value,prediction,next "
                    "(the prediction of the value made before reading it; the next value's, "
                    "without --features). Bad values and a last line cut mid-way are reported "
                    "on stderr and skipped. On exit (end of input, Ctrl-C) writes model.npz, "
                    "online.npz (to resume from) and online.png into --out.")
    online.add_argument("data", metavar="FILE", nargs="?", default="-",
                        help="a CSV file with a header line (default: standard input, '-')")
    online.add_argument("--column", metavar="NAME", help="the column to learn and predict")
    online.add_argument("--features", metavar="A,B", help="further columns the model reads "
                        "(default: none, the column's own past only)")
    online.add_argument("--hidden", type=_number(int, 0), help="hidden units (default 32)")
    online.add_argument("--k2", type=_number(int, 0), help="steps each update backpropagates "
                        "through (default 20)")
    online.add_argument("--lr", type=_number(float, 0), help="Adam's learning rate (default 3e-3)")
    online.add_argument("--cell", choices=tuple(MODELS), help="lstm (default), gru or rnn")
    online.add_argument("--out", metavar="FOLDER", help="output folder (default runs/<timestamp>)")
    online.add_argument("--resume", metavar="FOLDER", help="go on from the online.npz of an "
                        "earlier `tbptt online` (its model and settings)")
    online.add_argument("--quiet", action="store_true", help="no report of skipped lines on stderr")
    online.set_defaults(run=_online, subparser=online)

    info = commands.add_parser("info", help="describe a model or trainer checkpoint",
                               description="Describe a model file, a trainer checkpoint, or the "
                                           "output folder of `tbptt train`.")
    info.add_argument("checkpoint", metavar="CHECKPOINT")
    info.set_defaults(run=_info)

    from .sweep import add_parser as add_sweep_parser  # the study lives in tbptt/sweep.py
    sweep = add_sweep_parser(commands, _number, _add_data_arguments, BACKENDS)
    sweep.set_defaults(run=_sweep, subparser=sweep)

    # Listed here for --help; main() hands `tbptt bench ...` to tbptt.bench, which parses its flags.
    commands.add_parser("bench", help="throughput of the C++ engine, the NumPy reference and "
                                      "PyTorch on the reference grid (tbptt bench --help)")
    return parser


def _add_data_arguments(parser):
    """The data options of `tbptt train` and `tbptt sweep`."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="FILE", help="a text file (character-level model), or a "
                        "CSV file with --column (next-step prediction, MSE)")
    source.add_argument("--task", choices=TASKS, help="a built-in task instead of Shakespeare")
    parser.add_argument("--column", metavar="NAME", help="the CSV column to model (with --data)")
    parser.add_argument("--diff", action=argparse.BooleanOptionalAction, help="model a numeric "
                        "series' changes rather than its values (for a trend; default: on for co2)")


def _probability(text):
    """An argparse type: a float in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _number(kind, minimum, strict=True):
    """An argparse type: a finite `kind` above `minimum` (or at least it, when not strict)."""
    def parse(text):
        value = kind(text)
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {relation} {minimum}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# ---- data ---------------------------------------------------------------------------------

class Prepared:
    """Training and validation arrays (x, y, mask, resets) and what the model file keeps of them."""

    def __init__(self, kind, train, valid, loss, input_size, output_size, meta, vocab=None,
                 series=None):
        self.kind, self.train, self.valid, self.loss = kind, train, valid, loss
        self.input_size, self.output_size = input_size, output_size
        self.meta, self.vocab = meta, vocab
        self.series = series  # a numeric series: (values, times), in the data's units


def _kind_of_data(args):
    if args.task in ("co2", "sunspots"):
        return "series"
    if args.task:
        return args.task
    if args.data is not None and (args.column is not None or args.data.lower().endswith(".csv")):
        return "series"
    return "text"


def _prepare(args, kind):
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
        return _series(_read_column(args), f"{args.data}, column {args.column}", B, bool(args.diff))
    return _task(kind, B, args.seed)


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
        raise ValueError(f"{source}: need at least 20 numeric values, got {int(known.sum())}")
    index = np.arange(values.size)
    values = np.interp(index, index[known], values[known])  # fill gaps linearly
    train, valid = data.split(values, VALID_SPLIT)
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
                    series=(values, times))


def _read_column(args):
    """The values of column `args.column` of a CSV file with a header row (empty cells -> NaN)."""
    with open(args.data, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if args.column is None:
            args.subparser.error(f"--data {args.data} is a CSV file: choose the column to model "
                                 f"with --column (columns: {', '.join(columns)})")
        if args.column not in columns:
            raise ValueError(f"{args.data} has no column {args.column!r} "
                             f"(columns: {', '.join(columns)})")
        values = []
        for line, row in enumerate(reader, start=2):
            cell = (row[args.column] or "").strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                raise ValueError(f"{args.data}, line {line}: column {args.column!r} holds "
                                 f"{cell!r}, not a number") from None
    return values


def _task(name, B, seed):
    make = {"echo": lambda T, s: datasets.echo(T, B, delay=20, seed=s),
            "adding": lambda T, s: datasets.adding(T, B, seq_len=50, seed=s),
            "copy": lambda T, s: datasets.copy(T, B, seed=s)}[name]
    train, valid = make(TASK_STEPS, seed), make(TASK_VALID_STEPS, seed + 1)
    meta = {"kind": "task", "task": name, "source": train.description}
    arrays = [(t.x, t.y, t.mask, t.resets) for t in (train, valid)]
    return Prepared(name, *arrays, train.loss, train.input_size, train.output_size, meta)


def _results(prepared, history):
    """The numbers worth printing and keeping, from the best validation (the model file's)."""
    best = history.best_epoch
    if best is None:
        return {}
    loss = history.val_loss[best]
    results = {"val_loss": loss, "best_epoch": best + 1}
    if prepared.kind == "text":
        results["bits_per_character"] = loss / math.log(2)
    elif prepared.kind == "series":
        std = float(np.mean(prepared.meta["normalizer"]["std"]))
        results["val_rmse"] = math.sqrt(loss) * std
        results["persistence_rmse"] = prepared.meta["persistence_rmse"]
    if history.val_accuracy:
        results["val_accuracy"] = history.val_accuracy[best]
    return results


def _best_model(trainer, history, seen, folder):
    """The model of the run's lowest validation loss: this session's best (trainer.best), or the
    model file an earlier session of the run wrote (seen: its number of validations). Without
    validation, the model as it is."""
    best = history.best_epoch
    if best is None:
        return trainer.model
    if best < seen:
        return checkpoint.load(os.path.join(folder, MODEL))
    model = from_config(trainer.model.config())
    model.flat_parameters[:] = trainer.best["parameters"]
    return model


def _describe_results(prepared, results):
    epoch = f" (the best epoch, {results['best_epoch']}: its model is the one written)"
    if "bits_per_character" in results:
        return (f"validation: {results['bits_per_character']:.3f} bits per character (stateful "
                f"over {prepared.meta['valid_characters']:,} held-out characters){epoch}")
    if "val_rmse" in results:
        return (f"validation: RMSE {results['val_rmse']:.4g} in the data's units (MSE "
                f"{results['val_loss']:.4f} standardised); predicting the last value: RMSE "
                f"{results['persistence_rmse']:.4g}{epoch}")
    if "val_accuracy" in results:  # the baselines are in the task's description, printed first
        return (f"validation: accuracy {results['val_accuracy']:.3f}, loss "
                f"{results['val_loss']:.4f}{epoch}")
    return f"validation: loss {results['val_loss']:.4f}{epoch}"


# ---- files ----------------------------------------------------------------------------------

def _output_folder(out):
    if out is None:
        base = os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
        out, n = base, 1
        while os.path.exists(out):
            n += 1
            out = f"{base}-{n}"
    os.makedirs(out, exist_ok=True)
    return out


def _save_model(model, path, extra):
    """A tbptt model file (tbptt.load reads it) whose header also keeps `extra` (JSON)."""
    checkpoint.save_arrays(path, {"kind": "model", "config": model.config(), **extra},
                           model.state_dict())


def _load_model(path):
    """The model and its file's header (which `_save_model` may have extended)."""
    return checkpoint.load(path), checkpoint.load_arrays(path, "model")[0]


def _save_history(history, folder, say):
    """history.json, and loss.png when matplotlib is there. Returns the names written."""
    text = json.dumps(history.to_dict(), indent=1).encode("utf-8")
    checkpoint.atomic_write(os.path.join(folder, HISTORY), lambda f: f.write(text))
    if importlib.util.find_spec("matplotlib") is None:
        say(f"matplotlib is not installed: no {PLOT} (pip install tbptt[plot])")
        return [HISTORY]
    history.plot(os.path.join(folder, PLOT))
    return [HISTORY, PLOT]


def _model_path(path):
    return os.path.join(path, MODEL) if os.path.isdir(path) else path


def _default_prime(vocab):
    return "\n" if "\n" in vocab.chars else vocab.chars[0]


# ---- commands -------------------------------------------------------------------------------

def _usage_error(args, error):
    """A setting the command cannot use: one line on stderr, exit status 2 (as argparse's)."""
    print(f"tbptt {args.command}: error: {error}", file=sys.stderr)
    return 2


# ---- MPI ------------------------------------------------------------------------------------

# Set by MPI launchers to the number of ranks: MPICH / Intel MPI (and srun --mpi=pmi2), Open MPI,
# MVAPICH, Slurm.
_LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")


def _mpi_world():
    """MPI.COMM_WORLD when this process is one of several MPI ranks, else None (then mpi4py is
    not even imported, unless `python -m mpi4py` already did)."""
    launched = max(int(os.environ.get(name, "1") or 1) for name in _LAUNCHER_SIZES) > 1
    if not launched and "mpi4py.MPI" not in sys.modules:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("started by an MPI launcher with several ranks, but mpi4py is not "
                          "installed: pip install 'tbptt[mpi]'") from None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def _rank(comm):
    return 0 if comm is None else comm.Get_rank()


def _quiet(*args, **kwargs):
    """print on ranks other than 0."""


def _share(arrays, comm, what):
    """This rank's slice of the streams (axis 1) of (x, y, mask, resets): contiguous, as even as
    can be. With fewer streams than ranks, `what` = "validation" goes whole to every rank (the
    reduced loss is then the same), "training" is an error."""
    B, ranks = arrays[0].shape[1], comm.Get_size()
    if B < ranks:
        if what == "validation":
            return arrays
        raise ValueError(f"--batch {B} is smaller than the number of MPI ranks ({ranks}): every "
                         f"rank needs a stream of its own")
    mine = np.array_split(np.arange(B), ranks)[comm.Get_rank()]
    return tuple(None if a is None else np.ascontiguousarray(a[:, mine[0]:mine[-1] + 1])
                 for a in arrays)


def _train(args):
    if args.column is not None and args.data is None:
        args.subparser.error("--column goes with --data FILE.csv")
    comm = _mpi_world()
    say = _quiet if _rank(comm) else print  # rank 0 speaks and writes the run's files
    # (trainer, run, history)
    resumed = _resume(args, comm, say) if args.resume is not None else None
    if resumed is None:
        _fill_defaults(args)
    if args.backend == "cpp":
        from ._threads import set_num_threads
        set_num_threads(args.threads)

    prepared = _prepare(args, _kind_of_data(args))
    run = {"settings": _settings(args), "data": _fingerprint(prepared)}
    x = prepared.train[0]
    if comm is not None:  # data-parallel: this rank trains and validates its share of the streams
        try:
            train, valid = _share(prepared.train, comm, "training"), _share(prepared.valid, comm,
                                                                           "validation")
        except ValueError as error:
            return _usage_error(args, error)
    if resumed is not None:
        trainer, previous, earlier = resumed
        if previous["data"] != run["data"]:
            raise ValueError(f"the data of {args.resume} have changed since the run began "
                             f"({prepared.meta['source']}): --resume needs the same data")
        start = tuple(previous["position"])
    else:
        try:  # sizes are checked before anything is allocated: a flag too large is a usage error
            trainer = _new_trainer(args, prepared, comm)
        except (ValueError, MemoryError) as error:
            return _usage_error(args, error)
        earlier, start = History(), (0, 0)
    model = trainer.model
    folder = _output_folder(args.out) if _rank(comm) == 0 else None
    if comm is not None:  # rank 0's choice (a time stamp) for every rank
        folder = comm.bcast(folder, root=0)
    say(f"data: {prepared.meta['source']}: {x.shape[0]:,} steps x {x.shape[1]} streams"
        + ("" if comm is None else f", split over {comm.Get_size()} MPI ranks"))
    say(f"model: {args.cell.upper()} {args.layers} x {args.hidden} ({model.num_parameters:,} parameters); "
          f"TBPTT(k1={args.k1}, k2={args.k2}), Adam lr {args.lr:g}, clip 5, {args.backend} backend"
          + (f"; at most {args.max_time:g} s" if args.max_time else ""))
    say(f"output folder: {folder}", flush=True)

    seen = len(earlier.val_loss)  # validations of earlier sessions, before this one's
    try:
        with warnings.catch_warnings():  # divergence: said below, in the command's own words
            warnings.filterwarnings("ignore", "fit stopped: training diverged", RuntimeWarning)
            session = trainer.fit(*(prepared.train if comm is None else train), epochs=args.epochs,
                                  validation=prepared.valid if comm is None else valid,
                                  max_time=args.max_time or None, progress=not args.no_progress,
                                  initial_epoch=start[0], initial_step=start[1],
                                  schedule=Schedule(args.schedule, args.warmup),
                                  patience=args.patience)
    except KeyboardInterrupt as stop:
        history = _record(earlier, getattr(trainer, "history", None), start)
        _save_run(folder, trainer, _best_model(trainer, history, seen, folder), history, prepared,
                  run, {}, say)
        say(f"\n{stop}; the model, the trainer and the history are in {folder} (tbptt train "
              f"--resume {folder} goes on)", file=sys.stderr)
        return 130

    history = _record(earlier, session, start)
    best = _best_model(trainer, history, seen, folder)
    results = _results(prepared, history)
    train_rate = session.samples / session.train_time if session.train_time else 0.0
    say(f"trained {session.losses.size:,} updates, {session.samples:,} samples in "
          f"{session.wall_time:.1f} s ({train_rate:,.0f} samples/s while training); stopped by "
          f"{session.stop_reason}: {_where(history.resume_at, args.epochs, x.shape[0], folder)}")
    if session.diverged:
        say(f"training diverged: {session.diverged}; the model keeps the last good parameters "
              f"(try a lower --lr)")
    if results:
        say(_describe_results(prepared, results))
    written = _save_run(folder, trainer, best, history, prepared, run, results, say)
    if prepared.vocab is not None and _rank(comm) == 0:
        prime = _default_prime(prepared.vocab)
        sample = generate(best, prepared.vocab, prime, SAMPLE_LENGTH, SAMPLE_TEMPERATURE, args.seed)
        say(f"sample (temperature {SAMPLE_TEMPERATURE}, seed {args.seed}):\n{prime}{sample}\n")
    say(f"wrote {', '.join(os.path.join(folder, name) for name in written)}")
    return 0


def _fill_defaults(args):
    """The settings the command line left out: per kind of data (DEFAULTS), then the common ones."""
    for name, value in {**COMMON_DEFAULTS, **DEFAULTS[_kind_of_data(args)]}.items():  # kind wins
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.k2 = args.k1 if args.k2 is None else args.k2


def _settings(args):
    """What a run is: enough to prepare the same data and build the same trainer again."""
    settings = {name: getattr(args, name) for name in SETTINGS}
    if settings["data"] is not None:  # --resume may run from another folder
        settings["data"] = os.path.abspath(settings["data"])
    settings.update(clip_norm=5.0, optimizer="adam")
    if settings["cell"] == "lstm":  # the other cells have no forget gate
        settings["forget_bias"] = 1.0
    return settings


def _new_trainer(args, prepared, comm=None):
    """The model and trainer of a new run; ValueError / MemoryError if a size is too large."""
    model = build(args.cell, prepared.input_size, args.hidden, prepared.output_size,
                  num_layers=args.layers, seed=args.seed, forget_bias=1.0, dropout=args.dropout)
    x = prepared.train[0]
    B = x.shape[1] if comm is None else -(-x.shape[1] // comm.Get_size())  # the largest share
    _sizes.check_window(model, args.k1, args.k2, B, tokens=x.ndim == 2)
    optimizer = AdamW(args.lr, weight_decay=args.weight_decay) if args.weight_decay else Adam(args.lr)
    return Trainer(model, args.k1, args.k2, loss=prepared.loss, optimizer=optimizer, clip_norm=5.0,
                   backend=args.backend, seed=args.seed, comm=comm)


def _fingerprint(prepared):
    """A digest of the training and validation arrays: --resume refuses data that changed."""
    digest = hashlib.sha256()
    for array in (*prepared.train, *prepared.valid):
        if array is not None:
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _resume(args, comm=None, say=print):
    """(trainer, run, history) of the run in folder args.resume, whose settings args takes on.
    Flags that would change the data or the model are refused; --epochs (the run's total) and
    --max-time (this session's budget) may change."""
    given = [flag for name, flag in FIXED_FLAGS.items() if getattr(args, name) is not None]
    if given:
        args.subparser.error(f"--resume goes on with the run's own data and settings: "
                             f"{', '.join(given)} cannot change (--epochs, --max-time, --threads "
                             f"and --no-progress can)")
    path = os.path.join(args.resume, TRAINER)
    run = checkpoint.load_arrays(path, "trainer")[0].get("run")
    if not run:
        raise ValueError(f"{path} holds no settings of a `tbptt train` run (it was written by "
                         f"Trainer.save or an older tbptt): it cannot be resumed from the command "
                         f"line; use tbptt.load_trainer and Trainer.fit")
    trainer = checkpoint.load_trainer(path, comm=comm)
    for name in SETTINGS:
        if name not in ("epochs", "max_time") or getattr(args, name) is None:
            setattr(args, name, run["settings"].get(name, COMMON_DEFAULTS.get(name)))  # cell: lstm
    args.out = args.resume
    epoch, step = run["position"]
    if epoch >= args.epochs:
        args.subparser.error(f"--resume {args.resume}: the run has trained all its {epoch} "
                             f"epoch(s); give --epochs N (the run's total) above {epoch} to go on")
    say(f"resuming {args.resume}: epoch {epoch + 1} of {args.epochs}, from step {step:,} "
          f"({trainer.updates:,} updates made)")
    return trainer, run, _load_history(args.resume)


def _load_history(folder):
    """The history.json of a run folder as a History (an empty one if there is none)."""
    path = os.path.join(folder, HISTORY)
    if not os.path.exists(path):
        return History()
    with open(path, encoding="utf-8") as f:
        try:
            return History.from_dict(json.load(f))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is damaged: {type(error).__name__}: {error}") from None


def _record(earlier, session, start):
    """The run's whole history: what came before this session, and the session's own record."""
    if session is None:  # stopped before fit began
        session = History()
        session.resume_at = start
    earlier.extend(session)
    return earlier


def _where(position, epochs, T, folder):
    epoch, step = position
    if epoch >= epochs:
        return f"all {epochs} epoch(s) done"
    return (f"in epoch {epoch + 1} of {epochs} at step {step:,} of {T:,} (tbptt train --resume "
            f"{folder} goes on)")


def _save_run(folder, trainer, model, history, prepared, run, results, say):
    """Write the run's files, each atomically; the trainer first (as it is now), with the run's
    settings and where in the data it stopped (what --resume goes on from), then `model` (the
    best). Returns the names written."""
    run = {**run, "position": list(history.resume_at)}
    checkpoint.save_trainer(trainer, os.path.join(folder, TRAINER), {"run": run})  # one per rank
    if trainer.comm is not None and trainer.comm.Get_rank() != 0:
        return [TRAINER]
    _save_model(model, os.path.join(folder, MODEL),
                {"data": prepared.meta, "settings": run["settings"], "results": results})
    written = [TRAINER, MODEL] + _save_history(history, folder, say)
    if prepared.series is not None and importlib.util.find_spec("matplotlib") is not None:
        _plot_held_out(model, prepared, os.path.join(folder, HELD_OUT_PLOT))
        written.append(HELD_OUT_PLOT)
    return written


def _plot_held_out(model, prepared, path):
    """forecast.png: the held-out data, the model's one-step predictions (its state carried from
    the first value) and the naive prediction (the last value), in the data's units."""
    values, times = prepared.series
    meta = prepared.meta
    predicted = forecast.one_step(model, values, data.Normalizer.from_dict(meta["normalizer"]),
                                  meta["difference"])
    cut = len(data.split(values, VALID_SPLIT)[0])
    held_out, naive = values[cut:], values[cut - 1:-1]

    def rmse(guess):
        return math.sqrt(float(np.mean((guess - held_out) ** 2)))

    x = times[cut:]
    forecast.plot(path, f"{meta['source']}: the held-out {values.size - cut} steps", [
        (x, held_out, "data", dict(color="black", linewidth=1.2)),
        (x, predicted[cut:], f"model, one step ahead (RMSE {rmse(predicted[cut:]):.4g})",
         dict(color="tab:blue", linewidth=1.2)),
        (x, naive, f"last value (RMSE {rmse(naive):.4g})",
         dict(color="tab:orange", linewidth=1, linestyle="--")),
    ])


def _generate(args):
    path = _model_path(args.checkpoint)
    model, header = _load_model(path)
    meta = header.get("data") or {}
    if meta.get("kind") != "text":
        raise ValueError(f"{path} is not a text model written by `tbptt train` (it has no "
                         f"vocabulary): generate samples characters")
    vocab = data.Vocabulary.from_dict(meta["vocabulary"])
    prime = _default_prime(vocab) if args.prime is None else args.prime
    print(prime + generate(model, vocab, prime, args.length, args.temperature, args.seed))
    return 0


def _forecast(args):
    path = _model_path(args.folder)
    model, header = _load_model(path)
    meta, settings = header.get("data") or {}, header.get("settings") or {}
    if meta.get("kind") != "series" or "task" not in settings:
        raise ValueError(f"{path} is not a model of a numeric series written by `tbptt train` "
                         f"(--task co2|sunspots or --data FILE.csv --column NAME)")
    prepare_args = argparse.Namespace(**{name: settings[name] for name in SETTINGS}, subparser=None)
    values, times = _prepare(prepare_args, "series").series
    ahead = forecast.forecast(model, values, args.steps,
                              data.Normalizer.from_dict(meta["normalizer"]), meta["difference"])
    future = times[-1] + (times[-1] - times[-2]) * np.arange(1, args.steps + 1)
    text = "time,forecast\n" + "".join(f"{t},{v:.10g}\n" for t, v in zip(future, ahead))
    if args.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()  # before the report on stderr, in a terminal showing both
    else:
        checkpoint.atomic_write(args.out, lambda f: f.write(text.encode("utf-8")))
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no picture (pip install tbptt[plot])", file=sys.stderr)
        return 0
    picture = args.plot or os.path.join(os.path.dirname(os.path.abspath(path)), FORECAST_PLOT)
    shown = max(3 * args.steps, 100)  # the end of the data, then the forecast
    forecast.plot(picture, f"{meta['source']}: {args.steps} steps ahead", [
        (times[-shown:], values[-shown:], "data", dict(color="black", linewidth=1.2)),
        (np.concatenate([times[-1:], future]), np.concatenate([values[-1:], ahead]),
         "forecast (the model on its own predictions)", dict(color="tab:blue", linewidth=1.5)),
    ], cut=times[-1])
    print(f"wrote {args.out + ', ' if args.out else ''}{picture}", file=sys.stderr)
    return 0


def _sweep(args):
    """`tbptt sweep`: tbptt/sweep.py does the work; the data are prepared as for `tbptt train`."""
    from .sweep import command
    return command(args, prepare=_prepare, kind=_kind_of_data(args), defaults=DEFAULTS,
                   comm=_mpi_world())


def _online(args):
    from . import online
    from .river import Regressor, load as load_learner

    features = None if args.features is None else [f.strip() for f in args.features.split(",")]
    if args.resume is not None:
        refused = [flag for flag in ("hidden", "k2", "lr", "cell") if getattr(args, flag) is not None]
        if refused:
            args.subparser.error(f"--resume goes on with the learner's own settings: drop "
                                 f"{', '.join('--' + f for f in refused)}")
        learner = load_learner(os.path.join(args.resume, online.LEARNER)
                               if os.path.isdir(args.resume) else args.resume)
        column = learner.target_name
        if args.column is not None and args.column != column:
            args.subparser.error(f"--resume: the learner learnt column {column!r}, not {args.column!r}")
        if features is None:
            features = list(learner.keys_ or ())
    else:
        if args.column is None:
            args.subparser.error("--column NAME is required: the CSV column to learn")
        column = args.column
        settings = {"hidden": "hidden_size", "k2": "k2", "lr": "lr", "cell": "cell"}
        learner = Regressor(**{name: getattr(args, flag) for flag, name in settings.items()
                               if getattr(args, flag) is not None})
        learner.target_name = column
    folder = _output_folder(args.out)
    say = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    if args.data == "-":
        return online.run(sys.stdin, sys.stdout, column, features, learner, folder, say)
    with open(args.data, newline="", encoding="utf-8") as stream:
        return online.run(stream, sys.stdout, column, features, learner, folder, say)


def _info(args):
    if os.path.isdir(args.checkpoint):
        paths = [os.path.join(args.checkpoint, name) for name in (MODEL, TRAINER)]
        paths = [path for path in paths if os.path.exists(path)]
        if not paths:
            raise FileNotFoundError(f"{args.checkpoint} holds neither {MODEL} nor {TRAINER}")
    else:
        paths = [args.checkpoint]
    for path in paths:
        print("\n".join(_describe(path)))
    return 0


def _file_kind(path):
    """The "kind" a tbptt file's header names, or None (then load_arrays says what is wrong)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return json.loads(archive[checkpoint.HEADER].tobytes().decode("utf-8")).get("kind")
    except Exception:
        return None


def _describe(path):
    if _file_kind(path) == "trainer":
        from .checkpoint import load_trainer
        trainer = load_trainer(path)
        t = trainer
        return [f"{path}: trainer checkpoint",
                f"  model: {t.model!r}",
                f"  parameters: {t.model.num_parameters:,}",
                f"  trainer: TBPTT(k1={t.k1}, k2={t.k2}), loss {t.loss}, {t.optimizer}, "
                f"clip_norm {t.clip_norm}, backend {t.backend}, B = {t.num_streams} streams",
                f"  progress: {t.updates:,} updates made, {t.pending_steps} steps pending"]
    model, header = _load_model(path)
    lines = [f"{path}: model", f"  model: {model!r}", f"  parameters: {model.num_parameters:,}"]
    meta = header.get("data")
    if meta:
        what = {"text": lambda: f"characters, vocabulary of {len(meta['vocabulary']['chars'])}",
                "series": lambda: (f"next-step MSE of the "
                                   f"{'changes' if meta.get('difference') else 'values'}, "
                                   f"standardised with {meta['normalizer']}"),
                "task": lambda: "synthetic task"}.get(meta.get("kind"), lambda: meta.get("kind"))()
        lines.append(f"  data: {meta.get('source')}: {what}")
    for key in ("settings", "results"):
        if header.get(key):
            values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in header[key].items() if v is not None)
            lines.append(f"  {key}: {values}")
    return lines


def main(argv=None) -> int:
    """Entry point of the `tbptt` command. Bad flags exit 2 with usage; a file that cannot be read
    or data that cannot be used prints the reason and returns 1; Ctrl-C during training saves
    what there is and returns 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench import main as bench
        return bench(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"tbptt {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
