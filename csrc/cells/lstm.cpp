// The LSTM cell's step kernels (see lstm.h). Elementwise work is fused into one Eigen expression
// per quantity; no allocation per step.
#include "lstm.h"

#include "../tensor.h"

namespace tbptt {

template <typename T>
void Lstm<T>::forward(const StepForward<T>& step, int B, int H) const {
    MatrixMap<T> z(step.gates, B, 4 * H);
    auto i = z.middleCols(0, H).array();
    auto f = z.middleCols(H, H).array();
    auto g = z.middleCols(2 * H, H).array();
    auto o = z.middleCols(3 * H, H).array();
    i = i.logistic();
    f = f.logistic();
    g = g.tanh();
    o = o.logistic();
    auto c = MatrixMap<T>(step.carry, B, H).array();
    c = f * ConstMatrixMap<T>(step.carry_prev, B, H).array() + i * g;
    MatrixMap<T>(step.h, B, H).array() = o * c.tanh();
}

template <typename T>
double Lstm<T>::backward(const StepBackward<T>& step, int B, int H) const {
    ConstMatrixMap<T> z(step.gates, B, 4 * H);
    const auto i = z.middleCols(0, H).array();
    const auto f = z.middleCols(H, H).array();
    const auto g = z.middleCols(2 * H, H).array();
    const auto o = z.middleCols(3 * H, H).array();
    MatrixMap<T> dz(step.dgates, B, 4 * H);
    auto tc = MatrixMap<T>(step.scratch, B, H).array();
    const auto dh = ConstMatrixMap<T>(step.dh, B, H).array();
    auto dc = MatrixMap<T>(step.dcarry, B, H).array();

    tc = ConstMatrixMap<T>(step.carry, B, H).array().tanh();
    dc += dh * o * (T(1) - tc * tc);  // through h = o tanh(c)
    const double dc_squares = double(dc.square().sum());
    dz.middleCols(3 * H, H).array() = dh * tc * o * (T(1) - o);  // do, through the sigmoid
    dz.middleCols(0, H).array() = dc * g * i * (T(1) - i);       // di
    dz.middleCols(H, H).array() =
        dc * ConstMatrixMap<T>(step.carry_prev, B, H).array() * f * (T(1) - f);
    dz.middleCols(2 * H, H).array() = dc * i * (T(1) - g * g);  // dg
    dc *= f;                                                    // into c_{t-1}
    return dc_squares;
}

template class Lstm<float>;
template class Lstm<double>;

}  // namespace tbptt
