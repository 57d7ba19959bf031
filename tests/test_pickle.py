"""pickle and copy.deepcopy of models, trainers and online learners (tbptt._pickled): through the
checkpoint's snapshot, never the engine, so that the copy goes on bit for bit as the original."""

import copy
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

import tbptt
from tbptt import _pickled
from tbptt.river import Classifier, Regressor

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(tbptt.__file__)))
CELLS = ("lstm", "gru", "rnn")
ROUND_TRIPS = {"pickle": lambda obj: pickle.loads(pickle.dumps(obj)), "deepcopy": copy.deepcopy}


def _trainer(cell, backend, dtype, recompute, k1=3, k2=7, dropout=0.25, loss="mse"):
    model = tbptt.model.build(cell, 3, 6, 2, num_layers=2, dtype=dtype, seed=1, dropout=dropout)
    return tbptt.Trainer(
        model,
        k1,
        k2,
        loss=loss,
        optimizer=tbptt.Adam(1e-2),
        clip_norm=1.0,
        backend=backend,
        seed=5,
        recompute=recompute,
    )


def _data(T, dtype, seed=0, loss="mse"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, 2, 3)).astype(dtype)
    y = rng.integers(0, 2, (T, 2)) if loss == "cross_entropy" else rng.normal(size=(T, 2, 2))
    mask = rng.uniform(0.5, 1.5, (T, 2))
    resets = rng.random((T, 2)) < 0.05
    return x, y, mask, resets


def _assert_continue_alike(a, b, data, calls):
    """Feed a and b the same calls; losses, outputs, state and parameters identical."""
    x, y, mask, resets = data
    for lo, hi in calls:
        la, oa = a.train(x[lo:hi], y[lo:hi], mask[lo:hi], resets[lo:hi], return_outputs=True)
        lb, ob = b.train(x[lo:hi], y[lo:hi], mask[lo:hi], resets[lo:hi], return_outputs=True)
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(oa, ob)
    assert a.flush() == b.flush()
    assert (a.updates, a.pending_steps) == (b.updates, b.pending_steps)
    np.testing.assert_array_equal(a.model.flat_parameters, b.model.flat_parameters)
    for sa, sb in zip(a.engine.state(), b.engine.state()):
        np.testing.assert_array_equal(sa, sb)


# ---- trainers --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_a_copied_trainer_goes_on_bit_for_bit(backend, cell, dtype, recompute, how):
    """Mid-stream (17 steps of TBPTT(3, 7): 2 steps pending), with dropout and resets: the copy
    and the original, fed the same 23 steps in uneven calls, compute the same bits."""
    data = _data(40, dtype)
    original = _trainer(cell, backend, dtype, recompute)
    original.train(*(a[:17] for a in data))
    assert original.pending_steps == 2
    twin = ROUND_TRIPS[how](original)
    assert twin is not original and twin.model is not original.model
    assert twin.backend == backend and twin.recompute == recompute and twin.num_streams == 2
    assert twin.pending_steps == 2 and twin.updates == original.updates
    # its engine updates its own model's array, not the original's
    assert not np.shares_memory(twin.model.flat_parameters, original.model.flat_parameters)
    _assert_continue_alike(original, twin, data, [(17, 21), (21, 22), (22, 40)])


@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_copies_of_every_kind_of_trainer(backend):
    """Tokens and cross-entropy, k2 < k1, SGD with momentum, a pending reset_state(), a fresh
    trainer (no call yet), and a copy of a copy."""
    model = tbptt.GRU(5, 4, 3, seed=2, dtype="float64")
    trainer = tbptt.Trainer(
        model, 5, 2, loss="cross_entropy", backend=backend, optimizer=tbptt.SGD(0.1, momentum=0.9)
    )
    fresh = copy.deepcopy(trainer)
    assert fresh.num_streams is None and fresh.engine.state() is None
    rng = np.random.default_rng(3)
    ids, labels = rng.integers(0, 5, (30, 3)), rng.integers(0, 3, (30, 3))
    trainer.train(ids[:12], labels[:12])
    trainer.reset_state()
    twin = pickle.loads(pickle.dumps(copy.deepcopy(trainer)))
    for lo, hi in [(12, 19), (19, 30)]:
        np.testing.assert_array_equal(
            trainer.train(ids[lo:hi], labels[lo:hi]), twin.train(ids[lo:hi], labels[lo:hi])
        )
    np.testing.assert_array_equal(trainer.model.flat_parameters, twin.model.flat_parameters)
    for a, b in [(fresh, copy.deepcopy(fresh))]:
        np.testing.assert_array_equal(a.train(ids, labels), b.train(ids, labels))


