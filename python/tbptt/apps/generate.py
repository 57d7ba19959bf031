"""Sampling from a token model: prime the state with a prompt, then feed each sampled token back."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from .. import _checks
from ..data import Vocabulary
from ..model import Recurrent


def generate(
    model: Recurrent,
    vocab: Optional[Vocabulary],
    prime: Union[str, ArrayLike],
    length: int,
    temperature: float = 1.0,
    seed: Optional[int] = None,
) -> Union[str, np.ndarray]:
    """Sample `length` tokens that continue `prime`, one step at a time with carried state.

    model: a token LSTM, GRU or RNN whose outputs are logits over its inputs
        (input_size == output_size).
    vocab: a `tbptt.data.Vocabulary` (then `prime` is a str, ids also work, and a str is
        returned), or None (then `prime` holds token ids and an int64 array (length,) is returned).
    prime: the prompt, at least one token; the model reads it first, from a zero state.
    temperature: logits are divided by it before the softmax; 0 means always the most likely token.
    seed: for `numpy.random.default_rng`: the same seed gives the same text.
    Returns the continuation only (without `prime`).
    """
    if not isinstance(model, Recurrent):
        raise TypeError(f"model must be a tbptt.LSTM, GRU or RNN, got {type(model).__name__}")
    if model.input_size != model.output_size:
        raise ValueError(
            f"generate feeds outputs back as inputs: model needs input_size == "
            f"output_size, got {model.input_size} and {model.output_size}"
        )
    if vocab is not None:
        if not isinstance(vocab, Vocabulary):
            raise TypeError(
                f"vocab must be a tbptt.data.Vocabulary or None, got {type(vocab).__name__}"
            )
        if vocab.size != model.input_size:
            raise ValueError(
                f"vocab has {vocab.size} characters but the model reads "
                f"input_size={model.input_size} tokens"
            )
    if isinstance(prime, str):
        if vocab is None:
            raise TypeError("prime is a str: pass the Vocabulary that encodes it (or token ids)")
        ids = vocab.encode(prime)
    else:
        ids = _checks.numeric_array("prime", prime)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(
                f"prime must be a str or a 1-D array of token ids, got shape "
                f"{ids.shape} of dtype {ids.dtype}"
            )
    if ids.size == 0:
        raise ValueError(
            "prime must hold at least one token: the model needs an input to start from"
        )
    length = _checks.positive_int("length", length)
    temperature = _checks.finite_float("temperature", temperature, minimum=0.0)
    rng = np.random.default_rng(seed)

    logits, state = model.predict(
        ids.astype(np.int64)[:, None]
    )  # (T, 1, O): the prompt in one call
    out = np.empty(length, dtype=np.int64)
    for t in range(length):
        z = logits[-1, 0].astype(np.float64)
        if temperature == 0:
            token = int(np.argmax(z))
        else:
            p = np.exp((z - z.max()) / temperature)
            token = int(rng.choice(z.size, p=p / p.sum()))
        out[t] = token
        if t + 1 < length:
            logits, state = model.predict(np.array([[token]]), state)
    return out if vocab is None else vocab.decode(out)
