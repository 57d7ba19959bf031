"""`tbptt train`: a recurrent model trained with TBPTT(k1, k2) on built-in or your own data,
written into a run folder (model.npz, trainer.npz, history.json, loss.png, forecast.png); `--resume`
goes on with a run from its trainer.npz. A thin layer over Trainer.fit; under MPI data-parallel
(rank 0 prints and writes the run's files)."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import statistics
import sys
import warnings
from typing import NamedTuple, Optional, cast

import numpy as np

from .. import _files, _sizes, _units, checkpoint
from ..apps import forecast
from ..apps.generate import generate
from ..history import History
from ..model import MODELS, build, from_config
from ..optim import Adam, AdamW
from ..schedules import SHAPES, Schedule
from ..trainer import BACKENDS, Trainer
from . import _args, _data, _folder, _mpi
from .generate import SAMPLE_LENGTH, SAMPLE_TEMPERATURE, default_prime

# A run's settings (kept in its trainer.npz, so that --resume prepares the same data) and the flags
# a resumed run refuses, as they would change its data or its model.
SETTINGS = (
    "task",
    "data",
    "column",
    "diff",
    "time",
    "features",
    "known",
    "series",
    "embed_series",
    "likelihood",
    "cell",
    "k1",
    "k2",
    "hidden",
    "layers",
    "batch",
    "lr",
    "dropout",
    "weight_decay",
    "schedule",
    "warmup",
    "patience",
    "epochs",
    "max_time",
    "backend",
    "seed",
    "recompute",
)
FIXED_FLAGS = {
    "task": "--task",
    "data": "--data",
    "column": "--column",
    "diff": "--diff",
    "time": "--time",
    "features": "--features",
    "known": "--known",
    "series": "--series",
    "embed_series": "--embed-series",
    "likelihood": "--likelihood",
    "cell": "--cell",
    "k1": "--k1",
    "k2": "--k2",
    "hidden": "--hidden",
    "layers": "--layers",
    "batch": "--batch",
    "lr": "--lr",
    "dropout": "--dropout",
    "weight_decay": "--weight-decay",
    "schedule": "--schedule",
    "warmup": "--warmup",
    "patience": "--patience",
    "backend": "--backend",
    "seed": "--seed",
    "out": "--out",
    "recompute": "--recompute",
}


def add_parser(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a model (default: a character-level GRU on Shakespeare)",
        description="Train a recurrent model with TBPTT(k1, k2) and write model.npz, trainer.npz, "
        "history.json and loss.png (and, for a numeric series, forecast.png) into an "
        "output folder; --resume goes on with a run from its trainer.npz.",
        epilog="Defaults depend on the data: text a GRU, B=32, k=50, H=384, dropout 0.25, lr 5e-3 "
        "with a cosine schedule, 110 s; otherwise an LSTM (forget bias 1): a numeric "
        "series B=1, k=25, H=32, lr 3e-3, 50 epochs; echo (delay 20) k=40, H=32, lr 1e-2; "
        "adding (length 50) k=50; copy (10 symbols, delay 10) k=31, H=64. Always Adam "
        "(AdamW with --weight-decay), clip 5.",
    )
    _args.add_data_arguments(train)
    train.add_argument(
        "--likelihood",
        choices=("gaussian",),
        help="a numeric series: predict "
        "a distribution, not a point: the model's two outputs are the next value's "
        "mean and scale (sigma = softplus + 1e-6), trained on the negative "
        "log-likelihood; forecast.png shows the 80%% band, `tbptt forecast "
        "--quantiles` and `tbptt backtest` (coverage, CRPS) use it",
    )
    train.add_argument("--k1", type=_args.number(int, 0), help="steps between updates")
    train.add_argument(
        "--k2",
        type=_args.number(int, 0),
        help="steps each update backpropagates through (default: k1)",
    )
    train.add_argument("--hidden", type=_args.number(int, 0), help="hidden units per layer")
    train.add_argument(
        "--cell",
        choices=tuple(MODELS),
        help="the recurrent cell: lstm (default), gru or rnn (tanh)",
    )
    train.add_argument("--layers", type=_args.number(int, 0), help="layers (default 1)")
    train.add_argument(
        "--batch", type=_args.number(int, 0), help="B, the number of parallel streams"
    )
    train.add_argument("--lr", type=_args.number(float, 0), help="Adam's learning rate")
    train.add_argument(
        "--recompute",
        action="store_const",
        const=True,
        help="when k2 > k1, run the steps the next update reads again with the new "
        "weights after each update: exact gradients, k2 - k1 + 1 more forward "
        "steps per update (docs/semantics.md §3)",
    )
    train.add_argument(
        "--dropout",
        type=_args.probability,
        metavar="P",
        help="dropout on every layer's output, the top layer's before the head too (default 0)",
    )
    train.add_argument(
        "--weight-decay",
        type=_args.number(float, 0, strict=False),
        metavar="W",
        help="decoupled weight decay (AdamW; default 0: Adam)",
    )
    train.add_argument(
        "--schedule",
        choices=SHAPES,
        help="the learning rate over the run: "
        "constant (default), or cosine / linear decay to 0 over the epochs or "
        "--max-time, whichever ends first",
    )
    train.add_argument(
        "--warmup",
        type=_args.probability,
        metavar="SHARE",
        help="share of the run over which the learning rate rises from 0 (default 0)",
    )
    train.add_argument(
        "--patience",
        type=_args.number(int, 0),
        metavar="EPOCHS",
        help="stop after this many epochs without a better validation loss",
    )
    train.add_argument("--epochs", type=_args.number(int, 0), help="passes over the training data")
    train.add_argument(
        "--max-time",
        type=_args.number(float, 0, strict=False),
        metavar="SECONDS",
        help="stop training after this long (default 110 for text, 90 otherwise; 0: no limit)",
    )
    train.add_argument(
        "--threads",
        type=_args.number(int, 0),
        help="the most threads of the C++ engine (default: every core; per update "
        "it uses one or all, whichever it measured faster, and the results do "
        "not depend on it)",
    )
    train.add_argument(
        "--backend", choices=BACKENDS, help="cpp (default, compiled) or numpy (the reference)"
    )
    train.add_argument("--seed", type=int, help="for the model and the tasks (default 0)")
    train.add_argument("--out", metavar="FOLDER", help="output folder (default runs/<timestamp>)")
    train.add_argument(
        "--resume",
        metavar="RUN_FOLDER",
        help="go on with a run that stopped "
        "(Ctrl-C, --max-time) or ended, from its trainer.npz: its data and "
        "settings, --epochs as the run's total; the history is appended",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=run, subparser=train)  # subparser.error(): exit 2 with its usage


class _Usage(Exception):
    """A setting the command cannot use: one line on stderr, exit status 2 (as argparse's)."""


def run(args) -> int:
    """`tbptt train`: a new run or a resumed one, fit, then the report and the run's files."""
    if args.column is not None and args.data is None:
        args.subparser.error("--column goes with --data FILE.csv")
    for name in ("time", "features", "known", "series", "embed_series"):
        if getattr(args, name) is not None and args.column is None and args.resume is None:
            args.subparser.error(
                f"--{name.replace('_', '-')} goes with --data FILE.csv --column NAME"
            )
    if args.embed_series and args.series is None:
        args.subparser.error("--embed-series goes with --series ID")
    if args.likelihood and args.resume is None and _data.kind_of_data(args) != "series":
        args.subparser.error(
            "--likelihood goes with a numeric series (--data FILE.csv --column "
            "NAME, --task co2|sunspots)"
        )
    comm = _mpi.world()
    say = _mpi.quiet if _mpi.rank(comm) else print  # rank 0 speaks and writes the run's files
    try:
        session = _Session(args, comm, say)
    except (_Usage, _data.BadInput) as error:
        print(f"tbptt {args.command}: error: {error}", file=sys.stderr)
        return 2
    try:
        history = session.fit()
    except KeyboardInterrupt as stop:
        session.interrupted(stop)
        return 130
    session.finish(history)
    return 0


class _Session:
    """One session of a run: its data (this rank's share), trainer, folder and earlier history."""

    def __init__(self, args, comm, say):
        self.args, self.comm, self.say = args, comm, say
        resumed = (
            _resume(args, comm, say) if args.resume is not None else None
        )  # (trainer, run, history)
        if resumed is None:
            _fill_defaults(args)
        if args.backend == "cpp" and args.threads is not None:
            from ..engines.threads import set_num_threads

            set_num_threads(args.threads)
        self.prepared = prepared = _data.prepare(args, _data.kind_of_data(args))
        self.run = {"settings": _settings(args), "data": _fingerprint(prepared)}
        self.train, self.valid = prepared.train, prepared.valid
        if (
            comm is not None
        ):  # data-parallel: this rank trains and validates its share of the streams
            try:
                self.train = _mpi.share(prepared.train, comm, "training")
                self.valid = _mpi.share(prepared.valid, comm, "validation")
            except ValueError as error:
                raise _Usage(error) from None
        self.trainer, self.earlier, self.start = self._trainer(resumed)
        self.seen = len(self.earlier.val_loss)  # validations of earlier sessions, before this one's
        # a str on every rank once broadcast (None on the other ranks only until then)
        self.folder = cast(str, _folder.output_folder(args.out) if _mpi.rank(comm) == 0 else None)
        if comm is not None:  # rank 0's choice (a time stamp) for every rank
            self.folder = comm.bcast(self.folder, root=0)
        self._announce()

    def _trainer(self, resumed) -> tuple:
        """(trainer, earlier history, start position): the resumed run's, or new ones."""
        args, prepared = self.args, self.prepared
        if resumed is not None:
            trainer, previous, earlier = resumed
            if previous["data"] != self.run["data"]:
                raise ValueError(
                    f"the data of {args.resume} have changed since the run began "
                    f"({prepared.meta['source']}): --resume needs the same data"
                )
            return trainer, earlier, tuple(previous["position"])
        try:  # sizes are checked before anything is allocated: a flag too large is a usage error
            return _new_trainer(args, prepared, self.comm), History(), (0, 0)
        except (ValueError, MemoryError) as error:
            raise _Usage(error) from None

    def _announce(self) -> None:
        args, comm, x = self.args, self.comm, self.prepared.train[0]
        self.say(
            f"data: {self.prepared.meta['source']}: {x.shape[0]:,} steps x {x.shape[1]} streams"
            + ("" if comm is None else f", split over {comm.Get_size()} MPI ranks")
        )
        self.say(
            f"model: {args.cell.upper()} {args.layers} x {args.hidden} "
            f"({self.trainer.model.num_parameters:,} parameters); TBPTT(k1={args.k1}, "
            f"k2={args.k2}), Adam lr {args.lr:g}, clip 5, {args.backend} backend"
            + (f"; at most {args.max_time:g} s" if args.max_time else "")
        )
        self.say(f"output folder: {self.folder}", flush=True)

    def fit(self) -> History:
        """This session's training (its own History)."""
        args = self.args
        with warnings.catch_warnings():  # divergence: said in `finish`, in the command's own words
            warnings.filterwarnings("ignore", "fit stopped: training diverged", RuntimeWarning)
            return self.trainer.fit(
                *self.train,
                epochs=args.epochs,
                validation=self.valid,
                max_time=args.max_time or None,
                progress=not args.no_progress,
                initial_epoch=self.start[0],
                initial_step=self.start[1],
                schedule=Schedule(args.schedule, args.warmup),
                patience=args.patience,
                loss_unit=loss_unit(self.prepared),
            )

    def interrupted(self, stop: KeyboardInterrupt) -> None:
        """Ctrl-C: write what there is, and say how to go on."""
        trainer, folder = self.trainer, self.folder
        history = _record(self.earlier, getattr(trainer, "history", None), self.start)
        _save_run(
            folder,
            trainer,
            _best_model(trainer, history, self.seen, folder),
            history,
            self.prepared,
            self.run,
            {},
            self.say,
        )
        self.say(
            f"\n{stop}; the model, the trainer and the history are in {folder} (tbptt train "
            f"--resume {folder} goes on)",
            file=sys.stderr,
        )

    def finish(self, session: History) -> None:
        """The report, the run's files and, for text, a sample."""
        args, trainer, folder, say, prepared = (
            self.args,
            self.trainer,
            self.folder,
            self.say,
            self.prepared,
        )
        history = _record(self.earlier, session, self.start)
        best = _best_model(trainer, history, self.seen, folder)
        held_out = _held_out(best, prepared) if prepared.series is not None else None
        results = _results(prepared, history, held_out)
        train_rate = session.samples / session.train_time if session.train_time else 0.0
        say(
            f"trained {session.losses.size:,} updates, {session.samples:,} samples in "
            f"{session.wall_time:.1f} s ({train_rate:,.0f} samples/s while training); stopped by "
            f"{session.stop_reason}: "
            f"{_where(history.resume_at, args.epochs, prepared.train[0].shape[0], folder)}"
        )
        if session.diverged:
            say(
                f"training diverged: {session.diverged}; the model keeps the last good parameters "
                f"(try a lower --lr)"
            )
        if results:
            say(_describe_results(prepared, results))
        written = _save_run(
            folder, trainer, best, history, prepared, self.run, results, say, held_out
        )
        if prepared.vocab is not None and _mpi.rank(self.comm) == 0:
            prime = default_prime(prepared.vocab)
            sample = generate(
                best, prepared.vocab, prime, SAMPLE_LENGTH, SAMPLE_TEMPERATURE, args.seed
            )
            say(f"sample (temperature {SAMPLE_TEMPERATURE}, seed {args.seed}):\n{prime}{sample}\n")
        say(f"wrote {', '.join(os.path.join(folder, name) for name in written)}")


def loss_unit(prepared) -> str:
    """The unit losses are shown in, on the bar, the epoch lines and loss.png: bits per character
    for text (as the final line), else the loss function's own (nats, or the standardised MSE)."""
    return "bits/char" if prepared.kind == "text" else _units.OF_LOSS[prepared.loss][0]


def _results(prepared, history, held_out=None):
    """The numbers worth printing and keeping, from the best validation (the model file's); for
    a series, the RMSEs of forecast.png (`held_out`)."""
    best = history.best_epoch
    if best is None:
        return {}
    loss = history.val_loss[best]
    results = {"val_loss": loss, "best_epoch": best + 1}
    if prepared.kind == "text":
        results["bits_per_character"] = loss / math.log(2)
    elif held_out is not None:
        results["val_rmse"], results["persistence_rmse"] = held_out.rmse, held_out.naive_rmse
        if held_out.coverage_80 is not None:
            results["val_coverage_80"] = held_out.coverage_80
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
        return checkpoint.load(os.path.join(folder, _folder.MODEL))
    model = from_config(trainer.model.config())
    model.flat_parameters[:] = trainer.best["parameters"]
    return model


def _describe_results(prepared, results):
    epoch = f" (the best epoch, {results['best_epoch']}: its model is the one written)"
    if "bits_per_character" in results:
        return (
            f"validation: {results['bits_per_character']:.3f} bits per character (stateful "
            f"over {prepared.meta['valid_characters']:,} held-out characters){epoch}"
        )
    if "val_rmse" in results:
        loss = (
            "negative log-likelihood {:.4f} nats" if prepared.loss == "gaussian" else "MSE {:.4f}"
        ).format(results["val_loss"])
        band = (
            f"; the 80% band holds {results['val_coverage_80']:.1%} of them"
            if "val_coverage_80" in results
            else ""
        )
        return (
            f"validation: {loss} standardised{epoch}; one step ahead "
            f"on the held-out {prepared.meta['valid_values']:,} steps (forecast.png): RMSE "
            f"{results['val_rmse']:.4g} in the data's units; predicting the last value: RMSE "
            f"{results['persistence_rmse']:.4g}{band}"
        )
    if "val_accuracy" in results:  # the baselines are in the task's description, printed first
        return (
            f"validation: accuracy {results['val_accuracy']:.3f}, loss "
            f"{results['val_loss']:.4f}{epoch}"
        )
    return f"validation: loss {results['val_loss']:.4f}{epoch}"


def _fill_defaults(args):
    """The settings the command line left out: per kind of data (DEFAULTS), then the common ones."""
    if getattr(args, "series", None) is not None and args.batch is None:
        args.batch = _data.SERIES_BATCH  # many series: packed into streams (at most one each)
    for name, value in {
        **_data.COMMON_DEFAULTS,
        **_data.DEFAULTS[_data.kind_of_data(args)],
    }.items():  # kind wins
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
    model = build(
        args.cell,
        prepared.input_size,
        args.hidden,
        prepared.output_size,
        num_layers=args.layers,
        seed=args.seed,
        forget_bias=1.0,
        dropout=args.dropout,
    )
    x = prepared.train[0]
    B = x.shape[1] if comm is None else -(-x.shape[1] // comm.Get_size())  # the largest share
    _sizes.check_window(model, args.k1, args.k2, B, tokens=x.ndim == 2)
    optimizer = (
        AdamW(args.lr, weight_decay=args.weight_decay) if args.weight_decay else Adam(args.lr)
    )
    return Trainer(
        model,
        args.k1,
        args.k2,
        loss=prepared.loss,
        optimizer=optimizer,
        clip_norm=5.0,
        backend=args.backend,
        seed=args.seed,
        recompute=args.recompute,
        comm=comm,
    )


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
        args.subparser.error(
            f"--resume goes on with the run's own data and settings: "
            f"{', '.join(given)} cannot change (--epochs, --max-time, --threads "
            f"and --no-progress can)"
        )
    path = os.path.join(args.resume, _folder.TRAINER)
    run = _files.load_arrays(path, "trainer")[0].get("run")
    if not run:
        raise ValueError(
            f"{path} holds no settings of a `tbptt train` run (it was written by "
            f"Trainer.save or an older tbptt): it cannot be resumed from the command "
            f"line; use tbptt.load_trainer and Trainer.fit"
        )
    trainer = checkpoint.load_trainer(path, comm=comm)
    for name in SETTINGS:
        if name not in ("epochs", "max_time") or getattr(args, name) is None:
            setattr(
                args, name, run["settings"].get(name, _data.COMMON_DEFAULTS.get(name))
            )  # cell: lstm
    args.out = args.resume
    epoch, step = run["position"]
    if epoch >= args.epochs:
        args.subparser.error(
            f"--resume {args.resume}: the run has trained all its {epoch} "
            f"epoch(s); give --epochs N (the run's total) above {epoch} to go on"
        )
    say(
        f"resuming {args.resume}: epoch {epoch + 1} of {args.epochs}, from step {step:,} "
        f"({trainer.updates:,} updates made)"
    )
    return trainer, run, _folder.load_history(args.resume)


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
    return (
        f"in epoch {epoch + 1} of {epochs} at step {step:,} of {T:,} (tbptt train --resume "
        f"{folder} goes on)"
    )


def _save_run(folder, trainer, model, history, prepared, run, results, say, held_out=None):
    """Write the run's files, each atomically; the trainer first (as it is now), with the run's
    settings and where in the data it stopped (what --resume goes on from), then `model` (the
    best). Returns the names written."""
    run = {**run, "position": list(history.resume_at)}
    checkpoint.save_trainer(
        trainer, os.path.join(folder, _folder.TRAINER), {"run": run}
    )  # one per rank
    if trainer.comm is not None and trainer.comm.Get_rank() != 0:
        return [_folder.TRAINER]
    _folder.save_model(
        model,
        os.path.join(folder, _folder.MODEL),
        {"data": prepared.meta, "settings": run["settings"], "results": results},
    )
    written = [_folder.TRAINER, _folder.MODEL] + _folder.save_history(
        history, folder, say, loss_unit(prepared)
    )
    if prepared.series is not None and importlib.util.find_spec("matplotlib") is not None:
        _plot_held_out(
            held_out or _held_out(model, prepared),
            prepared,
            os.path.join(folder, _folder.HELD_OUT_PLOT),
        )
        written.append(_folder.HELD_OUT_PLOT)
    return written


class _HeldOut(NamedTuple):
    """The model's one-step predictions over each series' held-out part, and the naive prediction
    (the last value), in the data's units: forecast.png draws them, and the RMSEs printed and kept
    in the model file are theirs (over every series' held-out values)."""

    names: list
    times: list
    values: list
    predicted: list
    naive: list
    rmse: float
    naive_rmse: float
    scales: list  # a gaussian model's one-step sigmas (None for a point model)
    coverage_80: Optional[float]  # the share of held-out values in the 80% band (or None)


BAND_80 = statistics.NormalDist().inv_cdf(0.9)  # the 80% band: mean +- 1.2816 sigma


def _held_out(model, prepared) -> _HeldOut:
    """The predictions of `model`, its state carried from each series' first value."""
    meta = prepared.meta
    names, times, held, predicted, naive, scales = [], [], [], [], [], []
    for s in prepared.series:
        guess = forecast.one_step(
            model, s.values, s.normalizer, meta["difference"], features=s.features, known=s.known
        )
        if prepared.loss == "gaussian":
            scales.append(
                forecast.one_step_scale(
                    model,
                    s.values,
                    s.normalizer,
                    meta["difference"],
                    features=s.features,
                    known=s.known,
                )[s.start :]
            )
        names.append(s.name)
        times.append(s.times[s.start :])
        held.append(s.values[s.start :])
        predicted.append(guess[s.start :])
        naive.append(s.values[s.start - 1 : -1])

    def rmse(guesses):
        return math.sqrt(
            float(np.mean(np.concatenate([g - v for g, v in zip(guesses, held)]) ** 2))
        )

    coverage = None
    if scales:
        inside = [np.abs(v - p) <= BAND_80 * sd for v, p, sd in zip(held, predicted, scales)]
        coverage = float(np.mean(np.concatenate(inside)))
    return _HeldOut(
        names,
        times,
        held,
        predicted,
        naive,
        rmse(predicted),
        rmse(naive),
        scales or [None] * len(names),
        coverage,
    )


def _plot_held_out(held: _HeldOut, prepared, path):
    """forecast.png: the held-out data, the model's one-step predictions (its state carried from
    the first value) and the naive prediction (the last value), in the data's units; a panel per
    series (the first 12) when there are many, the RMSEs over all of them in the title."""

    def band(i, label):
        sd = held.scales[i]
        if sd is None:
            return []
        return [
            (
                held.times[i],
                held.predicted[i] - BAND_80 * sd,
                held.predicted[i] + BAND_80 * sd,
                label,
                dict(color="tab:blue", alpha=0.2, linewidth=0),
            )
        ]

    covers = "" if held.coverage_80 is None else f"; it holds {held.coverage_80:.1%} of the data"
    if len(held.names) == 1:
        forecast.plot(
            path,
            f"{prepared.meta['source']}: the held-out {held.values[0].size} steps",
            [
                (held.times[0], held.values[0], "data", dict(color="black", linewidth=1.2)),
                (
                    held.times[0],
                    held.predicted[0],
                    f"model, one step ahead (RMSE {held.rmse:.4g})",
                    dict(color="tab:blue", linewidth=1.2),
                ),
                (
                    held.times[0],
                    held.naive[0],
                    f"last value (RMSE {held.naive_rmse:.4g})",
                    dict(color="tab:orange", linewidth=1, linestyle="--"),
                ),
            ],
            bands=band(0, f"the model's 80% band{covers}"),
        )
        return
    panels = []
    for name, t, v, p, n in list(
        zip(held.names, held.times, held.values, held.predicted, held.naive)
    )[: forecast.PANELS]:
        i = held.names.index(name)
        panels.append(
            (
                name,
                [
                    (t, v, "data", dict(color="black", linewidth=1.2)),
                    (t, p, "model, one step ahead", dict(color="tab:blue", linewidth=1.2)),
                    (t, n, "last value", dict(color="tab:orange", linewidth=1, linestyle="--")),
                ],
                None,
                band(i, "80% band"),
            )
        )
    forecast.plot_panels(
        path,
        f"{prepared.meta['source']}: the held-out parts; RMSE over "
        f"every series: model, one step ahead {held.rmse:.4g}, last value "
        f"{held.naive_rmse:.4g}"
        + ("" if held.coverage_80 is None else f"; the 80% band holds {held.coverage_80:.1%}"),
        panels,
    )