def test_numpy_backend_deepcopy_was_computing_something_else():
    """The bug of issue #24: the default deepcopy of a numpy-backend trainer copied the engine's
    views of the parameters as separate arrays, so the copy's updates went nowhere its model
    saw. Now the copy's engine updates the copy's model."""
    data = _data(30, "float64")
    original = _trainer("lstm", "numpy", "float64", False, dropout=0.0)
    original.train(*(a[:10] for a in data))
    twin = copy.deepcopy(original)
    before = twin.model.flat_parameters.copy()
    twin.train(*(a[10:20] for a in data))
    assert not np.array_equal(twin.model.flat_parameters, before)
    original.train(*(a[10:20] for a in data))
    np.testing.assert_array_equal(original.model.flat_parameters, twin.model.flat_parameters)


def test_pickled_trainer_keeps_best_and_history_and_lr():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2, 3)), rng.normal(size=(40, 2, 2))
    trainer = tbptt.Trainer(tbptt.LSTM(3, 4, 2, seed=0), 4, 4, optimizer=tbptt.Adam(1e-2))
    trainer.fit(x, y, epochs=2, validation=(x, y), progress=False)
    trainer.lr = 5e-3
    twin = pickle.loads(pickle.dumps(trainer))
    assert twin.lr == 5e-3 and twin.best["epoch"] == trainer.best["epoch"]
    np.testing.assert_array_equal(twin.best["parameters"], trainer.best["parameters"])
    np.testing.assert_array_equal(twin.history.losses, trainer.history.losses)
    assert twin.history.val_loss == trainer.history.val_loss
    np.testing.assert_array_equal(twin.train(x, y), trainer.train(x, y))


def test_pickled_bytes_hold_no_engine():
    trainer = _trainer("lstm", "cpp", "float32", True)
    trainer.train(*(a[:5] for a in _data(5, "float32")))
    data = pickle.dumps(trainer)
    for module in (b"tbptt._core", b"tbptt.engine", b"tbptt.reference"):
        assert module not in data
    for engine in ("the C++ engine", "the NumPy reference engine"):
        backend = "cpp" if "C++" in engine else "numpy"
        with pytest.raises(
            TypeError, match=re.escape(engine) + " cannot be pickled.*tbptt.Trainer"
        ):
            pickle.dumps(_trainer("gru", backend, "float64", False).engine)
        with pytest.raises(TypeError, match="cannot be pickled or copied"):
            copy.deepcopy(_trainer("gru", backend, "float64", False).engine)


def test_a_newer_pickle_format_is_refused_clearly(monkeypatch):
    trainer = _trainer("rnn", "numpy", "float64", False)
    learner = Regressor(backend="numpy")
    learner.learn_one({"a": 1.0}, 2.0)
    objects = [trainer, trainer.model, learner]
    monkeypatch.setattr(_pickled, "FORMAT", _pickled.FORMAT + 1)
    blobs = [pickle.dumps(obj) for obj in objects]
    monkeypatch.undo()
    for blob in blobs:
        with pytest.raises(ValueError, match="pickled by a newer tbptt .*upgrade tbptt"):
            pickle.loads(blob)
    with pytest.raises(TypeError, match="not the pickled state of a tbptt.Trainer"):
        tbptt.Trainer.__new__(tbptt.Trainer).__setstate__({"tbptt": "tbptt.model", "format": 1})


