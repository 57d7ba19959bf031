"""tbptt inside PyTorch (`pip install "tbptt[torch]"`): `LSTM`, `GRU` and `RNN`, drop-in
replacements for torch's modules whose forward and backward run tbptt's C++ kernels
(docs/torch.md)."""

from ._layers import GRU, LSTM, RNN

__all__ = ["LSTM", "GRU", "RNN"]
