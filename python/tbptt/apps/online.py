"""`tbptt online`: learn a numeric column of a CSV stream as its lines arrive, one TBPTT(1, k2)
update per line (tbptt.river.Regressor), printing each prediction.

    tail -f log.csv | tbptt online --column load

Input: a header line naming the columns, then one line per sample. Each line is read as soon as
it arrives (nothing is read ahead), so a live pipe gets its prediction at once. Output on stdout,
one CSV row per line used: `line,value,prediction,next`: the value read, the prediction of it
made before it was read, and (univariate streams) the prediction of the next value.

Bad lines never stop the stream: a value that is empty, not a number, NaN or infinite, a line
with the wrong number of fields and a last line cut mid-way (no newline at the end of the input)
are reported on stderr ("line 7: ...: skipped") and skipped; the model does not step. A header
without the column, or a feature named by --features that is missing, is refused at once.

On exit (end of input, Ctrl-C, a closed stdout) it writes into the output folder: model.npz (a
tbptt model file), online.npz (the learner: `tbptt online --resume FOLDER` or
`tbptt.river.load` go on from it exactly) and online.png (data and predictions of the last
PLOT_POINTS lines, and the running mean absolute error of the learner and of the last value).
Memory stays flat: only the running error sums and the last PLOT_POINTS lines are kept.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import math
import os
import signal
import sys
import threading

from .._files import atomic_write

PLOT_POINTS = 10_000
MODEL, LEARNER, PLOT = "model.npz", "online.npz", "online.png"


class Skip(Exception):
    """A line that cannot be used: the message says why."""


def lines(stream, first=2):
    """(number, text, complete) for each line of `stream` as it arrives, numbered from `first`
    (line 1 is the header); complete is False for a last line without its newline."""
    for number, line in enumerate(iter(stream.readline, ""), start=first):
        complete = line.endswith("\n")
        yield number, line.rstrip("\r\n"), complete


def parse(text, complete, fields, column, features):
    """The (value, {feature: value}) of one data line; raises Skip with the reason."""
    if not complete:
        raise Skip("cut mid-way (no newline at the end of the input)")
    row = next(csv.reader([text]), [])
    if len(row) != len(fields):
        raise Skip(f"expected {len(fields)} fields, got {len(row)}")
    cells = dict(zip(fields, row))
    return _value(column, cells[column]), {f: _value(f, cells[f]) for f in features}


def _value(name, cell):
    cell = cell.strip()
    if not cell:
        raise Skip(f"{name!r} is empty")
    try:
        value = float(cell)
    except ValueError:
        raise Skip(f"{name!r} is {cell!r}, not a number") from None
    if not math.isfinite(value):
        raise Skip(f"{name!r} is {cell}, not a finite number")
    return value


class Record:
    """The running errors of the learner and of the last value, and the last PLOT_POINTS lines
    for the picture: memory bounded however long the stream."""

    def __init__(self):
        self.used = self.skipped = self.scored = 0
        self.abs_error = self.sq_error = self.last_abs_error = 0.0
        self.last = None
        self.points: collections.deque = collections.deque(
            maxlen=PLOT_POINTS
        )  # (line, value, prediction, mae, last mae)

    def add(self, line, value, prediction):
        """Score `prediction`, made before `value` (input line `line`) arrived, and the last
        value."""
        self.used += 1
        if self.last is None:  # the first value has no prediction worth scoring or drawing
            self.last = value
            self.points.append((line, value, math.nan, math.nan, math.nan))
            return
        self.scored += 1
        self.abs_error += abs(value - prediction)
        self.sq_error += (value - prediction) ** 2
        self.last_abs_error += abs(value - self.last)
        self.last = value
        n = self.scored
        self.points.append((line, value, prediction, self.abs_error / n, self.last_abs_error / n))

    def summary(self):
        """One line: values used, lines skipped, and the MAE and RMSE against the last value's."""
        if not self.scored:
            return f"{self.used} values used, {self.skipped} lines skipped"
        n = self.scored
        return (
            f"{self.used} values used, {self.skipped} lines skipped; MAE {self.abs_error / n:.4g}, "
            f"RMSE {math.sqrt(self.sq_error / n):.4g} (predicting the last value: MAE "
            f"{self.last_abs_error / n:.4g})"
        )


