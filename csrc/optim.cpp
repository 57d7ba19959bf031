// SGD, Adam and clipping (see optim.h). Elementwise over the flat vector: Eigen vectorises it.
#include "optim.h"

#include <algorithm>
#include <cmath>

#include "tensor.h"
#include "threads.h"

namespace tbptt {

template <typename T>
using FlatMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ConstFlatMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

template <typename T>
Optimizer<T>::Optimizer(const OptimizerConfig& config, int64_t n) : config_(config), n_(n) {
    if (config.kind != OptimizerConfig::Kind::sgd) {
        first_moment.assign(n, T(0));
        second_moment.assign(n, T(0));
    } else if (config.momentum != 0.0) {
        first_moment.assign(n, T(0));
    }
}

// Elementwise work over the flat vector in chunks that stay in L1 (one pass over memory instead of
// one per expression), the chunks shared among the calling thread's OpenMP threads as they become
// free (threads.h) when there are 8 or more.
constexpr int64_t kChunk = 4096;

template <typename F>
static void for_chunks(int64_t n, F&& body) {
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    if (chunks < 8) {  // no OpenMP construct at all (threads.h: even a false `if` costs 1 µs)
        for (int64_t c = 0; c < chunks; ++c) body(c, c * kChunk, std::min(kChunk, n - c * kChunk));
        return;
    }
    for_pieces(n, kChunk, [&](int64_t c, int64_t i0, int64_t i1) { body(c, i0, i1 - i0); });
}

template <typename T>
void Optimizer<T>::step(T* params, const T* grad, T scale) {
    if (scale != T(1) || config_.weight_decay != 0.0) scaled_.resize(n_);
    ++steps;
    const OptimizerConfig c = config_;
    const bool adam = c.kind != OptimizerConfig::Kind::sgd, first = steps == 1;
    const bool decay = c.weight_decay != 0.0;
    // AdamW shrinks the parameters by this factor before its step (computed in double, as torch).
    const T shrink = T(1.0 - c.lr * c.weight_decay), weight_decay = T(c.weight_decay);
    const double bias1 = 1.0 - std::pow(c.beta1, double(steps));
    const double bias2 = 1.0 - std::pow(c.beta2, double(steps));
    const T lr = T(c.lr), momentum = T(c.momentum), b1 = T(c.beta1), b2 = T(c.beta2),
            eps = T(c.eps);
    const T step_size = T(c.lr / bias1), bias2_sqrt = T(std::sqrt(bias2));
    for_chunks(n_, [&](int64_t, int64_t i, int64_t n) {
        FlatMap<T> p(params + i, n);
        const T* g_data = grad + i;
        if (scale != T(1)) {  // torch clips in place, then steps: round the same way
            FlatMap<T>(scaled_.data() + i, n) = scale * ConstFlatMap<T>(g_data, n);
            g_data = scaled_.data() + i;
        }
        if (decay && !adam) {  // SGD's L2 term joins the (clipped) gradient, as torch adds it
            FlatMap<T>(scaled_.data() + i, n) =
                ConstFlatMap<T>(g_data, n) + weight_decay * ConstFlatMap<T>(params + i, n);
            g_data = scaled_.data() + i;
        }
        ConstFlatMap<T> g(g_data, n);
        if (adam) {
            if (decay) p *= shrink;  // AdamW (the bindings allow decay for adamw only)
            FlatMap<T> m(first_moment.data() + i, n), v(second_moment.data() + i, n);
            m = b1 * m + (T(1) - b1) * g;
            v = b2 * v + (T(1) - b2) * g.square();
            p -= step_size * m / (v.sqrt() / bias2_sqrt + eps);
        } else if (c.momentum == 0.0) {
            p -= lr * g;
        } else {
            FlatMap<T> v(first_moment.data() + i, n);
            if (first)
                v = g;
            else
                v = momentum * v + g;
            p -= lr * v;
        }
    });
}

template <typename T>
double global_norm(const T* grad, int64_t n) {
    // Vectorised sums of squares per chunk in T, the chunks added in double and in order (the same
    // bits for any number of threads): a cast to double per element does not vectorise, and one
    // float sum over a million values loses digits.
    Buffer<double> sums(size_t((n + kChunk - 1) / kChunk), 0.0);
    for_chunks(n, [&](int64_t chunk, int64_t i, int64_t len) {
        sums[chunk] = double(ConstFlatMap<T>(grad + i, len).square().sum());
    });
    double sum = 0.0;
    for (double s : sums) sum += s;
    return std::sqrt(sum);
}

template class Optimizer<float>;
template class Optimizer<double>;
template double global_norm<float>(const float*, int64_t);
template double global_norm<double>(const double*, int64_t);

}  // namespace tbptt
