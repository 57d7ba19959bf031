// Linear head and losses (see head.h).
#include "head.h"

#include <cmath>

#include "tensor.h"

namespace tbptt {

template <typename T>
void head_forward(T* y, const T* h, const T* W, const T* b, int rows, int H, int O) {
    MatrixMap<T> out(y, rows, O);
    out.noalias() = ConstMatrixMap<T>(h, rows, H) * ConstMatrixMap<T>(W, O, H).transpose();
    out.rowwise() += ConstVectorMap<T>(b, O);
}

template <typename T>
double mse_loss(T* dy, const T* y, const T* target, const T* mask, int rows, int O,
                double* weight_sum) {
    ConstMatrixMap<T> Y(y, rows, O), Target(target, rows, O);
    MatrixMap<T> dY(dy, rows, O);
    double total = 0.0;
    for (int r = 0; r < rows; ++r) {
        const T w = mask ? mask[r] : T(1);
        if (w == T(0)) {
            dY.row(r).setZero();
            continue;
        }
        // A plain loop: `target` is the caller's memory, and a vectorised sum would round
        // differently depending on its alignment.
        double squares = 0.0;
        for (int o = 0; o < O; ++o) {
            const T diff = Y(r, o) - Target(r, o);
            squares += double(diff) * double(diff);
            dY(r, o) = w * (T(2) / T(O)) * diff;  // 2 * w could overflow
        }
        total += double(w) * squares / O;
        *weight_sum += double(w);
    }
    return total;
}

template <typename T>
double cross_entropy_loss(T* dy, const T* logits, const int64_t* labels, const T* mask, int rows,
                          int O, double* weight_sum) {
    ConstMatrixMap<T> Z(logits, rows, O);
    MatrixMap<T> dZ(dy, rows, O);
    double total = 0.0;
    for (int r = 0; r < rows; ++r) {
        const T w = mask ? mask[r] : T(1);
        if (w == T(0)) {
            dZ.row(r).setZero();
            continue;
        }
        const T top = Z.row(r).maxCoeff();
        dZ.row(r).array() = (Z.row(r).array() - top).exp();  // unnormalised softmax
        const T sum = dZ.row(r).sum();
        total += double(w) * (double(top) + std::log(double(sum)) - double(Z(r, labels[r])));
        dZ.row(r) *= w / sum;
        dZ(r, labels[r]) -= w;
        *weight_sum += double(w);
    }
    return total;
}

template <typename T>
void head_weight_backward(T* dW, T* db, const T* dy, const T* h, int rows, int H, int O) {
    ConstMatrixMap<T> dY(dy, rows, O);
    MatrixMap<T>(dW, O, H).noalias() += dY.transpose() * ConstMatrixMap<T>(h, rows, H);
    VectorMap<T>(db, O) += dY.colwise().sum();
}

template <typename T>
void head_input_backward(T* dh, const T* dy, const T* W, int rows, int H, int O) {
    MatrixMap<T>(dh, rows, H).noalias() = ConstMatrixMap<T>(dy, rows, O) * ConstMatrixMap<T>(W, O, H);
}

#define TBPTT_INSTANTIATE(T)                                                                     \
    template void head_forward<T>(T*, const T*, const T*, const T*, int, int, int);             \
    template double mse_loss<T>(T*, const T*, const T*, const T*, int, int, double*);           \
    template double cross_entropy_loss<T>(T*, const T*, const int64_t*, const T*, int, int,     \
                                          double*);                                              \
    template void head_weight_backward<T>(T*, T*, const T*, const T*, int, int, int);           \
    template void head_input_backward<T>(T*, const T*, const T*, int, int, int);
TBPTT_INSTANTIATE(float)
TBPTT_INSTANTIATE(double)
#undef TBPTT_INSTANTIATE

}  // namespace tbptt
