// The LSTM cell, PyTorch's equations and gate order (i, f, g, o).
//
// The four gates are stacked in the rows of W_ih (4H x I) and W_hh (4H x H):
//
//        W_ih / W_hh rows          gates[b] (one row of B, 4H columns)
//        [    0,  H) -> i          | i (sigmoid) | f (sigmoid) | g (tanh) | o (sigmoid) |
//        [    H, 2H) -> f
//        [   2H, 3H) -> g          c_t = f * c_{t-1} + i * g
//        [   3H, 4H) -> o          h_t = o * tanh(c_t)
//
// Forward keeps the activated gates (in place of their pre-activations) and carries c.
#pragma once

#include "cell.h"

namespace tbptt {

template <typename T>
class Lstm final : public Cell<T> {
  public:
    Lstm() : Cell<T>({/*gates=*/4, /*extra=*/0, /*carried=*/1, /*separate_recurrence=*/false}) {}
    void forward(const StepForward<T>& step, int B, int H) const override;
    double backward(const StepBackward<T>& step, int B, int H) const override;
};

}  // namespace tbptt
