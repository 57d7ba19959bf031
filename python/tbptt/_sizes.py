"""Sizes checked before anything is allocated: a model's parameters and a trainer's window.

Sizes are computed with Python integers (no overflow), then compared with what can be allocated
at all (`sys.maxsize` bytes) and with the machine's memory. A size beyond the first is a
ValueError, beyond the second a MemoryError; both messages name the arguments to change and say
how many bytes the size would take. Legend: I = inputs, H = hidden size, L = layers, O = outputs,
B = streams.
"""

from __future__ import annotations

import os
import sys

from .cells import CELLS

LSTM_GATES = CELLS["lstm"].gates  # the default of the functions below


def machine_memory():
    """The machine's physical memory in bytes, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def parameter_count(input_size, hidden_size, output_size, num_layers, gates=LSTM_GATES):
    """Parameters of `num_layers` recurrent layers with `gates` blocks of H rows (4 for an LSTM,
    3 for a GRU, 1 for an Elman RNN), both biases, and a linear head."""
    I, H, O, L = input_size, hidden_size, output_size, num_layers
    first = gates * H * (I + H + 2)
    others = (L - 1) * gates * H * (2 * H + 2)
    return first + others + O * H + O


def check_model(input_size, hidden_size, output_size, num_layers, dtype, gates=LSTM_GATES):
    """Refuse a model whose parameters cannot be allocated or exceed the machine's memory."""
    count = parameter_count(input_size, hidden_size, output_size, num_layers, gates)
    _check_bytes(
        count * dtype.itemsize,
        f"hidden_size={hidden_size}, num_layers={num_layers} (input_size={input_size}, "
        f"output_size={output_size}): the model would have {count:,} parameters, which",
        dtype,
        "choose a smaller hidden_size or num_layers",
    )


def window_values_per_step(model, tokens=False):
    """Values one stream's step keeps in the backward window: its cell's window_values per unit
    and layer, and the inputs (one token id, or I features)."""
    return CELLS[model.cell].window_values * model.hidden_size * model.num_layers + (
        1 if tokens else model.input_size
    )


def window_bytes(model, k1, k2, B, tokens=False):
    """Bytes of a trainer's window: max(k1, k2) + 1 steps of activations of B streams (a window of
    k2 steps also needs the state entering it), plus k1 steps of outputs and their gradients."""
    steps = max(k1, k2) + 1
    values = steps * B * window_values_per_step(model, tokens) + 2 * k1 * B * model.output_size
    return values * model.dtype.itemsize


def ring_bytes(model, k1: int, k2: int, B: int, tokens: bool = False) -> int:
    """The C++ engine's ring buffer alone, in its layout: max(k1, k2) + 1 steps x B streams x (the
    cell's values of every layer, the input (an int64 token id or I features), a reset flag).
    The sweep's `window_bytes`: the memory that grows with k1 and k2."""
    item = model.dtype.itemsize
    per_stream = (
        CELLS[model.cell].window_values * model.hidden_size * model.num_layers * item
        + 1
        + (8 if tokens else model.input_size * item)
    )
    return (max(k1, k2) + 1) * B * per_stream


def check_window(model, k1, k2, B, tokens=False):
    """Refuse a training window that cannot be allocated or exceeds the machine's memory."""
    _check_bytes(
        window_bytes(model, k1, k2, B, tokens),
        f"k1={k1}, k2={k2}, B={B}: the window of max(k1, k2) + 1 = {max(k1, k2) + 1:,} "
        f"steps of {B} streams, which",
        model.dtype,
        "use a smaller max(k1, k2) or fewer streams B (memory grows with max(k1, k2), "
        "never with the stream's length)",
    )


def _check_bytes(nbytes, what, dtype, advice):
    size = f"would take {nbytes:,} bytes ({_human(nbytes)}) as {dtype.name}"
    if nbytes > sys.maxsize:
        raise ValueError(f"{what} {size}: more than can be allocated; {advice}")
    memory = machine_memory()
    if memory is not None and nbytes > memory:
        raise MemoryError(
            f"{what} {size}: more than this machine's memory ({_human(memory)}); {advice}"
        )


def _human(nbytes):
    for unit, scale in (
        ("EiB", 2**60),
        ("PiB", 2**50),
        ("TiB", 2**40),
        ("GiB", 2**30),
        ("MiB", 2**20),
    ):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"
