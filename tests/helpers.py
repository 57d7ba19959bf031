"""Helpers shared by several test files: `from helpers import ...` (pytest puts this folder on
sys.path, as it has no __init__.py)."""

import numpy as np
import pytest

from tbptt.cells import CELLS as _CELL_TABLE


@pytest.fixture(scope="module")
def one_torch_thread():
    """For tests of tiny torch graphs (`pytestmark = pytest.mark.usefixtures(...)` after importing
    it): torch's intra-op threads would only add waits on a shared machine."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def fd_gradient(fun, theta, eps=1e-6):
    """Central finite differences of the scalar fun at theta, one parameter at a time."""
    g = np.zeros_like(theta)
    for j in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[j] += eps
        tm[j] -= eps
        g[j] = (fun(tp) - fun(tm)) / (2 * eps)
    return g


# Source text for the child processes that measure memory (they run with `python -c`):
# status_kib(field) is a field of /proc/self/status in KiB, e.g. VmRSS or VmHWM.
STATUS_KIB = r"""
def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)
"""


# ---- models of every cell ------------------------------------------------------------------------

CELLS = tuple(_CELL_TABLE)  # the engines' names (model.cell): "lstm", "gru", "rnn_tanh", "rnn_relu"


def make_model(cell, input_size, hidden_size, output_size, **kwargs):
    """tbptt.LSTM / GRU / RNN for a cell name; `forget_bias` applies to the LSTM only."""
    import tbptt

    forget_bias = kwargs.pop("forget_bias", 0.0)
    if cell == "lstm":
        return tbptt.LSTM(input_size, hidden_size, output_size, forget_bias=forget_bias, **kwargs)
    if cell == "gru":
        return tbptt.GRU(input_size, hidden_size, output_size, **kwargs)
    return tbptt.RNN(
        input_size, hidden_size, output_size, nonlinearity=cell[len("rnn_") :], **kwargs
    )


# ---- an independent forward pass and the truncated loss of one update ----------------------------
# Written from the equations (docs/semantics.md §2, §6) apart from tbptt.reference: one-hot inputs
# are built explicitly, the sigmoid is computed through tanh.


def views(model, flat):
    """Named views into a flat parameter vector laid out like model.flat_parameters."""
    from tbptt.model import parameter_shapes

    out, offset = {}, 0
    for name, shape in parameter_shapes(
        model.input_size, model.hidden_size, model.output_size, model.num_layers, model.cell
    ):
        size = int(np.prod(shape))
        out[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return out


def sig(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def plain_layer(cell, P, k, inp, state):
    """Layer k of a `cell` model at one step from `state` ((h, c) or (h,), each (B, H)): the new
    state."""
    prefix = {"lstm": "lstm", "gru": "gru"}.get(cell, "rnn")
    W_ih, W_hh = P[f"{prefix}.weight_ih_l{k}"], P[f"{prefix}.weight_hh_l{k}"]
    b_ih, b_hh = P[f"{prefix}.bias_ih_l{k}"], P[f"{prefix}.bias_hh_l{k}"]
    h = state[0]
    H = h.shape[1]
    if cell == "lstm":
        z = inp @ W_ih.T + b_ih + h @ W_hh.T + b_hh
        i, f, g, o = (
            sig(z[:, :H]),
            sig(z[:, H : 2 * H]),
            np.tanh(z[:, 2 * H : 3 * H]),
            sig(z[:, 3 * H :]),
        )
        c = f * state[1] + i * g
        return o * np.tanh(c), c
    if cell == "gru":
        gi, gh = inp @ W_ih.T + b_ih, h @ W_hh.T + b_hh
        r = sig(gi[:, :H] + gh[:, :H])
        z = sig(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        return ((1 - z) * n + z * h,)
    a = inp @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    return (np.tanh(a) if cell == "rnn_tanh" else np.maximum(a, 0),)


def plain_run(model, flat, x, tokens, resets, state, steps, masks=None):
    """Run `steps` (a range of time indices) from `state`: one list of L arrays (B, H) per state
    tensor ((h, c) for an LSTM, (h,) else). Returns the top layer's output at each step
    {t: (B, H)} and the final state, of the same form. masks(k, t): the dropout mask of layer k's
    output at step t, (B, H), or None for no dropout."""
    P = views(model, flat)
    layers = [tuple(part[k].copy() for part in state) for k in range(model.num_layers)]
    tops = {}
    for t in steps:
        if resets is not None:
            keep = (resets[t] == 0)[:, None]
            layers = [tuple(a * keep for a in layer) for layer in layers]
        inp = np.eye(model.input_size)[x[t]] if tokens else x[t]
        for k in range(model.num_layers):
            layers[k] = plain_layer(model.cell, P, k, inp, layers[k])
            inp = layers[k][0] if masks is None else layers[k][0] * masks(k, t)
        tops[t] = inp
    return tops, tuple([layer[i] for layer in layers] for i in range(len(layers[0])))


def position_losses(model, flat, top, y, loss):
    P = views(model, flat)
    out = top @ P["head.weight"].T + P["head.bias"]
    if loss == "mse":
        return np.mean((out - y) ** 2, axis=1)
    if loss == "gaussian":
        return gaussian_nll(out, y)
    m = out.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(out - m).sum(axis=1))
    return lse - out[np.arange(len(y)), y]


def gaussian_nll(out, y):
    """-log N(y; mu, sigma^2) averaged over targets, written from the density: out (B, 2n) =
    [mu, raw], sigma = log(1 + e^raw) + 1e-6, y (B, n)."""
    n = out.shape[1] // 2
    mu, sigma = out[:, :n], np.logaddexp(0.0, out[:, n:]) + 1e-6
    return np.mean(0.5 * np.log(2 * np.pi * sigma**2) + (y - mu) ** 2 / (2 * sigma**2), axis=1)


def truncated_loss(model, theta, theta0, x, tokens, y, mask, resets, loss, t, r, k2, masks=None):
    """The loss of the update after step t (1-based count) over its r newest steps, with the
    recurrence cut at t-k2: steps <= t-k2 run with the fixed theta0, later ones with theta;
    every loss term uses theta's head. masks: as for plain_run."""
    B, H, L = x.shape[1], model.hidden_size, model.num_layers
    zeros = tuple([np.zeros((B, H)) for _ in range(L)] for _ in model.STATE)
    cut = max(t - k2, 0)
    tops0, state = plain_run(model, theta0, x, tokens, resets, zeros, range(cut), masks)
    tops, _ = plain_run(model, theta, x, tokens, resets, state, range(cut, t), masks)
    tops.update(tops0)
    w = np.ones((x.shape[0], B)) if mask is None else mask
    total, weight = 0.0, 0.0
    for s in range(t - r, t):
        total += np.sum(w[s] * position_losses(model, theta, tops[s], y[s], loss))
        weight += np.sum(w[s])
    return total / weight


def random_data(rng, T, B, I, O, loss, tokens, mask, resets):
    """x (token ids or features), y (class ids or values), a float mask with zeros (the newest
    step always carries loss) and resets, or None for those not asked for."""
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I))
    y = (
        rng.integers(0, O, size=(T, B))
        if loss == "cross_entropy"
        else rng.normal(size=(T, B, O // 2 if loss == "gaussian" else O))
    )
    m = rng.uniform(0.0, 2.0, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.2) if mask else None
    if m is not None:
        m[-1, 0] = 1.5
    rs = (rng.uniform(size=(T, B)) < 0.25).astype(np.uint8) if resets else None
    return x, y, m, rs
