"""Preparing data for TBPTT: long series cut into parallel streams, time-major.

The trainer consumes time-major arrays (docs/semantics.md §1):

* ``x``: ``(T, B, I)`` float features, or ``(T, B)`` integer token ids (one-hot of size
  ``input_size``);
* ``y``: ``(T, B, O)`` floats for ``loss="mse"``, ``(T, B)`` integer class ids for
  ``"cross_entropy"``;
* ``mask``, ``resets``: ``(T, B)``.

Column ``b`` of every array is one *stream*: a long sequence that continues from one ``train`` call
to the next. A typical pipeline for one long series (a text, a sensor recording)::

    vocab = Vocabulary(text)
    train_text, valid_text = split(text, 0.9)
    x, y = next_step(batchify(vocab.encode(train_text), num_streams=32))     # (T-1, 32) each
    for xc, yc, mask, resets in chunks(x, y, size=1000):
        trainer.train(xc, yc, mask, resets)

Many separate sequences (one label per sequence, or per-step targets; variable lengths) are packed
into B streams with :func:`pack`: a reset at each sequence's first step, the loss mask on its last
step (or on all of them)::

    packed = pack(sequences, num_streams=32, labels=labels)                # x (T, 32, I), ...
    trainer.fit(packed.x, packed.y, packed.mask, packed.resets, epochs=10)

Everything here is plain NumPy.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple, overload

import numpy as np

from ._checks import numeric_array, positive_int

# Inputs: anything numpy.asarray takes (arrays, lists, torch tensors); the checks convert them.
ArrayLike = Any

__all__ = [
    "batchify",
    "next_step",
    "split",
    "chunks",
    "pack",
    "Packed",
    "unpack",
    "Normalizer",
    "Vocabulary",
]


def batchify(series: ArrayLike, num_streams: int) -> np.ndarray:
    """Cut one long series into ``num_streams`` contiguous streams, time-major.

    Args:
        series: ``(N,)`` values or token ids, or ``(N, F)`` features, in time order.
        num_streams: B >= 1, the number of parallel streams.

    Returns:
        ``(T, B)`` or ``(T, B, F)`` array (a new, C-contiguous array of the same dtype) with
        ``T = N // B``: stream ``b`` is ``series[b*T:(b+1)*T]``, so
        ``out[t, b] == series[b*T + t]``. The last ``N - B*T`` elements are dropped (as PyTorch's
        word_language_model ``batchify``).

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
        raise ValueError(
            f"series must have at least num_streams={num_streams} time steps, got {series.shape[0]}"
        )
    streams = series[: length * num_streams].reshape(num_streams, length, *series.shape[1:])
    return np.ascontiguousarray(streams.swapaxes(0, 1))


