// TBPTT(k1, k2) for a stack of recurrent layers (any cell, cells/cell.h) and a linear head: the
// training engine of tbptt.
//
// Words: a (time) step is one position of the streams; an optimiser step is one change of the
// parameters; a rerun is the forward of time steps run again with the current weights.
//
// Every k1 time steps it makes an update: the loss of the k1 newest steps, its gradient with the
// recurrence cut k2 steps back (Williams & Peng's BPTT(h; h') when k2 > k1: the window reaches
// into steps computed before the previous update, whose activations are kept as they were
// computed, or with `recompute` are rerun with the current weights), optional global-norm
// clipping, then the optimiser step. An update runs in phases, each one job (as llm.c's
// backward_and_reduce / grad_norm / update):
//   (rerun_stale_window, recompute only: rerun a window that holds older weights' steps)
//   -> backward (the un-normalised gradient and the sums Σ w·loss, Σ w, in one buffer)
//   -> reduce (the caller's all-reduce of that buffer across processes, when data-parallel)
//   -> apply (normalise by Σ w, check, clip, optimiser step)
//   -> after_apply (the horizon's sums, repack the new weights; recompute: rerun the steps the
//      next update will read).
// Steps since the last update stay pending between calls, so the result does not depend on how a
// stream is split into calls.
//
// What it is not: a general autograd. It owns the activations of the last max(k1, k2) steps, the
// optimiser state and the carried state; the parameters belong to the caller (a flat array in
// torch's state_dict order) and are updated in place.
//
// Legend: T = steps in a call, B = streams, I = input size, H = hidden size, L = layers,
// O = outputs, S = window capacity in steps.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor.h"

#include "head.h"
#include "cells/cell.h"
#include "dropout.h"
#include "layer.h"
#include "optim.h"
#include "threads.h"
#include "window.h"

namespace tbptt {

// Sizes of the model, and where each tensor lies in the flat parameter vector (state_dict order:
// per layer W_ih, W_hh, b_ih, b_hh; then head W, head b).
struct ModelShape {
    int I = 0, H = 0, O = 0, L = 0;
    int gates = 4;  // rows of W_ih / W_hh per hidden unit: the cell's (cells/cell.h)

    int G() const { return gates * H; }
    int layer_input(int l) const { return l == 0 ? I : H; }
    int64_t layer_offset(int l) const;  // of W_ih of layer l
    int64_t head_offset() const { return layer_offset(L); }
    int64_t num_params() const { return head_offset() + int64_t(O) * H + O; }

    // Layer l's tensors in the flat vector p (const T* for weights, T* for gradients).
    template <typename P>
    LayerTensors<P> layer(P* p, int l) const {
        const int64_t G_ = G(), o = layer_offset(l);
        P* W_ih = p + o;
        P* W_hh = W_ih + G_ * layer_input(l);
        return {W_ih, W_hh, W_hh + G_ * H, W_hh + G_ * H + G_};
    }
};

// The stack of layers over a window of steps: the forward path shared by training (Engine) and
// predict. Owns the window, the cell, and the weights as the per-step products read them.
template <typename T>
class Stack {
  public:
    Stack(const std::string& cell, const ModelShape& shape);

    // A window of S steps for B streams; layer 0 reads token ids or features.
    void allocate(int S, int B, bool tokens);
    // The products' copies of the parameters (packed panels, layer 0's W_ih transposed for tokens):
    // after every change of the parameters. with_backward: also what backward needs.
    void prepare(const T* params, bool with_backward);
    // About how many steps run on one preparation: whether copies for few streams pay (layer.h).
    void set_steps_per_prepare(int steps) { steps_per_prepare_ = steps, prepared_from_ = nullptr; }
    // Steps [s0, s0 + n) (within one turn of the ring): stores their inputs and resets (rows of
    // resets [n][B] or nullptr; reset_first: every stream resets at s0), then runs every layer.
    void forward(int64_t s0, int n, const Inputs<T>& in, const uint8_t* resets, bool reset_first) {
        store(s0, n, in, resets, reset_first);
        run(s0, n);
    }
    void store(int64_t s0, int n, const Inputs<T>& in, const uint8_t* resets, bool reset_first);
    // Every layer over steps [s0, s0 + n) from their stored inputs and resets.
    void run(int64_t s0, int n);
    // The state entering step s of layer l for streams [b0, b1), resets at s applied: a pointer to
    // row b0, into the window or into scratch ([B][H] or [B][C], only rows b0..b1 written).
    const T* h_prev(int l, int64_t s, T* scratch, int b0, int b1);
    const T* carry_prev(int l, int64_t s, T* scratch, int b0, int b1);
    // The state leaving step s: [L][B][H] and [L][B][C].
    void state_after(int64_t s, T* h, T* carry) const;
    // Dropout on each layer's output as the layer above (or the head, for l = L - 1) reads it:
    // [L], training only, off unless set.
    void set_dropout(std::vector<Dropout> dropout) { dropout_ = std::move(dropout); }
    const Dropout& dropout(int l) const { return dropout_[l]; }
    // Layer l's output of steps [s0, s0 + n) as the layer above reads it: its h in the window, or
    // with dropout on, h ⊙ mask / (1 - p) in scratch (grown to [n][B][H] if needed).
    const T* output(int l, int64_t s0, int n, Buffer<T>& scratch) const;

