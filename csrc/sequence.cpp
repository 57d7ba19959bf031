// The stateless sequence pass (see sequence.h). The forward projects the inputs of every step in
// one product, then runs the steps piece by piece of streams (threads.h), each piece every step
// for its own rows, through the weights packed once per call (layer.h). The backward walks the
// steps back the same way, keeping dL/dgates of every step, then makes each weight gradient and
// dL/dx one product over all steps.
#include "sequence.h"

#include <algorithm>

#include "scratch.h"
#include "tensor.h"
#include "threads.h"

namespace tbptt {

namespace {

// The step run k-th (k = 0 .. T-1) in time order.
inline int step_at(int k, int steps, bool reverse) { return reverse ? steps - 1 - k : k; }

}  // namespace

template <typename T>
void sequence_forward(const Cell<T>& cell, const LayerWeights<T>& w, const T* x, const T* h0,
                      const T* carry0, int steps, int B, int I, int H, bool reverse,
                      const SequenceSteps<T>& out, T* h_n, T* carry_n) {
    const CellTraits& traits = cell.traits;
    const int G = traits.gates * H, E = traits.extra * H, C = traits.carried * H;
    const bool separate = traits.separate_recurrence;
    if (steps == 0) {
        std::copy(h0, h0 + size_t(B) * H, h_n);
        std::copy(carry0, carry0 + size_t(B) * C, carry_n);
        return;
    }
    ThreadScope threads(threads_for(B, H));
    PackedWeights<T> products;
    products.prepare(w, I, H, G, separate, B, /*pack_input=*/false, /*with_backward=*/false, steps);
    products.project_run(out.gates, Inputs<T>::features(x), steps * B);
    Scratch<T> recurrent(separate ? size_t(B) * G : 0);
    for_stream_pieces(B, H, [&](int, int b0, int b1) {
        for (int k = 0; k < steps; ++k) {
            const size_t row = size_t(step_at(k, steps, reverse)) * B + b0;
            const size_t prev = k ? size_t(step_at(k - 1, steps, reverse)) * B + b0 : 0;
            StepForward<T> step;
            step.gates = out.gates + row * G;
            step.extra = out.extra + row * E;
            step.h = out.h + row * H;
            step.carry = out.carry + row * C;
            step.recurrent = separate ? recurrent.data() + size_t(b0) * G : nullptr;
            step.h_prev = k ? out.h + prev * H : h0 + size_t(b0) * H;
            step.carry_prev = k ? out.carry + prev * C : carry0 + size_t(b0) * C;
            layer_step_forward(products, cell, step, static_cast<const T*>(nullptr),
                               separate ? recurrent.data() + size_t(b0) * G : nullptr, b1 - b0);
        }
    });
    const size_t last = size_t(step_at(steps - 1, steps, reverse)) * B;
    std::copy(out.h + last * H, out.h + (last + B) * H, h_n);
    std::copy(out.carry + last * C, out.carry + (last + B) * C, carry_n);
}

template <typename T>
void sequence_backward(const Cell<T>& cell, const LayerWeights<T>& w, const T* x, const T* h0,
                       const T* carry0, int steps, int B, int I, int H, bool reverse,
                       const SequenceSteps<const T>& kept, const T* dy, const T* dh_n,
                       const T* dcarry_n, T* dx, T* dh0, T* dcarry0, const LayerGrads<T>& grads) {
    const CellTraits& traits = cell.traits;
    const int G = traits.gates * H, E = traits.extra * H, C = traits.carried * H;
    const bool separate = traits.separate_recurrence;
    // dL/d(the state) carried back through time: from the state leaving the sequence to the one
    // entering it.
    std::copy(dh_n, dh_n + size_t(B) * H, dh0);
    std::copy(dcarry_n, dcarry_n + size_t(B) * C, dcarry0);
    if (steps == 0) return;
    ThreadScope threads(threads_for(B, H));
    PackedWeights<T> products;
    products.prepare(w, I, H, G, separate, B, /*pack_input=*/false, /*with_backward=*/true, steps);
    const size_t rows = size_t(steps) * B;
    Scratch<T> dgates(rows * G), drecurrent(separate ? rows * G : 0);
    Scratch<T> h_prev(rows * H);  // the state entering each step, as the W_hh gradient reads it
    Scratch<T> dh(size_t(B) * H), scratch(size_t(B) * H);
    for_stream_pieces(B, H, [&](int, int b0, int b1) {
        const int n = b1 - b0;
        for (int k = steps - 1; k >= 0; --k) {
            const size_t row = size_t(step_at(k, steps, reverse)) * B + b0;
            const size_t prev = k ? size_t(step_at(k - 1, steps, reverse)) * B + b0 : 0;
            T* dh_step = dh.data() + size_t(b0) * H;
            MatrixMap<T> dh_map(dh_step, n, H);
            dh_map = ConstMatrixMap<T>(dh0 + size_t(b0) * H, n, H);
            if (dy) dh_map += ConstMatrixMap<T>(dy + row * H, n, H);
            StepBackward<T> step;
            step.dgates = dgates.data() + row * G;
            step.drecurrent = separate ? drecurrent.data() + row * G : step.dgates;
            step.dcarry = dcarry0 + size_t(b0) * C;
            step.dh_prev = dh0 + size_t(b0) * H;
            step.scratch = scratch.data() + size_t(b0) * H;
            step.dh = dh_step;
            step.gates = kept.gates + row * G;
            step.extra = kept.extra + row * E;
            step.h = kept.h + row * H;
            step.carry = kept.carry + row * C;
            step.h_prev = k ? kept.h + prev * H : h0 + size_t(b0) * H;
            step.carry_prev = k ? kept.carry + prev * C : carry0 + size_t(b0) * C;
            layer_step_backward(products, cell, step, n);
            std::copy(step.h_prev, step.h_prev + size_t(n) * H, h_prev.data() + row * H);
        }
    });
    // Four pieces of G at most: each packs x and h_prev of every step again.
    const int piece = std::max(64, (G / 4 + 15) / 16 * 16);
    layer_weight_backward(grads, dgates.data(), separate ? drecurrent.data() : dgates.data(),
                          Inputs<T>::features(x), h_prev.data(), int(rows), I, H, G, piece);
    if (dx) layer_input_backward(dx, dgates.data(), w.W_ih, int(rows), I, G);
}

#define TBPTT_SEQUENCE(T)                                                                       \
    template void sequence_forward<T>(const Cell<T>&, const LayerWeights<T>&, const T*, const T*, \
                                      const T*, int, int, int, int, bool, const SequenceSteps<T>&, \
                                      T*, T*);                                                   \
    template void sequence_backward<T>(const Cell<T>&, const LayerWeights<T>&, const T*,         \
                                       const T*, const T*, int, int, int, int, bool,             \
                                       const SequenceSteps<const T>&, const T*, const T*,        \
                                       const T*, T*, T*, T*, const LayerGrads<T>&);
TBPTT_SEQUENCE(float)
TBPTT_SEQUENCE(double)
#undef TBPTT_SEQUENCE

}  // namespace tbptt
