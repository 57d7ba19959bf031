"""Preparing data for TBPTT: long series cut into parallel streams, time-major.

The trainer consumes time-major arrays (docs/semantics.md §1):

* ``x``: ``(T, B, I)`` float features, or ``(T, B)`` integer token ids (one-hot of size ``input_size``);
* ``y``: ``(T, B, O)`` floats for ``loss="mse"``, ``(T, B)`` integer class ids for ``"cross_entropy"``;
* ``mask``, ``resets``: ``(T, B)``.

Column ``b`` of every array is one *stream*: a long sequence that continues from one ``train`` call to
the next. A typical pipeline for one long series (a text, a sensor recording)::

    vocab = Vocabulary(text)
    train_text, valid_text = split(text, 0.9)
    x, y = next_step(batchify(vocab.encode(train_text), num_streams=32))     # (T-1, 32) each
    for xc, yc, mask, resets in chunks(x, y, size=1000):
        trainer.train(xc, yc, mask, resets)

Everything here is plain NumPy.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from ._checks import numeric_array, positive_int

# Inputs: anything numpy.asarray takes (arrays, lists, torch tensors); the checks convert them.
ArrayLike = Any

__all__ = ["batchify", "next_step", "split", "chunks", "Normalizer", "Vocabulary"]


def batchify(series: ArrayLike, num_streams: int) -> np.ndarray:
    """Cut one long series into ``num_streams`` contiguous streams, time-major.

    Args:
        series: ``(N,)`` values or token ids, or ``(N, F)`` features, in time order.
        num_streams: B >= 1, the number of parallel streams.

    Returns:
        ``(T, B)`` or ``(T, B, F)`` array (a new, C-contiguous array of the same dtype) with
        ``T = N // B``: stream ``b`` is ``series[b*T:(b+1)*T]``, so ``out[t, b] == series[b*T + t]``.
        The last ``N - B*T`` elements are dropped (as PyTorch's word_language_model ``batchify``).

    Raises:
        TypeError: ``series`` is not numeric, or ``num_streams`` is not an int.
        ValueError: ``num_streams < 1``, ``series`` is not 1-D or 2-D, or has fewer than B elements.
    """
    num_streams = positive_int("num_streams", num_streams)
    series = numeric_array("series", series)
    if series.ndim not in (1, 2):
        raise ValueError(f"series must have shape (N,) or (N, F), got shape {series.shape}")
    length = series.shape[0] // num_streams
    if length == 0:
        raise ValueError(f"series must have at least num_streams={num_streams} time steps, "
                         f"got {series.shape[0]}")
    streams = series[:length * num_streams].reshape(num_streams, length, *series.shape[1:])
    return np.ascontiguousarray(streams.swapaxes(0, 1))


def next_step(streams: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Inputs and targets for next-step prediction: ``(streams[:-1], streams[1:])``.

    Args:
        streams: time-major ``(T, B)`` or ``(T, B, F)`` array with T >= 2 (as from :func:`batchify`).

    Returns:
        ``(x, y)``, each of shape ``(T-1, B[, F])``: ``y[t] == x[t+1] == streams[t+1]``. Token ids give
        ``(T-1, B)`` inputs and class ids; features give ``(T-1, B, F)`` inputs and MSE targets.
    """
    streams = numeric_array("streams", streams)
    if streams.ndim not in (2, 3):
        raise ValueError(f"streams must have shape (T, B) or (T, B, F), got shape {streams.shape}")
    if streams.shape[0] < 2:
        raise ValueError(f"streams must have at least 2 time steps, got {streams.shape[0]}")
    return streams[:-1], streams[1:]


def split(series: ArrayLike, fraction: float = 0.9) -> Tuple[np.ndarray, np.ndarray]:
    """Split a series in time, without shuffling: the first ``fraction`` and the rest.

    Args:
        series: anything sliceable along its first axis with a ``len``: an array ``(N, ...)``,
            a list, or a ``str`` (a text).
        fraction: the share of the first part (training), ``0 < fraction < 1``.

    Returns:
        ``(series[:n], series[n:])`` with ``n = int(N * fraction)``, both non-empty.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)):
        raise TypeError(f"fraction must be a real number, got {type(fraction).__name__} ({fraction!r})")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    try:
        size = len(series)
    except TypeError:
        raise TypeError(f"series must be a sequence or an array, got {type(series).__name__}") from None
    cut = int(size * fraction)
    if cut == 0 or cut == size:
        raise ValueError(f"series of length {size} is too short to split at fraction={fraction}")
    return series[:cut], series[cut:]


def chunks(x: ArrayLike, y: ArrayLike, size: int, mask: Optional[ArrayLike] = None,
           resets: Optional[ArrayLike] = None) -> Iterator[Tuple[Any, ...]]:
    """Iterate over consecutive time chunks of time-major arrays, to feed a trainer call by call.

    Args:
        x, y: arrays with the same first (time) axis T, e.g. ``(T, B, I)`` and ``(T, B, O)``.
        size: the number of time steps per chunk (>= 1); the last chunk may be shorter.
        mask, resets: optional ``(T, ...)`` arrays, chunked alike; ``None`` stays ``None``.

    Yields:
        ``(x[s:e], y[s:e], mask[s:e] or None, resets[s:e] or None)``: views, in time order, so that
        ``trainer.train(*chunk)`` works. Because the trainer carries state and pending steps across
        calls, training chunk by chunk equals training on the whole arrays.
    """
    size = positive_int("size", size)
    arrays = {"x": x, "y": y, "mask": mask, "resets": resets}
    arrays = {name: (None if a is None else np.asarray(a)) for name, a in arrays.items()}
    if arrays["x"].ndim == 0:
        raise ValueError("x must have a time axis (axis 0), got a scalar")
    steps = arrays["x"].shape[0]
    for name, array in arrays.items():
        if array is not None and (array.ndim == 0 or array.shape[0] != steps):
            raise ValueError(f"{name} must have the same number of time steps (axis 0) as x "
                             f"({steps}), got shape {array.shape}")
    for start in range(0, steps, size):
        yield tuple(None if a is None else a[start:start + size] for a in arrays.values())


def _as_list(value):
    return value.tolist() if value.ndim else float(value)


class Normalizer:
    """Standardise features: ``(data - mean) / std``, per feature (the last axis).

    Fit on the training data only, then apply the same transform to validation data and invert it on
    the model's predictions. A 1-D series is one feature (scalar mean and std); for ``(..., F)`` data
    the statistics are over every axis but the last, giving ``(F,)`` vectors. Missing values (NaN)
    are ignored by :meth:`fit` and stay NaN. A constant feature gets ``std = 1``.

    Example::

        norm = Normalizer().fit(train)            # train: (N,) or (N, F)
        z = norm.transform(train)                 # mean 0, std 1
        json.dumps(norm.to_dict())                # store it next to the model
        pred = norm.inverse_transform(outputs)    # back to the original units
    """

    def __init__(self, mean: Optional[ArrayLike] = None, std: Optional[ArrayLike] = None) -> None:
        """Build from known statistics (scalars or ``(F,)``), or leave empty and call :meth:`fit`."""
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together (or neither)")
        self.mean = self.std = None
        if mean is not None:
            mean = numeric_array("mean", mean).astype(np.float64)
            std = numeric_array("std", std).astype(np.float64)
            if mean.ndim > 1 or mean.shape != std.shape:
                raise ValueError(f"mean and std must be scalars or (F,) vectors of one shape, got "
                                 f"{mean.shape} and {std.shape}")
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise ValueError(f"mean must be finite and std finite and > 0, got mean={mean}, std={std}")
            self.mean, self.std = mean, std

    def fit(self, data: ArrayLike) -> "Normalizer":
        """Compute mean and std of ``data`` (``(N,)`` or ``(..., F)``, NaN ignored); returns ``self``."""
        data = numeric_array("data", data).astype(np.float64)
        if data.ndim == 0:
            raise ValueError("data must have at least one axis, got a scalar")
        axes = tuple(range(data.ndim - 1)) if data.ndim > 1 else None
        known = ~np.isnan(data)
        if not known.any(axis=axes).all():
            raise ValueError(f"data must have at least one non-NaN value per feature (shape {data.shape})")
        if not np.isfinite(data[known]).all():
            raise ValueError("data must be finite (NaN marks a missing value; inf is not allowed)")
        count = known.sum(axis=axes)
        mean = np.where(known, data, 0.0).sum(axis=axes) / count
        var = np.where(known, (data - mean) ** 2, 0.0).sum(axis=axes) / count
        std = np.sqrt(var)
        self.mean, self.std = np.asarray(mean), np.where(std > 0, std, 1.0)
        return self

    def _check(self, name, data):
        if self.mean is None:
            raise RuntimeError("Normalizer is not fitted: call fit(data) first")
        data = numeric_array(name, data)
        if self.mean.ndim and (data.ndim == 0 or data.shape[-1] != self.mean.shape[0]):
            raise ValueError(f"{name} must have {self.mean.shape[0]} features on its last axis, "
                             f"got shape {data.shape}")
        return data, (data.dtype if data.dtype.kind == "f" else np.float64)

    def transform(self, data: ArrayLike) -> np.ndarray:
        """``(data - mean) / std``, same shape; float32 input stays float32, others become float64."""
        data, dtype = self._check("data", data)
        return ((data - self.mean) / self.std).astype(dtype, copy=False)

    def inverse_transform(self, data: ArrayLike) -> np.ndarray:
        """``data * std + mean``: undoes :meth:`transform` (e.g. on model outputs)."""
        data, dtype = self._check("data", data)
        return (data * self.std + self.mean).astype(dtype, copy=False)

    def fit_transform(self, data: ArrayLike) -> np.ndarray:
        """``fit(data)`` then ``transform(data)``."""
        return self.fit(data).transform(data)

    def to_dict(self) -> Dict[str, Any]:
        """``{"mean": ..., "std": ...}`` as plain floats or lists of floats (JSON-ready)."""
        if self.mean is None:
            raise RuntimeError("Normalizer is not fitted: call fit(data) first")
        return {"mean": _as_list(self.mean), "std": _as_list(self.std)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Any:
        """Rebuild from :meth:`to_dict`'s output."""
        return cls(d["mean"], d["std"])

    def __repr__(self):
        if self.mean is None:
            return "Normalizer()"
        return f"Normalizer(mean={_as_list(self.mean)}, std={_as_list(self.std)})"


class Vocabulary:
    """Character-level vocabulary: the sorted unique characters of a text, id ``i`` = ``chars[i]``.

    Example::

        vocab = Vocabulary(text)
        ids = vocab.encode(text)                  # (N,) int64 in [0, vocab.size)
        model = tbptt.LSTM(vocab.size, 256, vocab.size)
        vocab.decode(ids[:100])                   # back to a str
    """

    def __init__(self, text: str) -> None:
        """Build from ``text`` (a ``str``; its sorted unique characters are the vocabulary)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text must not be empty")
        self.chars = "".join(sorted(set(text)))
        codes = np.frombuffer(self.chars.encode("utf-32-le"), dtype="<u4")
        self._ids = np.full(int(codes.max()) + 1, -1, dtype=np.int64)  # code point -> id, -1 unknown
        self._ids[codes] = np.arange(len(codes))
        self._chars = np.array(list(self.chars))

    @property
    def size(self) -> int:
        """The number of distinct characters: the ``input_size`` and ``output_size`` of a model."""
        return len(self.chars)

    def __len__(self):
        return self.size

    def encode(self, text: str) -> np.ndarray:
        """``str`` -> ``(len(text),)`` int64 ids. A character not in the vocabulary is a ValueError."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        ids = self._ids[np.minimum(codes, len(self._ids) - 1)]
        ids[codes >= len(self._ids)] = -1
        if (ids < 0).any():
            where = int(np.argmax(ids < 0))
            raise ValueError(f"text contains the character {text[where]!r} (at position {where}), "
                             f"which is not in the vocabulary")
        return ids

    def decode(self, ids: ArrayLike) -> str:
        """Ids (any integer array-like, flattened in C order) -> ``str``."""
        ids = numeric_array("ids", ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        ids = ids.ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise ValueError(f"ids must be in [0, size={self.size}), got {bad}")
        return "".join(self._chars[ids].tolist())

    def to_dict(self) -> Dict[str, Any]:
        """``{"chars": str}`` (JSON-ready)."""
        return {"chars": self.chars}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Any:
        """Rebuild from :meth:`to_dict`'s output; ids are unchanged."""
        return cls(d["chars"])

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self.chars == other.chars

    def __hash__(self):
        return hash(self.chars)

    def __repr__(self):
        return f"Vocabulary(size={self.size}, chars={self.chars!r})"