    LayerWeights<T> weights(int l) const { return packed_[l].w; }
    const PackedWeights<T>& packed(int l) const { return packed_[l]; }
    const Cell<T>& cell() const { return *cell_; }
    const ModelShape& shape() const { return shape_; }

    Window<T> window;
    int64_t first_valid = 0;  // the oldest step whose predecessors count (entering it: zeros)

  private:
    ModelShape shape_;
    std::unique_ptr<Cell<T>> cell_;
    std::vector<PackedWeights<T>> packed_;  // [L]
    std::vector<Dropout> dropout_;          // [L]
    Buffer<T> dropped_;                     // [n][B][H] a run's input to a layer, after dropout
    Buffer<T> W_ih_T_;                      // [I][G] layer 0's W_ih transposed (token inputs)
    Buffer<T> zeros_, scratch_h_, scratch_carry_, recurrent_;  // [B][H], [B][H], [B][C], [B][G]
    int steps_per_prepare_ = 1;
    const T* prepared_from_ = nullptr;  // the parameters of the last prepare, and their bits
    Buffer<T> prepared_bits_;
    bool prepared_backward_ = false;
};

struct EngineConfig {
    std::string cell;  // a name make_cell knows (cells/cell.h)
    ModelShape shape;  // shape.gates: the cell's
    int k1 = 1, k2 = 1;
    Loss loss = Loss::mse;
    OptimizerConfig optimizer;
    double clip_norm = 0.0;  // <= 0: no clipping
    // Dropout while training (dropout.h): on each layer's output but the last (torch's meaning),
    // and on the top layer's output before the head; masks drawn from seed.
    double dropout = 0.0, head_dropout = 0.0;
    uint64_t seed = 0;
    int64_t stream_offset = 0;  // the index of this engine's first stream among all streams
    // Every update reads its window as the current weights compute it (docs/semantics.md §3):
    // after each optimiser step the time steps the next update will read are rerun, and an update
    // whose window still holds steps of older weights (after a flush) reruns it first.
    bool recompute = false;
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

// What an update learns from: the targets of a run of steps, real values [rows, Y] (Y =
// target_values(loss, O); O for mse) or class ids [rows] (cross_entropy), with optional loss
// weights. Built by the named constructors.
template <typename T>
struct Targets {
    static Targets of_values(const T* y, const T* mask) { return {y, nullptr, mask}; }
    static Targets of_classes(const int64_t* y, const T* mask) { return {nullptr, y, mask}; }
    static Targets of(Loss loss, const T* y, const int64_t* classes, const T* mask) {
        return loss_traits(loss).classes ? of_classes(classes, mask) : of_values(y, mask);
    }
    Targets from_row(size_t row, int Y) const {  // Y: target values per row
        return {values ? values + row * Y : nullptr, classes ? classes + row : nullptr,
                mask ? mask + row : nullptr};
    }
    const T* values;
    const int64_t* classes;
    const T* mask;  // [rows] loss weights, or nullptr for ones
};

template <typename T>
class Engine {
  public:
    // params: [num_params] updated in place by every optimiser step; must outlive the engine.
    Engine(const EngineConfig& config, T* params);

    // Process `steps` more steps of B streams; an update every k1 steps.
    // in: [steps, B, I] features or [steps, B] token ids; targets: [steps, B, O] values (mse) or
    // [steps, B] class ids (cross_entropy), mask [steps, B] or none; resets: [steps, B] or nullptr.
    // losses: the loss of each update that had positions carrying loss is appended.
    // outputs: [steps, B, O] or nullptr: the head's outputs of each step as the forward pass
    // computed them, before the update that uses the step's target (test-then-train).
    // Throws Divergence when an update is not finite: parameters and optimiser state stay those of
    // the last good update, the pending steps are dropped, every stream's state is reset, and the
    // rest of the call is not processed.
    void train(int64_t steps, int B, const Inputs<T>& in, const Targets<T>& targets,
               const uint8_t* resets, std::vector<double>* losses, T* outputs = nullptr);

