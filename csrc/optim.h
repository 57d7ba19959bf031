// Optimisers over the flat parameter vector, with PyTorch's semantics, and global-norm clipping.
// Legend: n = number of parameters (every tensor of the model, concatenated in state_dict order).
#pragma once

#include <cstdint>
#include <vector>

#include "tensor.h"

namespace tbptt {

struct OptimizerConfig {
    enum class Kind { sgd, adam, adamw } kind = Kind::adam;
    double lr = 1e-3;
    double weight_decay = 0.0;          // SGD: L2 added to the gradient; AdamW: decoupled
    double momentum = 0.0;              // SGD
    double beta1 = 0.9, beta2 = 0.999;  // Adam
    double eps = 1e-8;                  // Adam
};

template <typename T>
class Optimizer {
  public:
    Optimizer(const OptimizerConfig& config, int64_t n);

    // SGD:  g += wd p; v = momentum v + g (v = g on the first step); p -= lr v  (torch.optim.SGD)
    // Adam: m, v moments; p -= lr/(1-β1^t) m / (sqrt(v)/sqrt(1-β2^t) + eps) (torch.optim.Adam)
    // AdamW: p *= 1 - lr wd, then Adam's step                             (torch.optim.AdamW)
    // The step uses scale * grad (scale < 1 when clipping), leaving grad itself as it was.
    void step(T* params, const T* grad, T scale = T(1));

    void set_lr(double lr) { config_.lr = lr; }
    const OptimizerConfig& config() const { return config_; }

    // State, for checkpoints: steps taken and the moment buffers (SGD: momentum in first_moment).
    int64_t steps = 0;
    Buffer<T> first_moment, second_moment;

  private:
    OptimizerConfig config_;
    int64_t n_;
    Buffer<T> scaled_;  // the clipped gradient
};

// sqrt(Σ g²) accumulated in double; NaN or inf if any gradient is.
template <typename T>
double global_norm(const T* grad, int64_t n);

// As torch.nn.utils.clip_grad_norm_: the gradient's scale, clip / (norm + 1e-6) when below 1.
inline double clip_scale(double norm, double clip) {
    const double coef = clip / (norm + 1e-6);
    return coef < 1.0 ? coef : 1.0;
}

}  // namespace tbptt