def next_step(streams: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Inputs and targets for next-step prediction: ``(streams[:-1], streams[1:])``.

    Args:
        streams: time-major ``(T, B)`` or ``(T, B, F)`` array with T >= 2 (as from
            :func:`batchify`).

    Returns:
        ``(x, y)``, each of shape ``(T-1, B[, F])``: ``y[t] == x[t+1] == streams[t+1]``. Token ids
        give ``(T-1, B)`` inputs and class ids; features give ``(T-1, B, F)`` inputs and MSE
        targets.
    """
    streams = numeric_array("streams", streams)
    if streams.ndim not in (2, 3):
        raise ValueError(f"streams must have shape (T, B) or (T, B, F), got shape {streams.shape}")
    if streams.shape[0] < 2:
        raise ValueError(f"streams must have at least 2 time steps, got {streams.shape[0]}")
    return streams[:-1], streams[1:]


@overload
def split(series: str, fraction: float = 0.9) -> Tuple[str, str]: ...
@overload
def split(series: ArrayLike, fraction: float = 0.9) -> Tuple[np.ndarray, np.ndarray]: ...
def split(series: ArrayLike, fraction: float = 0.9) -> Tuple[Any, Any]:
    """Split a series in time, without shuffling: the first ``fraction`` and the rest.

    Args:
        series: anything sliceable along its first axis with a ``len``: an array ``(N, ...)``,
            a list, or a ``str`` (a text).
        fraction: the share of the first part (training), ``0 < fraction < 1``.

    Returns:
        ``(series[:n], series[n:])`` with ``n = int(N * fraction)``, both non-empty.
    """
    if isinstance(fraction, bool) or not isinstance(
        fraction, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"fraction must be a real number, got {type(fraction).__name__} ({fraction!r})"
        )
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    try:
        size = len(series)
    except TypeError:
        raise TypeError(
            f"series must be a sequence or an array, got {type(series).__name__}"
        ) from None
    cut = int(size * fraction)
    if cut == 0 or cut == size:
        raise ValueError(f"series of length {size} is too short to split at fraction={fraction}")
    return series[:cut], series[cut:]


def chunks(
    x: ArrayLike,
    y: ArrayLike,
    size: int,
    mask: Optional[ArrayLike] = None,
    resets: Optional[ArrayLike] = None,
) -> Iterator[Tuple[Any, ...]]:
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
            raise ValueError(
                f"{name} must have the same number of time steps (axis 0) as x "
                f"({steps}), got shape {array.shape}"
            )
    for start in range(0, steps, size):
        yield tuple(None if a is None else a[start : start + size] for a in arrays.values())


class Packed(NamedTuple):
    """Sequences packed into B streams by :func:`pack`: time-major arrays for ``Trainer.fit``.

    Attributes:
        x: ``(T, B, I)`` inputs, or ``(T, B)`` integer token ids; 0 where a stream has no sequence.
        y: ``(T, B, O)`` float targets, or ``(T, B)`` integer class ids; 0 where the mask is 0.
            None when neither labels nor targets were given.
        mask: ``(T, B)`` float64: 1.0 where the loss counts, 0.0 elsewhere.
        resets: ``(T, B)`` bool: True at each sequence's first step.
        spans: ``(N, 3)`` int64: sequence ``i`` is ``x[start:stop, stream]`` with
            ``(stream, start, stop) = spans[i]`` (read outputs back with :func:`unpack`).
    """

    x: np.ndarray
    y: Optional[np.ndarray]
    mask: np.ndarray
    resets: np.ndarray
    spans: np.ndarray


def _sequence_arrays(name, items):
    """The checked list of arrays of `items`, a sequence of array-likes with a first (time) axis."""
    if isinstance(items, np.ndarray) and items.ndim >= 2 and items.dtype != object:
        items = list(items)  # (N, L[, I]): N sequences of one length
    try:
        arrays = [numeric_array(f"{name}[{i}]", item) for i, item in enumerate(items)]
    except TypeError as error:
        if "not iterable" in str(error):
            raise TypeError(
                f"{name} must be a sequence of arrays, got {type(items).__name__}"
            ) from None
        raise
    if not arrays:
        raise ValueError(f"{name} must hold at least one sequence")
    for i, a in enumerate(arrays):
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(f"{name}[{i}] must have at least one time step, got shape {a.shape}")
        if a.ndim > 2:
            raise ValueError(f"{name}[{i}] must have shape (L,) or (L, F), got {a.shape}")
        if a.shape[1:] != arrays[0].shape[1:] or (a.dtype.kind in "iub") != (
            arrays[0].dtype.kind in "iub"
        ):
            raise ValueError(
                f"{name}[{i}] has shape {a.shape} and dtype {a.dtype}, unlike "
                f"{name}[0] ({arrays[0].shape}, {arrays[0].dtype}): every sequence "
                f"needs the same features and kind (token ids or floats)"
            )
    return arrays


def _layout(arrays, T, B):
    """A zero (T, B[, F]) array for `arrays` (integer ids stay (T, B), 1-D floats get F = 1)."""
    first = arrays[0]
    if first.dtype.kind in "iub":
        return np.zeros((T, B) + first.shape[1:], dtype=np.int64)
    dtype = np.result_type(*[a.dtype for a in arrays])
    return np.zeros((T, B) + (first.shape[1:] or (1,)), dtype=dtype)


def pack(
    sequences: Sequence[ArrayLike],
    num_streams: int,
    labels: Optional[ArrayLike] = None,
    targets: Optional[Sequence[ArrayLike]] = None,
    loss_on: Optional[str] = None,
) -> Packed:
    """Pack many separate sequences of any lengths into ``num_streams`` streams, time-major, with a
    reset at each sequence's first step: for sequence classification or regression (one label per
    sequence), or per-step targets (as many short series).

    Each sequence goes, in the order given, to the stream that is shortest so far (the first of
    them on a tie), right after the sequence before it there; the streams are then padded with
    zeros (mask 0) to the longest. A reset zeroes the state before each sequence, so no state and
    no gradient crosses from one sequence to the next (docs/semantics.md §1): training on the
    packed arrays is training on each sequence from a zero state. Shuffle the order yourself (a
    permutation of the sequences, and of their labels) between epochs if you want it.

    Args:
        sequences: N arrays, sequence ``i`` of shape ``(L_i,)`` integer token ids or floats (one
            feature), or ``(L_i, I)`` floats; or one ``(N, L[, I])`` array.
        num_streams: B >= 1. At most N streams are made (a stream needs a sequence).
        labels: one per sequence: ``(N,)`` integer class ids (``y`` is ``(T, B)``, for
            ``loss="cross_entropy"``), or ``(N,)`` / ``(N, O)`` floats (``y`` is ``(T, B, O)``,
            ``loss="mse"``). The label is the target at the sequence's last step
            (``loss_on="last"``, the default with labels) or at every step (``"all"``: a prediction
            at each prefix).
        targets: per step instead: N arrays of ``(L_i,)`` class ids or floats, or ``(L_i, O)``
            floats; the loss counts at every step (``loss_on="all"``, the default with targets) or
            at each sequence's last step.
        loss_on: ``"last"`` or ``"all"``.

    Returns:
        A :class:`Packed` ``(x, y, mask, resets, spans)``. Float inputs keep their dtype, token
        ids become int64. Read the model's outputs
        back per sequence with :func:`unpack`, e.g. ``unpack(outputs, packed.spans, last=True)``
        gives each sequence's output at its last step, ``(N, O)``.

    Example (sequence classification; the full script is examples/labelled_sequences.py)::

        packed = pack(sequences, 32, labels=classes)        # lengths 10..40, classes (N,) ints
        model = tbptt.LSTM(1, 32, num_classes, forget_bias=1.0)
        trainer = tbptt.Trainer(model, k1=40, k2=40, loss="cross_entropy",
                                optimizer=tbptt.Adam(1e-2))
        trainer.fit(packed.x, packed.y, packed.mask, packed.resets, epochs=10)
        trainer.evaluate(*pack(test_sequences, 32, labels=test_classes)[:4])   # loss, accuracy

    Raises:
        TypeError: non-numeric data. ValueError: an empty sequence, sequences of different
        features, labels or targets that do not match the sequences, both or neither of them with
        ``loss_on``, or an unknown ``loss_on``.
    """
    num_streams = positive_int("num_streams", num_streams)
    arrays = _sequence_arrays("sequences", sequences)
    if labels is not None and targets is not None:
        raise ValueError("give labels (one per sequence) or targets (one per step), not both")
    if loss_on is None:
        loss_on = "all" if targets is not None else "last"
    if loss_on not in ("last", "all"):
        raise ValueError(f"loss_on must be 'last' or 'all', got {loss_on!r}")
    lengths = [a.shape[0] for a in arrays]
    N, B = len(arrays), min(num_streams, len(arrays))
    per_step = None
    if labels is not None:
        labels = numeric_array("labels", labels)
        if labels.ndim not in (1, 2) or labels.shape[0] != N:
            raise ValueError(
                f"labels must have shape ({N},) or ({N}, O): one per sequence, got {labels.shape}"
            )
        if labels.dtype.kind in "iub" and labels.ndim == 2:
            raise ValueError("integer labels are class ids: shape (N,), got (N, O)")
        per_step = [
            np.broadcast_to(labels[i], (n,) + labels.shape[1:]) for i, n in enumerate(lengths)
        ]
    elif targets is not None:
        per_step = _sequence_arrays("targets", targets)
        if len(per_step) != N:
            raise ValueError(f"targets must hold one array per sequence ({N}), got {len(per_step)}")
        for i, (t, n) in enumerate(zip(per_step, lengths)):
            if t.shape[0] != n:
                raise ValueError(
                    f"targets[{i}] must have the length of sequences[{i}] ({n}), "
                    f"got shape {t.shape}"
                )
    spans = np.zeros((N, 3), dtype=np.int64)
    ends = [0] * B
    for i, n in enumerate(lengths):
        b = min(range(B), key=ends.__getitem__)  # the shortest stream so far, the first on a tie
        spans[i] = (b, ends[b], ends[b] + n)
        ends[b] += n
    T = max(ends)
    x = _layout(arrays, T, B)
    y = None if per_step is None else _layout(per_step, T, B)
    mask = np.zeros((T, B), dtype=np.float64)
    resets = np.zeros((T, B), dtype=bool)
    for i, (b, start, stop) in enumerate(spans):
        x[start:stop, b] = arrays[i].reshape(x[start:stop, b].shape)
        resets[start, b] = True
        if y is not None and per_step is not None:
            y[start:stop, b] = per_step[i].reshape(y[start:stop, b].shape)
            if loss_on == "all":
                mask[start:stop, b] = 1.0
            else:
                mask[stop - 1, b] = 1.0
    return Packed(x, y, mask, resets, spans)


def unpack(outputs: ArrayLike, spans: ArrayLike, last: bool = False) -> Any:
    """Per-sequence slices of time-major ``(T, B, ...)`` arrays (the model's outputs on packed
    inputs), by the ``spans`` of :func:`pack`.

    Returns a list of N arrays ``outputs[start:stop, stream]`` (views, ``(L_i, ...)``), or with
    ``last=True`` one ``(N, ...)`` array of each sequence's last step.
    """
    outputs = np.asarray(outputs)
    spans = numeric_array("spans", spans)
    if spans.ndim != 2 or spans.shape[1] != 3:
        raise ValueError(f"spans must have shape (N, 3) (stream, start, stop), got {spans.shape}")
    if outputs.ndim < 2 or (
        spans.size
        and (spans[:, 0].max() >= outputs.shape[1] or spans[:, 2].max() > outputs.shape[0])
    ):
        raise ValueError(
            f"outputs of shape {outputs.shape} do not hold the packed sequences "
            f"(pass the (T, B, ...) outputs of the packed x)"
        )
    if last:
        return outputs[spans[:, 2] - 1, spans[:, 0]]
    return [outputs[start:stop, b] for b, start, stop in spans]


def _as_list(value):
    return value.tolist() if value.ndim else float(value)


class Normalizer:
    """Standardise features: ``(data - mean) / std``, per feature (the last axis).

    Fit on the training data only, then apply the same transform to validation data and invert it on
    the model's predictions. A 1-D series is one feature (scalar mean and std); for ``(..., F)``
    data the statistics are over every axis but the last, giving ``(F,)`` vectors. Missing values
    (NaN) are ignored by :meth:`fit` and stay NaN. A constant feature gets ``std = 1``.

    Example::

        norm = Normalizer().fit(train)            # train: (N,) or (N, F)
        z = norm.transform(train)                 # mean 0, std 1
        json.dumps(norm.to_dict())                # store it next to the model
        pred = norm.inverse_transform(outputs)    # back to the original units
    """

    def __init__(self, mean: Optional[ArrayLike] = None, std: Optional[ArrayLike] = None) -> None:
        """Build from known statistics (scalars or ``(F,)``), or leave empty and call
        :meth:`fit`."""
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together (or neither)")
        self.mean = self.std = None
        if mean is not None:
            mean = numeric_array("mean", mean).astype(np.float64)
            std = numeric_array("std", std).astype(np.float64)
            if mean.ndim > 1 or mean.shape != std.shape:
                raise ValueError(
                    f"mean and std must be scalars or (F,) vectors of one shape, got "
                    f"{mean.shape} and {std.shape}"
                )
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise ValueError(
                    f"mean must be finite and std finite and > 0, got mean={mean}, std={std}"
                )
            self.mean, self.std = mean, std

    def fit(self, data: ArrayLike) -> Normalizer:
        """Compute mean and std of ``data`` (``(N,)`` or ``(..., F)``, NaN ignored); returns
        ``self``."""
        data = numeric_array("data", data).astype(np.float64)
        if data.ndim == 0:
            raise ValueError("data must have at least one axis, got a scalar")
        axes = tuple(range(data.ndim - 1)) if data.ndim > 1 else None
        known = ~np.isnan(data)
        if not known.any(axis=axes).all():
            raise ValueError(
                f"data must have at least one non-NaN value per feature (shape {data.shape})"
            )
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
            raise ValueError(
                f"{name} must have {self.mean.shape[0]} features on its last axis, "
                f"got shape {data.shape}"
            )
        return data, (data.dtype if data.dtype.kind == "f" else np.float64)

    def transform(self, data: ArrayLike) -> np.ndarray:
        """``(data - mean) / std``, same shape; float32 input stays float32, others become
        float64."""
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
        self._ids = np.full(
            int(codes.max()) + 1, -1, dtype=np.int64
        )  # code point -> id, -1 unknown
        self._ids[codes] = np.arange(len(codes))
        self._chars = np.array(list(self.chars))

    @property
    def size(self) -> int:
        """The number of distinct characters: the ``input_size`` and ``output_size`` of a model."""
        return len(self.chars)

    def __len__(self):
        return self.size

    def encode(self, text: str) -> np.ndarray:
        """``str`` -> ``(len(text),)`` int64 ids. A character not in the vocabulary is
        a ValueError."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        ids = self._ids[np.minimum(codes, len(self._ids) - 1)]
        ids[codes >= len(self._ids)] = -1
        if (ids < 0).any():
            where = int(np.argmax(ids < 0))
            raise ValueError(
                f"text contains the character {text[where]!r} (at position {where}), "
                f"which is not in the vocabulary"
            )
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
