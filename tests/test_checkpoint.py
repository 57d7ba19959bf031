"""Checkpoints: model files and trainer checkpoints (docs/semantics.md §4: atomic, versioned, no
pickle).

Resuming: N updates, save, load, N more updates must give what the same calls give without
stopping. A trainer split into the same calls without save/load is the reference (splitting a call
may change float rounding in the C++ engine, docs/semantics.md §3.4 aside). The NumPy reference must
match bit for bit. The C++ engine is compared array by array on its restored state (bit for bit) and
on the parameters to a few ulps: its results depend in the last bit on where its buffers land in the
heap (see test_cpp_engine_is_deterministic_within_a_process, an expected failure for now).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import make_model

import tbptt
from tbptt import checkpoint


def _cpp_available():
    try:
        from tbptt import _native

        _native.core()
        return True
    except ImportError:
        return False


CPP = pytest.param(
    "cpp", marks=pytest.mark.skipif(not _cpp_available(), reason="no compiled engine")
)
BACKENDS = ["numpy", CPP]
I, H, O, L = 5, 6, 4, 2
B = 3


# ---- helpers -----------------------------------------------------------------------------------


def make_data(T, tokens, loss, dtype, seed=0, resets=True, mask=True):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, I, (T, B)) if tokens else rng.standard_normal((T, B, I)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, O, (T, B))
    else:
        y = rng.standard_normal((T, B, O)).astype(dtype)
    m = rng.uniform(0.0, 2.0, (T, B)) * (rng.random((T, B)) > 0.2) if mask else None
    r = rng.random((T, B)) < 0.08 if resets else None
    return x, y, m, r


def make_trainer(
    backend, dtype="float64", k1=3, k2=7, optimizer="adam", loss="mse", clip=1.0, hidden=H
):
    model = tbptt.LSTM(I, hidden, O, num_layers=L, dtype=dtype, seed=1, forget_bias=1.0)
    opt = {
        "sgd": lambda: tbptt.SGD(0.1, momentum=0.9, weight_decay=0.01),
        "adam": lambda: tbptt.Adam(0.01),
        "adamw": lambda: tbptt.AdamW(0.01, weight_decay=0.1),
    }[optimizer]()
    return tbptt.Trainer(model, k1, k2, loss=loss, optimizer=opt, clip_norm=clip, backend=backend)


def call(trainer, data, lo, hi):
    x, y, m, r = data
    return list(
        trainer.train(
            x[lo:hi], y[lo:hi], None if m is None else m[lo:hi], None if r is None else r[lo:hi]
        )
    )


def tolerance(dtype):
    # a few ulps of parameters of order 1: the C++ engine rounds a run of steps split across two
    # calls slightly differently from one call (Eigen picks other product kernels for other sizes)
    return 1e-14 if np.dtype(dtype) == np.float64 else 1e-5


def assert_same_snapshot(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.asarray(a[key]).dtype == np.asarray(b[key]).dtype, key
        assert np.array_equal(a[key], b[key]), f"engine state {key!r} differs after load"


def assert_resumed(backend, dtype, ref, resumed, ref_losses, losses):
    assert resumed.updates == ref.updates and resumed.pending_steps == ref.pending_steps
    assert len(ref_losses) == len(losses)
    if backend == "numpy":
        assert np.array_equal(ref.model.flat_parameters, resumed.model.flat_parameters)
        assert ref_losses == losses
        assert_same_snapshot(ref.engine.snapshot(), resumed.engine.snapshot())
    else:
        tol = tolerance(dtype)
        np.testing.assert_allclose(
            resumed.model.flat_parameters, ref.model.flat_parameters, rtol=0, atol=tol
        )
        np.testing.assert_allclose(losses, ref_losses, rtol=tol, atol=0)


# ---- resuming a trainer ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("tokens,loss", [(False, "mse"), (True, "cross_entropy"), (True, "mse")])
@pytest.mark.parametrize("k1,k2", [(3, 7), (5, 2), (4, 4)])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("split", ["at_update", "mid_update", "mid_update_and_reset"])
def test_resume_equals_not_stopping(
    tmp_path, backend, dtype, tokens, loss, k1, k2, optimizer, split
):
    """Saved at an update boundary or with pending steps (their loss terms, the window), with or
    without a pending reset_state()."""
    T = 8 * k1 + 3
    a = 4 * k1 + (0 if split == "at_update" else k1 // 2 + 1)  # N updates (+ pending steps)
    pending_reset = split == "mid_update_and_reset"
    data = make_data(T, tokens, loss, dtype)

    def first_half(trainer):
        losses = call(trainer, data, 0, a)
        if pending_reset:
            trainer.reset_state()
        return losses

    def second_half(trainer):
        losses = call(trainer, data, a, T)
        flushed = trainer.flush()
        return losses + ([] if flushed is None else [flushed])

    ref = make_trainer(backend, dtype, k1, k2, optimizer, loss)
    ref_losses = first_half(ref) + second_half(ref)

    stopped = make_trainer(backend, dtype, k1, k2, optimizer, loss)
    losses = first_half(stopped)
    assert stopped.pending_steps == (a % k1)
    before = stopped.engine.snapshot()
    path = tmp_path / "trainer.npz"
    stopped.save(path)
    del stopped
    resumed = tbptt.load_trainer(path)
    assert resumed.backend == backend and (resumed.k1, resumed.k2) == (k1, k2)
    assert resumed.num_streams == B and resumed.model.dtype == np.dtype(dtype)
    assert_same_snapshot(before, resumed.engine.snapshot())
    if pending_reset:
        assert not resumed.state()[0].any() and not resumed.state()[1].any()
    losses += second_half(resumed)
    assert_resumed(backend, dtype, ref, resumed, ref_losses, losses)


@pytest.mark.parametrize(
    "backend",
    [
        "numpy",
        pytest.param(
            "cpp", marks=[pytest.mark.skipif(not _cpp_available(), reason="no compiled engine")]
        ),
    ],
)
def test_resume_is_bit_identical(tmp_path, backend):
    """The strict form: the same calls with a save/load in the middle give bit-identical
    parameters to the same calls without it."""
    k1, k2, T, a = 3, 7, 40, 17
    data = make_data(T, False, "mse", "float64")
    ref = make_trainer(backend, k1=k1, k2=k2)
    call(ref, data, 0, a)
    call(ref, data, a, T)
    stopped = make_trainer(backend, k1=k1, k2=k2)
    call(stopped, data, 0, a)
    stopped.save(tmp_path / "t.npz")
    resumed = tbptt.load_trainer(tmp_path / "t.npz")
    call(resumed, data, a, T)
    assert np.array_equal(ref.model.flat_parameters, resumed.model.flat_parameters), (
        f"max |diff| = {np.abs(ref.model.flat_parameters - resumed.model.flat_parameters).max()}"
    )


@pytest.mark.parametrize(
    "backend",
    [
        "numpy",
        pytest.param(
            "cpp", marks=[pytest.mark.skipif(not _cpp_available(), reason="no compiled engine")]
        ),
    ],
)
def test_cpp_engine_is_deterministic_within_a_process(backend):
    """Identical trainers fed identical calls must agree bit for bit, wherever their buffers lie.
    (Differently sized allocations before each one move the engine's buffers in the heap.)"""
    data = make_data(12, False, "mse", "float64", resets=False, mask=False)
    grads, params, keep = [], [], []
    for pad in range(0, 160, 8):
        keep.append(np.empty(pad + 1, np.uint8))
        t = make_trainer(backend, k1=4, k2=4, optimizer="sgd", clip=None)
        call(t, data, 0, 4)
        grads.append(t.engine.gradient())
        call(t, data, 4, 12)
        params.append(t.model.flat_parameters.copy())
    for i, p in enumerate(params):
        assert np.array_equal(p, params[0]), (
            f"run {i}: parameters differ from run 0 by {np.abs(p - params[0]).max()}; first "
            f"update's gradient differs at flat indices {np.nonzero(grads[i] != grads[0])[0][:12]}"
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_restore_is_what_makes_it_exact(backend):
    """The comparison above would catch a checkpoint that lost the window of activations (k2 > k1)
    or the optimiser state: damaging either changes the parameters far beyond the tolerance."""
    k1, k2, T, a = 3, 7, 30, 13
    data = make_data(T, False, "mse", "float64")
    ref = make_trainer(backend, k1=k1, k2=k2)
    call(ref, data, 0, T)
    for key in ["window/h", "optimizer/m"]:
        t = make_trainer(backend, k1=k1, k2=k2)
        call(t, data, 0, a)
        state = t.engine.snapshot()
        state[key] = np.zeros_like(state[key])
        t.engine.restore(state)
        call(t, data, a, T)
        assert np.abs(t.model.flat_parameters - ref.model.flat_parameters).max() > 1e3 * tolerance(
            "float64"
        ), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_before_the_first_call_and_after_lr_change(tmp_path, backend):
    data = make_data(20, True, "cross_entropy", "float32")
    ref = make_trainer(backend, "float32", 4, 6, "sgd", "cross_entropy")
    t = make_trainer(backend, "float32", 4, 6, "sgd", "cross_entropy")
    t.save(tmp_path / "fresh.npz")
    t = tbptt.load_trainer(tmp_path / "fresh.npz")
    assert t.num_streams is None and t.state() is None and t.updates == 0
    for trainer in (ref, t):
        call(trainer, data, 0, 10)
        trainer.lr = 0.05
    t.save(tmp_path / "lr.npz")
    t = tbptt.load_trainer(tmp_path / "lr.npz")
    assert t.lr == 0.05
    call(ref, data, 10, 20)
    call(t, data, 10, 20)
    np.testing.assert_allclose(
        t.model.flat_parameters,
        ref.model.flat_parameters,
        rtol=0,
        atol=0 if backend == "numpy" else tolerance("float32"),
    )
    with pytest.raises(ValueError, match="B = 3"):
        t.train(np.zeros((2, 4), np.int64), np.zeros((2, 4), np.int64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_after_divergence(tmp_path, backend):
    """A FloatingPointError drops the history and resets the state; that state checkpoints too."""
    x = np.random.default_rng(3).standard_normal((24, B, I))
    y = np.random.default_rng(4).standard_normal((24, B, O))
    trainers = []
    for _ in range(2):
        model = tbptt.LSTM(I, H, O, dtype="float64", seed=2)
        t = tbptt.Trainer(model, 3, 5, optimizer=tbptt.SGD(1e200), backend=backend)
        with pytest.raises(FloatingPointError):
            t.train(x[:12], y[:12])
        t.lr = 1e-3
        trainers.append(t)
    ref, t = trainers
    t.save(tmp_path / "div.npz")
    t = tbptt.load_trainer(tmp_path / "div.npz")
    assert_same_snapshot(trainers[1].engine.snapshot(), t.engine.snapshot())
    with np.errstate(all="ignore"):
        for trainer in (ref, t):
            try:
                trainer.train(x[12:], y[12:])
            except FloatingPointError:
                pass
    if backend == "numpy":
        assert np.array_equal(ref.model.flat_parameters, t.model.flat_parameters)
    else:
        # parameters of order 1e197 here: compare relative to their scale
        scale = np.abs(ref.model.flat_parameters).max()
        np.testing.assert_allclose(
            t.model.flat_parameters, ref.model.flat_parameters, rtol=0, atol=1e-12 * scale
        )


# ---- resuming with the other backend ----------------------------------------------------------


@pytest.mark.skipif(not _cpp_available(), reason="no compiled engine")
@pytest.mark.parametrize("source,target", [("cpp", "numpy"), ("numpy", "cpp")])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("tokens,loss", [(False, "mse"), (True, "cross_entropy")])
def test_resume_with_the_other_backend(tmp_path, source, target, cell, optimizer, tokens, loss):
    """Saved by one backend mid-window (pending steps, k2 > k1, a pending reset_state(), dropout
    on), loaded with the other: the continued training matches the other backend's uninterrupted
    run to rounding (float64), losses and parameters."""
    k1, k2, T, a = 3, 7, 40, 17
    data = make_data(T, tokens, loss, "float64")

    def trainer(backend):
        model = make_model(
            cell, I, H, O, num_layers=L, dtype="float64", seed=1, dropout=0.2, head_dropout=0.1
        )
        opt = {
            "sgd": lambda: tbptt.SGD(0.1, momentum=0.9, weight_decay=0.01),
            "adam": lambda: tbptt.Adam(0.01),
            "adamw": lambda: tbptt.AdamW(0.01, weight_decay=0.1),
        }[optimizer]()
        return tbptt.Trainer(
            model, k1, k2, loss=loss, optimizer=opt, clip_norm=1.0, backend=backend, seed=5
        )

    ref = trainer(target)
    ref_losses = call(ref, data, 0, a)
    ref.reset_state()
    ref_losses += call(ref, data, a, T) + [ref.flush()]

    stopped = trainer(source)
    losses = call(stopped, data, 0, a)
    stopped.reset_state()
    assert stopped.pending_steps == a % k1 and stopped.engine.steps == a
    stopped.save(tmp_path / "t.npz")
    resumed = tbptt.load_trainer(tmp_path / "t.npz", backend=target)
    assert resumed.backend == target and resumed.engine.steps == a
    assert resumed.pending_steps == a % k1 and resumed.updates == stopped.updates
    losses += call(resumed, data, a, T) + [resumed.flush()]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        resumed.model.flat_parameters, ref.model.flat_parameters, rtol=0, atol=1e-12
    )


# ---- engine state that does not fit ------------------------------------------------------------


def _trained(backend, **kw):
    t = make_trainer(backend, **kw)
    call(t, make_data(10, False, "mse", kw.get("dtype", "float64")), 0, 10)
    return t


@pytest.mark.parametrize("backend", BACKENDS)
def test_restore_rejects_what_does_not_fit(backend):
    """Both backends check a snapshot against the one schema (tbptt._snapshot) the same way."""
    t = _trained(backend)
    good = t.engine.snapshot()
    other = make_trainer(backend)
    fresh = other.engine.snapshot()

    with pytest.raises(ValueError, match="window/"):
        other.engine.restore(_trained(backend, hidden=H + 1).engine.snapshot())
    with pytest.raises(ValueError, match="float32"):
        other.engine.restore(_trained(backend, dtype="float32").engine.snapshot())
    bad = dict(good)
    del bad["pending/w"]
    with pytest.raises(ValueError, match="pending/w"):
        other.engine.restore(bad)
    bad = dict(good, extra=np.zeros(1))
    with pytest.raises(ValueError, match="extra"):
        other.engine.restore(bad)
    bad = dict(good, **{"window/c": good["window/c"][:, :, :2]})
    with pytest.raises(ValueError, match="window/c"):
        other.engine.restore(bad)
    bad = dict(good, pending=np.array(3, np.int64))  # pending = k1
    with pytest.raises(ValueError, match="pending"):
        other.engine.restore(bad)
    with pytest.raises(ValueError, match="max\\(k1, k2\\)"):
        make_trainer(backend, k1=2, k2=2).engine.restore(good)
    bad = dict(good, **{"optimizer/m": good["optimizer/m"].astype(object)})
    with pytest.raises(ValueError, match="optimizer/m"):
        other.engine.restore(bad)
    bad = dict(good, tokens=np.array(1, np.int64))  # a bool, by name
    with pytest.raises(ValueError, match="'tokens' must be a scalar of dtype bool"):
        other.engine.restore(bad)
    bad = dict(good, schema=np.array(4))
    with pytest.raises(ValueError, match="newer tbptt"):
        other.engine.restore(bad)
    assert_same_snapshot(fresh, other.engine.snapshot())  # every failed restore changed nothing
    other.engine.restore(good)
    assert_same_snapshot(good, other.engine.snapshot())


@pytest.mark.skipif(not _cpp_available(), reason="no compiled engine")
def test_the_compiled_engine_checks_a_snapshot_itself():
    """The adapter checks a snapshot against the schema first; the core checks every size again
    (nothing unchecked reaches the engine), naming the entry, and changes nothing."""
    t = _trained("cpp")
    good = t.engine.snapshot()
    core = t.engine._engine
    assert good["pending"] > 0
    for key, bad in [
        ("window/c", good["window/c"][..., :-1]),
        ("optimizer/v", good["optimizer/v"][:-1]),
        ("pending/dy", good["pending/dy"].ravel()[:-1]),
        ("fresh_from", np.array(int(good["steps"]) + 1, np.int64)),
    ]:
        with pytest.raises(ValueError, match=key):
            core.restore({**good, key: bad})
    assert_same_snapshot(good, t.engine.snapshot())


@pytest.mark.skipif(not _cpp_available(), reason="no compiled engine")
def test_both_backends_write_the_same_schema():
    """The same training in either backend gives a snapshot with the same entries, shapes and
    dtypes, and values that agree to rounding."""
    numpy_state = _trained("numpy").engine.snapshot()
    cpp_state = _trained("cpp").engine.snapshot()
    assert sorted(numpy_state) == sorted(cpp_state)
    for key, value in numpy_state.items():
        assert value.shape == cpp_state[key].shape and value.dtype == cpp_state[key].dtype, key
        if value.dtype.kind in "fc":
            np.testing.assert_allclose(cpp_state[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
        else:
            assert np.array_equal(cpp_state[key], value), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_engine_restores_the_current_schema_only(backend):
    """An older file's engine state (each backend's own entries before the shared schema) is
    converted once, at load (tbptt._old_files; tests/test_old_files.py): an engine's restore
    refuses it, saying so."""
    old = checkpoint.load_arrays(
        os.path.join(os.path.dirname(__file__), "data", "lstm_trainer_v0_cpp.npz"), "trainer"
    )[1]
    cpp_own = {k[len("engine/") :]: v for k, v in old.items() if k.startswith("engine/")}
    model = tbptt.LSTM(5, 6, 4, num_layers=2, dtype="float64")
    trainer = tbptt.Trainer(model, 4, 7, loss="cross_entropy", backend=backend)
    with pytest.raises(ValueError, match="older file.*load_trainer converts"):
        trainer.engine.restore(cpp_own)


# ---- model files -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_round_trip(tmp_path, dtype):
    model = tbptt.LSTM(I, H, O, num_layers=3, dtype=dtype, seed=5, forget_bias=0.5)
    model.save(tmp_path / "m.npz")
    loaded = tbptt.load(str(tmp_path / "m.npz"))
    assert loaded.config() == model.config()
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    x = np.random.default_rng(0).standard_normal((7, 2, I))
    out_a, (h_a, c_a) = model.predict(x)
    out_b, (h_b, c_b) = loaded.predict(x)
    assert np.array_equal(out_a, out_b) and np.array_equal(h_a, h_b) and np.array_equal(c_a, c_b)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:  # plain arrays only
        assert all(f[k].dtype != object for k in f.files)


# ---- atomic writes -----------------------------------------------------------------------------


def _temp_files(folder):
    return [n for n in os.listdir(folder) if n.startswith(".tmp-")]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_previous_file(tmp_path, monkeypatch, error):
    model = tbptt.LSTM(I, H, O, seed=1)
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def partial_savez(f, **arrays):
        f.write(b"PK\x03\x04" + b"\x00" * 1000)  # some bytes of a zip, then the failure
        raise error

    monkeypatch.setattr(np, "savez", partial_savez)
    other = tbptt.LSTM(I, H, O, seed=2)
    with pytest.raises(type(error)):
        other.save(path)
    with pytest.raises(type(error)):
        _trained("numpy").save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert np.array_equal(tbptt.load(path).flat_parameters, model.flat_parameters)
    assert _temp_files(tmp_path) == []


def test_atomic_write_callback_failure(tmp_path):
    path = tmp_path / "f.bin"
    checkpoint.atomic_write(path, lambda f: f.write(b"old"))

    def write(f):
        f.write(b"new" * 1000)
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError):
        checkpoint.atomic_write(path, write)
    assert path.read_bytes() == b"old"
    assert _temp_files(tmp_path) == []


_SAVER = textwrap.dedent("""
    import sys
    import tbptt
    model = tbptt.LSTM(64, 384, 64, num_layers=2, dtype="float64", seed=0)
    path = sys.argv[1]
    i = 0
    model.flat_parameters[:] = i
    model.save(path)
    print("ready", flush=True)
    while True:
        i += 1
        model.flat_parameters[:] = i
        model.save(path)
""")


def test_sigkill_while_saving_leaves_a_readable_file(tmp_path):
    """A process killed (SIGKILL) while it saves a large model over and over leaves the last
    complete file. A temporary file left behind shows that a kill did land inside a save."""
    path = tmp_path / "big.npz"
    killed_midway = 0
    for attempt, delay in enumerate((0.05, 0.17, 0.31, 0.11, 0.23, 0.4)):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        leftovers = _temp_files(tmp_path)
        killed_midway += bool(leftovers)
        for name in leftovers:  # what a crash leaves: the target itself is untouched
            os.unlink(tmp_path / name)
        model = tbptt.load(path)  # the last complete save, never a half-written one
        values = np.unique(model.flat_parameters)
        assert values.size == 1 and values[0] == int(values[0]), values[:5]
        if attempt >= 2 and killed_midway:
            break
    assert killed_midway, "no kill landed inside a save (machine too fast?)"


# ---- files that are not (readable) checkpoints -------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        tbptt.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        tbptt.load_trainer(tmp_path / "nope.npz")


@pytest.mark.parametrize("kind", ["model", "trainer"])
def test_truncated_file(tmp_path, kind):
    path = tmp_path / "f.npz"
    if kind == "model":
        tbptt.LSTM(I, H, O, seed=1).save(path)
        load = tbptt.load
    else:
        _trained("numpy").save(path)
        load = tbptt.load_trainer
    data = path.read_bytes()
    for cut in sorted(
        {
            0,
            1,
            10,
            100,
            len(data) // 3,
            len(data) // 2,
            len(data) - 100,
            len(data) - 23,
            len(data) - 1,
        }
    ):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a readable tbptt file"):
            load(path)


def test_damaged_bytes_are_detected(tmp_path):
    path = tmp_path / "m.npz"
    model = tbptt.LSTM(I, H, O, seed=1)
    model.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the parameters
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        tbptt.load(path)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint\n")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(3))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.arange(4), b=np.eye(2))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __header__=np.frombuffer(b"{}", np.uint8), p=np.array([{"a": 1}], object))
    for path in (text, empty, npy, pickled):
        with pytest.raises(ValueError, match="not a readable tbptt file"):
            tbptt.load(path)
        with pytest.raises(ValueError, match="not a readable tbptt file"):
            tbptt.load_trainer(path)
    with pytest.raises(ValueError, match="no __header__"):
        tbptt.load(foreign)

    def with_header(name, header, **arrays):
        p = tmp_path / name
        np.savez(p, __header__=np.frombuffer(header.encode(), np.uint8), **arrays)
        return p

    with pytest.raises(ValueError, match="damaged header"):
        tbptt.load(with_header("h1.npz", "{not json"))
    with pytest.raises(ValueError, match="not a tbptt file"):
        tbptt.load(with_header("h2.npz", json.dumps({"format": "other", "version": 1})))
    with pytest.raises(ValueError, match="not a tbptt file"):
        tbptt.load(with_header("h3.npz", json.dumps([1, 2])))
    with pytest.raises(ValueError, match="version"):
        tbptt.load(with_header("h4.npz", json.dumps({"format": "tbptt", "version": "1"})))
    with pytest.raises(ValueError, match="damaged or inconsistent"):
        tbptt.load(
            with_header(
                "h5.npz",
                json.dumps(
                    {"format": "tbptt", "version": 1, "kind": "model", "config": {"bogus": 1}}
                ),
            )
        )


def test_newer_version_and_wrong_kind(tmp_path):
    model = tbptt.LSTM(I, H, O, seed=1)
    header = {
        "format": "tbptt",
        "version": checkpoint.VERSION + 1,
        "kind": "model",
        "config": model.config(),
    }
    path = tmp_path / "new.npz"
    np.savez(
        path, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **model.state_dict()
    )
    with pytest.raises(ValueError, match="newer tbptt.*upgrade"):
        tbptt.load(path)

    model.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="holds a 'model', not a 'trainer'"):
        tbptt.load_trainer(tmp_path / "m.npz")
    _trained("numpy").save(tmp_path / "t.npz")
    with pytest.raises(ValueError, match="holds a 'trainer', not a 'model'"):
        tbptt.load(tmp_path / "t.npz")
