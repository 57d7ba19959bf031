"""Drop-in `torch.nn.LSTM / GRU / RNN` whose forward and backward are tbptt's C++ kernels.

Each layer is a subclass of torch's own module: the constructor, the parameters (their names,
their initialisation under `torch.manual_seed`), `state_dict`, `.to()`, pickling and every check
of the arguments are torch's. Only the computation differs: per layer and direction, one call
into the core runs the whole sequence (csrc/sequence.h), and its backward is one more call, under
a `torch.autograd.Function`. What the kernels do not serve (a tensor on another device, a dtype
other than float32/float64, `proj_size > 0`) runs torch's own implementation:
never a wrong answer, only a slower one.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..cells import CELLS
from ..engines.native import core

_DTYPES = (torch.float32, torch.float64)


def _array(t: Tensor) -> Any:
    """A NumPy view of a CPU tensor, no copy (the core copies one that is not contiguous)."""
    return t.numpy(force=True)


class _Sequence(torch.autograd.Function):
    """One layer in one direction over a whole sequence: (x, h0, c0, weights) -> (h of every step,
    h_n, c_n). c0 / c_n are (B, 0) for cells that carry nothing but h."""

    @staticmethod
    def forward(
        ctx: Any,
        cell: str,
        reverse: bool,
        grad: bool,
        batch_sizes: Any,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        W_ih: Tensor,
        W_hh: Tensor,
        b_ih: Tensor,
        b_hh: Tensor,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        # grad: whether autograd records this call (forward runs in no_grad mode, and
        # needs_input_grad does not tell): only then is anything kept for the backward.
        # batch_sizes: None for x (T, B, I), else a PackedSequence's (T,) with x (N, I).
        keep = grad and any(ctx.needs_input_grad)
        h, h_n, c_n, tape = core().sequence_forward(
            cell,
            _array(x),
            _array(h0),
            _array(c0),
            _array(W_ih),
            _array(W_hh),
            _array(b_ih),
            _array(b_hh),
            reverse,
            keep,
            batch_sizes,
        )
        outputs = torch.from_numpy(h), torch.from_numpy(h_n), torch.from_numpy(c_n)
        if keep:
            ctx.tape = tape
            ctx.save_for_backward(x, h0, c0, W_ih, W_hh, b_ih, b_hh, outputs[0])
        ctx.set_materialize_grads(False)
        return outputs

    @staticmethod
    def backward(
        ctx: Any, dh: Optional[Tensor], dh_n: Optional[Tensor], dc_n: Optional[Tensor]
    ) -> Tuple[Optional[Tensor], ...]:
        x, h0, c0, W_ih, W_hh, b_ih, b_hh, h = ctx.saved_tensors
        dh_n = torch.zeros_like(h0) if dh_n is None else dh_n
        dc_n = torch.zeros_like(c0) if dc_n is None else dc_n
        dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh = core().sequence_backward(
            ctx.tape,
            _array(x),
            _array(h0),
            _array(c0),
            _array(W_ih),
            _array(W_hh),
            _array(b_ih),
            _array(b_hh),
            _array(h),
            None if dh is None else _array(dh),
            _array(dh_n),
            _array(dc_n),
            ctx.needs_input_grad[4],
        )
        grads = (dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh)
        needed = ctx.needs_input_grad[4:]
        return (None, None, None, None) + tuple(
            torch.from_numpy(g) if need and g is not None else None
            for g, need in zip(grads, needed)
        )


class _Served:
    """The forward shared by the three layers; mixed in before torch's class."""

    _tbptt_cell: str  # the core's name of the cell

    # Set by torch's RNNBase.
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    training: bool
    bidirectional: bool
    proj_size: int
    _flat_weights: List[Optional[Tensor]]

    @property
    def _carries(self) -> bool:
        """Whether the state is (h, c) rather than h (cells.py: the LSTM's)."""
        return CELLS[self._tbptt_cell].carried > 0

    def _served(self, input: Any, hx: Any) -> bool:
        """Whether the kernels run this call (else torch's own implementation does)."""
        data = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(data, Tensor) or data.device.type != "cpu" or data.dtype not in _DTYPES:
            return False
        if self.proj_size > 0:
            return False
        states = [] if hx is None else list(hx) if isinstance(hx, tuple) else [hx]
        tensors = [w for w in self._flat_weights if w is not None] + states
        return all(
            isinstance(t, Tensor) and t.device.type == "cpu" and t.dtype == data.dtype
            for t in tensors
        )

    def forward(self, input: Any, hx: Any = None) -> Any:
        if not self._served(input, hx):
            return super().forward(input, hx)  # type: ignore[misc]
        module: Any = self
        module._update_flat_weights()
        if isinstance(input, PackedSequence):
            return self._packed(input, hx)
        name = type(self).__name__
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
        x = input.transpose(0, 1) if self.batch_first else input
        if hx is not None:
            hx = self._check_hx(hx, batched)
        hx, h0, c0 = self._initial_state(hx, input, x.size(1))
        module.check_forward_args(input, hx, None)
        output, h_n, c_n = self._layers(x.contiguous(), h0, c0)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output = output.squeeze(batch_dim)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return (output, (h_n, c_n)) if self._carries else (output, h_n)

    def _packed(self, input: PackedSequence, hx: Any) -> Any:
        """A batch of sequences of different lengths: every stream runs its own steps only (its
        final state is the one after its last step; in reverse it starts there)."""
        module: Any = self
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if hx is not None:
            hx = module.permute_hidden(hx, sorted_indices)
        hx, h0, c0 = self._initial_state(hx, data, int(batch_sizes[0]))
        module.check_forward_args(data, hx, batch_sizes)
        output, h_n, c_n = self._layers(data.contiguous(), h0, c0, batch_sizes.numpy())
        packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        return packed, module.permute_hidden((h_n, c_n) if self._carries else h_n, unsorted_indices)

    def _initial_state(self, hx: Any, like: Tensor, B: int) -> Tuple[Any, Tensor, Tensor]:
        """hx (zeros of `like`'s dtype when None) and its tensors (h0, c0) as the layers take them:
        c0 is (num_layers * D, B, 0) for cells that carry nothing but h."""
        carries = self._carries
        if hx is None:
            D = 2 if self.bidirectional else 1
            zeros = like.new_zeros(self.num_layers * D, B, self.hidden_size)
            hx = (zeros, zeros) if carries else zeros
        h0, c0 = hx if carries else (hx, hx.new_zeros(hx.size(0), B, 0))
        return hx, h0, c0

    def _check_hx(self, hx: Any, batched: bool) -> Any:
        """hx as torch takes it, unbatched states given a batch dimension; torch's errors."""
        if not self._carries:
            if batched and hx.dim() != 3:
                raise RuntimeError(
                    f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor"
                )
            if not batched and hx.dim() != 2:
                raise RuntimeError(
                    f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor"
                )
            return hx if batched else hx.unsqueeze(1)
        h, c = hx
        if batched and (h.dim() != 3 or c.dim() != 3):
            raise RuntimeError(
                "For batched 3-D input, hx and cx should also be 3-D but got "
                f"({h.dim()}-D, {c.dim()}-D) tensors"
            )
        if not batched and (h.dim() != 2 or c.dim() != 2):
            raise RuntimeError(
                "For unbatched 2-D input, hx and cx should also be 2-D but got "
                f"({h.dim()}-D, {c.dim()}-D) tensors"
            )
        return (h, c) if batched else (h.unsqueeze(1), c.unsqueeze(1))

    def _weights(self, index: int) -> Sequence[Tensor]:
        """W_ih, W_hh, b_ih, b_hh of layer-direction `index` (zero biases when bias=False)."""
        per = 4 if self.bias else 2
        w = [t for t in self._flat_weights[index * per : (index + 1) * per] if t is not None]
        if self.bias:
            return w
        zeros = w[0].new_zeros(w[0].size(0))
        return [w[0], w[1], zeros, zeros]

    def _layers(
        self, x: Tensor, h0: Tensor, c0: Tensor, batch_sizes: Any = None
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Every layer and direction over time-major x (T, B, I), or packed x (N, I) with its
        batch_sizes: output, h_n, c_n."""
        D = 2 if self.bidirectional else 1
        grad = torch.is_grad_enabled()
        h_last: List[Tensor] = []
        c_last: List[Tensor] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                i = layer * D + direction
                h, h_n, c_n = _Sequence.apply(
                    self._tbptt_cell,
                    direction == 1,
                    grad,
                    batch_sizes,
                    x,
                    h0[i],
                    c0[i],
                    *self._weights(i),
                )
                outputs.append(h)
                h_last.append(h_n)
                c_last.append(c_n)
            x = outputs[0] if D == 1 else torch.cat(outputs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout, training=True)
        return x, torch.stack(h_last), torch.stack(c_last)


class LSTM(_Served, nn.LSTM):
    """`torch.nn.LSTM` on tbptt's kernels: the same constructor, parameters and forward."""

    _tbptt_cell = "lstm"


class GRU(_Served, nn.GRU):
    """`torch.nn.GRU` on tbptt's kernels: the same constructor, parameters and forward."""

    _tbptt_cell = "gru"


class RNN(_Served, nn.RNN):
    """`torch.nn.RNN` on tbptt's kernels (tanh or relu): the same constructor, parameters and
    forward."""

    @property
    def _tbptt_cell(self) -> str:  # type: ignore[override]
        return "rnn_" + self.nonlinearity
