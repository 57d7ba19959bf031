// Optimisers over the flat parameter vector, with PyTorch's semantics, and global-norm clipping.
// Legend: n = number of parameters (every tensor of the model, concatenated in state_dict order).
#pragma once

#include <cstdint>
#include <vector>

namespace tbptt {

struct OptimizerConfig {
    enum class Kind { sgd, adam } kind = Kind::adam;
    double lr = 1e-3;
    double momentum = 0.0;               // SGD
    double beta1 = 0.9, beta2 = 0.999;   // Adam
    double eps = 1e-8;                   // Adam
};

template <typename T>
class Optimizer {
  public:
    Optimizer(const OptimizerConfig& config, int64_t n);

    // SGD:  v = momentum v + g (v = g on the first step); p -= lr v       (torch.optim.SGD)
    // Adam: m, v moments; p -= lr/(1-β1^t) m / (sqrt(v)/sqrt(1-β2^t) + eps) (torch.optim.Adam)
    void step(T* params, const T* grad);

    void set_lr(double lr) { config_.lr = lr; }
    const OptimizerConfig& config() const { return config_; }

    // State, for checkpoints: steps taken and the moment buffers (SGD: momentum in first_moment).
    int64_t steps = 0;
    std::vector<T> first_moment, second_moment;

  private:
    OptimizerConfig config_;
    int64_t n_;
};

// sqrt(Σ g²) accumulated in double; NaN or inf if any gradient is.
template <typename T>
double global_norm(const T* grad, int64_t n);

// As torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1.
template <typename T>
void clip_by_global_norm(T* grad, int64_t n, double norm, double clip);

}  // namespace tbptt