    // The outputs [B, O] the next step would give for inputs `in` ([B, I] features or [B] token
    // ids), from the carried state and the current parameters, without advancing anything: what
    // `train` will compute for that step if the parameters do not change before it. Before the
    // first call to train it fixes B and the kind of inputs, as train would.
    void peek(int B, const Inputs<T>& in, T* outputs);

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
    Loss loss() const { return config_.loss; }
    const CellTraits& cell() const { return stack_.cell().traits; }

    // The state the next step starts from: h [L, B, H], carry [L, B, C]. Only after the first
    // call (B > 0).
    void state(T* h, T* carry) const;

    // Everything besides the parameters that the next steps depend on, for exact resumption, in
    // the schema both backends share (python/tbptt/_snapshot.py has every entry): named counters,
    // the n <= max(k1, k2) time steps held, oldest first, and the r = pending newest of them.
    // K = (gates + extra) * H values per row when the cell keeps its gates (else 0),
    // C = carried * H, Y = target values per position (0 for class ids), P = parameters.
    struct Snapshot {
        int64_t num_streams = 0, steps = 0, pending = 0, updates = 0, optimizer_steps = 0;
        int64_t fresh_from = 0;  // the oldest step held as the current weights compute it
        int64_t held = 0;        // n
        bool tokens = false, reset_next = false;
        double loss_sum = 0.0, weight_sum = 0.0;  // Σ w·loss, Σ w of the pending steps
        double last_weight_sum = 0.0;             // Σ w of the last update, over every process
        Buffer<T> x;                // [n][B][I] layer 0's features (empty for token ids)
        Buffer<int64_t> ids;        // [n][B] layer 0's token ids (empty for features)
        Buffer<uint8_t> reset;      // [n][B] the state was zeroed before that step
        Buffer<T> gates, h, carry;  // [n][L][B][K], [n][L][B][H], [n][L][B][C]
        Buffer<T> h_in, carry_in;   // [L][B][H], [L][B][C] entering the oldest, resets applied
        Buffer<T> outputs, dy;      // [r][B][O]
        Buffer<T> values, weights;  // [r][B][Y], [r][B] (weights NaN: the targets are unknown)
        Buffer<int64_t> classes;    // [r][B] (cross-entropy; else empty)
        Buffer<T> first_moment, second_moment;  // [P] each, zeros where the optimiser keeps none
    };
    Snapshot snapshot() const;
    void restore(const Snapshot& snapshot);  // throws InvalidArgument naming what does not fit

    // The gradient horizon: Σ over updates of ||dL/dh|| and ||dL/dcarry|| (all streams) of each
    // layer j = 0 .. k2-1 steps back from the update's newest step, [2][L][k2] (dh, then dcarry:
    // zeros for cells that carry only h), and how many updates reached back j steps, [k2]. Empty
    // before the first update.
    const Buffer<double>& horizon_norms() const { return horizon_norms_; }
    const Buffer<int64_t>& horizon_updates() const { return horizon_updates_; }
    void reset_horizon() { horizon_norms_.clear(), horizon_updates_.clear(); }

    // dL/dθ of the last update, before clipping, into out [num_params] (the buffer's gradient
    // part, normalised).
    void gradient(T* out) const;

    // Data-parallel training: `reduce` is called between backward and apply of every update (on
    // the calling thread, outside parallel regions) and must replace reduce_buffer() by its sum
    // over the processes, in place. Every process must make the same updates (same steps per
    // call) for the calls to pair up. An exception it throws leaves the engine as a divergence
    // does (the update's steps dropped, every stream reset) and propagates.
    void set_reduce(std::function<void()> reduce) { reduce_ = std::move(reduce); }
    // Data-parallel training: the index of this process's first stream among every process's
    // streams, as if they were one batch (dropout masks are drawn per stream index).
    void set_stream_offset(int64_t offset);
    // [num_params + 2]: the un-normalised gradient, then Σ w·loss and Σ w of the update (the sums
    // in the model's dtype here: one dtype, so one all-reduce), all scaled by the same power of
    // two (see backward). Fixed in place for the engine's lifetime.
    T* reduce_buffer() { return buffer_.data(); }
    size_t reduce_buffer_size() const { return buffer_.size(); }

