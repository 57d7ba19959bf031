"""Datasets shipped with tbptt: three small real series and three synthetic memory tasks.

Real data (files inside this package; sources and licences in ``PROVENANCE.md``):

* :func:`shakespeare` -- Tiny Shakespeare, 1,115,394 characters, for character-level language
  models;
* :func:`co2` -- weekly CO2 at Mauna Loa, 1958-03-29 to 2001-12-29, 2,284 weeks;
* :func:`sunspots` -- yearly sunspot activity, 1700 to 2008, 309 years.

Use :mod:`tbptt.data` (``Vocabulary``, ``Normalizer``, ``batchify``, ``next_step``) to turn them
into training arrays.

Synthetic tasks (:func:`echo`, :func:`adding`, :func:`copy`) return a :class:`Task`: time-major
``x``, ``y``, ``mask``, ``resets`` for B streams of T steps, with the loss and the sizes to build
the model from::

    task = tbptt.datasets.echo(T=100_000, B=32, delay=20)
    model = tbptt.LSTM(task.input_size, 64, task.output_size, forget_bias=1.0)
    trainer = tbptt.Trainer(model, k1=25, k2=50, loss=task.loss, optimizer=tbptt.Adam(1e-3))
    losses = trainer.train(task.x, task.y, task.mask, task.resets)

Every task draws from ``numpy.random.default_rng(seed)``: the same arguments give the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Optional

import numpy as np

__all__ = ["shakespeare", "co2", "sunspots", "Task", "echo", "adding", "copy"]


# --------------------------------------------------------------------------------------------------
# Real data


def _read(name):
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def _csv(name, header):
    """The rows of a two-column CSV file with the given header, as a list of (str, str)."""
    lines = _read(name).splitlines()
    if lines[0].strip() != header:
        raise RuntimeError(f"{name}: expected the header {header!r}, got {lines[0]!r}")
    return [tuple(line.split(",")) for line in lines[1:] if line.strip()]


def shakespeare():
    """Tiny Shakespeare (char-rnn's ``input.txt``): one ``str`` of 1,115,394 ASCII characters,
    65 distinct."""
    return _read("tinyshakespeare.txt")


def co2(fill="interpolate"):
    """Weekly atmospheric CO2 at Mauna Loa (Keeling & Whorf), 1958-03-29 to 2001-12-29.

    Args:
        fill: what to do with the 59 missing weeks (the longest gap is 18 weeks; the first and last
            weeks are known). ``"interpolate"`` (default): linear interpolation in time between the
            nearest known weeks. ``None``: leave them NaN.

    Returns:
        ``(dates, ppm)``: ``(2284,)`` ``datetime64[D]`` week dates (every 7 days) and ``(2284,)``
        float64 CO2 mole fractions in ppm.
    """
    if fill not in ("interpolate", None):
        raise ValueError(f"fill must be 'interpolate' or None, got {fill!r}")
    rows = _csv("co2_mauna_loa_weekly.csv", "week,co2")
    dates = np.array([week for week, _ in rows], dtype="datetime64[D]")
    ppm = np.array([float(value) if value.strip() else np.nan for _, value in rows])
    if fill == "interpolate":
        days, missing = dates.astype(np.int64), np.isnan(ppm)
        ppm[missing] = np.interp(days[missing], days[~missing], ppm[~missing])
    return dates, ppm


def sunspots():
    """Yearly sunspot activity (Wolf/Zurich numbers), 1700 to 2008.

    Returns:
        ``(years, activity)``: ``(309,)`` int64 years and ``(309,)`` float64 activity.
    """
    rows = _csv("sunspots_yearly.csv", "YEAR,SUNACTIVITY")
    years = np.array([int(float(year)) for year, _ in rows], dtype=np.int64)
    activity = np.array([float(value) for _, value in rows])
    return years, activity


# --------------------------------------------------------------------------------------------------
# Synthetic memory tasks


@dataclass(frozen=True, eq=False)
class Task:
    """A synthetic task: time-major training arrays for B streams of T steps, and how to learn them.

    Attributes:
        x: ``(T, B)`` int64 token ids in ``[0, input_size)``, or ``(T, B, input_size)`` float64.
        y: ``(T, B)`` int64 class ids in ``[0, output_size)`` for ``loss="cross_entropy"``, or
            ``(T, B, output_size)`` float64 for ``loss="mse"``. Values where ``mask`` is 0 are
            placeholders (0).
        mask: ``(T, B)`` float64, 1.0 where the loss counts, 0.0 elsewhere.
        resets: ``(T, B)`` bool, True at the first step of each sequence/episode (all streams share
            the boundaries), or None for a task that is one unbroken stream.
        loss: ``"cross_entropy"`` or ``"mse"``, for ``tbptt.Trainer(..., loss=task.loss)``.
        input_size, output_size: for ``tbptt.LSTM(task.input_size, H, task.output_size)``.
        description: one line: what is to be learned, and the loss of a model without memory.
    """

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    resets: Optional[np.ndarray]
    loss: str
    input_size: int
    output_size: int
    description: str

    def __repr__(self):
        shapes = ", ".join(
            f"{name}={None if a is None else a.shape}"
            for name, a in (
                ("x", self.x),
                ("y", self.y),
                ("mask", self.mask),
                ("resets", self.resets),
            )
        )
        return (
            f"Task({shapes}, loss={self.loss!r}, input_size={self.input_size}, "
            f"output_size={self.output_size}, description={self.description!r})"
        )


def _int_at_least(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def echo(T, B, delay, seed=0, num_symbols=2):
    """Delayed echo: output the token that was input ``delay`` steps earlier, on one unbroken
    stream.

    ``x[t, b]`` are i.i.d. uniform tokens in ``[0, num_symbols)``; ``y[t] = x[t - delay]`` for
    ``t >= delay``, where ``mask`` is 1 (before that, ``y = 0`` and ``mask = 0``). A model needs a
    memory of ``delay`` steps: TBPTT(k1, k2) can learn it only with ``k2 > delay``, and an LSTM
    needs ``forget_bias=1.0`` for long delays (docs/semantics.md §2). Without memory the best is
    chance: accuracy ``1/num_symbols``, cross-entropy ``log(num_symbols)``.

    Args:
        T, B: time steps (> delay) and streams (>= 1).
        delay: d >= 0.
        seed: for ``numpy.random.default_rng``.
        num_symbols: vocabulary size (>= 2): ``input_size = output_size = num_symbols``.

    Returns:
        :class:`Task` with int64 ``x``, ``y`` ``(T, B)``, float64 ``mask``, ``resets=None``,
        ``loss="cross_entropy"``.
    """
    T, B = _int_at_least("T", T, 1), _int_at_least("B", B, 1)
    delay = _int_at_least("delay", delay, 0)
    num_symbols = _int_at_least("num_symbols", num_symbols, 2)
    if delay >= T:
        raise ValueError(f"delay must be < T={T} (else no step carries loss), got {delay}")
    x = np.random.default_rng(seed).integers(0, num_symbols, size=(T, B), dtype=np.int64)
    y = np.zeros_like(x)
    y[delay:] = x[: T - delay]
    mask = np.zeros((T, B))
    mask[delay:] = 1.0
    return Task(
        x,
        y,
        mask,
        None,
        "cross_entropy",
        num_symbols,
        num_symbols,
        f"echo: predict the token seen {delay} steps earlier; {num_symbols} symbols, chance "
        f"accuracy 1/{num_symbols}, cross-entropy log({num_symbols}) = {np.log(num_symbols):.4f}",
    )


def adding(T, B, seq_len, seed=0):
    """The adding problem (Hochreiter & Schmidhuber 1997; as in Le et al. 2015, Arjovsky et al.
    2016), as a stream of back-to-back sequences of ``seq_len`` steps.

    At each step the input is ``(value, marker)``: value uniform in ``[0, 1)``, marker 0 or 1. Each
    sequence has exactly two markers, one uniform in its first half ``[0, seq_len // 2)`` and one in
    its second half. At the sequence's last step the target is the sum of the two marked values;
    that is the only step with ``mask = 1`` (``y = 0`` elsewhere). ``resets`` is True at each
    sequence's first step. A trailing partial sequence (when ``seq_len`` does not divide T) carries
    no loss. Always answering 1.0 gives MSE 1/6 ~ 0.167, the no-memory baseline.

    Args:
        T, B: time steps and streams (>= 1).
        seq_len: length of one sequence (>= 2).
        seed: for ``numpy.random.default_rng``.

    Returns:
        :class:`Task` with ``x`` ``(T, B, 2)`` float64, ``y`` ``(T, B, 1)`` float64, float64
        ``mask``, bool ``resets``, ``loss="mse"``, ``input_size=2``, ``output_size=1``.
    """
    T, B = _int_at_least("T", T, 1), _int_at_least("B", B, 1)
    seq_len = _int_at_least("seq_len", seq_len, 2)
    rng = np.random.default_rng(seed)
    n, half = -(-T // seq_len), seq_len // 2
    values = rng.random((n, seq_len, B))
    marked = np.stack(
        [rng.integers(0, half, size=(n, B)), rng.integers(half, seq_len, size=(n, B))], axis=1
    )  # (n, 2, B) positions
    markers = np.zeros((n, seq_len, B))
    np.put_along_axis(markers, marked, 1.0, axis=1)
    y = np.zeros((n, seq_len, B))
    y[:, -1] = np.take_along_axis(values, marked, axis=1).sum(axis=1)
    mask, resets = np.zeros((n, seq_len, B)), np.zeros((n, seq_len, B), dtype=bool)
    mask[:, -1], resets[:, 0] = 1.0, True

    def steps(a):  # (n, seq_len, B, ...) -> (T, B, ...)
        return np.ascontiguousarray(a.reshape(n * seq_len, *a.shape[2:])[:T])

    x = np.stack([steps(values), steps(markers)], axis=-1)
    return Task(
        x,
        steps(y)[..., None],
        steps(mask),
        steps(resets),
        "mse",
        2,
        1,
        f"adding: at the last step of each {seq_len}-step sequence, output the sum of the two "
        f"marked values; no-memory MSE 1/6 = 0.1667",
    )


def copy(T, B, num_symbols=8, length=10, seed=0, delay=10):
    """The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016) as a stream of episodes.

    Token ids: symbols ``0 .. num_symbols-1``, blank ``num_symbols``, delimiter ``num_symbols + 1``.
    One episode is ``2 * length + delay + 1`` steps; its inputs are::

        s_1 .. s_length | blank x delay | delimiter | blank x length
                                                      ^ recall steps: y = s_1 .. s_length, mask 1

    with the ``s_i`` uniform over the symbols. Only the recall steps carry loss (``y = 0`` and
    ``mask = 0`` elsewhere), so the output classes are the symbols alone. ``resets`` is True at each
    episode's first step; episodes follow each other in every stream, all streams in phase, and the
    last one is cut at T (its recall steps inside T keep their loss). The model must hold the
    sequence for ``length + delay + 1`` steps; without memory it does no better than chance,
    cross-entropy ``log(num_symbols)``.

    Args:
        T, B: time steps and streams (>= 1).
        num_symbols: distinct symbols (>= 2); ``input_size = num_symbols + 2``,
            ``output_size = num_symbols``.
        length: symbols per episode (>= 1).
        seed: for ``numpy.random.default_rng``.
        delay: blank steps between the sequence and the delimiter (>= 0).

    Returns:
        :class:`Task` with int64 ``x``, ``y`` ``(T, B)``, float64 ``mask``, bool ``resets``,
        ``loss="cross_entropy"``.
    """
    T, B = _int_at_least("T", T, 1), _int_at_least("B", B, 1)
    num_symbols = _int_at_least("num_symbols", num_symbols, 2)
    length = _int_at_least("length", length, 1)
    delay = _int_at_least("delay", delay, 0)
    blank, delimiter = num_symbols, num_symbols + 1
    period = 2 * length + delay + 1
    n, recall = -(-T // period), length + delay + 1
    sequence = np.random.default_rng(seed).integers(
        0, num_symbols, size=(n, length, B), dtype=np.int64
    )
    x = np.full((n, period, B), blank, dtype=np.int64)
    x[:, :length], x[:, recall - 1] = sequence, delimiter
    y = np.zeros((n, period, B), dtype=np.int64)
    y[:, recall:] = sequence
    mask, resets = np.zeros((n, period, B)), np.zeros((n, period, B), dtype=bool)
    mask[:, recall:], resets[:, 0] = 1.0, True

    def steps(a):  # (n, period, B) -> (T, B)
        return np.ascontiguousarray(a.reshape(n * period, B)[:T])

    return Task(
        steps(x),
        steps(y),
        steps(mask),
        steps(resets),
        "cross_entropy",
        num_symbols + 2,
        num_symbols,
        f"copy: reproduce {length} symbols (of {num_symbols}) after the delimiter, "
        f"{length + delay + 1} steps later; chance cross-entropy log({num_symbols}) = "
        f"{np.log(num_symbols):.4f}",
    )
