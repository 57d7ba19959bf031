// Linear head and losses (see head.h).
#include "head.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "tensor.h"
#include "threads.h"

namespace tbptt {

// Every function shares its rows (or, for the weight gradient, H's columns) among the calling
// thread's threads in pieces fixed by the sizes (threads.h): the same bits for any thread count.

template <typename T>
void head_forward(T* y, const T* h, const T* W, const T* b, int rows, int H, int O) {
    for_pieces(rows, piece_rows(rows, int64_t(H) * O), [&](int64_t, int64_t r0, int64_t r1) {
        MatrixMap<T> out(y + r0 * O, r1 - r0, O);
        out.noalias() =
            ConstMatrixMap<T>(h + r0 * H, r1 - r0, H) * ConstMatrixMap<T>(W, O, H).transpose();
        out.rowwise() += ConstVectorMap<T>(b, O);
    });
}

// Σ w·loss over rows (returned) and Σ w (added to *weight_sum), a row's w·loss from
// row_loss(r, w), which also writes row r of dy: added up per piece of rows, then the pieces in order.
template <typename T, typename RowLoss>
static double sum_row_losses(const T* mask, int rows, int O, double* weight_sum,
                             RowLoss&& row_loss) {
    const int64_t piece =
        piece_rows(rows, int64_t(O) * 16);  // exp and log: some 16 multiply-adds each
    const int64_t pieces = (rows + piece - 1) / piece;
    double one[2];  // no allocation for the one-piece losses of small updates
    Buffer<double> many(pieces > 1 ? size_t(2 * pieces) : 0);
    double* sums = pieces > 1 ? many.data() : one;  // [piece][Σ w·loss, Σ w]
    for_pieces(rows, piece, [&](int64_t p, int64_t r0, int64_t r1) {
        double total = 0.0, weights = 0.0;
        for (int64_t r = r0; r < r1; ++r) {
            const T w = mask ? mask[r] : T(1);
            total += row_loss(r, w);
            if (w != T(0)) weights += double(w);
        }
        sums[2 * p] = total, sums[2 * p + 1] = weights;
    });
    double total = 0.0;
    for (int64_t p = 0; p < pieces; ++p) total += sums[2 * p], *weight_sum += sums[2 * p + 1];
    return total;
}

template <typename T>
double mse_loss(T* dy, const T* y, const T* target, const T* mask, int rows, int O,
                double* weight_sum) {
    ConstMatrixMap<T> Y(y, rows, O), Target(target, rows, O);
    MatrixMap<T> dY(dy, rows, O);
    return sum_row_losses(mask, rows, O, weight_sum, [&](int64_t r, T w) {
        if (w == T(0)) {
            dY.row(r).setZero();
            return 0.0;
        }
        // A plain loop: `target` is the caller's memory, and a vectorised sum would round
        // differently depending on its alignment.
        double squares = 0.0;
        for (int o = 0; o < O; ++o) {
            const T diff = Y(r, o) - Target(r, o);
            squares += double(diff) * double(diff);
            dY(r, o) = w * (T(2) / T(O)) * diff;  // 2 * w could overflow
        }
        return double(w) * squares / O;
    });
}

template <typename T>
double cross_entropy_loss(T* dy, const T* logits, const int64_t* labels, const T* mask, int rows,
                          int O, double* weight_sum) {
    ConstMatrixMap<T> Z(logits, rows, O);
    MatrixMap<T> dZ(dy, rows, O);
    return sum_row_losses(mask, rows, O, weight_sum, [&](int64_t r, T w) {
        if (w == T(0)) {
            dZ.row(r).setZero();
            return 0.0;
        }
        const T top = Z.row(r).maxCoeff();
        dZ.row(r).array() = (Z.row(r).array() - top).exp();  // unnormalised softmax
        const T sum = dZ.row(r).sum();
        const double loss =
            double(w) * (double(top) + std::log(double(sum)) - double(Z(r, labels[r])));
        dZ.row(r) *= w / sum;
        dZ(r, labels[r]) -= w;
        return loss;
    });
}

template <typename T>
double gaussian_loss(T* dy, const T* y, const T* target, const T* mask, int rows, int O,
                     double* weight_sum) {
    const int n = O / 2;  // targets; y's row is [μ_0 .. μ_{n-1}, r_0 .. r_{n-1}]
    ConstMatrixMap<T> Y(y, rows, O), Target(target, rows, n);
    MatrixMap<T> dY(dy, rows, O);
    const T half_log_2pi = T(0.91893853320467274178), eps = T(kGaussianEps);
    return sum_row_losses(mask, rows, O, weight_sum, [&](int64_t r, T w) {
        if (w == T(0)) {
            dY.row(r).setZero();
            return 0.0;
        }
        double nll = 0.0;
        for (int o = 0; o < n; ++o) {
            const T raw = Y(r, n + o);
            // softplus and its derivative, the sigmoid, without overflow for either sign of raw
            const T e = std::exp(-std::abs(raw));
            const T sigma = std::max(raw, T(0)) + std::log1p(e) + eps;
            const T sig = raw >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
            const T z = (Target(r, o) - Y(r, o)) / sigma;
            nll += double(half_log_2pi + std::log(sigma) + T(0.5) * z * z);
            dY(r, o) = w * (-z / sigma) / T(n);
            dY(r, n + o) = w * ((T(1) - z * z) / sigma * sig) / T(n);
        }
        return double(w) * nll / n;
    });
}

Loss loss_of(const std::string& name) {
    if (name == "mse") return Loss::mse;
    if (name == "cross_entropy") return Loss::cross_entropy;
    if (name == "gaussian") return Loss::gaussian;
    throw std::invalid_argument("loss must be 'mse', 'cross_entropy' or 'gaussian', got '" + name +
                                "'");
}

LossTraits loss_traits(Loss loss) {
    switch (loss) {
        case Loss::mse: return {/*classes=*/false, /*outputs_per_target=*/1};
        case Loss::cross_entropy: return {/*classes=*/true, /*outputs_per_target=*/1};
        case Loss::gaussian: return {/*classes=*/false, /*outputs_per_target=*/2};
    }
    throw std::invalid_argument("unknown loss");
}

int target_values(Loss loss, int O) {
    const LossTraits traits = loss_traits(loss);
    return traits.classes ? 0 : O / traits.outputs_per_target;
}

template <typename T>
double head_loss(Loss loss, T* dy, const T* y, const T* values, const int64_t* classes,
                 const T* mask, int rows, int O, double* weight_sum) {
    switch (loss) {
        case Loss::mse: return mse_loss(dy, y, values, mask, rows, O, weight_sum);
        case Loss::cross_entropy:
            return cross_entropy_loss(dy, y, classes, mask, rows, O, weight_sum);
        case Loss::gaussian: return gaussian_loss(dy, y, values, mask, rows, O, weight_sum);
    }
    throw std::invalid_argument("unknown loss");
}

template <typename T>
void head_weight_backward(T* dW, T* db, const T* dy, const T* h, int rows, int H, int O) {
    ConstMatrixMap<T> dY(dy, rows, O), h_(h, rows, H);
    MatrixMap<T> dW_(dW, O, H);
    for_pieces(H, piece_rows(H, int64_t(rows) * O), [&](int64_t, int64_t c0, int64_t c1) {
        dW_.middleCols(c0, c1 - c0).noalias() += dY.transpose() * h_.middleCols(c0, c1 - c0);
    });
    VectorMap<T>(db, O) += dY.colwise().sum();
}

template <typename T>
void head_input_backward(T* dh, const T* dy, const T* W, int rows, int H, int O) {
    for_pieces(rows, piece_rows(rows, int64_t(O) * H), [&](int64_t, int64_t r0, int64_t r1) {
        MatrixMap<T>(dh + r0 * H, r1 - r0, H).noalias() =
            ConstMatrixMap<T>(dy + r0 * O, r1 - r0, O) * ConstMatrixMap<T>(W, O, H);
    });
}

#define TBPTT_INSTANTIATE(T)                                                                       \
    template void head_forward<T>(T*, const T*, const T*, const T*, int, int, int);                \
    template double mse_loss<T>(T*, const T*, const T*, const T*, int, int, double*);              \
    template double cross_entropy_loss<T>(T*, const T*, const int64_t*, const T*, int, int,        \
                                          double*);                                                \
    template double gaussian_loss<T>(T*, const T*, const T*, const T*, int, int, double*);         \
    template double head_loss<T>(Loss, T*, const T*, const T*, const int64_t*, const T*, int, int, \
                                 double*);                                                         \
    template void head_weight_backward<T>(T*, T*, const T*, const T*, int, int, int);              \
    template void head_input_backward<T>(T*, const T*, const T*, int, int, int);
TBPTT_INSTANTIATE(float)
TBPTT_INSTANTIATE(double)
#undef TBPTT_INSTANTIATE

}  // namespace tbptt
