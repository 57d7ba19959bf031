"""Numeric tables from CSV files, for forecasting: the columns of one or many series (a long
format with a column naming the series), their times (dates or numbers, from a column named
or found by itself), covariates, gaps filled. What `tbptt train --data FILE.csv` and
tbptt.forecast.load read."""

from __future__ import annotations

import csv
import math
import re

import numpy as np


class BadInput(ValueError):
    """Data the command cannot use (a column not in the file, a value that is not a number, a
    series too short): one line on stderr and exit status 2, nothing written. A ValueError, as
    the library raises."""


# A column is taken for the data's times (when --time does not name one) if its name is one of
# these, or its first value looks like an ISO date (2001-12-29, 2001-12, 2001-12-29 10:00).


TIME_NAMES = (
    "date",
    "time",
    "timestamp",
    "datetime",
    "ds",
    "year",
    "month",
    "week",
    "day",
    "period",
)
ISO_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?)?$")


def columns_of(path):
    """The names in the header row of a CSV file."""
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def read_table(path, column, covariates=(), series=None, time=None, least=20):
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
            raise BadInput(
                f"{path} is a CSV file: choose the column to model (columns: {', '.join(columns)})"
            )
        for name in [column, *covariates, series, time]:
            if name is not None and name not in columns:
                raise BadInput(f"{path} has no column {name!r} (columns: {', '.join(columns)})")
        found = time is None
        if found:
            time = time_column(path, columns, {column, series, *covariates})
        numeric = [column, *covariates]
        groups: dict = {}  # series name -> (rows, time cells, line numbers)
        for line, row in enumerate(reader, start=2):
            cells = []
            for name in numeric:
                cell = (row[name] or "").strip()
                try:
                    cells.append(float(cell) if cell else math.nan)
                except ValueError:
                    raise BadInput(
                        f"{path}, line {line}: column {name!r} holds {cell!r}, not a number"
                    ) from None
            key = "" if series is None else (row[series] or "").strip()
            group = groups.setdefault(key, ([], [], []))
            group[0].append(cells)
            group[1].append((row[time] or "").strip() if time is not None else None)
            group[2].append(line)
    if not groups:
        raise BadInput(f"{path} holds no rows of data")
    times_of = {
        key: _times(path, time, group[1], group[2], found) if time is not None else None
        for key, group in groups.items()
    }
    if found and any(t is None for t in times_of.values()):
        times_of = dict.fromkeys(groups)  # a column that only looked like times
    return [
        _one_series(path, key, rows, times_of[key], column, covariates, series, time, least)
        for key, (rows, _, _) in groups.items()
    ]


def _one_series(path, key, rows, times, column, covariates, series, time, least):
    """(name, times, values, covariates) of one series' rows, sorted by time, gaps filled."""
    numeric = [column, *covariates]
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(numeric))
    if times is None:
        times = np.arange(len(rows))
    else:
        order = np.argsort(times, kind="stable")
        times, table = times[order], table[order]
        same = np.flatnonzero(times[1:] == times[:-1])
        if same.size:
            where = f"series {key!r}: " if series is not None else ""
            hint = "" if series is not None else "; many series in one file? --series ID"
            raise BadInput(
                f"{path}: {where}the time {times[same[0]]} appears twice (column {time!r}{hint})"
            )
    name = f"series {key!r}" if series is not None else f"column {column!r}"
    counted = int((~np.isnan(table[:, 0])).sum())
    if counted < least:
        raise BadInput(
            f"{path}: {name} has {counted} numeric value(s) of {column!r}: too "
            f"short, at least {least} are needed (90% to train on, 10% held out)"
        )
    if least:
        table = np.column_stack(
            [_fill(path, name, numeric[i], table[:, i]) for i in range(len(numeric))]
        )
    return key, times, table[:, 0], table[:, 1:] if covariates else None


def _fill(path, name, column, values):
    """`values` with their gaps (NaN) filled linearly (the ends by the nearest value)."""
    known = ~np.isnan(values)
    if not known.any():
        raise BadInput(f"{path}: {name} has no numeric value in column {column!r}")
    index = np.arange(values.size)
    return np.interp(index, index[known], values[known])


def time_column(path, columns, used):
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
            raise BadInput(
                f"{path}, line {line}: column {column!r} holds {cell!r}, not a time "
                f"(a number, or a date as 2001-12-29)"
            ) from None
    raise BadInput(f"{path}: column {column!r} mixes kinds of times")
