// The Elman RNN cell's step kernels (see rnn.h).
#include "rnn.h"

#include "../tensor.h"

namespace tbptt {

template <typename T>
void Rnn<T>::forward(const StepForward<T>& step, int B, int H) const {
    const auto z = ConstMatrixMap<T>(step.gates, B, H).array();
    auto h = MatrixMap<T>(step.h, B, H).array();
    if (act_ == Nonlinearity::tanh)
        h = z.tanh();
    else
        h = z.max(T(0));
}

template <typename T>
double Rnn<T>::backward(const StepBackward<T>& step, int B, int H) const {
    const auto h = ConstMatrixMap<T>(step.h, B, H).array();
    const auto dh = ConstMatrixMap<T>(step.dh, B, H).array();
    auto dz = MatrixMap<T>(step.dgates, B, H).array();
    if (act_ == Nonlinearity::tanh)
        dz = dh * (T(1) - h * h);
    else
        dz = (h > T(0)).select(dh, T(0));
    return 0.0;
}

template class Rnn<float>;
template class Rnn<double>;

}  // namespace tbptt
