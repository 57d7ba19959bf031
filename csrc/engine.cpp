// The TBPTT(k1, k2) engine (see engine.h for what it computes).
//
// Per call, steps are processed in runs: a run ends at the next update, the end of the call or the
// end of the ring. A run's forward is layer by layer, each thread running every step for a piece
// of streams: the input projection and the recurrent product through weights packed once per
// update (layer.h), then the cell's step (cells/cell.h). (With fewer than 4 streams, or token inputs, the input
// projection of the whole run is one product first.) An update's backward walks its window from
// the newest step in blocks of steps, each block layer by layer from the top; the weight gradients
// of a block are one product each, so only dh_prev = drecurrent W_hh is done step by step.
// Predict runs the same forward (Stack::forward) over a window of one chunk.
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tensor.h"
#include "threads.h"

namespace tbptt {

int64_t ModelShape::layer_offset(int l) const {
    const int64_t G_ = G();
    int64_t offset = 0;
    for (int k = 0; k < l; ++k) offset += G_ * layer_input(k) + G_ * H + 2 * G_;
    return offset;
}

// ---- the stack of layers: the forward path --------------------------------------------------

template <typename T>
Stack<T>::Stack(const std::string& cell, const ModelShape& shape)
    : shape_(shape), cell_(make_cell<T>(cell)) {
    if (!cell_) throw InvalidArgument(unknown_cell_message(cell));
    if (cell_->traits.gates != shape.gates)
        throw InvalidArgument("shape.gates does not fit the cell");
    dropout_.assign(shape.L, Dropout{});
}

template <typename T>
const T* Stack<T>::output(int l, int64_t s0, int n, Buffer<T>& scratch) const {
    const Dropout& d = dropout_[l];
    if (!d.on()) return window.h_at(l, s0);
    const size_t size = size_t(n) * window.B * window.H;
    if (scratch.size() < size) scratch.resize(size);
    d.apply(scratch.data(), window.h_at(l, s0), s0, n, window.B, window.H);
    return scratch.data();
}

template <typename T>
void Stack<T>::allocate(int S, int B, bool tokens) {
    const ModelShape& m = shape_;
    const CellTraits& cell = cell_->traits;
    window.allocate(S, B, m.I, m.H, m.L, cell, tokens);
    const size_t H = size_t(m.H), C = size_t(window.C);
    zeros_.assign(B * std::max(H, C), T(0));  // the state entering the first step: h and carry
    scratch_h_.assign(B * H, T(0));
    scratch_carry_.assign(B * C, T(0));
    recurrent_.assign(cell.separate_recurrence ? size_t(B) * m.G() : 0, T(0));
    W_ih_T_.assign(tokens ? size_t(m.I) * m.G() : 0, T(0));
    prepared_from_ = nullptr;  // the window's size decides the products' form
}

// For small models on fewer than 4 streams packing is skipped when the layers' parameters hold
// the bits it was made from: train and peek prepare at every call (the caller may have written
// into the parameters), which for one-step calls (online learning) would be three packings per
// step. Elsewhere calls are long, and the check (a copy of every parameter per update) would cost
// more than it saves (5% at B = 32, H = 512); without packing there is nothing to skip.
template <typename T>
void Stack<T>::prepare(const T* params, bool with_backward) {
    const ModelShape& m = shape_;
    const size_t n = size_t(m.head_offset());
    const bool check = window.B < 4 && n <= (size_t(1) << 16) &&
                       PackedWeights<T>::copies(window.B, m.H, steps_per_prepare_);
    if (check && params == prepared_from_ && (prepared_backward_ || !with_backward) &&
        std::memcmp(params, prepared_bits_.data(), n * sizeof(T)) == 0)
        return;
    packed_.resize(m.L);
    for (int l = 0; l < m.L; ++l)
        packed_[l].prepare(m.layer(params, l), m.layer_input(l), m.H, m.G(),
                           cell_->traits.separate_recurrence, window.B,
                           /*pack_input=*/l > 0 || !window.tokens, with_backward,
                           steps_per_prepare_);
    if (check) prepared_bits_.assign(params, params + n);
    prepared_from_ = check ? params : nullptr, prepared_backward_ = with_backward;
    if (window.tokens) {
        transpose_copy(W_ih_T_.data(), m.G(), packed_[0].w.W_ih, m.I, m.G(), m.I);
        packed_[0].w.W_ih_T = W_ih_T_.data();
    }
}

// The state entering step s for streams [b0, b1): the previous step's, `width` values per
// stream, with the streams reset at s zeroed. Points at row b0.
template <typename T>
static const T* masked_prev(Window<T>& w, const T* prev, int64_t s, T* scratch, int b0, int b1,
                            int width) {
    if (!w.reset_in(s)) return prev + size_t(b0) * width;
    const uint8_t* reset = w.resets_at(s);
    for (int b = b0; b < b1; ++b) {
        T* row = scratch + size_t(b) * width;
        if (reset[b])
            std::fill(row, row + width, T(0));
        else
            std::copy(prev + size_t(b) * width, prev + size_t(b + 1) * width, row);
    }
    return scratch + size_t(b0) * width;
}

template <typename T>
const T* Stack<T>::h_prev(int l, int64_t s, T* scratch, int b0, int b1) {
    if (s == first_valid) return zeros_.data() + size_t(b0) * window.H;
    return masked_prev(window, window.h_at(l, s - 1), s, scratch, b0, b1, window.H);
}

template <typename T>
const T* Stack<T>::carry_prev(int l, int64_t s, T* scratch, int b0, int b1) {
    if (s == first_valid) return zeros_.data() + size_t(b0) * window.C;
    return masked_prev(window, window.carry_at(l, s - 1), s, scratch, b0, b1, window.C);
}

template <typename T>
void Stack<T>::state_after(int64_t s, T* h, T* carry) const {
    const size_t nh = size_t(window.B) * window.H, nc = size_t(window.B) * window.C;
    for (int l = 0; l < window.L; ++l) {
        std::copy(window.h_at(l, s), window.h_at(l, s) + nh, h + l * nh);
        std::copy(window.carry_at(l, s), window.carry_at(l, s) + nc, carry + l * nc);
    }
}

template <typename T>
void Stack<T>::store(int64_t s0, int n, const Inputs<T>& in, const uint8_t* resets,
                     bool reset_first) {
    const int B = window.B;
    for (int j = 0; j < n; ++j) {
        uint8_t* row = window.resets_at(s0 + j);
        if (resets)
            std::copy(resets + size_t(j) * B, resets + size_t(j + 1) * B, row);
        else
            std::fill(row, row + B, uint8_t(0));
        if (j == 0 && reset_first) std::fill(row, row + B, uint8_t(1));
        window.any_reset[window.slot(s0 + j)] =
            std::any_of(row, row + B, [](uint8_t r) { return r; });
    }
    if (in.are_tokens())
        std::copy(in.ids, in.ids + size_t(n) * B, window.ids_at(s0));
    else
        std::copy(in.x, in.x + size_t(n) * B * shape_.I, window.x_at(s0));
}

template <typename T>
void Stack<T>::run(int64_t s0, int n) {
    const ModelShape& m = shape_;
    const int B = window.B, H = m.H, G = m.G(), E = window.E, C = window.C;
    const bool separate = cell_->traits.separate_recurrence;
    for (int l = 0; l < m.L; ++l) {
        const PackedWeights<T>& products = packed_[l];
        const int I = m.layer_input(l);
        const Inputs<T> input =
            l == 0 ? window.inputs_at(s0) : Inputs<T>::features(output(l - 1, s0, n, dropped_));
        // Packed input weights: each thread projects its own streams' inputs step by step, inside
        // the parallel part. Otherwise one product for the whole run, before it.
        const bool project_per_step = !products.input.empty();
        if (!project_per_step) products.project_run(window.gates_at(l, s0), input, n * B);
        for_stream_pieces(B, H, [&](int, int b0, int b1) {
            for (int64_t s = s0; s < s0 + n; ++s) {
                T* recurrent = separate ? recurrent_.data() + size_t(b0) * G : nullptr;
                StepForward<T> step;
                step.gates = window.gates_at(l, s) + size_t(b0) * G;
                step.extra = window.extra_at(l, s) + size_t(b0) * E;
                step.h = window.h_at(l, s) + size_t(b0) * H;
                step.carry = window.carry_at(l, s) + size_t(b0) * C;
                step.recurrent = recurrent;
                step.h_prev = h_prev(l, s, scratch_h_.data(), b0, b1);
                step.carry_prev = carry_prev(l, s, scratch_carry_.data(), b0, b1);
                const T* x = project_per_step ? input.x + (size_t(s - s0) * B + b0) * I : nullptr;
                layer_step_forward(products, *cell_, step, x, recurrent, b1 - b0);
            }
        });
    }
}

// ---- the engine ------------------------------------------------------------------------------

template <typename T>
Engine<T>::Engine(const EngineConfig& config, T* params)
    : config_(config),
      params_(params),
      buffer_(config.shape.num_params() + 2, T(0)),
      optimizer_(config.optimizer, config.shape.num_params()),
      stack_(config.cell, config.shape) {
    if (config.k1 < 1 || config.k2 < 1) throw InvalidArgument("k1 and k2 must be >= 1");
}

template <typename T>
void Engine<T>::allocate(int B, bool tokens) {
    const ModelShape& m = config_.shape;
    const int k1 = config_.k1, k2 = config_.k2;
    B_ = B;
    tokens_ = tokens;
    const int64_t S = int64_t(std::max(k1, k2)) + 1;
    // forward steps between two updates: a call's, and the rerun's (recompute)
    stack_.set_steps_per_prepare(k1 + (config_.recompute && k2 > k1 ? k2 - k1 + 1 : 0));
    try {
        stack_.allocate(int(S), B, tokens);
        const Window<T>& w = stack_.window;
        dy_.assign(size_t(k1) * B * m.O, T(0));
        outputs_.assign(size_t(k1) * B * m.O, T(0));
        const bool classes = loss_traits(config_.loss).classes;
        values_.assign(size_t(k1) * B * target_values(config_.loss, m.O), T(0));
        classes_.assign(classes ? size_t(k1) * B : 0, 0);
        weights_.assign(size_t(k1) * B, T(0));
        // Blocks of about 256 rows keep the weight-gradient products efficient, the scratch small.
        block_ = std::max(1, std::min(k2, (256 + B - 1) / B));
        const size_t rows = size_t(block_) * B;
        dgates_.assign(rows * m.G(), T(0));
        drecurrent_.assign(stack_.cell().traits.separate_recurrence ? rows * m.G() : 0, T(0));
        dh_in_.assign(rows * m.H, T(0));
        dx_.assign(rows * m.H, T(0));
        h_prev_block_.assign(rows * m.H, T(0));
        dh_rec_.assign(size_t(m.L) * B * m.H, T(0));
        dcarry_rec_.assign(size_t(m.L) * B * w.C, T(0));
        scratch_h_.assign(size_t(B) * m.H, T(0));
        scratch_carry_.assign(size_t(B) * w.C, T(0));
        scratch_cell_.assign(size_t(B) * m.H, T(0));
        dW_ih_T_.assign(tokens ? size_t(m.I) * m.G() : 0, T(0));
        set_up_dropout();
    } catch (const std::exception&) {  // bad_alloc, length_error
        B_ = 0;
        const double bytes =
            double(S) * Window<T>::values_per_step(B, m.I, m.H, m.L, stack_.cell().traits, tokens) *
                sizeof(T) +
            4.0 * k1 * B * m.O * sizeof(T);
        std::ostringstream message;
        message << "k1, k2: the window of max(k1, k2) + 1 = " << S << " steps (and k1 = " << k1
                << " steps of outputs and targets) for B = " << B << " streams needs "
                << bytes / (1 << 30)
                << " GiB, which could not be allocated; use smaller k1/k2 (memory grows with"
                << " max(k1, k2), never with the stream)";
        throw OutOfMemory(message.str());
    }
}

template <typename T>
void Engine<T>::set_up_dropout() {
    const ModelShape& m = config_.shape;
    std::vector<Dropout> dropout(m.L);
    for (int l = 0; l < m.L; ++l)
        dropout[l] = {l < m.L - 1 ? config_.dropout : config_.head_dropout, config_.seed, l,
                      config_.stream_offset};
    stack_.set_dropout(std::move(dropout));
}

template <typename T>
void Engine<T>::set_stream_offset(int64_t offset) {
    if (offset < 0) throw InvalidArgument("stream_offset must be >= 0");
    config_.stream_offset = offset;
    set_up_dropout();
}

template <typename T>
void Engine<T>::keep_targets(int row, int n, const Targets<T>& targets) {
    const size_t first = size_t(row) * B_, count = size_t(n) * B_,
                 Y = size_t(target_values(config_.loss, config_.shape.O));  // values per position
    if (targets.values)
        std::copy(targets.values, targets.values + count * Y, values_.data() + first * Y);
    if (targets.classes)
        std::copy(targets.classes, targets.classes + count, classes_.data() + first);
    T* w = weights_.data() + first;
    if (targets.mask)
        std::copy(targets.mask, targets.mask + count, w);
    else
        std::fill(w, w + count, T(1));  // the same bits as no mask (head.cpp: w = 1)
}

template <typename T>
void Engine<T>::head_outputs(int64_t s0, int n, int row) {
    const ModelShape& m = config_.shape;
    const T* W = params_ + m.head_offset();
    head_forward(outputs_.data() + size_t(row) * B_ * m.O,
                 stack_.output(m.L - 1, s0, n, head_input_), W, W + size_t(m.O) * m.H, n * B_, m.H,
                 m.O);
}

template <typename T>
void Engine<T>::accumulate_loss(int64_t s0, int n, int row) {
    const ModelShape& m = config_.shape;
    const int rows = n * B_;
    head_outputs(s0, n, row);
    const size_t at = size_t(row) * B_;
    const T* y = outputs_.data() + at * m.O;
    T* dy = dy_.data() + at * m.O;
    const T* w = weights_.data() + at;
    const size_t Y = size_t(target_values(config_.loss, m.O));  // target values per position
    loss_sum_ +=
        head_loss(config_.loss, dy, y, Y ? values_.data() + at * Y : nullptr,
                  classes_.empty() ? nullptr : classes_.data() + at, w, rows, m.O, &weight_sum_);
}

// The rerun: every layer again over time steps [from, step_) with the current (prepared) weights,
// from the stored state entering step `from`: afterwards they are the current weights'
// (fresh_from_ = from).
template <typename T>
void Engine<T>::rerun(int64_t from) {
    stack_.window.for_runs(from, step_, [&](int64_t s, int n) { stack_.run(s, n); });
    fresh_from_ = from;
}

// Phase 0 of an update (recompute only): a window [a, t] that reaches into time steps computed
// with older weights (before the steps the last rerun prepared for, as after a flush) is rerun
// first, then the r pending steps' loss from it.
template <typename T>
void Engine<T>::rerun_stale_window(int r) {
    const int64_t a = std::max(step_ - config_.k2, stack_.first_valid);
    if (!config_.recompute || a >= fresh_from_) return;
    rerun(a);
    loss_sum_ = weight_sum_ = 0.0;
    stack_.window.for_runs(step_ - r, step_,
                           [&](int64_t s, int n) { accumulate_loss(s, n, int(s - (step_ - r))); });
}

// recompute, after an optimiser step changed the weights: the time steps the next update's window
// will read, from the one whose state enters it, rerun with the new weights (none when k2 <= k1).
template <typename T>
void Engine<T>::rerun_for_next_update() {
    fresh_from_ = step_;  // no time step computed with the new weights yet
    if (!config_.recompute || config_.k2 <= config_.k1) return;
    rerun(std::max(step_ - 1 + config_.k1 - config_.k2, stack_.first_valid));
}

template <typename T>
void Engine<T>::train(int64_t steps, int B, const Inputs<T>& in, const Targets<T>& targets,
                      const uint8_t* resets, std::vector<double>* losses, T* outputs) {
    if (steps <= 0) return;
    const int most = threads_for(B, config_.shape.H);
    ThreadScope threads(tuner_.current(most));  // the packing below runs on the current choice
    check_call(B, in.are_tokens());
    const ModelShape& m = config_.shape;
    stack_.prepare(params_, /*with_backward=*/true);  // the caller may have changed the parameters
    const int Y = target_values(config_.loss, m.O);   // target values per position
    // The schedule: runs of time steps, each up to the next update, the end of the call or the
    // end of the ring. The tuner wraps each run and its update: it picks their thread count (the
    // results do not depend on it, threads.h) and times them.
    for (int64_t done = 0; done < steps;) {
        const int n = int(std::min<int64_t>({int64_t(config_.k1 - pending_), steps - done,
                                             int64_t(stack_.window.contiguous_from(step_))}));
        const size_t row0 = size_t(done) * B;
        tuner_.run(most, n, [&] {
            forward_run(n, in.from_row(row0, m.I), targets.from_row(row0, Y),
                        resets ? resets + row0 : nullptr, outputs ? outputs + row0 * m.O : nullptr);
            double loss;
            if (pending_ == config_.k1 && update(&loss)) losses->push_back(loss);
        });
        done += n;
    }
}

// A run of n time steps from step_: their forward, their targets kept and their loss terms added
// to the pending ones, their outputs copied out if asked.
template <typename T>
void Engine<T>::forward_run(int n, const Inputs<T>& in, const Targets<T>& targets,
                            const uint8_t* resets, T* outputs) {
    const int O = config_.shape.O;
    stack_.forward(step_, n, in, resets, reset_next_);
    reset_next_ = false;
    keep_targets(pending_, n, targets);
    accumulate_loss(step_, n, pending_);
    const T* computed = outputs_.data() + size_t(pending_) * B_ * O;
    if (outputs) std::copy(computed, computed + size_t(n) * B_ * O, outputs);
    step_ += n;
    pending_ += n;
}

template <typename T>
void Engine<T>::check_call(int B, bool tokens) {
    if (B < 1) throw InvalidArgument("B (x.shape[1]) must be >= 1");
    if (B_ == 0) allocate(B, tokens);
    if (B != B_) throw InvalidArgument("B changed between calls");
    if (tokens != tokens_)
        throw InvalidArgument(tokens_ ? "x must hold token ids, as in the first call"
                                      : "x must hold features, as in the first call");
}

// The forward of step step_ runs in its own slot of the window, as train would run it; the slot
// (which a pending update may still read: it holds step step_ - S) is put back afterwards.
template <typename T>
void Engine<T>::peek(int B, const Inputs<T>& in, T* outputs) {
    ThreadScope threads(tuner_.current(threads_for(B, config_.shape.H)));
    check_call(B, in.are_tokens());
    const ModelShape& m = config_.shape;
    Window<T>& w = stack_.window;
    stack_.prepare(params_, /*with_backward=*/true);  // the caller may have changed the parameters
    w.save_step(step_, &peeked_);
    stack_.forward(step_, 1, in, /*resets=*/nullptr, reset_next_);
    const T* W = params_ + m.head_offset();
    head_forward(outputs, stack_.output(m.L - 1, step_, 1, head_input_), W, W + size_t(m.O) * m.H,
                 B, m.H, m.O);  // through the head's dropout, as train's forward
    w.load_step(step_, &peeked_);
}

template <typename T>
bool Engine<T>::flush(double* loss) {
    if (pending_ == 0) return false;
    ThreadScope threads(tuner_.current(threads_for(B_, config_.shape.H)));
    stack_.prepare(params_, /*with_backward=*/true);
    return update(loss);
}

// The update, in phases, each one job: (rerun_stale_window) -> backward -> reduce -> apply ->
// after_apply. Processes meet at the reduce, between backward and apply.
template <typename T>
bool Engine<T>::update(double* loss) {
    const int r = pending_;
    pending_ = 0;
    ++updates_;
    rerun_stale_window(r);                 // before the early return: every process decides alike
    if (!reduce_ && weight_sum_ == 0.0) {  // counts for the schedule; nothing to learn from
        loss_sum_ = 0.0;
        return false;
    }
    const double s = backward(r);
    try {
        reduce();
    } catch (...) {
        drop_pending();
        throw;
    }
    const double weight_sum = weight_sum_;  // over every process now
    *loss = loss_sum_ / (weight_sum > 0 ? weight_sum : 1.0);
    loss_sum_ = weight_sum_ = 0.0;
    if (weight_sum == 0.0) return false;  // counts for the schedule; nothing to learn from
    last_weight_sum_ = weight_sum / s;
    apply(*loss, weight_sum, r);
    after_apply(weight_sum);
    return true;
}

// Phase 1: the gradient of s·Σ w·loss (dy = s·w·dloss/dy) and the sums s·Σ w·loss, s·Σ w, for a
// scale s every process knows before its backward:
// - one process: s = 1 / Σ w of this update, so the gradient comes out normalised and apply
//   needs no scaling of its own (the same bits as before the update had phases);
// - data-parallel: a power of two near 1 / (the last update's global Σ w; 1 for the first).
//   Scaling by a power of two is exact: the normalised result does not depend on it, but it keeps
//   dy near w / Σ w, away from overflow (weights of 1e30 in float32) and from subnormals
//   (weights of 1e-38). Returns s.
template <typename T>
double Engine<T>::backward(int r) {
    const ModelShape& m = config_.shape;
    T* grad = buffer_.data();
    std::fill(grad, grad + m.num_params(), T(0));
    auto dy = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(dy_.data(), size_t(r) * B_ * m.O);
    if (!reduce_) {  // weight_sum_ > 0 (see update)
        const double s = 1.0 / weight_sum_;
        // Divide rather than multiply by s: 1 / (a subnormal sum of weights) overflows.
        dy /= T(weight_sum_);
        loss_sum_ /= weight_sum_;
        weight_sum_ = 1.0;
        backward_window(step_ - r);
        return s;
    }
    int exponent = 0;
    std::frexp(last_weight_sum_, &exponent);  // sum = f·2^exponent, f in [0.5, 1)
    exponent = std::clamp(exponent, std::numeric_limits<T>::min_exponent,
                          std::numeric_limits<T>::max_exponent - 1);  // 2^-exponent fits in T
    const double s = std::ldexp(1.0, -exponent);
    loss_sum_ *= s;
    weight_sum_ *= s;
    if (weight_sum_ == 0.0) return s;  // no loss on this process: its gradient is zero
    dy *= T(s);
    backward_window(step_ - r);
    return s;
}

// Phase 2: the sum over processes of the gradient and of both sums, one all-reduce of one buffer.
// The sums travel in the model's dtype (exact for float64 models; for float32 ones rounded as the
// gradient is); with one process they stay in double and nothing moves.
template <typename T>
void Engine<T>::reduce() {
    if (!reduce_) return;
    T* sums = buffer_.data() + config_.shape.num_params();
    sums[0] = T(loss_sum_), sums[1] = T(weight_sum_);
    reduce_();
    loss_sum_ = double(sums[0]), weight_sum_ = double(sums[1]);
}

// Phase 3: the reduced buffer into a change of the parameters: normalise by Σ w (> 0), check
// finiteness, clip by the global norm, optimiser step. Every input is the reduced buffer, so every
// process decides alike (a divergence raises everywhere).
template <typename T>
void Engine<T>::apply(double loss, double weight_sum, int r) {
    const int64_t n = config_.shape.num_params();
    T* grad = buffer_.data();
    // Normalising is folded into the optimiser step's scale (no pass over the gradient of its
    // own: that pass cost 5-10% of an update of a small model with k1 = 1). s keeps weight_sum near 1, but
    // should 1 / weight_sum leave T's normal range, divide the gradient itself.
    normaliser_ = 1.0 / weight_sum;
    if (!std::isnormal(T(normaliser_))) {
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(grad, n) /= T(weight_sum);
        normaliser_ = 1.0;
    }

    const double norm = global_norm(grad, n) * normaliser_;
    // Finite in the model's dtype: a float32 loss of 1e50 is as diverged as an inf.
    if (!std::isfinite(T(loss)) || !std::isfinite(T(norm))) {
        drop_pending();
        std::ostringstream message;
        message << "update " << updates_ << " (steps " << step_ - r + 1 << ".." << step_
                << ") is not finite: loss = " << loss << ", gradient norm = " << norm
                << ". It was not applied: the parameters are those of the last good update, its "
                   "steps were dropped and every stream's state was reset. Lower the learning "
                   "rate or set clip_norm, then go on.";
        throw Divergence(message.str());
    }
    const double clip = config_.clip_norm > 0 ? clip_scale(norm, config_.clip_norm) : 1.0;
    optimizer_.step(params_, grad, T(clip * normaliser_));
}

// Phase 4: what follows a change of the parameters: the update's share of the gradient horizon,
// the products' copies of the new weights, and (recompute) the rerun of the time steps the next
// update will read.
template <typename T>
void Engine<T>::after_apply(double weight_sum) {
    add_to_horizon(int(step_ - std::max(step_ - config_.k2, stack_.first_valid)), weight_sum);
    stack_.prepare(params_, /*with_backward=*/true);
    rerun_for_next_update();
}

template <typename T>
void Engine<T>::gradient(T* out) const {
    const int64_t n = config_.shape.num_params();
    for (int64_t i = 0; i < n; ++i) out[i] = T(double(buffer_[i]) * normaliser_);
}

// A failed update: drop its steps and start every stream afresh; keep the last good weights.
template <typename T>
void Engine<T>::drop_pending() {
    stack_.first_valid = fresh_from_ = step_;
    reset_next_ = false;
    loss_sum_ = weight_sum_ = 0.0;
}

// Phase 1's pass through the window: the gradient of the pending loss (time steps
// first_loss_step .. step_-1, dy_ already scaled) with the recurrence cut k2 steps back from the
// newest step t.
template <typename T>
void Engine<T>::backward_window(int64_t first_loss_step) {
    const ModelShape& m = config_.shape;
    Window<T>& w = stack_.window;
    const int B = B_, H = m.H, O = m.O, G = m.G();
    const int64_t t = step_ - 1;
    const int64_t a =
        std::max(t - config_.k2 + 1, stack_.first_valid);  // oldest step of the window
    const T* W_head = params_ + m.head_offset();
    T* dW_head = buffer_.data() + m.head_offset();
    T* db_head = dW_head + size_t(O) * H;

    // Head: every loss step, inside the window or not (k2 < k1 warms the state up).
    w.for_runs(first_loss_step, t + 1, [&](int64_t s, int n) {
        head_weight_backward(dW_head, db_head, dy_.data() + size_t(s - first_loss_step) * B * O,
                             stack_.output(m.L - 1, s, n, head_input_), n * B, H, O);
    });

    std::fill(dh_rec_.begin(), dh_rec_.end(), T(0));
    std::fill(dcarry_rec_.begin(), dcarry_rec_.end(), T(0));
    std::fill(dW_ih_T_.begin(), dW_ih_T_.end(), T(0));
    horizon_squares_.assign(size_t(stream_pieces(B, H)) * 2 * m.L * config_.k2, 0.0);
    const bool separate = stack_.cell().traits.separate_recurrence;
    for (int64_t end = t; end >= a;) {
        const int64_t begin = std::max({a, end - block_ + 1, end - w.slot(end)});
        const int rows = int(end - begin + 1) * B;
        for (int l = m.L - 1; l >= 0; --l) {
            if (l == m.L - 1) {  // dL/dh from the head, at the loss steps of this block
                std::fill(dh_in_.begin(), dh_in_.begin() + size_t(rows) * H, T(0));
                const int64_t first = std::max(begin, first_loss_step);
                if (first <= end) {
                    T* dh = dh_in_.data() + size_t(first - begin) * B * H;
                    const int n = int(end - first + 1);
                    head_input_backward(dh, dy_.data() + size_t(first - first_loss_step) * B * O,
                                        W_head, n * B, H, O);
                    const Dropout& d = stack_.dropout(m.L - 1);  // through the head's dropout
                    if (d.on()) d.apply(dh, dh, first, n, B, H);
                }
            } else {  // dL/dh from the layer above, computed into dx_
                std::swap(dh_in_, dx_);
            }
            backward_layer(l, begin, end);
            const int n = int(end - begin + 1);
            const Inputs<T> input =
                l == 0 ? w.inputs_at(begin)
                       : Inputs<T>::features(stack_.output(l - 1, begin, n, dropped_block_));
            LayerGrads<T> g = m.layer(buffer_.data(), l);
            if (input.are_tokens()) g.W_ih_T = dW_ih_T_.data();
            layer_weight_backward(g, dgates_.data(), separate ? drecurrent_.data() : dgates_.data(),
                                  input, h_prev_block_.data(), rows, m.layer_input(l), H, G);
            if (l > 0) {  // dL/d(input) = dL/dh of the layer below, through its dropout
                layer_input_backward(dx_.data(), dgates_.data(), stack_.weights(l).W_ih, rows, H,
                                     G);
                const Dropout& d = stack_.dropout(l - 1);
                if (d.on()) d.apply(dx_.data(), dx_.data(), begin, n, B, H);
            }
        }
        end = begin - 1;
    }
    if (tokens_)
        MatrixMap<T>(buffer_.data() + m.layer_offset(0), G, m.I) +=
            ConstMatrixMap<T>(dW_ih_T_.data(), m.I, G).transpose();
}

template <typename T>
void Engine<T>::backward_layer(int l, int64_t begin, int64_t end) {
    const ModelShape& m = config_.shape;
    Window<T>& w = stack_.window;
    const int B = B_, H = m.H, G = m.G(), E = w.E, C = w.C, L = m.L;
    const int64_t t = step_ - 1;
    const size_t k2 = size_t(config_.k2);
    const Cell<T>& cell = stack_.cell();
    const bool separate = cell.traits.separate_recurrence;
    T* dh_rec = dh_rec_.data() + size_t(l) * B * H;
    T* dcarry_rec = dcarry_rec_.data() + size_t(l) * B * C;
    for_stream_pieces(B, H, [&](int piece, int b0, int b1) {
        const int rows_b = b1 - b0;
        // This piece's share of Σ (dL/dh)², Σ (dL/dcarry)² at j = t - s steps back.
        double* dh_squares = horizon_squares_.data() + ((size_t(piece) * 2 + 0) * L + l) * k2;
        double* dc_squares = horizon_squares_.data() + ((size_t(piece) * 2 + 1) * L + l) * k2;
        for (int64_t s = end; s >= begin; --s) {
            const size_t r0 = size_t(s - begin) * B + b0;  // this piece's first row in the block
            const size_t row = w.row(l, s) + b0;           // ... and in the window
            T* dh = dh_in_.data() + r0 * H;
            T* dh_r = dh_rec + size_t(b0) * H;
            MatrixMap<T>(dh, rows_b, H) += MatrixMap<T>(dh_r, rows_b, H);
            dh_squares[t - s] += double(MatrixMap<T>(dh, rows_b, H).squaredNorm());

            StepBackward<T> step;
            step.dgates = dgates_.data() + r0 * G;
            step.drecurrent = separate ? drecurrent_.data() + r0 * G : step.dgates;
            step.dcarry = dcarry_rec + size_t(b0) * C;
            step.dh_prev = dh_r;
            step.scratch = scratch_cell_.data() + size_t(b0) * H;
            step.dh = dh;
            step.gates = w.gates.data() + row * G;
            step.extra = w.extra.data() + row * E;
            step.h = w.h.data() + row * H;
            step.carry = w.carry.data() + row * C;
            step.h_prev = stack_.h_prev(l, s, scratch_h_.data(), b0, b1);
            step.carry_prev = stack_.carry_prev(l, s, scratch_carry_.data(), b0, b1);
            dc_squares[t - s] += layer_step_backward(stack_.packed(l), cell, step, rows_b);
            if (w.reset_in(s)) {  // no gradient crosses a reset
                const uint8_t* reset = w.resets_at(s);
                for (int b = b0; b < b1; ++b) {
                    if (!reset[b]) continue;
                    std::fill(dh_rec + size_t(b) * H, dh_rec + size_t(b + 1) * H, T(0));
                    std::fill(dcarry_rec + size_t(b) * C, dcarry_rec + size_t(b + 1) * C, T(0));
                }
            }
            std::copy(step.h_prev, step.h_prev + size_t(rows_b) * H, h_prev_block_.data() + r0 * H);
        }
    });
}

// Folds the last update's Σ (dL/dh)², Σ (dL/dc)² (per piece of streams, of the un-normalised loss: divided
// here by its weight_sum) into the running sums of norms over the `window` steps it reached.
template <typename T>
void Engine<T>::add_to_horizon(int window, double weight_sum) {
    const int L = config_.shape.L, k2 = config_.k2;
    const size_t per_piece = size_t(2) * L * k2;
    if (horizon_norms_.empty()) {
        horizon_norms_.assign(per_piece, 0.0);
        horizon_updates_.assign(k2, 0);
    }
    const size_t pieces = horizon_squares_.size() / per_piece;
    for (size_t i = 0; i < per_piece; ++i) {
        if (int(i % k2) >= window) continue;
        double total = 0.0;
        for (size_t piece = 0; piece < pieces; ++piece)
            total += horizon_squares_[piece * per_piece + i];
        horizon_norms_[i] += std::sqrt(total) / weight_sum;  // of the normalised loss
    }
    for (int j = 0; j < window; ++j) ++horizon_updates_[j];
}

template <typename T>
void Engine<T>::state(T* h, T* carry) const {
    const Window<T>& w = stack_.window;
    if (step_ == stack_.first_valid || reset_next_) {
        std::fill(h, h + size_t(w.L) * w.B * w.H, T(0));
        std::fill(carry, carry + size_t(w.L) * w.B * w.C, T(0));
        return;
    }
    stack_.state_after(step_ - 1, h, carry);
}

// The snapshot holds the window as the steps held, oldest first; the ring holds step s in slot
// s % S. The oldest held step is the first valid one, or the oldest the ring still has.
template <typename T>
typename Engine<T>::Snapshot Engine<T>::snapshot() const {
    const ModelShape& m = config_.shape;
    const Window<T>& w = stack_.window;
    Snapshot s;
    s.num_streams = B_, s.tokens = tokens_, s.steps = step_, s.pending = pending_;
    s.updates = updates_, s.reset_next = reset_next_, s.optimizer_steps = optimizer_.steps;
    s.fresh_from = fresh_from_;
    s.loss_sum = loss_sum_, s.weight_sum = weight_sum_, s.last_weight_sum = last_weight_sum_;
    const size_t P = size_t(m.num_params());
    const Optimizer<T>& o = optimizer_;  // zeros for the moments it does not keep
    s.first_moment = o.first_moment.empty() ? Buffer<T>(P, T(0)) : o.first_moment;
    s.second_moment = o.second_moment.empty() ? Buffer<T>(P, T(0)) : o.second_moment;
    if (B_ == 0) return s;

    const size_t B = size_t(B_), L = size_t(m.L), H = size_t(m.H), G = size_t(w.G), E = size_t(w.E),
                 C = size_t(w.C), I = size_t(m.I);
    const size_t K = stack_.cell().traits.keeps_gates ? G + E : 0;
    const int64_t oldest = std::max(stack_.first_valid, step_ - (w.S - 1));
    const size_t n = size_t(step_ - oldest);
    s.held = int64_t(n);
    if (tokens_)
        s.ids.resize(n * B);
    else
        s.x.resize(n * B * I);
    s.reset.resize(n * B);
    s.gates.resize(n * L * B * K), s.h.resize(n * L * B * H), s.carry.resize(n * L * B * C);
    for (size_t j = 0; j < n; ++j) {
        const int64_t t = oldest + int64_t(j);
        const size_t slot = size_t(w.slot(t));
        if (tokens_)
            std::copy_n(w.ids.data() + slot * B, B, s.ids.data() + j * B);
        else
            std::copy_n(w.x.data() + slot * B * I, B * I, s.x.data() + j * B * I);
        std::copy_n(w.resets.data() + slot * B, B, s.reset.data() + j * B);
        for (size_t l = 0; l < L; ++l) {
            const size_t from = w.row(int(l), t), to = (j * L + l) * B;  // first rows of B
            std::copy_n(w.h.data() + from * H, B * H, s.h.data() + to * H);
            std::copy_n(w.carry.data() + from * C, B * C, s.carry.data() + to * C);
            for (size_t b = 0; K && b < B; ++b) {  // each row: the gates, then the extra values
                std::copy_n(w.gates.data() + (from + b) * G, G, s.gates.data() + (to + b) * K);
                std::copy_n(w.extra.data() + (from + b) * E, E, s.gates.data() + (to + b) * K + G);
            }
        }
    }
    // The state entering the oldest held step, its resets applied: zeros when nothing precedes it.
    s.h_in.assign(L * B * H, T(0)), s.carry_in.assign(L * B * C, T(0));
    if (oldest > stack_.first_valid) {
        const uint8_t* reset = w.resets.data() + size_t(w.slot(oldest)) * B;
        for (size_t l = 0; l < L; ++l) {
            const size_t from = w.row(int(l), oldest - 1);
            for (size_t b = 0; b < B; ++b) {
                if (reset[b]) continue;
                std::copy_n(w.h.data() + (from + b) * H, H, s.h_in.data() + (l * B + b) * H);
                std::copy_n(w.carry.data() + (from + b) * C, C,
                            s.carry_in.data() + (l * B + b) * C);
            }
        }
    }
    // The pending rows of the k1 the engine keeps.
    const size_t rows = size_t(pending_) * B, O = size_t(m.O),
                 Y = size_t(target_values(config_.loss, m.O));
    s.outputs.assign(outputs_.begin(), outputs_.begin() + rows * O);
    s.dy.assign(dy_.begin(), dy_.begin() + rows * O);
    s.values.assign(values_.begin(), values_.begin() + (values_.empty() ? 0 : rows * Y));
    s.classes.assign(classes_.begin(), classes_.begin() + (classes_.empty() ? 0 : rows));
    s.weights.assign(weights_.begin(), weights_.begin() + rows);
    return s;
}

template <typename T>
void Engine<T>::restore(const Snapshot& s) {
    const ModelShape& m = config_.shape;
    const int64_t capacity = std::max(config_.k1, config_.k2);
    const int64_t n = s.held, r = s.pending;
    if (s.num_streams < 0 || n < 0 || r < 0 || s.steps < n || s.updates < 0 ||
        s.optimizer_steps < 0)
        throw InvalidArgument("engine state: a counter is negative");
    if (n > capacity) throw InvalidArgument("engine state: more steps held than max(k1, k2)");
    if (r >= config_.k1 || r > n) throw InvalidArgument("engine state: pending steps out of range");
    if (s.num_streams == 0 && (n || s.updates || s.reset_next))
        throw InvalidArgument("engine state: no streams (B = 0) but steps or updates are recorded");
    if (s.fresh_from < s.steps - n || s.fresh_from > s.steps)
        throw InvalidArgument("engine state: fresh_from is not among the steps held");
    Engine<T> fresh(config_, params_);
    if (s.num_streams > 0) fresh.allocate(int(s.num_streams), s.tokens);
    const Window<T>& fw = fresh.stack_.window;
    const size_t B = size_t(s.num_streams), L = size_t(m.L), H = size_t(m.H), I = size_t(m.I),
                 O = size_t(m.O), G = size_t(fw.G), E = size_t(fw.E), C = size_t(fw.C),
                 P = size_t(m.num_params());
    const size_t K = fresh.stack_.cell().traits.keeps_gates ? G + E : 0;
    const bool classes = loss_traits(config_.loss).classes;
    const size_t Y = size_t(target_values(config_.loss, m.O)), held = size_t(n) * B,
                 rows = size_t(r) * B;
    auto fits = [](const char* name, size_t got, size_t want) {
        if (got != want)
            throw InvalidArgument(std::string("engine state: ") + name + " has " +
                                  std::to_string(got) + " values, expected " +
                                  std::to_string(want) + " (a snapshot of another configuration?)");
    };
    fits("window/x (features)", s.x.size(), s.tokens ? 0 : held * I);
    fits("window/x (token ids)", s.ids.size(), s.tokens ? held : 0);
    fits("window/reset", s.reset.size(), held);
    fits("window/gates", s.gates.size(), held * L * K);
    fits("window/h", s.h.size(), held * L * H);
    fits("window/c", s.carry.size(), held * L * C);
    fits("window/h_in", s.h_in.size(), L * B * H);
    fits("window/c_in", s.carry_in.size(), L * B * C);
    fits("pending/out", s.outputs.size(), rows * O);
    fits("pending/dy", s.dy.size(), rows * O);
    fits("pending/y (values)", s.values.size(), classes ? 0 : rows * Y);
    fits("pending/y (class ids)", s.classes.size(), classes ? rows : 0);
    fits("pending/w", s.weights.size(), rows);
    fits("optimizer/m", s.first_moment.size(), P);
    fits("optimizer/v", s.second_moment.size(), P);
    if (config_.recompute &&
        std::any_of(s.weights.begin(), s.weights.end(), [](T v) { return std::isnan(v); }))
        throw InvalidArgument(
            "engine state: the pending steps' targets are unknown (a file from "
            "an older version): it cannot resume with recompute");

    // Everything fits. The reduce buffer stays where the caller's view of it points, and so does
    // the reduce.
    Buffer<T> buffer = std::move(buffer_);
    std::function<void()> reduce = std::move(reduce_);
    *this = std::move(fresh);
    buffer_ = std::move(buffer);
    reduce_ = std::move(reduce);
    step_ = s.steps, pending_ = int(r), updates_ = s.updates, reset_next_ = s.reset_next;
    optimizer_.steps = s.optimizer_steps;
    loss_sum_ = s.loss_sum, weight_sum_ = s.weight_sum, last_weight_sum_ = s.last_weight_sum;
    if (!optimizer_.first_moment.empty()) optimizer_.first_moment = s.first_moment;
    if (!optimizer_.second_moment.empty()) optimizer_.second_moment = s.second_moment;
    // A full window whose oldest step had a predecessor: that state goes in the slot before, and
    // the first valid step is that one (an update never reaches back to it). Otherwise the
    // window starts the stream's valid steps, from zeros.
    const int64_t oldest = step_ - n;
    stack_.first_valid = n == capacity && step_ > n ? oldest - 1 : oldest;
    fresh_from_ = std::max(s.fresh_from, stack_.first_valid);
    if (B == 0) return;

    Window<T>& w = stack_.window;
    for (size_t j = 0; j < size_t(n); ++j) {
        const int64_t t = oldest + int64_t(j);
        if (s.tokens)
            std::copy_n(s.ids.data() + j * B, B, w.ids_at(t));
        else
            std::copy_n(s.x.data() + j * B * I, B * I, w.x_at(t));
        const uint8_t* reset = s.reset.data() + j * B;
        std::copy_n(reset, B, w.resets_at(t));
        w.any_reset[w.slot(t)] = std::any_of(reset, reset + B, [](uint8_t v) { return v; });
        for (size_t l = 0; l < L; ++l) {
            const size_t to = w.row(int(l), t), from = (j * L + l) * B;
            std::copy_n(s.h.data() + from * H, B * H, w.h.data() + to * H);
            std::copy_n(s.carry.data() + from * C, B * C, w.carry.data() + to * C);
            for (size_t b = 0; K && b < B; ++b) {
                std::copy_n(s.gates.data() + (from + b) * K, G, w.gates.data() + (to + b) * G);
                std::copy_n(s.gates.data() + (from + b) * K + G, E, w.extra.data() + (to + b) * E);
            }
        }
    }
    if (stack_.first_valid < oldest) {
        for (size_t l = 0; l < L; ++l) {
            const size_t to = w.row(int(l), oldest - 1);
            std::copy_n(s.h_in.data() + l * B * H, B * H, w.h.data() + to * H);
            std::copy_n(s.carry_in.data() + l * B * C, B * C, w.carry.data() + to * C);
        }
    }
    std::copy(s.outputs.begin(), s.outputs.end(), outputs_.begin());
    std::copy(s.dy.begin(), s.dy.end(), dy_.begin());
    std::copy(s.values.begin(), s.values.end(), values_.begin());
    std::copy(s.classes.begin(), s.classes.end(), classes_.begin());
    std::copy(s.weights.begin(), s.weights.end(), weights_.begin());
}

// The same forward path as training (Stack::forward) over a window of one chunk of steps. The
// state entering the first step is stored as if step 0 had left it; steps run from 1.
template <typename T>
void predict(const std::string& cell, const ModelShape& m, const T* params, int64_t steps, int B,
             const Inputs<T>& in, const T* h0, const T* carry0, T* outputs, T* h, T* carry) {
    ThreadScope threads(threads_for(B, m.H));
    const int chunk = int(std::min<int64_t>(std::max<int64_t>(steps, 1), std::max(1, 4096 / B)));
    Stack<T> stack(cell, m);
    stack.set_steps_per_prepare(int(std::min<int64_t>(steps, std::numeric_limits<int>::max())));
    stack.allocate(chunk + 1, B, in.are_tokens());
    stack.prepare(params, /*with_backward=*/false);
    Window<T>& w = stack.window;
    const size_t nh = size_t(B) * m.H, nc = size_t(B) * w.C;
    for (int l = 0; l < m.L; ++l) {
        std::copy(h0 + l * nh, h0 + (l + 1) * nh, w.h_at(l, 0));
        std::copy(carry0 + l * nc, carry0 + (l + 1) * nc, w.carry_at(l, 0));
    }
    stack.first_valid = -1;  // step 0 holds the initial state, not zeros
    const T* W_head = params + m.head_offset();
    for (int64_t s0 = 1; s0 <= steps;) {
        const int n =
            int(std::min<int64_t>({int64_t(chunk), steps - s0 + 1, w.contiguous_from(s0)}));
        const size_t row0 = size_t(s0 - 1) * B;
        stack.forward(s0, n, in.from_row(row0, m.I), /*resets=*/nullptr, /*reset_first=*/false);
        head_forward(outputs + row0 * m.O, w.h_at(m.L - 1, s0), W_head, W_head + size_t(m.O) * m.H,
                     n * B, m.H, m.O);
        s0 += n;
    }
    stack.state_after(steps, h, carry);
}

template class Stack<float>;
template class Stack<double>;
template class Engine<float>;
template class Engine<double>;
template void predict<float>(const std::string&, const ModelShape&, const float*, int64_t, int,
                             const Inputs<float>&, const float*, const float*, float*, float*,
                             float*);
template void predict<double>(const std::string&, const ModelShape&, const double*, int64_t, int,
                              const Inputs<double>&, const double*, const double*, double*, double*,
                              double*);

}  // namespace tbptt