def test_a_pickled_trainer_goes_on_in_another_process_with_every_instruction_set_module():
    """The bytes hold no engine: another process, running any `_core_<isa>` built here
    (TBPTT_ISA), loads them and goes on (to rounding: another module's kernels round
    differently)."""
    import importlib

    others = []
    for isa in ("baseline", "avx2", "avx512"):
        try:
            importlib.import_module(f"tbptt._core_{isa}")
            others.append(isa)
        except ImportError:
            pass
    if not others:
        pytest.skip("no compiled engine")
    data = _data(30, "float64")
    trainer = _trainer("lstm", "cpp", "float64", True)
    trainer.train(*(a[:13] for a in data))
    blob = pickle.dumps((trainer, data))
    trainer.train(*(a[13:] for a in data))
    script = (
        "import pickle, sys; from tbptt import _native\n"
        "t, d = pickle.loads(sys.stdin.buffer.read())\n"
        "t.train(*(a[13:] for a in d))\n"
        "sys.stdout.buffer.write(pickle.dumps((_native.core().__name__, "
        "t.model.flat_parameters)))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([PYTHON_DIR, os.environ.get("PYTHONPATH", "")]),
    }
    for isa in others:
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=blob,
            capture_output=True,
            env={**env, "TBPTT_ISA": isa},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()
        module, parameters = pickle.loads(done.stdout)
        assert module == f"tbptt._core_{isa}"
        np.testing.assert_allclose(parameters, trainer.model.flat_parameters, rtol=0, atol=1e-12)


# ---- models and histories ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ROUND_TRIPS)
def test_models_and_histories_travel(how):
    models = [
        tbptt.LSTM(3, 5, 2, num_layers=2, forget_bias=1.0, dropout=0.1, seed=0),
        tbptt.GRU(3, 5, 2, dtype="float64", seed=1),
        tbptt.RNN(3, 5, 2, nonlinearity="relu", head_dropout=0.2, seed=2),
    ]
    x = np.random.default_rng(0).normal(size=(6, 2, 3))
    for model in models:
        twin = ROUND_TRIPS[how](model)
        assert type(twin) is type(model) and repr(twin) == repr(model)
        assert twin.config() == model.config() and twin.cell == model.cell
        np.testing.assert_array_equal(twin.flat_parameters, model.flat_parameters)
        assert not np.shares_memory(twin.flat_parameters, model.flat_parameters)
        assert twin.flat_parameters.ctypes.data % 64 == 0  # aligned, as the engine wants
        np.testing.assert_array_equal(
            twin.parameter_views["head.bias"], model.state_dict()["head.bias"]
        )
        np.testing.assert_array_equal(twin.predict(x)[0], model.predict(x)[0])
        twin.flat_parameters[:] = 0  # the views follow their own array
        assert not twin.parameter_views["head.weight"].any() and model.flat_parameters.any()
    history = tbptt.Trainer(models[0], 2, 2).fit(x, x[..., :2], epochs=2, progress=False)
    twin = ROUND_TRIPS[how](history)
    np.testing.assert_array_equal(twin.losses, history.losses)
    assert twin.to_dict() == history.to_dict()


# ---- the online learners -----------------------------------------------------------------------


def _stream(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            {"a": float(np.sin(i / 4)), "b": float(rng.normal())},
            float(np.cos(i / 4)) + 0.1 * float(rng.normal()),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_a_copied_regressor_goes_on_bit_for_bit(backend, how):
    stream = _stream(90)
    learner = Regressor(backend=backend, hidden_size=8)
    assert isinstance(ROUND_TRIPS[how](learner), Regressor)  # before any sample
    for x, y in stream[:50]:
        learner.predict_one(x)
        learner.learn_one(x, y)
    twin = ROUND_TRIPS[how](learner)
    assert twin.trainer_ is not learner.trainer_ and twin.keys_ == learner.keys_
    for x, y in stream[50:]:
        assert twin.predict_one(x) == learner.predict_one(x)
        twin.learn_one(x, y)
        learner.learn_one(x, y)
    np.testing.assert_array_equal(
        twin.trainer_.model.flat_parameters, learner.trainer_.model.flat_parameters
    )
    assert twin._state() == learner._state()


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize("backend", ["cpp", "numpy"])
def test_a_copied_classifier_goes_on_bit_for_bit(backend, how):
    stream = [
        (x, label) for (x, _), label in zip(_stream(80), [np.bool_(i % 3 == 0) for i in range(80)])
    ]
    learner = Classifier(backend=backend, hidden_size=8)
    for x, y in stream[:40]:
        learner.learn_one(x, y)
    twin = ROUND_TRIPS[how](learner)
    for x, y in stream[40:]:
        assert twin.predict_proba_one(x) == learner.predict_proba_one(x)
        twin.learn_one(x, y)
        learner.learn_one(x, y)
    assert twin.classes_ == learner.classes_
    np.testing.assert_array_equal(
        twin.trainer_.model.flat_parameters, learner.trainer_.model.flat_parameters
    )
