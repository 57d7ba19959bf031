// LSTM layer kernels: the input projection of a run of steps, one recurrent step forward, and one
// step backward. Plain functions in the style of llm.c: outputs first, then inputs, then sizes;
// forward keeps exactly what backward needs; backward *adds* into parameter gradients.
//
// Legend: B = streams (batch), H = hidden size, I = layer input size (features, a vocabulary, or
// the H of the layer below), n = steps in a run.
//
// The four gates are stacked in the rows of W_ih (4H x I) and W_hh (4H x H), PyTorch's order:
//
//        W_ih / W_hh rows          gates[b] (one row of B, 4H columns)
//        [    0,  H) -> i          | i (sigmoid) | f (sigmoid) | g (tanh) | o (sigmoid) |
//        [    H, 2H) -> f
//        [   2H, 3H) -> g          c_t = f * c_{t-1} + i * g
//        [   3H, 4H) -> o          h_t = o * tanh(c_t)
//
// Memory layout of every activation: [step][B][...] row-major, so a run of steps is one matrix of
// n*B rows and one matrix product covers it.
#pragma once

#include <cstdint>

#include "packed_gemm.h"

namespace tbptt {

template <typename T>
struct LayerWeights {
    const T* W_ih;  // (4H, I)
    const T* W_hh;  // (4H, H)
    const T* b_ih;  // (4H,)
    const T* b_hh;  // (4H,)
    const T* W_ih_T = nullptr;  // (I, 4H) W_ih transposed, for token inputs: a token's row is contiguous
};

template <typename T>
struct LayerGrads {
    T* W_ih;
    T* W_hh;
    T* b_ih;
    T* b_hh;
    T* W_ih_T = nullptr;  // (I, 4H) for token inputs: rows accumulate here, the caller adds its transpose
};

// gates: [n*B, 4H] output: W_ih x + b_ih + b_hh for every row (the pre-activations minus W_hh h).
// x:      [n*B, I] input features, or nullptr when tokens is given
// tokens: [n*B] token ids in [0, I): x is one-hot, so this selects columns of W_ih (rows of
//         w.W_ih_T, which must be set), never building the one-hot matrix
template <typename T>
void lstm_input_projection(T* gates, const T* x, const int64_t* tokens, const LayerWeights<T>& w,
                           int rows, int I, int H);

// A layer's weight matrices as the per-step products read them. With a few streams or more they
// are packed once per update (packed_gemm.h): W_ihᵀ and W_hhᵀ for the forward, W_hh for the
// backward, so no step repacks them. With fewer the products are matrix-vector products, which
// packing does not speed up enough to pay for itself every update: the parameters are read as
// they are, and the input projection stays one product per run of steps.
template <typename T>
struct PackedWeights {
    const T* W_hh = nullptr;  // (4H, H), the parameters
    int H = 0;
    PackedMatrix<T> input, forward, backward;  // W_ihᵀ, W_hhᵀ, W_hh; empty when not packed
    Buffer<T> bias;                            // (4H,) b_ih + b_hh, with `input`

    // B: the streams the products will run on; pack_input: also pack W_ihᵀ (for feature inputs
    // projected step by step); with_backward: also pack W_hh for backprop().
    void prepare(const LayerWeights<T>& w, int I, int H, int B, bool pack_input, bool with_backward);
    // gates[B, 4H] = x[B, I] W_ihᵀ + b_ih + b_hh, with `input` packed: the input projection of a
    // few rows (one thread's streams at one step) without repacking W_ih.
    void project(T* gates, const T* x, int B) const;
    void add_step(T* gates, const T* h_prev, int B) const;  // gates[B, 4H] += h_prev[B, H] W_hhᵀ
    void backprop(T* dh_prev, const T* dgates, int B) const;  // dh_prev[B, H] = dgates[B, 4H] W_hh
};

// One step forward.
// gates:  [B, 4H] input: the input projection; output: activated gates (i, f, g, o)
// c, h:   [B, H] output: the new cell and hidden state
// h_prev, c_prev: [B, H] input: the state entering this step
// packed: the layer's weights for the product h_prev W_hhᵀ
template <typename T>
void lstm_step_forward(T* gates, T* c, T* h, const T* h_prev, const T* c_prev,
                       const PackedWeights<T>& packed, int B, int H);

// One step backward (the weight gradients are left to one product per block of steps, by the caller).
// dgates: [B, 4H] output: dL/d(pre-activation gates)
// dc:     [B, H] input: dL/dc_t from step t+1; output: dL/dc_{t-1} (to be masked by resets at t)
// dh:     [B, H] input: dL/dh_t (from step t+1, the layer above or the head)
// gates, c, c_prev: what forward kept; tanh_c: [B, H] scratch
// Returns Σ (dL/dc_t)², the squared norm of the full gradient into c_t (for the gradient horizon).
template <typename T>
double lstm_step_backward(T* dgates, T* dc, const T* dh, const T* gates, const T* c,
                          const T* c_prev, T* tanh_c, int B, int H);

// Weight gradients of a block of n steps, one product each:
// dW_ih += dGᵀ x, dW_hh += dGᵀ h_prev, db_ih += Σ dG, db_hh += Σ dG.
// dgates: [rows, 4H]; x: [rows, I] or tokens: [rows] (then dW_ih_T += instead); h_prev: [rows, H]
template <typename T>
void lstm_weight_backward(const LayerGrads<T>& g, const T* dgates, const T* x, const int64_t* tokens,
                          const T* h_prev, int rows, int I, int H);

}  // namespace tbptt
