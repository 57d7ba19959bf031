"""The engine contract (tbptt.contract.Engine): both backends implement every member, with the
signature the protocol gives, and behave alike on a small case (float64, to rounding).

The full comparison of the two engines' numbers is test_backends.py; resuming one backend's
snapshot with the other is test_checkpoint.py."""

import inspect

import numpy as np
import pytest

import tbptt
from tbptt.contract import Engine
from tbptt.engine import CppEngine
from tbptt.reference import ReferenceEngine

I, H, O, L, B = 3, 5, 2, 2, 4
ENGINES = [CppEngine, ReferenceEngine]


def protocol_members():
    """The protocol's own members: {name: its attribute on the protocol class}."""
    return {
        name: value
        for name, value in vars(Engine).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def test_the_protocol_lists_what_the_trainer_uses():
    assert set(protocol_members()) == {
        "pending_steps",
        "updates",
        "steps",
        "train",
        "peek",
        "flush",
        "reset_state",
        "set_lr",
        "state",
        "horizon",
        "reset_horizon",
        "gradient",
        "set_reduce",
        "set_stream_offset",
        "reduce_buffer",
        "snapshot",
        "restore",
    }


@pytest.mark.parametrize("cls", ENGINES, ids=lambda c: c.__name__)
def test_every_member_is_implemented_with_the_protocols_signature(cls):
    for name, member in protocol_members().items():
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        ours = getattr(cls, name)
        if isinstance(member, property):
            assert isinstance(ours, property), f"{cls.__name__}.{name} must be a property"
            continue
        expected = inspect.signature(member)
        got = inspect.signature(ours)
        assert list(got.parameters) == list(expected.parameters), f"{cls.__name__}.{name}"
        for p, q in zip(got.parameters.values(), expected.parameters.values()):
            assert (p.kind, p.default) == (q.kind, q.default), f"{cls.__name__}.{name}({p.name})"


def trainers(**kwargs):
    """The same trainer on both backends (float64, LSTM with dropout, k2 > k1)."""
    out = []
    for backend in ("cpp", "numpy"):
        model = tbptt.LSTM(I, H, O, num_layers=L, dtype="float64", seed=3, dropout=0.1)
        out.append(
            tbptt.Trainer(
                model,
                3,
                5,
                optimizer=tbptt.Adam(0.01),
                clip_norm=1.0,
                backend=backend,
                seed=2,
                **kwargs,
            )
        )
    return out


def data(T, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, B, I)), rng.normal(size=(T, B, O)), rng.uniform(size=(T, B))


def test_both_engines_are_engines_and_behave_alike():
    cpp, ref = trainers()
    assert isinstance(cpp.engine, Engine) and isinstance(ref.engine, Engine)
    assert cpp.engine.state() is None and ref.engine.state() is None
    x, y, mask = data(11)
    resets = np.zeros((11, B), bool)
    resets[6, 1] = True
    outputs = [np.zeros((11, B, O)) for _ in range(2)]
    losses = [t.engine.train(x, False, y, mask, resets, out) for t, out in zip((cpp, ref), outputs)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-11, atol=1e-13)
    for name in ("pending_steps", "updates", "steps"):
        assert getattr(cpp.engine, name) == getattr(ref.engine, name), name
    for a, b in zip(cpp.engine.state(), ref.engine.state()):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(cpp.engine.gradient(), ref.engine.gradient(), rtol=1e-10, atol=1e-13)
    for a, b in zip(cpp.engine.horizon(), ref.engine.horizon()):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert (
        cpp.engine.reduce_buffer().shape
        == ref.engine.reduce_buffer().shape
        == (cpp.model.num_parameters + 2,)
    )

    for t in (cpp, ref):
        t.engine.set_lr(0.001)
        t.engine.reset_state()
        assert not t.engine.state()[0].any()
    np.testing.assert_allclose(cpp.engine.flush(), ref.engine.flush(), rtol=1e-12)
    np.testing.assert_allclose(
        cpp.model.flat_parameters, ref.model.flat_parameters, rtol=0, atol=1e-12
    )
    for t in (cpp, ref):
        t.engine.reset_horizon()
        assert t.engine.horizon()[1].size == 0


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_peek_agrees(dropout):
    peeked = []
    for backend in ("cpp", "numpy"):
        model = tbptt.LSTM(
            I, H, O, num_layers=L, dtype="float64", seed=3, dropout=dropout, head_dropout=dropout
        )
        t = tbptt.Trainer(model, 3, 5, backend=backend, seed=2)
        x, y, mask = data(7)
        t.engine.train(x, False, y, mask, None)
        peeked.append(np.zeros((B, O)))
        t.engine.peek(x[0], False, peeked[-1])
        # what the next train call computes for that step, dropout masks included
        trained = np.zeros((1, B, O))
        t.engine.train(x[:1], False, y[:1], mask[:1], None, trained)
        np.testing.assert_allclose(trained[0], peeked[-1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(peeked[0], peeked[1], rtol=1e-11, atol=1e-13)


def test_the_reduce_hook_runs_between_backward_and_step_in_both():
    """set_reduce: the hook sees the un-normalised buffer of each update, in both engines."""
    seen = {}
    for t in trainers():
        calls = []
        t.engine.set_reduce(lambda t=t, calls=calls: calls.append(t.engine.reduce_buffer().copy()))
        x, y, mask = data(6, seed=1)
        t.engine.train(x, False, y, mask, None)
        seen[t.backend] = calls
    assert len(seen["cpp"]) == len(seen["numpy"]) == 2
    for a, b in zip(seen["cpp"], seen["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_the_package_ships_its_types():
    """py.typed (PEP 561) and the compiled modules' stubs are installed with the package."""
    import importlib.resources

    files = importlib.resources.files("tbptt")
    for name in (
        "py.typed",
        "_core.pyi",
        "_core_baseline.pyi",
        "_core_avx2.pyi",
        "_core_avx512.pyi",
    ):
        assert files.joinpath(name).is_file(), name
