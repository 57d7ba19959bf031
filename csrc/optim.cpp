// SGD, Adam and clipping (see optim.h). Elementwise over the flat vector: Eigen vectorises it.
#include "optim.h"

#include <algorithm>
#include <cmath>

#include "tensor.h"

namespace tbptt {

template <typename T>
using FlatMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ConstFlatMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

template <typename T>
Optimizer<T>::Optimizer(const OptimizerConfig& config, int64_t n) : config_(config), n_(n) {
    if (config.kind == OptimizerConfig::Kind::adam) {
        first_moment.assign(n, T(0));
        second_moment.assign(n, T(0));
    } else if (config.momentum != 0.0) {
        first_moment.assign(n, T(0));
    }
}

template <typename T>
void Optimizer<T>::step(T* params, const T* grad, T scale) {
    FlatMap<T> p(params, n_);
    if (scale != T(1)) {  // torch clips in place, then steps: round the same way
        scaled_.resize(n_);
        FlatMap<T>(scaled_.data(), n_) = scale * ConstFlatMap<T>(grad, n_);
        grad = scaled_.data();
    }
    ConstFlatMap<T> g(grad, n_);
    ++steps;
    if (config_.kind == OptimizerConfig::Kind::sgd) {
        if (config_.momentum == 0.0) {
            p -= T(config_.lr) * g;
            return;
        }
        FlatMap<T> v(first_moment.data(), n_);
        if (steps == 1)
            v = g;
        else
            v = T(config_.momentum) * v + g;
        p -= T(config_.lr) * v;
        return;
    }
    FlatMap<T> m(first_moment.data(), n_), v(second_moment.data(), n_);
    const T b1 = T(config_.beta1), b2 = T(config_.beta2);
    m = b1 * m + (T(1) - b1) * g;
    v = b2 * v + (T(1) - b2) * g.square();
    const double bias1 = 1.0 - std::pow(config_.beta1, double(steps));
    const double bias2 = 1.0 - std::pow(config_.beta2, double(steps));
    const T step_size = T(config_.lr / bias1);
    const T bias2_sqrt = T(std::sqrt(bias2));
    p -= step_size * m / (v.sqrt() / bias2_sqrt + T(config_.eps));
}

template <typename T>
double global_norm(const T* grad, int64_t n) {
    // Vectorised sums of squares over chunks in T, the chunks added in double: a cast to double
    // per element does not vectorise, and one float sum over a million values loses digits.
    constexpr int64_t chunk = 4096;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i += chunk)
        sum += double(ConstFlatMap<T>(grad + i, std::min(chunk, n - i)).square().sum());
    return std::sqrt(sum);
}

template class Optimizer<float>;
template class Optimizer<double>;
template double global_norm<float>(const float*, int64_t);
template double global_norm<double>(const double*, int64_t);

}  // namespace tbptt
