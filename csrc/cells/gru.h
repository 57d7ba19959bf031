// The GRU cell, PyTorch's equations and gate order (r, z, n).
//
//        W_ih / W_hh rows          r = σ(W_ir x + b_ir + W_hr h + b_hr)
//        [    0,  H) -> r          z = σ(W_iz x + b_iz + W_hz h + b_hz)
//        [    H, 2H) -> z          n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//        [   2H, 3H) -> n          h' = (1 - z) ⊙ n + z ⊙ h
//
// b_hn sits inside the reset product, so the recurrent product h W_hhᵀ + b_hh (3H columns, one
// product per step) is kept apart from the input projection W_ih x + b_ih. Forward keeps the
// activated gates r, z, n in place and, as `extra`, W_hn h + b_hn (for dr and dW_hn).
#pragma once

#include "cell.h"

namespace tbptt {

template <typename T>
class Gru final : public Cell<T> {
  public:
    Gru() : Cell<T>({/*gates=*/3, /*extra=*/1, /*carried=*/0, /*separate_recurrence=*/true}) {}
    void forward(const StepForward<T>& step, int B, int H) const override;
    double backward(const StepBackward<T>& step, int B, int H) const override;
};

}  // namespace tbptt
