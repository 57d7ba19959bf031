"""The gradient horizon (`Trainer.horizon()`): the C++ engine against the NumPy reference, and what
it must show (k2 entries, counts, zeros beyond a reset, reset_horizon, divergence).

The horizon is, for j = 0 .. k2-1 steps back from each update's newest step, the mean over updates
of ||dL/dh_{t-j}|| and ||dL/dc_{t-j}|| (Frobenius over all streams) of every layer. Both backends
compute it independently (csrc/engine.cpp: backward, add_to_horizon; tbptt/reference.py:
_backward, _add_to_horizon); in float64 they agree to 1e-10 relative, like everything else.
"""

import zlib

import numpy as np
import pytest
from helpers import CELLS, make_model

import tbptt

I, H, O, B = 4, 3, 3, 3
F64 = dict(rtol=1e-10, atol=1e-14)


def make_trainer(backend, k1, k2, L, loss="mse", dtype="float64", optimizer=None, cell="lstm"):
    model = make_model(cell, I, H, O, num_layers=L, dtype=dtype, seed=5, forget_bias=0.5)
    return tbptt.Trainer(
        model, k1, k2, loss=loss, backend=backend, optimizer=optimizer or tbptt.Adam(0.02)
    )


def make_data(seed, T, loss, tokens, extras):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, I, size=(T, B)) if tokens else rng.normal(size=(T, B, I))
    y = rng.integers(0, O, size=(T, B)) if loss == "cross_entropy" else rng.normal(size=(T, B, O))
    mask = resets = None
    if "mask" in extras:  # float weights with zeros, and a stretch without any loss
        mask = rng.uniform(0.0, 2.0, size=(T, B)) * (rng.uniform(size=(T, B)) > 0.3)
        mask[5:12] = 0
    if "resets" in extras:
        resets = rng.uniform(size=(T, B)) < 0.15
    return x, y, mask, resets


def sl(a, lo, hi):
    return None if a is None else a[lo:hi]


def assert_same_horizon(cpp, ref, what):
    hc, hr = cpp.horizon(), ref.horizon()
    assert (
        set(hc)
        == set(hr)
        == ({"dh", "dc", "updates"} if "c" in cpp.model.STATE else {"dh", "updates"})
    ), what
    np.testing.assert_array_equal(hc["updates"], hr["updates"], err_msg=f"{what}: updates")
    for key in set(hc) - {"updates"}:
        assert hc[key].shape == hr[key].shape == (cpp.model.num_layers, cpp.k2), what
        np.testing.assert_array_equal(np.isnan(hc[key]), np.isnan(hr[key]), err_msg=what)
        np.testing.assert_allclose(hc[key], hr[key], **F64, err_msg=f"{what}: {key}")
    # and the raw sums, as the engines return them
    (sc, uc), (sr, ur) = cpp.engine.horizon(), ref.engine.horizon()
    assert sc.shape == sr.shape and sc.dtype == sr.dtype == np.float64, what
    assert uc.dtype == ur.dtype == np.int64, what
    np.testing.assert_allclose(sc, sr, **F64, err_msg=f"{what}: sums")


