// TBPTT(k1, k2) for a stack of LSTM layers and a linear head: the training engine of tbptt.
//
// Every k1 steps it makes an update: the loss of the k1 newest steps, its gradient with the
// recurrence cut k2 steps back (Williams & Peng's BPTT(h; h') when k2 > k1: the window reaches
// into steps computed before the previous update, whose activations are kept, not recomputed),
// optional global-norm clipping, then the optimiser step. Steps since the last update stay
// pending between calls, so the result does not depend on how a stream is split into calls.
//
// What it is not: a general autograd. It owns the activations of the last max(k1, k2) steps, the
// optimiser state and the carried state; the parameters belong to the caller (a flat array in
// torch's state_dict order) and are updated in place.
//
// Legend: T = steps in a call, B = streams, I = input size, H = hidden size, L = layers,
// O = outputs, S = window capacity in steps.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor.h"

#include "head.h"
#include "lstm.h"
#include "optim.h"
#include "window.h"

namespace tbptt {

// Sizes of the model, and where each tensor lies in the flat parameter vector (state_dict order:
// per layer W_ih, W_hh, b_ih, b_hh; then head W, head b).
struct ModelShape {
    int I = 0, H = 0, O = 0, L = 0;

    int layer_input(int l) const { return l == 0 ? I : H; }
    int64_t layer_offset(int l) const;  // of W_ih of layer l
    int64_t head_offset() const { return layer_offset(L); }
    int64_t num_params() const { return head_offset() + int64_t(O) * H + O; }

    template <typename T>
    LayerWeights<T> weights(const T* p, int l) const {
        const int64_t G = 4 * H, o = layer_offset(l);
        const T* W_ih = p + o;
        const T* W_hh = W_ih + G * layer_input(l);
        return {W_ih, W_hh, W_hh + G * H, W_hh + G * H + G};
    }
    template <typename T>
    LayerGrads<T> grads(T* p, int l) const {
        LayerWeights<T> w = weights<T>(p, l);
        return {const_cast<T*>(w.W_ih), const_cast<T*>(w.W_hh), const_cast<T*>(w.b_ih),
                const_cast<T*>(w.b_hh)};
    }
};

struct EngineConfig {
    ModelShape shape;
    int k1 = 1, k2 = 1;
    Loss loss = Loss::mse;
    OptimizerConfig optimizer;
    double clip_norm = 0.0;  // <= 0: no clipping
};

// An update whose loss or gradient is not finite: nothing was applied (see Engine::train).
struct Divergence : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The window for max(k1, k2) steps does not fit in memory (mapped to MemoryError).
struct OutOfMemory : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Input errors the caller's checks should have caught (mapped to ValueError).
struct InvalidArgument : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

template <typename T>
class Engine {
  public:
    // params: [num_params] updated in place by every optimiser step; must outlive the engine.
    Engine(const EngineConfig& config, T* params);

    // Process `steps` more steps of B streams; an update every k1 steps.
    // x: [steps, B, I] features, or tokens: [steps, B] ids (exactly one is non-null)
    // targets: [steps, B, O] (mse) or labels: [steps, B] class ids (cross_entropy)
    // mask: [steps, B] loss weights or nullptr; resets: [steps, B] or nullptr
    // losses: the loss of each update that had positions carrying loss is appended.
    // Throws Divergence when an update is not finite: parameters and optimiser state stay those of
    // the last good update, the pending steps are dropped, every stream's state is reset, and the
    // rest of the call is not processed.
    void train(int64_t steps, int B, const T* x, const int64_t* tokens, const T* targets,
               const int64_t* labels, const T* mask, const uint8_t* resets,
               std::vector<double>* losses);

    // The update over the pending steps now. Returns false (and no loss) if nothing is pending or
    // no pending position carries loss.
    bool flush(double* loss);

    // Zero every stream's state before the next step (acts as a row of resets).
    void reset_state() { reset_next_ = true; }

    void set_lr(double lr) { optimizer_.set_lr(lr); }
    int pending_steps() const { return pending_; }
    int64_t updates() const { return updates_; }
    int64_t steps() const { return step_; }
    int num_streams() const { return B_; }
    const ModelShape& shape() const { return config_.shape; }

    // The state the next step starts from, each [L, B, H]. Only after the first call (B > 0).
    void state(T* h, T* c) const;

