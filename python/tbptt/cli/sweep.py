"""`tbptt sweep`: the TBPTT configuration study (tbptt.sweep) from the shell, on a synthetic task
or on data read and split exactly as `tbptt train` does; prints the table and writes the rows
(tbptt.sweep_report) and the plots into a folder. Under MPI the ranks share the configurations
and rank 0 prints and writes."""

from __future__ import annotations

import builtins
import datetime
import os

from ..apps.sweep import sweep
from ..apps.sweep_report import plot_sweep, sweep_table, write_sweep
from ..model import MODELS
from ..optim import Adam
from ..trainer import BACKENDS
from . import _args, _data, _mpi
from ._data import TASK_SETTINGS, TASK_STEPS, TASK_VALID_STEPS

CLIP_NORM = 5.0  # as `tbptt train`
MAX_TASK_STEPS = 100_000  # a task's fresh data; a longer budget passes over them again


def add_parser(commands) -> None:
    p = commands.add_parser(
        "sweep",
        help="compare TBPTT(k1, k2) configurations on one task or data set",
        description="Train the same model (same seed, same data, same budget of steps) under a "
        "grid of (k1, k2) and reset policies; print the table and write sweep.json, "
        "sweep.csv, curves.png, heatmap.png and horizon.png into an output folder.",
        epilog="Example: tbptt sweep --task echo --delay 5 --k1 2,5,10 --k2 2,5,10 --steps 10000. "
        "Without --k2 each k1 runs as chunked TBPTT(k1, k1). Model and optimiser as "
        "`tbptt train` (Adam, clip 5, forget bias 1; defaults per kind of data).",
    )
    _args.add_data_arguments(p)
    p.add_argument(
        "--delay",
        type=_args.number(int, 0, strict=False),
        help=f"echo: the delay d (default {TASK_SETTINGS['echo']['delay']}); copy: blank "
        f"steps (default {TASK_SETTINGS['copy']['delay']})",
    )
    p.add_argument(
        "--length",
        type=_args.number(int, 1, strict=False),
        help=f"adding: sequence length (default {TASK_SETTINGS['adding']['length']}); "
        f"copy: symbols (default {TASK_SETTINGS['copy']['length']})",
    )
    p.add_argument(
        "--k1",
        type=_args.int_list,
        required=True,
        metavar="LIST",
        help="steps between updates, comma-separated (e.g. 5,10)",
    )
    p.add_argument(
        "--k2",
        type=_args.int_list,
        metavar="LIST",
        help="steps backpropagated, comma-separated (e.g. 5,10,20,40); every (k1, k2) "
        "pair runs (default: k2 = k1)",
    )
    p.add_argument(
        "--reset",
        type=_args.reset_list,
        default=["epoch"],
        metavar="LIST",
        help="state reset policies, comma-separated: epoch (each pass over the data, "
        "the default), never, or N (every N steps)",
    )
    p.add_argument(
        "--steps",
        type=_args.number(int, 0),
        metavar="N",
        help=f"time steps per configuration (default: one pass; tasks: "
        f"{TASK_STEPS:,} steps of fresh data)",
    )
    p.add_argument(
        "--points",
        type=_args.number(int, 0),
        default=20,
        help="points of each learning curve (default 20)",
    )
    p.add_argument("--hidden", type=_args.number(int, 0), help="hidden units per layer")
    p.add_argument(
        "--cell",
        choices=tuple(MODELS),
        default="lstm",
        help="the recurrent cell: lstm (default), gru or rnn (tanh)",
    )
    p.add_argument("--layers", type=_args.number(int, 0), default=1, help="layers (default 1)")
    p.add_argument("--batch", type=_args.number(int, 0), help="B, the number of parallel streams")
    p.add_argument("--lr", type=_args.number(float, 0), help="Adam's learning rate")
    p.add_argument("--threads", type=_args.number(int, 0), help="threads of the C++ engine")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="cpp",
        help="cpp (default, compiled) or numpy (the reference)",
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="every configuration with recompute (docs/semantics.md §3): where k2 > k1, "
        "exact gradients at k2 - k1 + 1 more forward steps per update",
    )
    p.add_argument("--seed", type=int, default=0, help="for the model and the tasks (default 0)")
    p.add_argument("--out", metavar="FOLDER", help="output folder (default runs/sweep-<timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run, subparser=p)


def run(args) -> int:
    """`tbptt sweep`: the defaults of the kind of data (as `tbptt train`), the data, the grid,
    then the table and the files."""
    comm = _mpi.world()
    rank = _mpi.rank(comm)
    say = builtins.print if rank == 0 else _mpi.quiet
    if args.column is not None and args.data is None:
        args.subparser.error("--column goes with --data FILE.csv")
    kind = _data.kind_of_data(args)
    for name, value in _data.DEFAULTS[kind].items():
        if hasattr(args, name) and getattr(args, name) is None:
            setattr(args, name, value)
    if args.threads is not None:
        from ..engines.threads import set_num_threads

        set_num_threads(args.threads)
    data, validation, source, steps = _data_of(args, kind)
    x = data.x if hasattr(data, "x") else data[0]
    _announce(args, source, x, steps, comm, say)
    _prepare_folder(args, comm)
    arrays = data if isinstance(data, tuple) else (data,)
    rows = sweep(
        *arrays,
        k1=args.k1,
        k2=args.k2,
        reset=args.reset,
        steps=steps,
        validation=validation,
        hidden=args.hidden,
        layers=args.layers,
        cell=args.cell,
        forget_bias=1.0,
        seed=args.seed,
        optimizer=Adam(args.lr),
        clip_norm=CLIP_NORM,
        backend=args.backend,
        recompute=args.recompute,
        points=args.points,
        progress=not args.no_progress,
        callback=_reporter(comm),
        comm=comm,
    )
    if rank == 0:
        _write(args, rows, source, steps or x.shape[0], say)
    return 0


def _data_of(args, kind: str) -> tuple:
    """(data, validation, source, steps): a task's fresh data for the budget, or the data of
    `tbptt train` (steps None: one pass)."""
    if kind not in ("echo", "adding", "copy"):
        prepared = _data.prepare(args, kind)
        return prepared.train, prepared.valid, prepared.meta["source"], args.steps
    steps = args.steps or TASK_STEPS
    T = min(steps, MAX_TASK_STEPS)
    if args.task == "echo":
        d = TASK_SETTINGS["echo"]["delay"] if args.delay is None else args.delay
        if d >= TASK_VALID_STEPS or d >= T:
            raise ValueError(
                f"--delay {d} must be below the steps of data ({min(T, TASK_VALID_STEPS)})"
            )
    if args.task == "adding" and args.length is not None and args.length < 2:
        raise ValueError(f"--length (adding's sequence length) must be >= 2, got {args.length}")
    train, valid = _data.task_sets(
        args.task, args.batch, args.seed, T, delay=args.delay, length=args.length
    )
    return train, valid, train.description, steps


def _announce(args, source: str, x, steps: int | None, comm, say) -> None:
    """The data and the grid, before anything is trained."""
    k2_text = "k2 = k1" if args.k2 is None else f"k2 in {args.k2}"
    say(f"data: {source}: {x.shape[0]:,} steps x {x.shape[1]} streams")
    say(
        f"grid: k1 in {args.k1}, {k2_text}, reset in {args.reset}; "
        f"{steps or x.shape[0]:,} steps each; {args.cell.upper()} {args.layers} x {args.hidden}, "
        f"Adam lr {args.lr:g}, clip 5{', forget bias 1' if args.cell == 'lstm' else ''}, "
        f"seed {args.seed}, {args.backend} backend"
    )
    if comm is not None:
        say(f"the {comm.Get_size()} MPI ranks share the configurations")


def _prepare_folder(args, comm) -> None:
    """args.out: given, or runs/sweep-<timestamp> (rank 0's); rank 0 creates it."""
    if args.out is None:
        args.out = os.path.join(
            "runs", "sweep-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        )
    if comm is not None:  # rank 0's time stamp
        args.out = comm.bcast(args.out, root=0)
    if _mpi.rank(comm) == 0:
        os.makedirs(args.out, exist_ok=True)


def _reporter(comm):
    """The sweep's callback: every rank reports the configurations it trains as they end."""
    who = "" if comm is None else f"[rank {comm.Get_rank()}] "

    def report(row: dict) -> None:
        builtins.print(
            f"  {who}TBPTT({row['k1']}, {row['k2']}) reset={row['reset']}: train loss "
            f"{row['train_loss']:.4f}"
            + (f", val loss {row['val_loss']:.4f}" if row["val_loss"] is not None else "")
            + (f", val acc {row['val_accuracy']:.3f}" if row["val_accuracy"] is not None else "")
            + f", {row['seconds']:.1f} s"
            + (", DIVERGED" if row["diverged"] else ""),
            flush=True,
        )

    return report


def _write(args, rows: list, source: str, steps: int, say) -> None:
    """The table on stdout; sweep.json, sweep.csv and the plots in args.out."""
    say()
    say(sweep_table(rows))
    settings = {
        name: getattr(args, name)
        for name in (
            "task",
            "data",
            "column",
            "delay",
            "length",
            "k1",
            "k2",
            "reset",
            "steps",
            "cell",
            "hidden",
            "layers",
            "batch",
            "lr",
            "backend",
            "seed",
            "recompute",
        )
    }
    settings.update(
        steps=steps,
        source=source,
        clip_norm=CLIP_NORM,
        optimizer="adam",
        **({"forget_bias": 1.0} if args.cell == "lstm" else {}),
    )
    written = write_sweep(rows, args.out, settings)
    try:
        written += plot_sweep(rows, args.out, title=source.split(";")[0])
    except ImportError as error:
        say(f"{error}: no plots")
    say(f"wrote {', '.join(written)}")
