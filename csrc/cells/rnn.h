// The Elman RNN cell, PyTorch's nn.RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or
// relu. One gate row per unit; forward keeps the pre-activation in `gates` (unused by backward,
// which needs only h': tanh' = 1 - h'², relu' = [h' > 0]).
#pragma once

#include "cell.h"

namespace tbptt {

enum class Nonlinearity { tanh, relu };

template <typename T>
class Rnn final : public Cell<T> {
  public:
    explicit Rnn(Nonlinearity act)
        : Cell<T>({/*gates=*/1, /*extra=*/0, /*carried=*/0, /*separate_recurrence=*/false,
                   /*keeps_gates=*/false}),
          act_(act) {}
    void forward(const StepForward<T>& step, int B, int H) const override;
    double backward(const StepBackward<T>& step, int B, int H) const override;

  private:
    Nonlinearity act_;
};

}  // namespace tbptt
