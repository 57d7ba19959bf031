"""Progress of `Trainer.fit` and of the sweep: a redrawn tqdm bar on a terminal, a plain line every
few seconds when standard error goes to a file or a pipe (a redrawn bar would write a line per
block there, burying the per-epoch summaries, and fill a log with carriage returns).

Two kinds of count: `unit="sample"` counts samples out of `total` (the sweep: every configuration's
budget); `unit=None` counts a share of the whole run, from 0 to `total` = 1 (fit: the larger of
the share of its steps and of its time budget, as the learning-rate schedule sees it, so that
the bar reaches its end when the run does, whichever limit ends it)."""

from __future__ import annotations

import sys
import time
from typing import Optional

LINE_INTERVAL = 10.0  # seconds between two progress lines when stderr is not a terminal


def bar(total: float, enabled: bool = True, unit: Optional[str] = "sample"):
    """A progress display with the part of tqdm's interface fit and the sweep use:
    set_description, set_postfix_str, update, write, close."""
    if enabled and not _is_terminal(sys.stderr):
        return LineProgress(total, unit)
    from tqdm.auto import tqdm

    if unit is None:  # a share of the run: its percentage, elapsed time and time left
        return tqdm(
            total=total,
            disable=not enabled,
            dynamic_ncols=True,
            leave=False,
            bar_format="{desc}{percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
        )
    return tqdm(
        total=total,
        unit=unit,
        unit_scale=True,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
    )  # the lines written through it stay


def _is_terminal(stream):
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress:
    """tqdm's interface for a log: `update` prints one line when `LINE_INTERVAL` seconds have
    passed since the last line, e.g. "TBPTT(5, 10) reset=epoch: 45% (4,608/10,240 samples),
    12,345 samples/s" or, for a share of a run, "epoch 2/10 (110 s budget): 45% of the run,
    50 s elapsed, about 61 s left, loss 2.3151 bits/char, 12,345 samples/s"."""

    def __init__(self, total: float, unit: Optional[str] = "sample"):
        self.total, self.unit, self.description, self.postfix = total, unit, "", ""
        self.n: float = 0  # samples, or the share of the run
        self._start = self._last = time.monotonic()

    def set_description(self, description: str) -> None:
        self.description = description

    def set_postfix_str(self, postfix: str, refresh: bool = True) -> None:
        self.postfix = postfix

    def update(self, n: float) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= LINE_INTERVAL:
            self._last = now
            self.write(self._line(now))

    def _line(self, now: float) -> str:
        share = min(1.0, self.n / self.total) if self.total else 1.0
        seconds = now - self._start
        if self.unit is None:
            parts = [f"{self.description}: {share:.0%} of the run, {seconds:,.0f} s elapsed"]
            if 0 < share < 1:
                parts.append(f"about {seconds * (1 - share) / share:,.0f} s left")
        else:
            parts = [f"{self.description}: {share:.0%} ({self.n:,}/{self.total:,} {self.unit}s)"]
        if self.postfix:
            parts.append(self.postfix)
        if self.unit is not None and seconds > 0:
            parts.append(f"{self.n / seconds:,.0f} {self.unit}s/s")
        return ", ".join(parts)

    @staticmethod
    def write(text: str, file=None) -> None:
        print(text, file=sys.stderr if file is None else file, flush=True)

    def close(self) -> None:
        pass