  private:
    void allocate(int B, bool tokens);
    void set_up_dropout();                // the masks of every layer, from the config
    void check_call(int B, bool tokens);  // allocates on the first call; B and tokens fixed then
    // A run of n time steps from step_: forward, targets kept, loss terms; outputs (or nullptr).
    void forward_run(int n, const Inputs<T>& in, const Targets<T>& targets, const uint8_t* resets,
                     T* outputs);
    // Keeps the targets of n steps as pending rows [row, row + n).
    void keep_targets(int row, int n, const Targets<T>& targets);
    // Outputs, dy and loss sums of steps [s0, s0 + n), pending rows [row, row + n).
    void accumulate_loss(int64_t s0, int n, int row);
    // The rerun (recompute, docs/semantics.md §3): time steps [from, step_) again with the
    // current weights.
    void rerun(int64_t from);
    void rerun_for_next_update();
    void head_outputs(int64_t s0, int n, int row);  // outputs of steps [s0, s0 + n) into rows
    // The update over the pending steps, phase by phase; returns false if none carried loss
    // (anywhere, when data-parallel).
    bool update(double* loss);
    void rerun_stale_window(int r);  // phase 0, recompute only
    double backward(int r);          // phase 1: returns the scale s of dy and the sums
    void reduce();                   // phase 2
    void apply(double loss, double weight_sum, int r);  // phase 3 (throws Divergence)
    void after_apply(double weight_sum);                // phase 4
    void drop_pending();
    void backward_window(int64_t first_loss_step);  // phase 1's pass through the window
    // One layer of a block of steps [begin, end] of the window, newest first: dgates (and
    // drecurrent) of every step from dh_in_, carrying dh, dcarry back through time.
    void backward_layer(int l, int64_t begin, int64_t end);
    void add_to_horizon(int window, double weight_sum);

    EngineConfig config_;
    T* params_;
    Buffer<T> buffer_;              // [num_params + 2]: gradient, Σ w·loss, Σ w (reduce_buffer)
    std::function<void()> reduce_;  // none: one process
    Optimizer<T> optimizer_;
    Stack<T> stack_;
    ThreadTuner tuner_;  // one thread or all, per run and update, from their measured speed

    int B_ = 0;            // streams, fixed by the first call
    bool tokens_ = false;  // layer-0 inputs are token ids, fixed by the first call
    int64_t step_ = 0;     // steps processed since training began
    int pending_ = 0;      // steps since the last update
    int64_t updates_ = 0;
    bool reset_next_ = false;
    int64_t fresh_from_ = 0;  // the oldest step held as the current weights compute it (recompute)

    // Loss of the pending steps: Σ w·loss, Σ w, and w·dloss/dy per pending step [k1][B][O]; their
    // outputs [k1][B][O] and what they learn from: target values [k1][B][O] (mse) or classes
    // [k1][B] (cross_entropy), weights [k1][B] (ones where the caller gave no mask).
    double loss_sum_ = 0.0, weight_sum_ = 0.0;
    Buffer<T> dy_, outputs_, values_, weights_;
    Buffer<int64_t> classes_;
    typename Window<T>::StepCopy peeked_;  // the slot `peek` borrows, put back after it
    // Σ w of the last update over every process (0 before one): a weight sum that every process
    // knows before the backward of the next, to pick the common power-of-two scale of dy.
    double last_weight_sum_ = 0.0;
    // 1 / (s·Σ w) of the last update: what the buffer's gradient is still to be multiplied by.
    double normaliser_ = 1.0;

    // Backward scratch, sized once: a block of steps of the window at a time.
    int block_ = 1;
    Buffer<T> dgates_, drecurrent_;         // [block][B][G] (drecurrent: separate cells)
    Buffer<T> dh_in_, dx_, h_prev_block_;   // [block][B][H]
    Buffer<T> head_input_, dropped_block_;  // [run][B][H]: layers' outputs after dropout
    Buffer<T> dh_rec_, dcarry_rec_;         // [L][B][H], [L][B][C]: carried back in time
    Buffer<T> scratch_h_, scratch_carry_, scratch_cell_;  // [B][H], [B][C], [B][H]
    Buffer<T> dW_ih_T_;  // [I][G] the gradient of layer 0's W_ih transposed (token inputs)
    Buffer<double> horizon_squares_;   // [piece of streams][2][L][k2] of the update being made
    Buffer<double> horizon_norms_;     // [2][L][k2]
    Buffer<int64_t> horizon_updates_;  // [k2]
};

// Forward only, from state h0 [L, B, H], carry0 [L, B, C]: outputs [steps, B, O], the final
// state in h, carry.
template <typename T>
void predict(const std::string& cell, const ModelShape& shape, const T* params, int64_t steps,
             int B, const Inputs<T>& in, const T* h0, const T* carry0, T* outputs, T* h, T* carry);

}  // namespace tbptt
