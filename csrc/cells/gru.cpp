// The GRU cell's step kernels (see gru.h).
#include "gru.h"

#include "../tensor.h"

namespace tbptt {

template <typename T>
void Gru<T>::forward(const StepForward<T>& step, int B, int H) const {
    MatrixMap<T> x(step.gates, B, 3 * H);             // W_ih x + b_ih, activated in place
    ConstMatrixMap<T> rec(step.recurrent, B, 3 * H);  // W_hh h + b_hh
    auto r = x.middleCols(0, H).array();
    auto z = x.middleCols(H, H).array();
    auto n = x.middleCols(2 * H, H).array();
    auto hn = MatrixMap<T>(step.extra, B, H).array();
    r = (r + rec.middleCols(0, H).array()).logistic();
    z = (z + rec.middleCols(H, H).array()).logistic();
    hn = rec.middleCols(2 * H, H).array();
    n = (n + r * hn).tanh();
    MatrixMap<T>(step.h, B, H).array() =
        (T(1) - z) * n + z * ConstMatrixMap<T>(step.h_prev, B, H).array();
}

template <typename T>
double Gru<T>::backward(const StepBackward<T>& step, int B, int H) const {
    ConstMatrixMap<T> gates(step.gates, B, 3 * H);
    const auto r = gates.middleCols(0, H).array();
    const auto z = gates.middleCols(H, H).array();
    const auto n = gates.middleCols(2 * H, H).array();
    const auto hn = ConstMatrixMap<T>(step.extra, B, H).array();
    const auto dh = ConstMatrixMap<T>(step.dh, B, H).array();
    MatrixMap<T> dx(step.dgates, B, 3 * H), drec(step.drecurrent, B, 3 * H);

    auto dn = dx.middleCols(2 * H, H).array();
    dn = dh * (T(1) - z) * (T(1) - n * n);  // through tanh, into n's pre-activation
    dx.middleCols(H, H).array() =           // dz, through the sigmoid
        dh * (ConstMatrixMap<T>(step.h_prev, B, H).array() - n) * z * (T(1) - z);
    dx.middleCols(0, H).array() = dn * hn * r * (T(1) - r);  // dr
    drec.leftCols(2 * H) = dx.leftCols(2 * H);               // r, z: the same sums
    drec.middleCols(2 * H, H).array() = dn * r;              // into W_hn h + b_hn
    MatrixMap<T>(step.dh_prev, B, H).array() = dh * z;       // h' = ... + z ⊙ h
    return 0.0;
}

template class Gru<float>;
template class Gru<double>;

}  // namespace tbptt