    // Everything besides the parameters that the next steps depend on: for exact resumption.
    struct Snapshot {
        // B, tokens, step, first_valid, pending, updates, reset_next, optimiser steps
        Buffer<int64_t> counters;
        Buffer<double> sums;  // Σ w·loss, Σ w of the pending steps
        Buffer<T> dy, x, gates, c, h, first_moment, second_moment;
        Buffer<int64_t> ids;
        Buffer<uint8_t> resets, any_reset;
    };
    Snapshot snapshot() const;
    void restore(const Snapshot& snapshot);  // throws InvalidArgument if it does not fit

    // The gradient horizon: Σ over updates of ||dL/dh|| and ||dL/dc|| (all streams) of each layer
    // j = 0 .. k2-1 steps back from the update's newest step, [2][L][k2] (dh, then dc), and how
    // many updates reached back j steps, [k2]. Empty before the first update.
    const Buffer<double>& horizon_norms() const { return horizon_norms_; }
    const Buffer<int64_t>& horizon_updates() const { return horizon_updates_; }
    void reset_horizon() { horizon_norms_.clear(), horizon_updates_.clear(); }

    // dL/dθ of the last update, before clipping: [num_params] (an all-reduce across processes
    // would average it right after backward, before clipping and the step).
    const Buffer<T>& gradient() const { return grad_; }

  private:
    void allocate(int B, bool tokens);
    void forward(int64_t s0, int n, const T* x, const int64_t* tokens, const uint8_t* resets);
    void accumulate_loss(int64_t s0, int n, const T* targets, const int64_t* labels, const T* mask);
    // Makes the update over the pending steps; returns false if none carried loss.
    bool update(double* loss);
    void backward(int64_t first_loss_step);
    void add_to_horizon(int window);
    // Derived copies of the current parameters: every layer's weights as the per-step products read
    // them, and layer 0's W_ih transposed (token inputs). Made at every call and after every update.
    void prepare_weights();
    LayerWeights<T> weights(int l) const;  // of the current parameters
    // The state entering step s of layer l for streams [b0, b1), resets at s applied: a pointer
    // to row b0, into the window or into scratch ([B][H], only rows b0..b1 written).
    const T* h_prev(int l, int64_t s, T* scratch, int b0, int b1);
    const T* c_prev(int l, int64_t s, T* scratch, int b0, int b1);

    EngineConfig config_;
    T* params_;
    Buffer<T> grad_;
    Optimizer<T> optimizer_;
    Window<T> window_;

    int B_ = 0;              // streams, fixed by the first call
    bool tokens_ = false;    // layer-0 inputs are token ids, fixed by the first call
    int64_t step_ = 0;       // steps processed since training began
    int64_t first_valid_ = 0;  // the oldest step whose predecessors count (entering it: zeros)
    int pending_ = 0;        // steps since the last update
    int64_t updates_ = 0;
    bool reset_next_ = false;

    // Loss of the pending steps: Σ w·loss, Σ w, and w·dloss/dy per pending step [k1][B][O].
    double loss_sum_ = 0.0, weight_sum_ = 0.0;
    Buffer<T> dy_, outputs_;

    // Backward scratch, sized once: a block of steps of the window at a time.
    int block_ = 1;
    Buffer<T> dgates_, dh_in_, dx_, h_prev_block_;  // [block][B][4H], [block][B][H] x3
    Buffer<T> dh_rec_, dc_rec_;                     // [L][B][H]: carried back through time
    Buffer<T> zeros_, scratch_h_, scratch_c_, tanh_c_;  // [B][H]
    std::vector<PackedWeights<T>> packed_;  // [L]
    Buffer<T> W_ih_T_, dW_ih_T_;  // [I][4H] layer 0's W_ih transposed and its gradient (token inputs)
    Buffer<double> horizon_squares_;  // [slice][2][L][k2] of the update being made
    Buffer<double> horizon_norms_;    // [2][L][k2]
    Buffer<int64_t> horizon_updates_;  // [k2]
};

// Forward only, from state (h0, c0) each [L, B, H]: outputs [steps, B, O], final (h, c).
template <typename T>
void predict(const ModelShape& shape, const T* params, int64_t steps, int B, const T* x,
             const int64_t* tokens, const T* h0, const T* c0, T* outputs, T* h, T* c);

}  // namespace tbptt
