"""The `tbptt` command: train a recurrent model with TBPTT(k1, k2) on built-in or your own data,
sample from it, and describe the files it wrote.

    tbptt train                              char-level GRU on Shakespeare, a 110 s budget
    tbptt train --data notes.txt             your text
    tbptt train --data log.csv --column load next-step prediction of a numeric column (MSE)
    tbptt train --task echo|adding|copy|co2|sunspots
    tbptt train --resume runs/<stamp> --epochs 20   go on with a run that stopped (or ended)
    tbptt forecast runs/<stamp> --steps 52    a numeric series' next 52 values (CSV and a PNG)
    tbptt backtest runs/<stamp> --horizon 4   rolling-origin MAE/RMSE/MASE against naive forecasts
    tbptt generate runs/<stamp> --prime "ROMEO:" --length 500
    tbptt info runs/<stamp>
    tail -f log.csv | tbptt online --column load   learn a live stream, one update per line
    tbptt sweep --task echo --k1 5,10 --k2 5,10,20,40   compare TBPTT configurations (tbptt.sweep)

Under an MPI launcher with more than one rank (`mpiexec -n 4 python -m mpi4py -m tbptt train ...`,
or `srun`), `train` is data-parallel: the --batch streams are split over the ranks, every rank
trains its share of one model (Trainer(comm=...)), rank 0 prints and writes the files (every
rank writes its own trainer state beside trainer.npz); `sweep` spreads the grid's configurations
over the ranks and rank 0 writes the table and the plots. This needs mpi4py (tbptt[mpi]).

It is a thin layer over the library (tbptt.data, Trainer.fit, tbptt.generate, tbptt.sweep); it
adds no training logic of its own. One module per command (train, generate, forecast, backtest,
online, info, sweep, bench), each with `add_parser(commands)` and `run(args)`; `_args` holds the
shared argparse types and options, `_data` the defaults per kind of data and the data's preparation,
`_folder` the run folder's files, `_mpi` the MPI launcher's world. The model file it writes is
a normal tbptt model file (tbptt.load reads it) whose header also holds what `generate` and
`info` need: the vocabulary or the normalisation, the settings and the results.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import backtest, bench, forecast, generate, info, online, sweep, train
from ._data import BadInput

COMMANDS = (train, generate, forecast, backtest, online, info, sweep, bench)  # in --help's order


def _parser() -> argparse.ArgumentParser:
    """`tbptt`'s parser: one subparser per command, whose `run` is set as args.run."""
    parser = argparse.ArgumentParser(
        prog="tbptt",
        description="Train LSTMs, GRUs and Elman RNNs "
        "with Truncated Backpropagation Through Time, TBPTT(k1, k2), "
        "on CPUs.",
    )
    parser.add_argument("--version", action="version", version=f"tbptt {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list | None = None) -> int:
    """Entry point of the `tbptt` command. Bad flags exit 2 with usage, bad input data (a column
    not in the file, a value that is not a number, a series too short) 2 with one line; a file
    that cannot be read or data that cannot be used prints the reason and returns 1; Ctrl-C
    during training saves what there is and returns 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return bench.run(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except BadInput as error:
        print(f"tbptt {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError, ImportError) as error:
        print(f"tbptt {args.command}: error: {error}", file=sys.stderr)
        return 1
