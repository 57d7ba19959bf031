// The matrix products of a recurrent layer, the same for every cell (cells/cell.h): the input
// projection of a run of steps, the per-step recurrent product, dh_prev = drecurrent W_hh, and the
// weight gradients of a block of steps. Plain functions in the style of llm.c: outputs first, then
// inputs, then sizes; backward *adds* into parameter gradients.
//
// Legend: B = streams (batch), H = hidden size, G = the cell's gate rows (gates * H), I = layer
// input size (features, a vocabulary, or the H of the layer below), rows = steps x B.
//
// Memory layout of every activation: [step][B][...] row-major, so a run of steps is one matrix of
// n*B rows and one matrix product covers it.
#pragma once

#include <cstdint>

#include "cells/cell.h"
#include "packed_gemm.h"

namespace tbptt {

// A layer's parameters (P = const T for reading, T for gradients), torch's layout.
template <typename P>
struct LayerTensors {
    P* W_ih;              // (G, I)
    P* W_hh;              // (G, H)
    P* b_ih;              // (G,)
    P* b_hh;              // (G,)
    P* W_ih_T = nullptr;  // (I, G) W_ih transposed, for token inputs: a token's row is contiguous
};
template <typename T>
using LayerWeights = LayerTensors<const T>;
template <typename T>
using LayerGrads =
    LayerTensors<T>;  // W_ih_T: token rows accumulate here, the caller adds its transpose

// Layer 0's inputs of a run of steps: features [rows, I], or token ids [rows] in [0, I) (one-hot
// vectors, never built: they select columns of W_ih). Built only by the two named constructors.
template <typename T>
struct Inputs {
    static Inputs features(const T* x) { return {x, nullptr}; }
    static Inputs tokens(const int64_t* ids) { return {nullptr, ids}; }
    bool are_tokens() const { return ids != nullptr; }
    Inputs from_row(size_t row, int I) const {  // the same inputs, `row` rows later
        return are_tokens() ? tokens(ids + row) : features(x + row * I);
    }
    const T* x;
    const int64_t* ids;
};

// A layer's weight matrices as the per-step products read them. With a few streams or more they
// are packed once per update (packed_gemm.h): W_ihᵀ and W_hhᵀ for the forward, W_hh for the
// backward, so no step repacks them. With fewer the products are matrix-vector products, which
// packing does not speed up enough to pay for itself every update: the parameters are read as
// they are, and the input projection stays one product per run of steps, unless enough steps
// run on one packing to pay for it (copies() below): then W_ihᵀ and W_hhᵀ are packed all the
// same.
//
// The bias of the input projection is b_ih + b_hh, unless the cell keeps its recurrent product
// apart (separate_recurrence): then it is b_ih, and b_hh goes with the recurrent product.
template <typename T>
struct PackedWeights {
    LayerWeights<T> w;
    int I = 0, H = 0, G = 0;
    bool separate = false;
    PackedMatrix<T> input, forward, backward;  // W_ihᵀ, W_hhᵀ, W_hh; empty when not packed
    Buffer<T> bias;                            // (G,) the input projection's bias

