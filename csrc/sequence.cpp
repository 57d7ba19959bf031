// The stateless sequence pass (see sequence.h). The forward runs the steps piece by piece of
// streams (threads.h), each piece every step for its own rows, through the weights packed once per
// call (layer.h), projecting its inputs step by step when the input weights are packed (else one
// product for every row first). The backward walks back in blocks of about 256 rows: the steps of
// a block piece by piece of streams, then the block's weight gradients and dL/dx, one product
// each, while its dL/dgates are in cache (as the engine's backward does).
#include "sequence.h"

#include <algorithm>

#include "scratch.h"
#include "tensor.h"
#include "threads.h"

namespace tbptt {

SequenceRows SequenceRows::padded(int steps, int B) {
    SequenceRows r;
    r.steps = steps, r.B = B;
    r.active.assign(size_t(steps), B);
    r.offset.resize(size_t(steps) + 1);
    for (int t = 0; t <= steps; ++t) r.offset[t] = int64_t(t) * B;
    return r;
}

SequenceRows SequenceRows::packed(const int64_t* active, int steps) {
    SequenceRows r;
    r.steps = steps, r.B = steps ? int(active[0]) : 0;
    r.active.assign(active, active + steps);
    r.offset.assign(size_t(steps) + 1, 0);
    for (int t = 0; t < steps; ++t) r.offset[t + 1] = r.offset[t] + active[t];
    return r;
}

namespace {

// W_hh larger than any core's L2 cache (2 MB on the Xeons measured here): then the forward
// shares each step's products among the threads by columns (forward_by_columns). Measured,
// 2 threads, (T, B) = (25, 32): 5-9% faster at H = 512 (4 MB), 20% slower at H = 256 (1 MB, which
// fits), where the meetings twice a step cost more than the shared reading saves.
inline bool by_columns_pays(int H, int G, size_t bytes_per_value) {
    return size_t(G) * H * bytes_per_value > (size_t(2) << 20);
}

// Streams per piece. Every piece streams all of W_hh through the cache at every step: when it
// is larger than a core's L2 cache, one piece per thread reads it once per thread (one thread,
// (T, B, H) = (25, 32, 512): forward 20-25% faster than pieces of 8, backward ~20%); below that,
// the engine's pieces (threads.h), more than the threads, so a thread the OS holds back holds up
// less. The results do not depend on it: every row's products run in the same order.
inline int sequence_piece(int B, int H, int G, size_t bytes_per_value) {
    if (size_t(G) * H * bytes_per_value < (size_t(1) << 20)) return stream_piece(B, H);
    const int threads = current_threads();
    return std::min(B, ((B + threads - 1) / threads + 3) / 4 * 4);
}

template <typename F>
void for_sequence_pieces(int B, int piece, F&& body) {
    for_pieces(B, piece,
               [&](int64_t p, int64_t b0, int64_t b1) { body(int(p), int(b0), int(b1)); });
}

// The step run k-th (k = 0 .. T-1) in time order.
inline int step_at(int k, int steps, bool reverse) {
    return reverse ? steps - 1 - k : k;
}

// The state entering the k-th step run for its rows [b0, b0 + n), `width` values per stream: the
// rows of the step run before it (`prev`, which ran prev_active streams; nullptr for k = 0) and,
// for streams that start here, their initial state (in reverse a stream starts at its own last
// step, so a step may have both). Points at row b0: into prev or initial when one holds every
// row, else into `gathered` ([B][width], rows b0 .. b0 + n written).
template <typename T>
const T* state_entering(const T* prev, int64_t prev_active, const T* initial, int b0, int n,
                        int width, T* gathered) {
    const size_t at = size_t(b0) * width;
    if (!prev || prev_active <= b0) return initial + at;
    if (prev_active >= b0 + n) return prev + at;
    const size_t split = size_t(prev_active) * width, end = size_t(b0 + n) * width;
    std::copy(prev + at, prev + split, gathered + at);
    std::copy(initial + split, initial + end, gathered + split);
    return gathered + at;
}

// The k-th step run's rows of a piece of streams [b0, b1): where they start, how many (<= 0: the
// piece has no stream at this step), and the state entering them.
template <typename T>
struct PieceStep {
    size_t row;
    int n;
    const T *h_prev, *carry_prev;
};

template <typename T>
PieceStep<T> piece_step(const SequenceRows& rows, int k, bool reverse, int b0, int b1, const T* h,
                        const T* carry, const T* h0, const T* carry0, int H, int C, T* gathered_h,
                        T* gathered_carry) {
    const int t = step_at(k, rows.steps, reverse);
    PieceStep<T> p;
    p.n = int(std::min<int64_t>(b1, rows.active[t]) - b0);
    p.row = size_t(rows.offset[t]) + b0;
    if (p.n <= 0) return p;
    const int tp = k ? step_at(k - 1, rows.steps, reverse) : 0;
    const int64_t prev_active = k ? rows.active[tp] : 0;
    const size_t prev_row = size_t(rows.offset[tp]);
    p.h_prev =
        state_entering(k ? h + prev_row * H : nullptr, prev_active, h0, b0, p.n, H, gathered_h);
    p.carry_prev = state_entering(k ? carry + prev_row * C : nullptr, prev_active, carry0, b0, p.n,
                                  C, gathered_carry);
    return p;
}

// The state leaving each stream: the rows of its last step run (in reverse: step 0, for all).
template <typename T>
void state_leaving(const SequenceRows& rows, bool reverse, const T* values, int width, T* out) {
    for (int t = 0; t < rows.steps; ++t) {
        const int64_t next = reverse || t + 1 == rows.steps ? 0 : rows.active[t + 1];
        if (reverse && t > 0) break;
        const T* first = values + size_t(rows.offset[t]) * width;
        std::copy(first + size_t(next) * width, first + size_t(rows.active[t]) * width,
                  out + size_t(next) * width);
    }
}

// n rows of what the weight gradients read, `width` values apart: h_prev [n][H], or, with x,
// x [n][I], h_prev and a 1 side by side.
template <typename T>
void keep_inputs(T* out, int width, const T* x, int I, const T* h_prev, int H, int n) {
    for (int r = 0; r < n; ++r, out += width, h_prev += H) {
        if (!x) {
            std::copy(h_prev, h_prev + H, out);
            continue;
        }
        std::copy(x + size_t(r) * I, x + size_t(r + 1) * I, out);
        std::copy(h_prev, h_prev + H, out + I);
        out[I + H] = T(1);
    }
}

// The forward's steps when W_hh is beyond any core's L2 cache and every stream runs every step:
// the threads share each step's products by columns (groups of panels, each thread reading only
// its columns of W_ihᵀ and W_hhᵀ, for every row) and then the cell by rows, meeting after each
// (by streams, every thread would read all of W_hh at every step: 4 MB at H = 512). Every
// element is computed as by streams: the same bits.
template <typename T>
void forward_by_columns(const PackedWeights<T>& products, const Cell<T>& cell,
                        const SequenceRows& rows, const T* x, const T* h0, const T* carry0, int I,
                        int H, bool reverse, T* gates, T* extra, bool one_step, T* recurrent,
                        const SequenceSteps<T>& out) {
    const CellTraits& traits = cell.traits;
    const int G = traits.gates * H, E = traits.extra * H, C = traits.carried * H, B = rows.B;
    constexpr int group = 4;  // panels per piece of a step's products
    const int panels = products.forward.panels(), groups = (panels + group - 1) / group;
    const int piece = stream_piece(B, H), pieces = (B + piece - 1) / piece;
#pragma omp parallel
    for (int k = 0; k < rows.steps; ++k) {
        const size_t row = size_t(step_at(k, rows.steps, reverse)) * B;
        const size_t prev = k ? size_t(step_at(k - 1, rows.steps, reverse)) * B : 0;
        const T* h_prev = k ? out.h + prev * H : h0;
        const T* carry_prev = k ? out.carry + prev * C : carry0;
        T* step_gates = gates + (one_step ? 0 : row) * G;
        T* step_extra = extra + (one_step ? 0 : row) * E;
#pragma omp for schedule(dynamic, 1)
        for (int q = 0; q < groups; ++q) {
            const int p0 = q * group, p1 = std::min(panels, p0 + group);
            products.project(step_gates, x + row * I, B, p0, p1);
            products.recur(step_gates, recurrent, h_prev, B, p0, p1);
        }
#pragma omp for schedule(dynamic, 1)
        for (int q = 0; q < pieces; ++q) {
            const int b0 = q * piece, n = std::min(B, b0 + piece) - b0;
            StepForward<T> step;
            step.gates = step_gates + size_t(b0) * G;
            step.extra = step_extra + size_t(b0) * E;
            step.h = out.h + (row + b0) * H;
            step.carry = out.carry + (row + b0) * C;
            step.recurrent = recurrent ? recurrent + size_t(b0) * G : nullptr;
            step.h_prev = h_prev + size_t(b0) * H;
            step.carry_prev = carry_prev + size_t(b0) * C;
            cell.forward(step, n, H);
        }
    }
}

}  // namespace

template <typename T>
void sequence_forward(const Cell<T>& cell, const LayerWeights<T>& w, const SequenceRows& rows,
                      const T* x, const T* h0, const T* carry0, int I, int H, bool reverse,
                      const SequenceSteps<T>& out, T* h_n, T* carry_n) {
    const CellTraits& traits = cell.traits;
    const int G = traits.gates * H, E = traits.extra * H, C = traits.carried * H, B = rows.B;
    const bool separate = traits.separate_recurrence;
    std::copy(h0, h0 + size_t(B) * H, h_n);  // streams with no step keep their state
    std::copy(carry0, carry0 + size_t(B) * C, carry_n);
    if (rows.rows() == 0) return;
    ThreadScope threads(threads_for(B, H));
    PackedWeights<T> products;
    products.prepare(w, I, H, G, separate, B, /*pack_input=*/true, /*with_backward=*/false,
                     rows.steps);
    // Packed input weights: each piece projects its own rows step by step, inside the parallel
    // part (as the engine does). Otherwise one product for every row, before it.
    const bool project_per_step = !products.input.empty();
    // Kept for the backward: every step's rows. Else one step's rows of our own, unless the
    // projection of every row must be made before the steps.
    const bool kept = out.gates != nullptr, one_step = !kept && project_per_step;
    const size_t own_rows = kept ? 0 : one_step ? size_t(B) : size_t(rows.rows());
    Scratch<T> own_gates(own_rows * G), own_extra(own_rows * E);
    T* gates = kept ? out.gates : own_gates.data();
    T* extra = kept ? out.extra : own_extra.data();
    if (!project_per_step) products.project_run(gates, Inputs<T>::features(x), int(rows.rows()));
    Scratch<T> recurrent(separate ? size_t(B) * G : 0);
    if (project_per_step && current_threads() > 1 && B >= 8 && by_columns_pays(H, G, sizeof(T)) &&
        rows.every_stream_every_step()) {
        forward_by_columns(products, cell, rows, x, h0, carry0, I, H, reverse, gates, extra,
                           one_step, separate ? recurrent.data() : nullptr, out);
    } else {
        Scratch<T> gathered_h(size_t(B) * H), gathered_carry(size_t(B) * C);
        for_sequence_pieces(B, sequence_piece(B, H, G, sizeof(T)), [&](int, int b0, int b1) {
            for (int k = 0; k < rows.steps; ++k) {
                const PieceStep<T> p =
                    piece_step<T>(rows, k, reverse, b0, b1, out.h, out.carry, h0, carry0, H, C,
                                  gathered_h.data(), gathered_carry.data());
                if (p.n <= 0) continue;
                T* rec = separate ? recurrent.data() + size_t(b0) * G : nullptr;
                StepForward<T> step;
                const size_t row = one_step ? size_t(b0) : p.row;
                step.gates = gates + row * G;
                step.extra = extra + row * E;
                step.h = out.h + p.row * H;
                step.carry = out.carry + p.row * C;
                step.recurrent = rec;
                step.h_prev = p.h_prev;
                step.carry_prev = p.carry_prev;
                layer_step_forward(products, cell, step, project_per_step ? x + p.row * I : nullptr,
                                   rec, p.n);
            }
        });
    }
    state_leaving(rows, reverse, out.h, H, h_n);
    state_leaving(rows, reverse, out.carry, C, carry_n);
}

template <typename T>
void sequence_backward(const Cell<T>& cell, const LayerWeights<T>& w, const SequenceRows& rows,
                       const T* x, const T* h0, const T* carry0, int I, int H, bool reverse,
                       const SequenceSteps<const T>& kept, const T* dy, const T* dh_n,
                       const T* dcarry_n, T* dx, T* dh0, T* dcarry0, const LayerGrads<T>& grads) {
    const CellTraits& traits = cell.traits;
    const int G = traits.gates * H, E = traits.extra * H, C = traits.carried * H, B = rows.B;
    const bool separate = traits.separate_recurrence;
    // dL/d(each stream's state), carried back through time: it enters at the stream's last step
    // (every row of a stream is run in turn, so a stream not yet reached keeps dh_n).
    std::copy(dh_n, dh_n + size_t(B) * H, dh0);
    std::copy(dcarry_n, dcarry_n + size_t(B) * C, dcarry0);
    if (rows.rows() == 0) return;
    ThreadScope threads(threads_for(B, H));
    PackedWeights<T> products;
    products.prepare(w, I, H, G, separate, B, /*pack_input=*/false, /*with_backward=*/true,
                     rows.steps);
    // Blocks of steps, newest first, of about 256 rows: the steps back through time, then the
    // weight gradients of the block, one product each, while its dgates are in cache.
    const int block = std::max(1, std::min(rows.steps, (256 + B - 1) / B));
    const size_t block_rows = size_t(block) * B;
    Scratch<T> dgates(block_rows * G), drecurrent(separate ? block_rows * G : 0);
    // What the weight gradients read of each row: the state entering it, or, for a cell with one
    // dgates, its x, that state and a 1 side by side (one product: layer.h; 3-5% faster from 4
    // streams, 3% slower with one, whose rows are too few for the copy to pay).
    const bool joint = !separate && B >= 4;
    const int K = joint ? I + H + 1 : H;
    Scratch<T> h_prev(block_rows * K);
    Scratch<T> dh(size_t(B) * H), scratch(size_t(B) * H);
    Scratch<T> gathered_h(size_t(B) * H), gathered_carry(size_t(B) * C);
    // Four pieces of G at most: each packs the block's x and h_prev again.
    const int piece = std::max(64, (G / 4 + 15) / 16 * 16);
    for (int last = rows.steps - 1; last >= 0; last -= block) {
        const int first = std::max(0, last - block + 1);  // steps run first .. last
        // Their rows, in time order: one contiguous range whatever the direction.
        const int t0 =
            std::min(step_at(first, rows.steps, reverse), step_at(last, rows.steps, reverse));
        const int t1 =
            std::max(step_at(first, rows.steps, reverse), step_at(last, rows.steps, reverse));
        const size_t r0 = size_t(rows.offset[t0]), n_rows = size_t(rows.offset[t1 + 1]) - r0;
        for_sequence_pieces(B, sequence_piece(B, H, G, sizeof(T)), [&](int, int b0, int b1) {
            for (int k = last; k >= first; --k) {
                const PieceStep<T> p =
                    piece_step<T>(rows, k, reverse, b0, b1, kept.h, kept.carry, h0, carry0, H, C,
                                  gathered_h.data(), gathered_carry.data());
                if (p.n <= 0) continue;
                const size_t at = p.row - r0;  // in the block's buffers
                T* dh_step = dh.data() + size_t(b0) * H;
                MatrixMap<T> dh_map(dh_step, p.n, H);
                dh_map = ConstMatrixMap<T>(dh0 + size_t(b0) * H, p.n, H);
                if (dy) dh_map += ConstMatrixMap<T>(dy + p.row * H, p.n, H);
                StepBackward<T> step;
                step.dgates = dgates.data() + at * G;
                step.drecurrent = separate ? drecurrent.data() + at * G : step.dgates;
                step.dcarry = dcarry0 + size_t(b0) * C;
                step.dh_prev = dh0 + size_t(b0) * H;
                step.scratch = scratch.data() + size_t(b0) * H;
                step.dh = dh_step;
                step.gates = kept.gates + p.row * G;
                step.extra = kept.extra + p.row * E;
                step.h = kept.h + p.row * H;
                step.carry = kept.carry + p.row * C;
                step.h_prev = p.h_prev;
                step.carry_prev = p.carry_prev;
                layer_step_backward(products, cell, step, p.n);
                keep_inputs(h_prev.data() + at * K, K, joint ? x + p.row * I : nullptr, I, p.h_prev,
                            H, p.n);
            }
        });
        if (joint)
            layer_weight_backward_joint(grads, dgates.data(), h_prev.data(), int(n_rows), I, H, G,
                                        piece);
        else
            layer_weight_backward(
                grads, dgates.data(), separate ? drecurrent.data() : dgates.data(),
                Inputs<T>::features(x + r0 * I), h_prev.data(), int(n_rows), I, H, G, piece);
        if (dx) layer_input_backward(dx + r0 * I, dgates.data(), w.W_ih, int(n_rows), I, G);
    }
}

#define TBPTT_SEQUENCE(T)                                                                          \
    template void sequence_forward<T>(const Cell<T>&, const LayerWeights<T>&, const SequenceRows&, \
                                      const T*, const T*, const T*, int, int, bool,                \
                                      const SequenceSteps<T>&, T*, T*);                            \
    template void sequence_backward<T>(const Cell<T>&, const LayerWeights<T>&,                     \
                                       const SequenceRows&, const T*, const T*, const T*, int,     \
                                       int, bool, const SequenceSteps<const T>&, const T*,         \
                                       const T*, const T*, T*, T*, T*, const LayerGrads<T>&);
TBPTT_SEQUENCE(float)
TBPTT_SEQUENCE(double)
#undef TBPTT_SEQUENCE

}  // namespace tbptt
