// The linear head on the top layer's h, and the losses. Legend: rows = positions (steps x B),
// H = hidden size, O = outputs (or classes).
//
// A loss kernel returns the *weighted sum* of per-position losses and writes w * dloss/dy; the
// engine divides both by the sum of weights once an update's positions are all known.
#pragma once

#include <cstdint>
#include <string>

namespace tbptt {

// The losses. Their names and facts are tbptt/losses.py's (LOSSES, one LossSpec each), which
// tests/test_cells.py checks against loss_traits below; each has its kernel here and one case in
// loss_of, loss_traits and head_loss (head.cpp). The engine never names a loss.
enum class Loss { mse, cross_entropy, gaussian };

// What the engine needs to know of a loss: whether its targets are class ids ([rows] int64, in
// [0, O)) or values ([rows, O / outputs_per_target] of T), and head outputs per target value.
struct LossTraits {
    bool classes = false;
    int outputs_per_target = 1;
};

// The loss called `name`; throws std::invalid_argument for a name no loss has.
Loss loss_of(const std::string& name);
LossTraits loss_traits(Loss loss);
// Target values per position: 0 for class ids, else O / outputs_per_target.
int target_values(Loss loss, int O);

// y: [rows, O] output: h W_headᵀ + b_head.  h: [rows, H]
template <typename T>
void head_forward(T* y, const T* h, const T* W, const T* b, int rows, int H, int O);

// Per position: mse = Σ_o (y - target)² / O (torch.nn.MSELoss averages over elements too);
// cross_entropy = logsumexp(y) - y[label] (y are logits); gaussian: y = [μ (n), r (n)], n = O / 2
// targets, σ = softplus(r) + kGaussianEps, the mean over the n targets of the negative
// log-likelihood ½ log 2π + log σ + ½ ((target - μ) / σ)².
// dy: [rows, O] output: w * dloss/dy (zero where w = 0).  mask: [rows] weights, or nullptr for ones.
// Returns Σ w * loss; adds Σ w to *weight_sum.
template <typename T>
double mse_loss(T* dy, const T* y, const T* target, const T* mask, int rows, int O,
                double* weight_sum);
template <typename T>
double cross_entropy_loss(T* dy, const T* logits, const int64_t* labels, const T* mask, int rows,
                          int O, double* weight_sum);
template <typename T>
double gaussian_loss(T* dy, const T* y, const T* target, const T* mask, int rows, int O,
                     double* weight_sum);

// The gaussian loss's floor under σ (tbptt/losses.py's GAUSSIAN_EPS): log σ stays finite where
// softplus underflows.
constexpr double kGaussianEps = 1e-6;

// The kernel of `loss` on targets `values` (or nullptr) or `classes` (or nullptr), as above.
template <typename T>
double head_loss(Loss loss, T* dy, const T* y, const T* values, const int64_t* classes,
                 const T* mask, int rows, int O, double* weight_sum);

// dW += dyᵀ h, db += Σ dy.
template <typename T>
void head_weight_backward(T* dW, T* db, const T* dy, const T* h, int rows, int H, int O);

// dh = dy W (overwrites dh: [rows, H]).
template <typename T>
void head_input_backward(T* dh, const T* dy, const T* W, int rows, int H, int O);

}  // namespace tbptt