    // B: the streams the products will run on; pack_input: also pack W_ihᵀ (for feature inputs
    // projected step by step); with_backward: also pack W_hh for backprop(); steps: about how
    // many steps will run on this preparation.
    void prepare(const LayerWeights<T>& w, int I, int H, int G, bool separate, int B,
                 bool pack_input, bool with_backward, int steps);
    // Whether prepare packs anything (else the products read the parameters where they are).
    // For fewer than 4 streams, when 4 steps or more run on one packing: for 2 or 3 streams
    // always (Eigen's products of so few rows repack W at every step: packing once made them
    // 1.3x faster at H = 128 and 256), for one stream only up to H = 32 (its matrix-vector
    // product sums each gate row horizontally, which weighs most for short rows: 1.08x at H = 32,
    // 0.96x at H = 64).
    static bool copies(int B, int H, int steps) {
        return B >= 4 || (steps >= 4 && (B > 1 || H <= 32));
    }
    // gates[rows, G] = x W_ihᵀ + bias for a run of steps (features or tokens), one product.
    void project_run(T* gates, const Inputs<T>& in, int rows) const;
    // gates[B, G] = x[B, I] W_ihᵀ + bias, with `input` packed: the input projection of a few rows
    // (one thread's streams at one step) without repacking W_ih.
    void project(T* gates, const T* x, int B) const { project(gates, x, B, 0, input.panels()); }
    // The recurrent product of a step: gates[B, G] += h_prev[B, H] W_hhᵀ, or, when separate,
    // recurrent[B, G] = h_prev W_hhᵀ + b_hh.
    void recur(T* gates, T* recurrent, const T* h_prev, int B) const {
        recur(gates, recurrent, h_prev, B, 0, forward.panels());
    }
    // The same two, packed, for the columns of panels [p0, p1) of G only (PackedMatrix: NR
    // columns each; W_ihᵀ and W_hhᵀ have the same panels): a thread's share of a step's products
    // when the threads split them by columns (sequence.cpp).
    void project(T* gates, const T* x, int B, int p0, int p1) const;
    void recur(T* gates, T* recurrent, const T* h_prev, int B, int p0, int p1) const;
    // dh_prev[B, H] (+)= drecurrent[B, G] W_hh: += when the cell wrote a direct term (separate).
    void backprop(T* dh_prev, const T* drecurrent, int B) const;
};

// One step of one layer for `rows` streams, the same for every cell and every caller (the engine's
// window, the stateless sequence pass): the input projection when `x` is given (packed input
// weights; else step.gates already holds it), the recurrent product (into `recurrent` when the
// cell keeps it apart: step.recurrent must point there), then the cell. (The sequence pass's
// forward for weights beyond the L2 cache runs the same three parts, the products shared among
// the threads by columns: sequence.cpp, forward_by_columns.)
template <typename T>
inline void layer_step_forward(const PackedWeights<T>& p, const Cell<T>& cell,
                               const StepForward<T>& step, const T* x, T* recurrent, int rows) {
    if (x) p.project(step.gates, x, rows);
    p.recur(step.gates, recurrent, step.h_prev, rows);
    cell.forward(step, rows, p.H);
}

// One step back: the cell's backward, then dh_prev (+)= drecurrent W_hh. Returns the cell's
// Σ (dL/dcarry)² (cells/cell.h).
template <typename T>
inline double layer_step_backward(const PackedWeights<T>& p, const Cell<T>& cell,
                                  const StepBackward<T>& step, int rows) {
    const double dcarry_squares = cell.backward(step, rows, p.H);
    p.backprop(step.dh_prev, step.drecurrent, rows);
    return dcarry_squares;
}

// Every product here is shared among the calling thread's threads in pieces fixed by its sizes
// (threads.h: piece_rows): the same bits for any thread count.

// Weight gradients of a block of steps, one product each (shared out by rows of G):
// dW_ih += dgatesᵀ x (or rows of dW_ih_T for tokens), db_ih += Σ dgates,
// dW_hh += drecurrentᵀ h_prev, db_hh += Σ drecurrent.
// dgates, drecurrent: [rows, G] (the same buffer unless the cell keeps its recurrence apart);
// h_prev: [rows, H]
// piece: rows of G per piece when the product is shared out. Each piece packs x and h_prev again,
// so products over many rows (a whole sequence) take fewer, larger pieces.
template <typename T>
void layer_weight_backward(const LayerGrads<T>& g, const T* dgates, const T* drecurrent,
                           const Inputs<T>& in, const T* h_prev, int rows, int I, int H, int G,
                           int piece = 64);

// The same for a cell that does not keep its recurrence apart (one dgates for W_ih and W_hh) and
// feature inputs, as one product: [dW_ih | dW_hh | db] += dgatesᵀ [x | h_prev | 1], from
// inputs [rows, I + H + 1], each row its step's x, h_prev and a 1 side by side: dgates is packed
// once, not once per weight, and the bias sums come with the product (db into b_ih and b_hh).
template <typename T>
void layer_weight_backward_joint(const LayerGrads<T>& g, const T* dgates, const T* inputs, int rows,
                                 int I, int H, int G, int piece = 64);

// dx[rows, I] = dgates[rows, G] W_ih: the gradient reaching the layer's input (the layer below).
template <typename T>
void layer_input_backward(T* dx, const T* dgates, const T* W_ih, int rows, int I, int G);

}  // namespace tbptt
