"""Sizes checked before anything is allocated (tbptt/_sizes.py): a model or a window too large is
refused with a ValueError / MemoryError naming the arguments and the bytes, never NumPy's error."""

import numpy as np
import pytest

import tbptt
from tbptt import _sizes, cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_machine(monkeypatch):
    """A machine with 1 GiB of memory, whatever this one has."""
    monkeypatch.setattr(_sizes, "machine_memory", lambda: 2**30)


@pytest.mark.parametrize("sizes", [(3, 5, 2, 1), (7, 4, 3, 3), (65, 128, 65, 2)])
def test_parameter_count_is_the_models(sizes):
    assert _sizes.parameter_count(*sizes) == tbptt.LSTM(*sizes).num_parameters


def test_machine_memory_is_known_here():
    memory = _sizes.machine_memory()
    assert memory is None or memory > 2**26


def test_a_model_beyond_any_allocation_is_a_value_error_naming_hidden_size():
    with pytest.raises(
        ValueError, match=r"hidden_size=1000000000.*bytes.*more than can be allocated"
    ):
        tbptt.LSTM(3, 10**9, 2)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(hidden_size=100_000), "hidden_size=100000"),
        (dict(hidden_size=64, num_layers=10**6), "num_layers=1000000"),
    ],
)
def test_a_model_beyond_the_machine_is_a_memory_error(small_machine, kwargs, name):
    with pytest.raises(MemoryError, match=rf"{name}.*bytes \(.*GiB\) as float32.*machine's memory"):
        tbptt.LSTM(3, output_size=2, **kwargs)


def test_window_bytes_of_an_lstm():
    model = tbptt.LSTM(5, 8, 3, num_layers=2, dtype="float64")
    expected = (max(4, 9) + 1) * 7 * (6 * 8 * 2 + 5) + 2 * 4 * 7 * 3
    assert _sizes.window_bytes(model, 4, 9, 7) == expected * 8
    tokens = (9 + 1) * 7 * (6 * 8 * 2 + 1) + 2 * 4 * 7 * 3
    assert _sizes.window_bytes(model, 4, 9, 7, tokens=True) == tokens * 8


@pytest.mark.parametrize(
    "model, per_unit",
    [
        (tbptt.GRU(5, 8, 3), 3 + 1 + 1),  # r z n, W_hn h, h
        (tbptt.RNN(5, 8, 3), 1 + 1),
    ],
)  # pre-activation, h
def test_window_bytes_of_the_other_cells(model, per_unit):
    assert _sizes.window_bytes(model, 2, 2, 1) == ((2 + 1) * (per_unit * 8 + 5) + 2 * 2 * 3) * 4


def test_the_parameter_count_is_the_cells():
    for model in (
        tbptt.LSTM(5, 8, 3, num_layers=2),
        tbptt.GRU(5, 8, 3, num_layers=2),
        tbptt.RNN(5, 8, 3, num_layers=2),
    ):
        gates = tbptt.model.CELLS[model.cell][1]
        assert _sizes.parameter_count(5, 8, 3, 2, gates) == model.num_parameters


@pytest.mark.parametrize("backend", tbptt.trainer.BACKENDS)
def test_a_window_beyond_the_machine_is_refused_before_training(small_machine, backend):
    trainer = tbptt.Trainer(tbptt.LSTM(4, 64, 1), 10**6, 10**6, backend=backend)
    with pytest.raises(MemoryError, match=r"k1=1000000, k2=1000000, B=32: .* bytes"):
        trainer.train(np.zeros((2, 32, 4)), np.zeros((2, 32, 1)))
    assert trainer.num_streams is None and trainer.updates == 0  # nothing changed: it can go on
    trainer = tbptt.Trainer(trainer.model, 10**4, 10**4, backend=backend)
    trainer.train(np.zeros((2, 32, 4)), np.zeros((2, 32, 1)))  # k = 10^4 fits in 1 GiB


def test_cli_prints_one_line_and_exits_2(small_machine, tmp_path, capsys):
    argv = ["train", "--task", "echo", "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli.main([*argv, "--hidden", "100000"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("tbptt train: error: hidden_size=100000")
    assert cli.main([*argv, "--k1", "10000000"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("tbptt train: error: k1=10000000")
    assert not (tmp_path / "run").exists()  # refused before the output folder is made
