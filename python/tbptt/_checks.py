"""Argument checks shared by the public API: every message names the argument, what was expected
and what was given. Both backends receive arrays that passed these checks."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .losses import LOSSES


def positive_int(name, value, maximum=None):
    return _integer(name, value, 1, maximum)


def nonnegative_int(name, value, maximum=None):
    """An int >= 0 (and <= maximum): a seed, a count that may be zero."""
    return _integer(name, value, 0, maximum)


def _integer(name, value, minimum, maximum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def finite_float(name, value, minimum=None, below=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if below is not None and value >= below:
        raise ValueError(f"{name} must be < {below}, got {value}")
    return value


def numeric_array(name, value):
    """`value` as an ndarray of a numeric (bool, integer or floating) dtype, else TypeError."""
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - ragged lists and the like
        raise TypeError(f"{name} must be a numeric array: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got an array of dtype {array.dtype}")
    return array


def all_finite(name, array):
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{name} must be finite: {name}[{', '.join(map(str, bad))}] = {array[tuple(bad)]}"
        )


def _convert(name, array, dtype):
    """Cast to the model's dtype; values that overflow it (finite float64, inf float32) are
    errors."""
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.ascontiguousarray(array, dtype=dtype)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        all_finite(name, array)
    all_finite(f"{name} (as {np.dtype(dtype).name})", converted)
    return converted


def float_array(name, value, dtype, shape):
    array = numeric_array(name, value)
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {array.shape}")
    return _convert(name, array, dtype)


def batch_first_hint(shape, B) -> str:
    """The end of an error about x's B, when x's shape can tell: its first axis is the B expected
    and its second is not, so it looks batch-first, (B, T, ...). A batch-first array whose T and B
    are both unknown cannot be told from a time-major one (both are 3-D): the docs warn."""
    if len(shape) >= 2 and shape[0] == B != shape[1]:
        return (
            f"; x.shape[0] = {B} is that B: is x batch-first, (B, T, ...)? tbptt's arrays are "
            "time-major, (T, B, ...): pass x.swapaxes(0, 1) (and the same for y, mask, resets)"
        )
    return ""


def inputs(name, value, input_size, dtype):
    """Model inputs: (T, B) integer token ids, or (T, B, I) features. Returns (array, is_tokens)."""
    array = numeric_array(name, value)
    if array.ndim == 2 and array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() >= input_size):
            bad = array.min() if array.min() < 0 else array.max()
            raise ValueError(
                f"{name} holds token ids, which must be in [0, input_size={input_size}); got {bad}"
            )
        return np.ascontiguousarray(array, dtype=np.int64), True
    if array.ndim != 3:
        raise ValueError(
            f"{name} must have shape (T, B, input_size={input_size}), or (T, B) with "
            f"integer token ids; got shape {array.shape} of dtype {array.dtype}"
        )
    if array.shape[2] != input_size:
        raise ValueError(
            f"{name} must have shape (T, B, input_size={input_size}); got shape {array.shape}"
        )
    return _convert(name, array, dtype), False


def targets(name, value, loss, shape_tb, output_size, dtype):
    """y for the loss named `loss` (tbptt.losses): (T, B) integer class ids in [0, O) for a loss
    of class ids (cross-entropy), else (T, B, O / outputs per target) floats (MSE: (T, B, O))."""
    spec = LOSSES[loss]
    array = numeric_array(name, value)
    T, B = shape_tb
    if spec.classes:
        if array.dtype.kind not in "iu":
            raise TypeError(
                f"{name} must hold integer class ids for loss={loss!r}, got dtype {array.dtype}"
            )
        if array.shape != (T, B):
            raise ValueError(
                f"{name} must have shape (T, B) = {(T, B)} for loss={loss!r}, got {array.shape}"
            )
        if array.size and (array.min() < 0 or array.max() >= output_size):
            bad = array.min() if array.min() < 0 else array.max()
            raise ValueError(
                f"{name} class ids must be in [0, output_size={output_size}), got {bad}"
            )
        return np.ascontiguousarray(array, dtype=np.int64)
    shape = (T, B) + spec.target_shape(output_size)
    per = "" if spec.outputs_per_target == 1 else f" / {spec.outputs_per_target}"
    if array.shape != shape:
        raise ValueError(
            f"{name} must have shape (T, B, output_size{per}) = {shape} for "
            f"loss={loss!r}, got {array.shape}"
        )
    return _convert(name, array, dtype)


def mask(value, shape_tb, dtype):
    """Loss weights (T, B): bool, integer or float, finite and >= 0. None stays None (all ones)."""
    if value is None:
        return None
    array = numeric_array("mask", value)
    if array.shape != tuple(shape_tb):
        raise ValueError(f"mask must have shape (T, B) = {tuple(shape_tb)}, got {array.shape}")
    converted = _convert("mask", array, dtype)
    if (converted < 0).any():
        bad = np.argwhere(converted < 0)[0]
        raise ValueError(
            f"mask weights must be >= 0: mask[{bad[0]}, {bad[1]}] = {converted[tuple(bad)]}"
        )
    return converted


def resets(value, shape_tb):
    """Per-step state resets (T, B): bool (or integers 0/1). None stays None (no resets)."""
    if value is None:
        return None
    array = numeric_array("resets", value)
    if array.shape != tuple(shape_tb):
        raise ValueError(f"resets must have shape (T, B) = {tuple(shape_tb)}, got {array.shape}")
    if array.dtype.kind == "f":
        raise TypeError(f"resets must be bool (or integers 0/1), got dtype {array.dtype}")
    if array.dtype.kind != "b" and array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(
            f"resets must be bool or 0/1, got values in [{array.min()}, {array.max()}]"
        )
    return np.ascontiguousarray(array, dtype=np.uint8)
