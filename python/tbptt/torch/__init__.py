"""tbptt inside PyTorch (`pip install "tbptt[torch]"`): `LSTM`, `GRU` and `RNN`, drop-in
replacements for torch's modules whose forward and backward run tbptt's C++ kernels
(docs/torch.md); and `Trainer`, TBPTT(k1, k2) for any PyTorch module with the
semantics of docs/semantics.md §3."""

from ._layers import GRU, LSTM, RNN
from ._trainer import Trainer

__all__ = ["LSTM", "GRU", "RNN", "Trainer"]