def run(stream, out, column, features, learner, folder, say):
    """Learn `column` of the CSV `stream` line by line with `learner`; write the files into
    `folder` at the end. Returns the exit status: 0, or 130 after Ctrl-C."""
    record, status = Record(), 0
    try:
        try:
            fields = _header(stream, column, features)
            if features is None:
                features = ()
            out.write("line,value,prediction,next\n")
            out.flush()
            with _interruptible_between_steps() as step:
                for number, text, complete in lines(stream):
                    try:
                        value, x = parse(text, complete, fields, column, features)
                    except Skip as reason:
                        record.skipped += 1
                        say(f"line {number}: {reason}: skipped")
                        continue
                    with step:  # Ctrl-C waits for the learner's step to end
                        prediction = learner.predict_one(x)
                        learner.learn_one(x, value)
                        record.add(number, value, prediction)
                        following = f"{learner.predict_one({}):.6g}" if not features else ""
                    out.write(f"{number},{value:.6g},{prediction:.6g},{following}\n")
                    out.flush()
        except KeyboardInterrupt:
            status = 130
        except BrokenPipeError:  # stdout closed (`| head`): stop reading, keep what was learnt
            sys.stdout = open(os.devnull, "w")
    finally:
        say(record.summary())
        if record.used:
            _write(folder, learner, record, column, say)
    return status


class _Step:
    """`with step:` marks a learner's step: a Ctrl-C inside it is raised when it ends, so the
    learner is never saved half-way through a sample; outside it (waiting for a line) at once."""

    def __init__(self):
        self.busy = self.pending = False

    def __enter__(self):
        self.busy = True

    def __exit__(self, *exc):
        self.busy = False
        if self.pending:
            raise KeyboardInterrupt

    def handler(self, signum, frame):
        if not self.busy:
            raise KeyboardInterrupt
        self.pending = True


@contextlib.contextmanager
def _interruptible_between_steps():
    step = _Step()
    if threading.current_thread() is not threading.main_thread():
        yield step
        return
    previous = signal.signal(signal.SIGINT, step.handler)
    try:
        yield step
    finally:
        signal.signal(signal.SIGINT, previous)


def _header(stream, column, features):
    """The column names of the header line; ValueError if it lacks the column or a feature."""
    first = stream.readline()
    if not first:
        raise ValueError("the input is empty: expected a header line naming the columns")
    fields = [f.strip() for f in next(csv.reader([first.rstrip("\r\n")]), [])]
    for name in (column, *(features or ())):
        if name not in fields:
            raise ValueError(f"the header has no column {name!r} (columns: {', '.join(fields)})")
    return fields


def _write(folder, learner, record, column, say):
    os.makedirs(folder, exist_ok=True)
    learner.trainer_.model.save(os.path.join(folder, MODEL))
    learner.save(os.path.join(folder, LEARNER))
    written = [MODEL, LEARNER]
    try:
        _plot(os.path.join(folder, PLOT), record, column)
        written.append(PLOT)
    except ImportError:
        say(f"matplotlib is not installed: no {PLOT} (pip install tbptt[plot])")
    say(f"wrote {', '.join(written)} to {folder}")


def _plot(path, record, column):
    from matplotlib.figure import Figure  # ImportError without matplotlib

    line, value, prediction, mae, last_mae = zip(*record.points)
    fig = Figure(figsize=(9, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    top.plot(line, value, color="black", linewidth=1, label=column)
    top.plot(
        line, prediction, color="tab:red", linewidth=1, label="prediction (made before the value)"
    )
    top.set_ylabel(column)
    top.legend()
    top.set_title(f"tbptt online: the last {len(line):,} of {record.used:,} values")
    bottom.plot(line, mae, color="tab:red", label="tbptt")
    bottom.plot(line, last_mae, color="gray", linestyle="--", label="the last value")
    bottom.set_ylabel("running MAE")
    bottom.set_xlabel("line")
    bottom.legend()
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
