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
