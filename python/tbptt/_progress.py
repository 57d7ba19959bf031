"""Progress of `Trainer.fit`: a redrawn tqdm bar on a terminal, a plain line every few seconds
when standard error goes to a file or a pipe (a redrawn bar would write a line per block there,
burying the per-epoch summaries)."""

from __future__ import annotations

import sys
import time

LINE_INTERVAL = 10.0  # seconds between two progress lines when stderr is not a terminal


def bar(total, enabled=True):
    """A progress display for one epoch of `total` samples, with the part of tqdm's interface fit
    uses: reset, set_description, set_postfix, update, write, close."""
    if enabled and not _is_terminal(sys.stderr):
        return LineProgress(total)
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="sample", unit_scale=True, disable=not enabled,
                dynamic_ncols=True, leave=False)  # one epoch; a line per epoch stays


def _is_terminal(stream):
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress:
    """tqdm's interface for a log: `update` prints one line when `LINE_INTERVAL` seconds have
    passed since the last line, e.g. "epoch 2/10: 45% (4,608/10,240 samples), loss 0.6931,
    12,345 samples/s" (the rate since the epoch began)."""

    def __init__(self, total):
        self.total, self.n, self.description, self.postfix = total, 0, "", {}
        self._start = self._last = time.monotonic()

    def reset(self):
        self.n, self._start = 0, time.monotonic()

    def set_description(self, description):
        self.description = description

    def set_postfix(self, postfix, refresh=True):
        self.postfix = dict(postfix)

    def update(self, n):
        self.n += n
        now = time.monotonic()
        if now - self._last >= LINE_INTERVAL:
            self._last = now
            self.write(self._line(now))

    def _line(self, now):
        share = self.n / self.total if self.total else 1.0
        parts = [f"{self.description}: {share:.0%} ({self.n:,}/{self.total:,} samples)"]
        parts += [f"{name} {value}" for name, value in self.postfix.items()]
        seconds = now - self._start
        if seconds > 0:
            parts.append(f"{self.n / seconds:,.0f} samples/s")
        return ", ".join(parts)

    @staticmethod
    def write(text, file=None):
        print(text, file=sys.stderr if file is None else file, flush=True)

    def close(self):
        pass
