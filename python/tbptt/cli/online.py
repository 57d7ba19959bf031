"""`tbptt online`: learn a CSV stream's column line by line as it arrives (tbptt.online does
the work, with tbptt.river's learner)."""

from __future__ import annotations

import os
import sys

from ..model import MODELS
from . import _args, _folder


def add_parser(commands) -> None:
    online = commands.add_parser(
        "online",
        help="learn a CSV stream's column line by line as it arrives, printing "
        "predictions (tail -f log.csv | tbptt online --column load)",
        description="Learn a numeric column of a CSV stream online, one TBPTT(1, k2) update per "
        "line, reading each line as it arrives. Prints line,value,prediction,next "
        "(the prediction of the value made before reading it; the next value's, "
        "without --features). Bad values and a last line cut mid-way are reported "
        "on stderr and skipped. On exit (end of input, Ctrl-C) writes model.npz, "
        "online.npz (to resume from) and online.png into --out.",
    )
    online.add_argument(
        "data",
        metavar="FILE",
        nargs="?",
        default="-",
        help="a CSV file with a header line (default: standard input, '-')",
    )
    online.add_argument("--column", metavar="NAME", help="the column to learn and predict")
    online.add_argument(
        "--features",
        metavar="A,B",
        help="further columns the model reads (default: none, the column's own past only)",
    )
    online.add_argument("--hidden", type=_args.number(int, 0), help="hidden units (default 32)")
    online.add_argument(
        "--k2",
        type=_args.number(int, 0),
        help="steps each update backpropagates through (default 20)",
    )
    online.add_argument(
        "--lr", type=_args.number(float, 0), help="Adam's learning rate (default 3e-3)"
    )
    online.add_argument("--cell", choices=tuple(MODELS), help="lstm (default), gru or rnn")
    online.add_argument(
        "--no-recompute",
        dest="recompute",
        action="store_false",
        default=None,
        help="do not run the last k2 steps again with the new weights after each "
        "update (faster, less exact; docs/semantics.md §3)",
    )
    online.add_argument("--out", metavar="FOLDER", help="output folder (default runs/<timestamp>)")
    online.add_argument(
        "--resume",
        metavar="FOLDER",
        help="go on from the online.npz of an earlier `tbptt online` (its model and settings)",
    )
    online.add_argument("--quiet", action="store_true", help="no report of skipped lines on stderr")
    online.set_defaults(run=run, subparser=online)


_FLAGS = {"recompute": "--no-recompute"}  # flags not named after their setting


def run(args) -> int:
    from ..apps import online
    from ..apps.river import Regressor
    from ..apps.river import load as load_learner

    features = None if args.features is None else [f.strip() for f in args.features.split(",")]
    if args.resume is not None:
        refused = [
            flag
            for flag in ("hidden", "k2", "lr", "cell", "recompute")
            if getattr(args, flag) is not None
        ]
        if refused:
            args.subparser.error(
                f"--resume goes on with the learner's own settings: drop "
                f"{', '.join(_FLAGS.get(f, '--' + f) for f in refused)}"
            )
        learner = load_learner(
            os.path.join(args.resume, online.LEARNER) if os.path.isdir(args.resume) else args.resume
        )
        column = learner.target_name
        if args.column is not None and args.column != column:
            args.subparser.error(
                f"--resume: the learner learnt column {column!r}, not {args.column!r}"
            )
        if features is None:
            features = list(learner.keys_ or ())
    else:
        if args.column is None:
            args.subparser.error("--column NAME is required: the CSV column to learn")
        column = args.column
        settings = {
            "hidden": "hidden_size",
            "k2": "k2",
            "lr": "lr",
            "cell": "cell",
            "recompute": "recompute",
        }
        learner = Regressor(
            **{
                name: getattr(args, flag)
                for flag, name in settings.items()
                if getattr(args, flag) is not None
            }
        )
        learner.target_name = column
    folder = _folder.output_folder(args.out)
    say = (
        (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    )
    if args.data == "-":
        return online.run(sys.stdin, sys.stdout, column, features, learner, folder, say)
    with open(args.data, newline="", encoding="utf-8") as stream:
        return online.run(stream, sys.stdout, column, features, learner, folder, say)
