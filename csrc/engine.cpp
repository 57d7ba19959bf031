// The TBPTT(k1, k2) engine (see engine.h for what it computes).
//
// Per call, steps are processed in runs: a run ends at the next update, the end of the call or the
// end of the ring. A run's forward is layer by layer, each thread running every step for its slice
// of streams: the input projection and the recurrent product through weights packed once per
// update (lstm.h), then the gates. (With fewer than 4 streams, or token inputs, the input
// projection of the whole run is one product first.) An update's backward walks its window from
// the newest step in blocks of steps, each block layer by layer from the top; the weight gradients
// of a block are one product each, so only dh_prev = dgates W_hh is done step by step.
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tensor.h"
#include "threads.h"

namespace tbptt {

int64_t ModelShape::layer_offset(int l) const {
    const int64_t G = 4 * int64_t(H);
    int64_t offset = 0;
    for (int k = 0; k < l; ++k) offset += G * layer_input(k) + G * H + 2 * G;
    return offset;
}

template <typename T>
Engine<T>::Engine(const EngineConfig& config, T* params)
    : config_(config),
      params_(params),
      grad_(config.shape.num_params(), T(0)),
      optimizer_(config.optimizer, config.shape.num_params()) {
    if (config.k1 < 1 || config.k2 < 1) throw InvalidArgument("k1 and k2 must be >= 1");
}

template <typename T>
void Engine<T>::allocate(int B, bool tokens) {
    const ModelShape& m = config_.shape;
    const int k1 = config_.k1, k2 = config_.k2;
    B_ = B;
    tokens_ = tokens;
    const int64_t S = int64_t(std::max(k1, k2)) + 1;
    try {
        window_.allocate(int(S), B, m.I, m.H, m.L, tokens);
        dy_.assign(size_t(k1) * B * m.O, T(0));
        outputs_.assign(size_t(k1) * B * m.O, T(0));
        // Blocks of about 256 rows keep the weight-gradient products efficient, the scratch small.
        block_ = std::max(1, std::min(k2, (256 + B - 1) / B));
        const size_t rows = size_t(block_) * B;
        dgates_.assign(rows * 4 * m.H, T(0));
        dh_in_.assign(rows * m.H, T(0));
        dx_.assign(rows * m.H, T(0));
        h_prev_block_.assign(rows * m.H, T(0));
        dh_rec_.assign(size_t(m.L) * B * m.H, T(0));
        dc_rec_.assign(size_t(m.L) * B * m.H, T(0));
        zeros_.assign(size_t(B) * m.H, T(0));
        scratch_h_.assign(size_t(B) * m.H, T(0));
        scratch_c_.assign(size_t(B) * m.H, T(0));
        tanh_c_.assign(size_t(B) * m.H, T(0));
        W_ih_T_.assign(tokens ? size_t(m.I) * 4 * m.H : 0, T(0));
        dW_ih_T_.assign(W_ih_T_.size(), T(0));
    } catch (const std::exception&) {  // bad_alloc, length_error
        B_ = 0;
        const double bytes = double(S) * B * (6.0 * m.H * m.L + (tokens ? 0 : m.I)) * sizeof(T) +
                             2.0 * k1 * B * m.O * sizeof(T);
        std::ostringstream message;
        message << "k1, k2: the window of max(k1, k2) + 1 = " << S << " steps (and k1 = " << k1
                << " steps of outputs) for B = " << B << " streams needs " << bytes / (1 << 30)
                << " GiB, which could not be allocated; use smaller k1/k2 (memory grows with"
                << " max(k1, k2), never with the stream)";
        throw OutOfMemory(message.str());
    }
}

template <typename T>
void Engine<T>::prepare_weights() {
    const ModelShape& m = config_.shape;
    packed_.resize(m.L);
    for (int l = 0; l < m.L; ++l)
        packed_[l].prepare(m.weights<T>(params_, l), m.layer_input(l), m.H, B_,
                           /*pack_input=*/l > 0 || !tokens_, /*with_backward=*/true);
    if (tokens_)
        MatrixMap<T>(W_ih_T_.data(), m.I, 4 * m.H) =
            ConstMatrixMap<T>(m.weights<T>(params_, 0).W_ih, 4 * m.H, m.I).transpose();
}

template <typename T>
LayerWeights<T> Engine<T>::weights(int l) const {
    LayerWeights<T> w = config_.shape.weights<T>(params_, l);
    if (l == 0 && tokens_) w.W_ih_T = W_ih_T_.data();
    return w;
}

// The state entering step s for streams [b0, b1): zeros at the start (or after a divergence),
// else the previous step's with the streams reset at s zeroed. Points at row b0.
template <typename T>
static const T* masked_prev(Window<T>& w, const T* prev, int64_t s, T* scratch, int b0, int b1,
                            int H) {
    if (!w.reset_in(s)) return prev + size_t(b0) * H;
    const uint8_t* reset = w.resets_at(s);
    for (int b = b0; b < b1; ++b) {
        T* row = scratch + size_t(b) * H;
        if (reset[b])
            std::fill(row, row + H, T(0));
        else
            std::copy(prev + size_t(b) * H, prev + size_t(b + 1) * H, row);
    }
    return scratch + size_t(b0) * H;
}

template <typename T>
const T* Engine<T>::h_prev(int l, int64_t s, T* scratch, int b0, int b1) {
    if (s == first_valid_) return zeros_.data() + size_t(b0) * config_.shape.H;
    return masked_prev(window_, window_.h_at(l, s - 1), s, scratch, b0, b1, config_.shape.H);
}

template <typename T>
const T* Engine<T>::c_prev(int l, int64_t s, T* scratch, int b0, int b1) {
    if (s == first_valid_) return zeros_.data() + size_t(b0) * config_.shape.H;
    return masked_prev(window_, window_.c_at(l, s - 1), s, scratch, b0, b1, config_.shape.H);
}

// Streams never interact inside a layer: split them over threads, each running every step of a run
// for its own rows. One fork per run instead of one per step, and each thread's small recurrent
// products stay in its own cache (Eigen runs them single-threaded inside a parallel region).
static int stream_slices(int B, int H) {
    if (int64_t(B) * H < 1024) return 1;  // too little work per step to share
    return std::max(1, std::min(Eigen::nbThreads(), B));  // the calling thread's count (threads.h)
}

// body(slice, b0, b1) for streams [b0, b1) of slice `slice` < stream_slices(B, H).
template <typename F>
static void for_stream_slices(int B, int H, F&& body) {
    const int slices = stream_slices(B, H);
#ifdef _OPENMP
    if (slices > 1) {
#pragma omp parallel for num_threads(slices) schedule(static, 1)
        for (int i = 0; i < slices; ++i)
            body(i, int(int64_t(B) * i / slices), int(int64_t(B) * (i + 1) / slices));
        return;
    }
#endif
    body(0, 0, B);
}

template <typename T>
void Engine<T>::forward(int64_t s0, int n, const T* x, const int64_t* tokens,
                        const uint8_t* resets) {
    const ModelShape& m = config_.shape;
    const int B = B_, H = m.H;
    for (int j = 0; j < n; ++j) {
        uint8_t* row = window_.resets_at(s0 + j);
        if (resets)
            std::copy(resets + size_t(j) * B, resets + size_t(j + 1) * B, row);
        else
            std::fill(row, row + B, uint8_t(0));
        if (j == 0 && reset_next_) std::fill(row, row + B, uint8_t(1));
        window_.any_reset[window_.slot(s0 + j)] = std::any_of(row, row + B, [](uint8_t r) { return r; });
    }
    reset_next_ = false;
    if (tokens)
        std::copy(tokens, tokens + size_t(n) * B, window_.ids_at(s0));
    else
        std::copy(x, x + size_t(n) * B * m.I, window_.x_at(s0));

    for (int l = 0; l < m.L; ++l) {
        const LayerWeights<T> w = weights(l);
        const int I = m.layer_input(l);
        const T* input = l == 0 ? (tokens ? nullptr : window_.x_at(s0)) : window_.h_at(l - 1, s0);
        const int64_t* ids = (l == 0 && tokens) ? window_.ids_at(s0) : nullptr;
        // Packed input weights: each thread projects its own streams' inputs step by step, inside
        // the parallel part. Otherwise one product for the whole run, before it.
        const bool project_per_step = !packed_[l].input.empty();
        if (!project_per_step)
            lstm_input_projection(window_.gates_at(l, s0), input, ids, w, n * B, I, H);
        for_stream_slices(B, H, [&](int, int b0, int b1) {
            const size_t G = 4 * size_t(H);
            for (int64_t s = s0; s < s0 + n; ++s) {
                T* gates = window_.gates_at(l, s) + b0 * G;
                if (project_per_step)
                    packed_[l].project(gates, input + (size_t(s - s0) * B + b0) * I, b1 - b0);
                lstm_step_forward(gates, window_.c_at(l, s) + b0 * H, window_.h_at(l, s) + b0 * H,
                                  h_prev(l, s, scratch_h_.data(), b0, b1),
                                  c_prev(l, s, scratch_c_.data(), b0, b1), packed_[l], b1 - b0, H);
            }
        });
    }
}

template <typename T>
void Engine<T>::accumulate_loss(int64_t s0, int n, const T* targets, const int64_t* labels,
                                const T* mask) {
    const ModelShape& m = config_.shape;
    const int rows = n * B_;
    const T* W = params_ + m.head_offset();
    T* y = outputs_.data();
    head_forward(y, window_.h_at(m.L - 1, s0), W, W + size_t(m.O) * m.H, rows, m.H, m.O);
    T* dy = dy_.data() + size_t(pending_) * B_ * m.O;
    if (config_.loss == Loss::mse)
        loss_sum_ += mse_loss(dy, y, targets, mask, rows, m.O, &weight_sum_);
    else
        loss_sum_ += cross_entropy_loss(dy, y, labels, mask, rows, m.O, &weight_sum_);
}

template <typename T>
void Engine<T>::train(int64_t steps, int B, const T* x, const int64_t* tokens, const T* targets,
                      const int64_t* labels, const T* mask, const uint8_t* resets,
                      std::vector<double>* losses) {
    if (steps <= 0) return;
    if (B < 1) throw InvalidArgument("B (x.shape[1]) must be >= 1");
    ThreadScope threads(threads_for(B, config_.shape.H));
    if (B_ == 0) allocate(B, tokens != nullptr);
    if (B != B_) throw InvalidArgument("B changed between calls");
    if ((tokens != nullptr) != tokens_)
        throw InvalidArgument(tokens_ ? "x must hold token ids, as in the first call"
                                      : "x must hold features, as in the first call");
    const ModelShape& m = config_.shape;
    const size_t out_width = config_.loss == Loss::mse ? size_t(m.O) : 1;
    prepare_weights();  // the caller may have changed the parameters since the last call
    int64_t done = 0;
    while (done < steps) {
        const int n = int(std::min<int64_t>({int64_t(config_.k1 - pending_), steps - done,
                                             int64_t(window_.contiguous_from(step_))}));
        const size_t row0 = size_t(done) * B;
        forward(step_, n, tokens ? nullptr : x + row0 * m.I, tokens ? tokens + row0 : nullptr,
                resets ? resets + row0 : nullptr);
        accumulate_loss(step_, n, targets ? targets + row0 * out_width : nullptr,
                        labels ? labels + row0 : nullptr, mask ? mask + row0 : nullptr);
        step_ += n;
        pending_ += n;
        done += n;
        double loss;
        if (pending_ == config_.k1 && update(&loss)) losses->push_back(loss);
    }
}

template <typename T>
bool Engine<T>::flush(double* loss) {
    if (pending_ == 0) return false;
    ThreadScope threads(threads_for(B_, config_.shape.H));
    prepare_weights();
    return update(loss);
}

template <typename T>
bool Engine<T>::update(double* loss) {
    const int r = pending_;
    const double weight_sum = weight_sum_;
    *loss = loss_sum_ / (weight_sum > 0 ? weight_sum : 1.0);
    pending_ = 0;
    loss_sum_ = weight_sum_ = 0.0;
    ++updates_;
    if (weight_sum == 0.0) return false;  // counts for the schedule; nothing to learn from

    const ModelShape& m = config_.shape;
    // Divide rather than multiply by the reciprocal: 1 / (a subnormal sum of weights) overflows.
    Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(dy_.data(), size_t(r) * B_ * m.O) /=
        T(weight_sum);
    std::fill(grad_.begin(), grad_.end(), T(0));
    backward(step_ - r);

    const double norm = global_norm(grad_.data(), int64_t(grad_.size()));
    // Finite in the model's dtype: a float32 loss of 1e50 is as diverged as an inf.
    if (!std::isfinite(T(*loss)) || !std::isfinite(T(norm))) {
        // Drop the failed update's steps and start every stream afresh; keep the last good weights.
        first_valid_ = step_;
        reset_next_ = false;
        std::ostringstream message;
        message << "update " << updates_ << " (steps " << step_ - r + 1 << ".." << step_
                << ") is not finite: loss = " << *loss << ", gradient norm = " << norm
                << ". It was not applied: the parameters are those of the last good update, its "
                   "steps were dropped and every stream's state was reset. Lower the learning "
                   "rate or set clip_norm, then go on.";
        throw Divergence(message.str());
    }
    add_to_horizon(int(step_ - std::max(step_ - config_.k2, first_valid_)));
    // <- data-parallel training would average grad_ across processes here, before clipping.
    const double scale = config_.clip_norm > 0 ? clip_scale(norm, config_.clip_norm) : 1.0;
    optimizer_.step(params_, grad_.data(), T(scale));
    prepare_weights();
    return true;
}

// Gradient of the pending loss (steps first_loss_step .. step_-1, dy_ already normalised) with the
// recurrence cut k2 steps back from the newest step t.
template <typename T>
void Engine<T>::backward(int64_t first_loss_step) {
    const ModelShape& m = config_.shape;
    const int B = B_, H = m.H, O = m.O, G = 4 * H;
    const int64_t t = step_ - 1;
    const int64_t a = std::max(t - config_.k2 + 1, first_valid_);  // oldest step of the window
    const T* W_head = params_ + m.head_offset();
    T* dW_head = grad_.data() + m.head_offset();
    T* db_head = dW_head + size_t(O) * H;

    // Head: every loss step, inside the window or not (k2 < k1 warms the state up).
    for (int64_t s = first_loss_step; s <= t;) {
        const int n = int(std::min<int64_t>(t - s + 1, window_.contiguous_from(s)));
        head_weight_backward(dW_head, db_head, dy_.data() + size_t(s - first_loss_step) * B * O,
                             window_.h_at(m.L - 1, s), n * B, H, O);
        s += n;
    }

    std::fill(dh_rec_.begin(), dh_rec_.end(), T(0));
    std::fill(dc_rec_.begin(), dc_rec_.end(), T(0));
    std::fill(dW_ih_T_.begin(), dW_ih_T_.end(), T(0));
    const size_t k2 = size_t(config_.k2);
    Buffer<double>& squares = horizon_squares_;
    squares.assign(size_t(stream_slices(B, H)) * 2 * m.L * k2, 0.0);
    for (int64_t end = t; end >= a;) {
        const int64_t begin = std::max({a, end - block_ + 1, end - window_.slot(end)});
        const int n = int(end - begin + 1);
        const int rows = n * B;
        for (int l = m.L - 1; l >= 0; --l) {
            const LayerWeights<T> w = weights(l);
            T* dh_rec = dh_rec_.data() + size_t(l) * B * H;
            T* dc_rec = dc_rec_.data() + size_t(l) * B * H;
            if (l == m.L - 1) {  // dL/dh from the head, at the loss steps of this block
                std::fill(dh_in_.begin(), dh_in_.begin() + size_t(rows) * H, T(0));
                const int64_t first = std::max(begin, first_loss_step);
                if (first <= end)
                    head_input_backward(dh_in_.data() + size_t(first - begin) * B * H,
                                        dy_.data() + size_t(first - first_loss_step) * B * O,
                                        W_head, int(end - first + 1) * B, H, O);
            } else {  // dL/dh from the layer above, computed into dx_
                std::swap(dh_in_, dx_);
            }
            for_stream_slices(B, H, [&](int slice, int b0, int b1) {
                const int rows_b = b1 - b0;
                // This slice's share of Σ (dL/dh)², Σ (dL/dc)² at j = t - s steps back.
                double* dh_squares = squares.data() + ((size_t(slice) * 2 + 0) * m.L + l) * k2;
                double* dc_squares = squares.data() + ((size_t(slice) * 2 + 1) * m.L + l) * k2;
                for (int64_t s = end; s >= begin; --s) {
                    const size_t j = size_t(s - begin), r0 = j * B + b0;
                    T* dh = dh_in_.data() + r0 * H;
                    T* dgates = dgates_.data() + r0 * G;
                    T* dh_r = dh_rec + size_t(b0) * H;
                    T* dc_r = dc_rec + size_t(b0) * H;
                    MatrixMap<T>(dh, rows_b, H) += MatrixMap<T>(dh_r, rows_b, H);
                    dh_squares[t - s] += double(MatrixMap<T>(dh, rows_b, H).squaredNorm());
                    dc_squares[t - s] += lstm_step_backward(
                        dgates, dc_r, dh, window_.gates_at(l, s) + size_t(b0) * G,
                        window_.c_at(l, s) + size_t(b0) * H, c_prev(l, s, scratch_c_.data(), b0, b1),
                        tanh_c_.data() + size_t(b0) * H, rows_b, H);
                    packed_[l].backprop(dh_r, dgates, rows_b);
                    if (window_.reset_in(s)) {  // no gradient crosses a reset
                        const uint8_t* reset = window_.resets_at(s);
                        for (int b = b0; b < b1; ++b) {
                            if (!reset[b]) continue;
                            std::fill(dh_rec + size_t(b) * H, dh_rec + size_t(b + 1) * H, T(0));
                            std::fill(dc_rec + size_t(b) * H, dc_rec + size_t(b + 1) * H, T(0));
                        }
                    }
                    const T* hp = h_prev(l, s, scratch_h_.data(), b0, b1);
                    std::copy(hp, hp + size_t(rows_b) * H, h_prev_block_.data() + r0 * H);
                }
            });
            const T* input = l == 0 ? (tokens_ ? nullptr : window_.x_at(begin))
                                    : window_.h_at(l - 1, begin);
            const int64_t* ids = (l == 0 && tokens_) ? window_.ids_at(begin) : nullptr;
            LayerGrads<T> g = m.grads<T>(grad_.data(), l);
            if (ids) g.W_ih_T = dW_ih_T_.data();
            lstm_weight_backward(g, dgates_.data(), input, ids,
                                 h_prev_block_.data(), rows, m.layer_input(l), H);
            if (l > 0)  // dL/d(input) = dL/dh of the layer below
                MatrixMap<T>(dx_.data(), rows, H).noalias() =
                    ConstMatrixMap<T>(dgates_.data(), rows, G) * ConstMatrixMap<T>(w.W_ih, G, H);
        }
        end = begin - 1;
    }
    if (tokens_)
        MatrixMap<T>(grad_.data() + m.layer_offset(0), G, m.I) +=
            ConstMatrixMap<T>(dW_ih_T_.data(), m.I, G).transpose();
}

// Folds the last update's Σ (dL/dh)², Σ (dL/dc)² (per slice) into the running sums of norms over
// the `window` steps it reached.
template <typename T>
void Engine<T>::add_to_horizon(int window) {
    const int L = config_.shape.L, k2 = config_.k2;
    const size_t per_slice = size_t(2) * L * k2;
    if (horizon_norms_.empty()) {
        horizon_norms_.assign(per_slice, 0.0);
        horizon_updates_.assign(k2, 0);
    }
    const size_t slices = horizon_squares_.size() / per_slice;
    for (size_t i = 0; i < per_slice; ++i) {
        if (int(i % k2) >= window) continue;
        double total = 0.0;
        for (size_t slice = 0; slice < slices; ++slice) total += horizon_squares_[slice * per_slice + i];
        horizon_norms_[i] += std::sqrt(total);
    }
    for (int j = 0; j < window; ++j) ++horizon_updates_[j];
}

template <typename T>
void Engine<T>::state(T* h, T* c) const {
    const ModelShape& m = config_.shape;
    const size_t n = size_t(B_) * m.H;
    for (int l = 0; l < m.L; ++l) {
        if (step_ == first_valid_ || reset_next_) {
            std::fill(h + l * n, h + (l + 1) * n, T(0));
            std::fill(c + l * n, c + (l + 1) * n, T(0));
            continue;
        }
        Window<T>& w = const_cast<Window<T>&>(window_);
        std::copy(w.h_at(l, step_ - 1), w.h_at(l, step_ - 1) + n, h + l * n);
        std::copy(w.c_at(l, step_ - 1), w.c_at(l, step_ - 1) + n, c + l * n);
    }
}

template <typename T>
typename Engine<T>::Snapshot Engine<T>::snapshot() const {
    Snapshot s;
    s.counters = {B_, tokens_, step_, first_valid_, pending_, updates_, reset_next_, optimizer_.steps};
    s.sums = {loss_sum_, weight_sum_};
    s.dy = dy_;
    s.x = window_.x, s.ids = window_.ids, s.gates = window_.gates, s.c = window_.c, s.h = window_.h;
    s.resets = window_.resets, s.any_reset = window_.any_reset;
    s.first_moment = optimizer_.first_moment, s.second_moment = optimizer_.second_moment;
    return s;
}

template <typename T>
void Engine<T>::restore(const Snapshot& s) {
    if (s.counters.size() != 8 || s.sums.size() != 2)
        throw InvalidArgument("engine state: counters/sums have the wrong length");
    Engine<T> fresh(config_, params_);
    if (s.counters[0] > 0) fresh.allocate(int(s.counters[0]), s.counters[1] != 0);
    auto fits = [](const char* name, size_t got, size_t want) {
        if (got != want)
            throw InvalidArgument(std::string("engine state: ") + name + " has " +
                                  std::to_string(got) + " values, expected " + std::to_string(want) +
                                  " (a checkpoint of another configuration?)");
    };
    const Window<T>& w = fresh.window_;
    fits("dy", s.dy.size(), fresh.dy_.size());
    fits("x", s.x.size(), w.x.size());
    fits("ids", s.ids.size(), w.ids.size());
    fits("gates", s.gates.size(), w.gates.size());
    fits("c", s.c.size(), w.c.size());
    fits("h", s.h.size(), w.h.size());
    fits("resets", s.resets.size(), w.resets.size());
    fits("any_reset", s.any_reset.size(), w.any_reset.size());
    fits("first_moment", s.first_moment.size(), fresh.optimizer_.first_moment.size());
    fits("second_moment", s.second_moment.size(), fresh.optimizer_.second_moment.size());
    if (s.counters[4] < 0 || s.counters[4] >= config_.k1)
        throw InvalidArgument("engine state: pending steps out of range");
    *this = std::move(fresh);
    step_ = s.counters[2], first_valid_ = s.counters[3], pending_ = int(s.counters[4]);
    updates_ = s.counters[5], reset_next_ = s.counters[6] != 0, optimizer_.steps = s.counters[7];
    loss_sum_ = s.sums[0], weight_sum_ = s.sums[1];
    dy_ = s.dy;
    window_.x = s.x, window_.ids = s.ids, window_.gates = s.gates, window_.c = s.c, window_.h = s.h;
    window_.resets = s.resets, window_.any_reset = s.any_reset;
    optimizer_.first_moment = s.first_moment, optimizer_.second_moment = s.second_moment;
}

template <typename T>
void predict(const ModelShape& m, const T* params, int64_t steps, int B, const T* x,
             const int64_t* tokens, const T* h0, const T* c0, T* outputs, T* h, T* c) {
    ThreadScope threads(threads_for(B, m.H));
    const int H = m.H, chunk = int(std::min<int64_t>(steps, std::max(1, 4096 / B)));
    const size_t state = size_t(B) * H;
    Buffer<T> gates(size_t(chunk) * B * 4 * H), hs(size_t(m.L) * chunk * state),
        cs(size_t(m.L) * chunk * state);
    std::copy(h0, h0 + m.L * state, h);
    std::copy(c0, c0 + m.L * state, c);
    const T* W_head = params + m.head_offset();
    Buffer<T> W_ih_T;
    if (tokens) {
        W_ih_T.resize(size_t(m.I) * 4 * H);
        MatrixMap<T>(W_ih_T.data(), m.I, 4 * H) =
            ConstMatrixMap<T>(m.weights<T>(params, 0).W_ih, 4 * H, m.I).transpose();
    }
    std::vector<PackedWeights<T>> packed(m.L);  // W_hh only: the inputs go one product per chunk
    for (int l = 0; l < m.L; ++l)
        packed[l].prepare(m.weights<T>(params, l), m.layer_input(l), H, B, /*pack_input=*/false,
                          /*with_backward=*/false);
    for (int64_t s0 = 0; s0 < steps; s0 += chunk) {
        const int n = int(std::min<int64_t>(chunk, steps - s0));
        for (int l = 0; l < m.L; ++l) {
            LayerWeights<T> w = m.weights<T>(params, l);
            if (l == 0) w.W_ih_T = W_ih_T.data();
            T* h_l = hs.data() + size_t(l) * chunk * state;
            T* c_l = cs.data() + size_t(l) * chunk * state;
            const T* input = l > 0 ? hs.data() + size_t(l - 1) * chunk * state
                                   : (tokens ? nullptr : x + size_t(s0) * B * m.I);
            lstm_input_projection(gates.data(), input, l == 0 && tokens ? tokens + s0 * B : nullptr,
                                  w, n * B, m.layer_input(l), H);
            for (int j = 0; j < n; ++j) {
                const T* hp = j == 0 ? h + l * state : h_l + (j - 1) * state;
                const T* cp = j == 0 ? c + l * state : c_l + (j - 1) * state;
                lstm_step_forward(gates.data() + size_t(j) * B * 4 * H, c_l + j * state,
                                  h_l + j * state, hp, cp, packed[l], B, H);
            }
            std::copy(h_l + (n - 1) * state, h_l + n * state, h + l * state);
            std::copy(c_l + (n - 1) * state, c_l + n * state, c + l * state);
        }
        head_forward(outputs + size_t(s0) * B * m.O, hs.data() + size_t(m.L - 1) * chunk * state,
                     W_head, W_head + size_t(m.O) * H, n * B, H, m.O);
    }
}

template class Engine<float>;
template class Engine<double>;
template void predict<float>(const ModelShape&, const float*, int64_t, int, const float*,
                             const int64_t*, const float*, const float*, float*, float*, float*);
template void predict<double>(const ModelShape&, const double*, int64_t, int, const double*,
                              const int64_t*, const double*, const double*, double*, double*,
                              double*);

}  // namespace tbptt
