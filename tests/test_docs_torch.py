"""The example of docs/torch.md runs as written (optional dependency: torch)."""

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

DOC = Path(__file__).resolve().parents[1] / "docs" / "torch.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_model_the_engine_alone_cannot_train(capsys):
    block = next(b for b in python_blocks() if "class CharModel" in b)
    block = block.replace("range(0, 50 * k, k)", "range(0, 3 * k, k)")  # three updates suffice here
    namespace = {"__name__": "docs_torch"}
    exec(compile(block, str(DOC), "exec"), namespace)
    model = namespace["model"]
    import tbptt.torch

    assert isinstance(model.lstm, tbptt.torch.LSTM)
    out = capsys.readouterr().out
    assert "bits/char" in out
    assert float(out.split()[0]) < 6.1  # log2(65) = 6.02 at the start: it learned something


def test_the_swap_block_names_real_arguments():
    import torch

    import tbptt.torch

    swap = next(b for b in python_blocks() if "The swap" in b or "rnn = tbptt.torch.LSTM" in b)
    line = next(l for l in swap.splitlines() if l.startswith("rnn = tbptt.torch.LSTM"))
    rnn = eval(line.split("=", 1)[1].strip(), {"tbptt": tbptt, "torch": torch})
    out, (h, c) = rnn(torch.zeros(2, 3, 64))
    assert out.shape == (2, 3, 256) and h.shape == (2, 2, 256)


def test_the_trainer_example_runs_and_learns(capsys):
    """docs/torch.md's own cell trained with TBPTT(5, 25) and online TBPTT(1, 20), on a shorter
    stream: both make their updates and get below chance."""
    block = next(b for b in python_blocks() if "class LayerNormLSTM" in b)
    assert "echo(3000, 16, delay=8, num_symbols=4)" in block
    block = block.replace(
        "echo(3000, 16, delay=8, num_symbols=4)", "echo(200, 4, delay=2, num_symbols=4)"
    )
    exec(compile(block, str(DOC), "exec"), {"__name__": "docs_torch_trainer"})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["TBPTT(5, 25)", "TBPTT(1, 20)"]
    assert "40 updates" in lines[0] and "198 updates" in lines[1]  # no loss before step 2
    for line in lines:
        assert float(line.split("last 100 ")[1].split()[0]) < 1.386
