"""The losses, in one table: every other place that needs a loss's facts derives them from `LOSSES`.

Per position (one step of one stream) a loss compares the head's O outputs with the targets. The
trainer's checks of y (`_checks.targets`), the engine snapshot's schema (`_snapshot`), the C++
engine's adapter (`engine`), the units a loss is shown in (`_units`), `Trainer.evaluate` and the
NumPy reference's loss terms read this table. The C++ engine has its kernels in csrc/head.{h,cpp}
(one per loss, over the same per-position definition). Adding a loss: docs/architecture.md,
"Where a new piece goes".

Legend: O = outputs of the head, B = streams; `out` is (..., B, O), y the targets of those
positions: (..., B) class ids or (..., B, O / outputs_per_target) values.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np

Terms = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]
Value = Callable[[np.ndarray, np.ndarray], np.ndarray]


class LossSpec(NamedTuple):
    """One loss: its targets, its outputs per target, its units and its NumPy definition."""

    name: str  # Trainer(loss=name)
    classes: bool  # targets are class ids in [0, O) (T, B) int64; else values
    # (T, B, O / outputs_per_target) of the model's dtype
    outputs_per_target: int  # head outputs per target value (1; 2 for a likelihood's two
    # parameters); 1 for class ids (O is the number of classes)
    units: Tuple[str, ...]  # what fit, History.plot and the CLI can show it in; the first is
    # the loss's own (tbptt._units)
    terms: Terms  # NumPy: (loss (..., B), dloss/dout (..., B, O)) per position
    value: Optional[Value] = None  # NumPy: the loss alone, the same bits as terms' first
    # (Trainer.evaluate; a shortcut: None computes terms)

    def loss(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The loss of each position (..., B), as `terms` computes it."""
        return self.terms(out, y)[0] if self.value is None else self.value(out, y)

    def target_shape(self, output_size: int) -> Tuple[int, ...]:
        """The shape of one position's target: () for a class id, else (values,)."""
        return () if self.classes else (output_size // self.outputs_per_target,)

    def target_dtype(self, dtype) -> np.dtype:
        """The targets' dtype for a model of `dtype`."""
        return np.dtype(np.int64) if self.classes else np.dtype(dtype)

    def core_traits(self) -> Dict[str, object]:
        """The C++ core's LossTraits of this loss, as `_core.loss_traits(name)` returns them."""
        return {"classes": self.classes, "outputs_per_target": self.outputs_per_target}

    def check_output_size(self, output_size: int) -> None:
        """ValueError unless a model with `output_size` outputs can be trained with this loss."""
        if output_size % self.outputs_per_target:
            raise ValueError(
                f"loss={self.name!r} takes {self.outputs_per_target} outputs per "
                f"target: the model's output_size ({output_size}) must be a "
                f"multiple of {self.outputs_per_target}"
            )


# ---- the NumPy definitions (the reference's loss terms, Trainer.evaluate's loss) ---------------


def _mse_terms(out, y):
    """The mean over O of (out - y)^2, and its gradient."""
    diff = out - y
    O = diff.shape[-1]
    return np.sum(diff * diff, axis=-1) / O, diff * (2.0 / O)


def _mse_value(out, y):
    diff = out - y
    return np.sum(diff * diff, axis=-1) / diff.shape[-1]


# The gaussian loss's floor under sigma (csrc/head.h's kGaussianEps): log sigma stays finite where
# softplus underflows (float32: raw below about -100).
GAUSSIAN_EPS = 1e-6
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)  # a Python float: keeps float32 float32


def gaussian_parameters(out):
    """The mean and sigma of a gaussian head's outputs out (..., 2n): mu = out[..., :n] and
    sigma = softplus(out[..., n:]) + GAUSSIAN_EPS, each (..., n)."""
    n = out.shape[-1] // 2
    raw = out[..., n:]
    return out[..., :n], np.maximum(raw, 0) + np.log1p(np.exp(-np.abs(raw))) + GAUSSIAN_EPS


def _gaussian_terms(out, y):
    """The mean over the n targets of the negative log-likelihood of y under N(mu, sigma^2),
    1/2 log 2 pi + log sigma + 1/2 ((y - mu) / sigma)^2, and its gradient: d/dmu = -z / sigma,
    d/draw = (1 - z^2) / sigma * sigmoid(raw), each / n."""
    n = out.shape[-1] // 2
    raw = out[..., n:]
    e = np.exp(-np.abs(raw))
    mu, sigma = gaussian_parameters(out)
    sig = np.where(raw >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # softplus' = sigmoid, stable
    z = (y - mu) / sigma
    nll = HALF_LOG_2PI + np.log(sigma) + 0.5 * z * z
    dout = np.concatenate([-z / sigma, (1.0 - z * z) / sigma * sig], axis=-1) / n
    return np.sum(nll, axis=-1) / n, dout.astype(out.dtype, copy=False)


def _log_softmax_parts(out):
    """out - max(out) and log Σ exp of that, (..., O) and (..., 1): a stable log-softmax is their
    difference."""
    shifted = out - out.max(axis=-1, keepdims=True)
    return shifted, np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _cross_entropy_terms(out, y):
    """-log softmax(out)[y], and its gradient softmax(out) - onehot(y)."""
    shifted, log_z = _log_softmax_parts(out)
    log_probs = shifted - log_z
    ids = y[..., None]
    dout = np.exp(log_probs)
    np.put_along_axis(dout, ids, np.take_along_axis(dout, ids, axis=-1) - 1.0, axis=-1)
    return -np.take_along_axis(log_probs, ids, axis=-1)[..., 0], dout


def _cross_entropy_value(out, y):
    shifted, log_z = _log_softmax_parts(out)
    return -(np.take_along_axis(shifted, y[..., None], axis=-1) - log_z)[..., 0]


# Trainer(loss=name) -> the loss.
LOSSES: Dict[str, LossSpec] = {
    "mse": LossSpec(
        "mse",
        classes=False,
        outputs_per_target=1,
        units=("mse",),
        terms=_mse_terms,
        value=_mse_value,
    ),
    "cross_entropy": LossSpec(
        "cross_entropy",
        classes=True,
        outputs_per_target=1,
        units=("nats", "bits", "bits/char"),
        terms=_cross_entropy_terms,
        value=_cross_entropy_value,
    ),
    # outputs per target: its mean and a raw scale (DeepAR's parametrisation), O = 2 x targets
    "gaussian": LossSpec(
        "gaussian", classes=False, outputs_per_target=2, units=("nats",), terms=_gaussian_terms
    ),
}
