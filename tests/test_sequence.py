"""The core's stateless sequence pass (csrc/sequence.h: what tbptt.torch's layers run), without
torch: its forward against the plain equations (tests/helpers.py: plain_layer), in both directions,
and its backward against central finite differences in float64; bad arrays are refused. These run
under the sanitizers too (.ci/sanitize.sh runs the suite without torch)."""

import numpy as np
import pytest
from helpers import CELLS, plain_layer

from tbptt._native import core

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
PREFIX = {"lstm": "lstm", "gru": "gru", "rnn_tanh": "rnn", "rnn_relu": "rnn"}


def case(cell, T=6, B=3, I=4, H=5, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    G, C = GATES[cell] * H, H if cell == "lstm" else 0
    arrays = {
        "x": rng.standard_normal((T, B, I)),
        "h0": rng.standard_normal((B, H)) * 0.5,
        "carry0": rng.standard_normal((B, C)) * 0.5,
        "W_ih": rng.standard_normal((G, I)) * 0.4,
        "W_hh": rng.standard_normal((G, H)) * 0.4,
        "b_ih": rng.standard_normal(G) * 0.2,
        "b_hh": rng.standard_normal(G) * 0.2,
    }
    return {k: v.astype(dtype) for k, v in arrays.items()}


def plain(cell, a, reverse):
    """Every step's h and the final (h, carry) from the equations, step by step."""
    p = PREFIX[cell]
    P = {
        f"{p}.weight_ih_l0": a["W_ih"],
        f"{p}.weight_hh_l0": a["W_hh"],
        f"{p}.bias_ih_l0": a["b_ih"],
        f"{p}.bias_hh_l0": a["b_hh"],
    }
    state = (a["h0"], a["carry0"]) if cell == "lstm" else (a["h0"],)
    T = a["x"].shape[0]
    h = np.zeros(a["x"].shape[:2] + (a["h0"].shape[1],))
    for t in reversed(range(T)) if reverse else range(T):
        state = plain_layer(cell, P, 0, a["x"][t], state)
        h[t] = state[0]
    return h, state[0], state[1] if cell == "lstm" else np.zeros_like(a["carry0"])


def forward(cell, a, reverse, keep=False):
    return core().sequence_forward(
        cell,
        a["x"],
        a["h0"],
        a["carry0"],
        a["W_ih"],
        a["W_hh"],
        a["b_ih"],
        a["b_hh"],
        reverse,
        keep,
    )


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_equals_the_equations(cell, reverse):
    a = case(cell)
    h, h_n, c_n, tape = forward(cell, a, reverse)
    assert tape is None  # keep=False: nothing kept
    expected = plain(cell, a, reverse)
    for got, want in zip((h, h_n, c_n), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("B", [3, 70], ids=["one-block", "blocks"])  # 70 streams: blocks of 4 steps
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
def test_backward_equals_finite_differences(cell, reverse, B):
    a = case(cell, B=B, seed=1)
    rng = np.random.default_rng(2)
    h, h_n, c_n, tape = forward(cell, a, reverse, keep=True)
    dy, dh_n, dc_n = (rng.standard_normal(v.shape) for v in (h, h_n, c_n))

    def loss(arrays):
        h, h_n, c_n = plain(cell, arrays, reverse)
        return float((dy * h).sum() + (dh_n * h_n).sum() + (dc_n * c_n).sum())

    grads = core().sequence_backward(
        tape,
        a["x"],
        a["h0"],
        a["carry0"],
        a["W_ih"],
        a["W_hh"],
        a["b_ih"],
        a["b_hh"],
        h,
        dy,
        dh_n,
        dc_n,
        True,
    )
    names = ["x", "h0", "carry0", "W_ih", "W_hh", "b_ih", "b_hh"]
    eps = 1e-6
    for name, grad in zip(names, grads):
        assert grad.shape == a[name].shape, name
        if grad.size == 0:
            continue
        direction = rng.standard_normal(a[name].shape)
        plus, minus = dict(a), dict(a)
        plus[name] = a[name] + eps * direction
        minus[name] = a[name] - eps * direction
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        np.testing.assert_allclose(
            float((grad * direction).sum()),
            numeric,
            rtol=1e-7,
            atol=1e-9,
            err_msg=f"{cell}: dL/d{name}",
        )


@pytest.mark.parametrize("cell", CELLS)
def test_float32_and_no_output_gradient(cell):
    """float32 agrees with float64; dy=None means no gradient through the outputs; need_dx=False."""
    a64 = case(cell, B=9, H=33, seed=3)  # pieces of streams and a packing remainder
    a32 = {k: v.astype(np.float32) for k, v in a64.items()}
    h64, hn64, cn64, tape64 = forward(cell, a64, False, keep=True)
    h32, hn32, cn32, tape32 = forward(cell, a32, False, keep=True)
    np.testing.assert_allclose(h32, h64, rtol=1e-4, atol=1e-5)
    dh_n = np.ones_like(hn64)

    def args(a, h, tape):
        return (
            tape,
            a["x"],
            a["h0"],
            a["carry0"],
            a["W_ih"],
            a["W_hh"],
            a["b_ih"],
            a["b_hh"],
            h,
            None,
            dh_n.astype(h.dtype),
            np.zeros_like(a["carry0"]),
        )

    g64 = core().sequence_backward(*args(a64, h64, tape64), False)
    g32 = core().sequence_backward(*args(a32, h32, tape32), False)
    assert g64[0] is None and g32[0] is None
    for x, y in zip(g32[1:], g64[1:]):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
    # dy=None equals dy=zeros
    zeros = core().sequence_backward(
        tape64,
        a64["x"],
        a64["h0"],
        a64["carry0"],
        a64["W_ih"],
        a64["W_hh"],
        a64["b_ih"],
        a64["b_hh"],
        h64,
        np.zeros_like(h64),
        dh_n,
        np.zeros_like(a64["carry0"]),
        False,
    )
    for x, y in zip(zeros[1:], g64[1:]):
        np.testing.assert_array_equal(x, y)


def test_no_steps():
    a = case("lstm", T=0)
    h, h_n, c_n, tape = forward("lstm", a, False, keep=True)
    assert h.shape == (0, 3, 5)
    np.testing.assert_array_equal(h_n, a["h0"])
    np.testing.assert_array_equal(c_n, a["carry0"])
    g = core().sequence_backward(
        tape,
        a["x"],
        a["h0"],
        a["carry0"],
        a["W_ih"],
        a["W_hh"],
        a["b_ih"],
        a["b_hh"],
        h,
        None,
        np.ones((3, 5)),
        np.full((3, 5), 2.0),
        True,
    )
    np.testing.assert_array_equal(g[1], np.ones((3, 5)))
    np.testing.assert_array_equal(g[2], np.full((3, 5), 2.0))
    assert not g[3].any() and not g[4].any()


def test_bad_arrays_are_refused():
    a = case("lstm")
    with pytest.raises(ValueError, match="unknown cell|cell"):
        forward("lstmm", a, False)
    with pytest.raises(ValueError, match="W_hh has shape"):
        forward("lstm", dict(a, W_hh=a["W_hh"][:, :-1]), False)
    with pytest.raises(ValueError, match="carry0 has shape"):
        forward("lstm", dict(a, carry0=a["carry0"][:, :0]), False)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, I\)"):
        forward("lstm", dict(a, x=a["x"][0]), False)
    with pytest.raises(TypeError, match="float32 or float64"):
        forward("lstm", dict(a, x=a["x"].astype(np.int64)), False)
    h, h_n, c_n, tape = forward("lstm", a, False, keep=True)
    with pytest.raises(ValueError, match="dy has shape"):
        core().sequence_backward(
            tape,
            a["x"],
            a["h0"],
            a["carry0"],
            a["W_ih"],
            a["W_hh"],
            a["b_ih"],
            a["b_hh"],
            h,
            h[:-1],
            h_n,
            c_n,
            True,
        )


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(
    "lengths",
    [[5, 3, 3, 1], sorted(np.random.default_rng(6).integers(1, 10, 70))[::-1]],
    ids=["few", "blocks"],
)
def test_packed_rows(cell, reverse, lengths):
    """Streams of different lengths, longest first, packed row by row (batch_sizes): each stream
    equals its own run alone, and the backward equals finite differences."""
    lengths = [int(n) for n in lengths]
    B, H = len(lengths), 5
    batch_sizes = np.array([sum(n > t for n in lengths) for t in range(lengths[0])], dtype=np.int64)
    a = case(cell, T=lengths[0], B=B, H=H, seed=4)

    def pack(per_step):  # (T, B, ...) -> (N, ...), the active streams of each step
        return np.concatenate([per_step[t, :n] for t, n in enumerate(batch_sizes)])

    packed = dict(a, x=pack(a["x"]))
    h, h_n, c_n, tape = core().sequence_forward(
        cell,
        packed["x"],
        a["h0"],
        a["carry0"],
        a["W_ih"],
        a["W_hh"],
        a["b_ih"],
        a["b_hh"],
        reverse,
        True,
        batch_sizes,
    )
    assert h.shape == (sum(lengths), H)
    for b, n in enumerate(lengths):
        alone = {
            k: v[:n, b : b + 1] if k == "x" else v[b : b + 1] if k in ("h0", "carry0") else v
            for k, v in a.items()
        }
        h_b, hn_b, cn_b = plain(cell, alone, reverse)
        rows = [sum(batch_sizes[:t]) + b for t in range(n)]
        np.testing.assert_allclose(h[rows], h_b[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(h_n[b], hn_b[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c_n[b], cn_b[0], rtol=1e-12, atol=1e-14)

    rng = np.random.default_rng(5)
    dy, dh_n, dc_n = (rng.standard_normal(v.shape) for v in (h, h_n, c_n))

    def loss(arrays):
        total = 0.0
        for b, n in enumerate(lengths):
            alone = {
                k: v[:n, b : b + 1] if k == "x" else v[b : b + 1] if k in ("h0", "carry0") else v
                for k, v in arrays.items()
            }
            h_b, hn_b, cn_b = plain(cell, alone, reverse)
            rows = [sum(batch_sizes[:t]) + b for t in range(n)]
            total += (
                (dy[rows] * h_b[:, 0]).sum() + (dh_n[b] * hn_b[0]).sum() + (dc_n[b] * cn_b[0]).sum()
            )
        return float(total)

    grads = core().sequence_backward(
        tape,
        packed["x"],
        a["h0"],
        a["carry0"],
        a["W_ih"],
        a["W_hh"],
        a["b_ih"],
        a["b_hh"],
        h,
        dy,
        dh_n,
        dc_n,
        True,
    )
    eps = 1e-6
    for name, grad in zip(["x", "h0", "carry0", "W_ih", "W_hh", "b_ih", "b_hh"], grads):
        if grad.size == 0:
            continue
        direction = rng.standard_normal(grad.shape)
        if name == "x":  # a direction on the packed rows, spread back over (T, B)
            spread = np.zeros_like(a["x"])
            at = 0
            for t, n in enumerate(batch_sizes):
                spread[t, :n] = direction[at : at + n]
                at += n
            plus, minus = dict(a, x=a["x"] + eps * spread), dict(a, x=a["x"] - eps * spread)
        else:
            plus, minus = dict(a), dict(a)
            plus[name], minus[name] = a[name] + eps * direction, a[name] - eps * direction
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        np.testing.assert_allclose(
            float((grad * direction).sum()),
            numeric,
            rtol=1e-7,
            atol=1e-9,
            err_msg=f"{cell}: dL/d{name}",
        )


def test_bad_batch_sizes_are_refused():
    a = case("gru", T=3, B=2)
    x = a["x"].reshape(6, -1)

    def run(sizes, x=x):
        return core().sequence_forward(
            "gru",
            x,
            a["h0"],
            a["carry0"],
            a["W_ih"],
            a["W_hh"],
            a["b_ih"],
            a["b_hh"],
            False,
            False,
            np.array(sizes),
        )

    with pytest.raises(ValueError, match="non-increasing"):
        run([1, 2, 2, 1])
    with pytest.raises(ValueError, match="rows, batch_sizes sum"):
        run([2, 2, 1])
    with pytest.raises(ValueError, match=r"packed x must have shape \(N, I\)"):
        run([2, 2, 2], x=a["x"])
    with pytest.raises(ValueError, match="h0 has shape"):
        run([3, 2, 1])  # B = 3 streams, h0 holds 2


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(
    "H", [16, 256, 512, 440], ids=["small", "W_hh 1 MB", "W_hh beyond L2", "uneven panels"]
)
def test_the_same_bits_on_any_number_of_threads(H, cell):
    """Pieces of streams (and of the weight gradients) are fixed by the sizes or never change a
    row's arithmetic: one thread and two give the same bits. With W_hh beyond any core's L2 cache
    (above 2 MB: H = 440 and 512) and more than one thread, the forward shares each step's
    products by columns instead (and inference too): the same bits still."""
    import tbptt

    a = {k: v.astype(np.float32) for k, v in case(cell, T=5, B=37, I=8, H=H, seed=8).items()}
    dy = np.random.default_rng(9).standard_normal((5, 37, H)).astype(np.float32)
    results = []
    saved = tbptt.get_num_threads()
    try:
        for threads in (1, 2):
            tbptt.set_num_threads(threads)
            inferred = forward(cell, a, False)[:3]
            h, h_n, c_n, tape = forward(cell, a, False, keep=True)
            for one, two in zip(inferred, (h, h_n, c_n)):
                np.testing.assert_array_equal(one, two)
            grads = core().sequence_backward(
                tape,
                a["x"],
                a["h0"],
                a["carry0"],
                a["W_ih"],
                a["W_hh"],
                a["b_ih"],
                a["b_hh"],
                h,
                dy,
                h_n,
                c_n,
                True,
            )
            results.append([h, h_n, c_n, *grads])
    finally:
        tbptt.set_num_threads(saved)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("B", [1, 3, 37], ids=["one stream", "few", "many"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
def test_inference_gives_the_same_bits(cell, reverse, B):
    """With nothing kept (inference), the forward runs on buffers of its own (one step's rows
    where the input is projected step by step): the same h, h_n and carry as the forward that keeps
    every step for the backward, padded or packed."""
    a = {k: v.astype(np.float32) for k, v in case(cell, T=7, B=B, I=6, H=24, seed=11).items()}
    kept = forward(cell, a, reverse, keep=True)
    assert kept[3] is not None
    inferred = forward(cell, a, reverse, keep=False)
    assert inferred[3] is None
    for one, two in zip(kept[:3], inferred[:3]):
        np.testing.assert_array_equal(one, two)
    lengths = np.sort(np.random.default_rng(B).integers(1, 8, B))[::-1]
    batch_sizes = np.array([(lengths > t).sum() for t in range(lengths[0])], dtype=np.int64)
    x = np.concatenate([a["x"][t, :n] for t, n in enumerate(batch_sizes)])
    args = [a[k] for k in ("h0", "carry0", "W_ih", "W_hh", "b_ih", "b_hh")]
    packed = [
        core().sequence_forward(cell, x, *args, reverse, keep, batch_sizes)[:3]
        for keep in (True, False)
    ]
    for one, two in zip(*packed):
        np.testing.assert_array_equal(one, two)