@pytest.mark.parametrize("extras", ["plain", "mask-resets"])
@pytest.mark.parametrize("loss,tokens", [("mse", False), ("cross_entropy", True)])
@pytest.mark.parametrize("L", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize(
    "k1,k2",
    [(4, 4), (3, 7), (7, 3), (1, 5), (5, 40)],
    ids=["k1=k2", "k2>k1", "k2<k1", "k1=1", "k2>stream"],
)
@pytest.mark.parametrize("cell", CELLS)
def test_backends_agree(cell, k1, k2, L, loss, tokens, extras):
    seed = zlib.crc32(repr((k1, k2, L, loss, tokens, extras)).encode())
    cpp, ref = (make_trainer(b, k1, k2, L, loss, cell=cell) for b in ("cpp", "numpy"))
    assert_same_horizon(cpp, ref, "before training")
    x, y, mask, resets = make_data(seed, 30, loss, tokens, extras)
    for a, b in ((0, 6), (6, 6), (6, 17), (17, 30)):
        if a == 17:
            for t in (cpp, ref):
                t.reset_state()
        args = (x[a:b], y[a:b], sl(mask, a, b), sl(resets, a, b))
        cpp.train(*args)
        ref.train(*args)
        assert_same_horizon(cpp, ref, f"after x[{a}:{b}]")
    assert (cpp.flush() is None) == (ref.flush() is None)
    assert_same_horizon(cpp, ref, "after flush")
    assert cpp.horizon()["updates"][0] > 0
    for t in (cpp, ref):
        t.reset_horizon()
    assert_same_horizon(cpp, ref, "after reset_horizon")
    assert (cpp.horizon()["updates"] == 0).all() and np.isnan(cpp.horizon()["dh"]).all()
    x, y, mask, resets = make_data(seed + 1, 11, loss, tokens, extras)
    cpp.train(x, y, mask, resets)
    ref.train(x, y, mask, resets)
    assert_same_horizon(cpp, ref, "after reset_horizon and more training")


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("L", [1, 2])
def test_counts_and_shapes(backend, L):
    """updates[j] counts the updates whose window reached j steps back: the first updates' windows
    are cut at the start of training; updates without loss are not counted."""
    k1, k2 = 2, 5
    t = make_trainer(backend, k1, k2, L)
    h = t.horizon()
    assert h["dh"].shape == h["dc"].shape == (L, k2) and h["updates"].shape == (k2,)
    assert (h["updates"] == 0).all() and np.isnan(h["dh"]).all() and np.isnan(h["dc"]).all()
    x, y, _, _ = make_data(0, 10, "mse", False, "plain")
    mask = np.ones((10, B))
    mask[6:8] = 0  # update 4 (steps 7..8) carries no loss: no optimiser step, not counted
    t.train(x, y, mask)  # updates after steps 2, 4, 6, 8, 10: windows of 2, 4, 5, -, 5 steps
    h = t.horizon()
    np.testing.assert_array_equal(h["updates"], [4, 4, 3, 3, 2])
    assert np.isfinite(h["dh"]).all() and (h["dh"] > 0).all() and (h["dc"] > 0).all()


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
@pytest.mark.parametrize("L", [1, 2])
def test_zero_beyond_a_reset_of_every_stream(backend, L):
    """TBPTT(4, 10) with every stream reset at the first step of each update's segment: the
    gradient reaches the 4 loss steps (j = 0..3) and nothing before the reset (j = 4..9)."""
    k1, k2, T = 4, 10, 40
    t = make_trainer(backend, k1, k2, L)
    x, y, _, _ = make_data(1, T, "mse", False, "plain")
    resets = np.zeros((T, B), dtype=bool)
    resets[::k1] = True
    t.train(x, y, resets=resets)
    h = t.horizon()
    assert h["updates"][k1:].min() > 0  # the windows did reach beyond the resets
    for key in ("dh", "dc"):
        assert (h[key][:, :k1] > 0).all(), key
        np.testing.assert_array_equal(h[key][:, k1:], 0.0, err_msg=key)


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_reset_of_some_streams_cuts_only_theirs(backend):
    """The same with only stream 0 reset: the other streams still carry gradient beyond it."""
    k1, k2, T = 4, 10, 40
    x, y, _, _ = make_data(2, T, "mse", False, "plain")
    resets = np.zeros((T, B), dtype=bool)
    resets[::k1, 0] = True
    t = make_trainer(backend, k1, k2, 1)
    t.train(x, y, resets=resets)
    assert (t.horizon()["dh"][0] > 0).all() and (t.horizon()["dc"][0] > 0).all()


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_diverged_update_is_not_counted(backend):
    k1, k2 = 3, 3
    t = make_trainer(backend, k1, k2, 1, optimizer=tbptt.SGD(0.1))
    x, y, _, _ = make_data(3, 6, "mse", False, "plain")
    t.train(x, y)
    before = t.horizon()
    y_bad = y.copy()
    y_bad[:3] = 1e300  # finite in float64, but the loss overflows to inf
    with pytest.raises(FloatingPointError):
        t.train(x[:3], y_bad[:3])
    after = t.horizon()
    np.testing.assert_array_equal(after["updates"], before["updates"])
    np.testing.assert_array_equal(after["dh"], before["dh"])


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_restored_trainer_starts_a_fresh_horizon(backend, tmp_path):
    t = make_trainer(backend, 3, 5, 1)
    x, y, _, _ = make_data(4, 12, "mse", False, "plain")
    t.train(x, y)
    t.save(tmp_path / "t.npz")
    loaded = tbptt.load_trainer(tmp_path / "t.npz")
    assert (loaded.horizon()["updates"] == 0).all()
    loaded.train(x, y)
    assert (loaded.horizon()["updates"] > 0).all()
