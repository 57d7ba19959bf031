"""The argparse types and options that several commands share."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

TASKS = ("echo", "adding", "copy", "co2", "sunspots")


def probability(text: str) -> float:
    """An argparse type: a float in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def number(kind: type, minimum: float, strict: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite `kind` above `minimum` (or at least it, when not strict)."""

    def parse(text):
        value = kind(text)
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {relation} {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def int_list(text: str) -> list:
    """An argparse type: comma-separated integers >= 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def reset_list(text: str) -> list:
    """An argparse type: comma-separated reset policies (epoch, never, N >= 1)."""
    policies: list = []
    for v in (v.strip() for v in text.split(",") if v.strip()):
        if v in ("epoch", "never"):
            policies.append(v)
        elif v.isdigit() and int(v) >= 1:
            policies.append(int(v))
        else:
            raise argparse.ArgumentTypeError(
                f"reset policies are epoch, never or N >= 1, got {v!r}"
            )
    if not policies:
        raise argparse.ArgumentTypeError("give at least one reset policy")
    return policies


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data options of `tbptt train` and `tbptt sweep`."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data",
        metavar="FILE",
        help="a text file (character-level model), or a "
        "CSV file with --column (next-step prediction, MSE)",
    )
    source.add_argument("--task", choices=TASKS, help="a built-in task instead of Shakespeare")
    parser.add_argument("--column", metavar="NAME", help="the CSV column to model (with --data)")
    parser.add_argument(
        "--diff",
        action=argparse.BooleanOptionalAction,
        help="model a numeric "
        "series' changes rather than its values (for a trend; default: on for co2)",
    )
    parser.add_argument(
        "--time",
        metavar="COLUMN",
        help="the CSV column of the data's times "
        "(dates or numbers; default: a column named date, time, year, ... or "
        "holding ISO dates, else the row numbers): the forecasts, CSVs and "
        "pictures use them",
    )
    parser.add_argument(
        "--features",
        metavar="A,B,...",
        help="CSV columns of covariates observed "
        "alongside the target, standardised like it: the input that predicts a "
        "step holds them as of the step before, with the target",
    )
    parser.add_argument(
        "--known",
        metavar="A,...",
        help="CSV columns of covariates known in "
        "advance (a calendar, a price plan): the input that predicts a step "
        "holds their value at that step; a forecast reads them from --future",
    )
    parser.add_argument(
        "--series",
        metavar="ID",
        help="a long-format CSV: the column naming "
        "the series; one network models every series, each standardised by its "
        "own training part, packed into the --batch streams with a reset at "
        "each one's start",
    )
    parser.add_argument(
        "--embed-series",
        action="store_const",
        const=True,
        help="with "
        "--series: give the network each series' identity (one input per "
        "series, 1 for its own: the first layer's weights on it are a learned "
        "embedding)",
    )
