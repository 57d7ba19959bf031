// The stateless pass of one recurrent layer over a whole sequence, in one direction: a forward
// that keeps what its backward needs, and that backward, in the shape of haste's ForwardPass /
// BackwardPass and llm.c's *_forward / *_backward. It is what tbptt.torch's layers run under
// autograd; the TBPTT engine (engine.h) runs the same step kernels (layer.h: layer_step_forward,
// layer_step_backward) over its window of steps.
//
// Legend: T = steps, B = streams (batch), I = input size, H = hidden size, and per hidden unit
// the cell's G = gates * H, E = extra * H, C = carried * H values (cells/cell.h). Every buffer is
// [T][B][...] row-major in time order, whatever the direction: `reverse` runs from step T - 1
// down to step 0 (the backward direction of a bidirectional layer) with no copy of the input.
#pragma once

#include "cells/cell.h"
#include "layer.h"

namespace tbptt {

// What the forward keeps of every step for the backward (P = T to write, const T to read).
template <typename P>
struct SequenceSteps {
    P* gates;  // [T][B][G]
    P* extra;  // [T][B][E]
    P* carry;  // [T][B][C] the carried state leaving each step
    P* h;      // [T][B][H] the layer's output: the hidden state leaving each step
};

// h, gates, extra, carry of every step from x [T][B][I] and the state entering the sequence
// (h0 [B][H], carry0 [B][C]); the state leaving it into h_n [B][H], carry_n [B][C].
template <typename T>
void sequence_forward(const Cell<T>& cell, const LayerWeights<T>& w, const T* x, const T* h0,
                      const T* carry0, int steps, int B, int I, int H, bool reverse,
                      const SequenceSteps<T>& out, T* h_n, T* carry_n);

// The gradients of the sequence's loss, given dL/dh of every step (dy [T][B][H], or nullptr for
// none) and of the state leaving it (dh_n [B][H], dcarry_n [B][C]): dL/dx into dx [T][B][I]
// (unless nullptr), dL/d(the state entering it) into dh0 [B][H] and dcarry0 [B][C], and the
// weights' gradients *added* into `grads`.
template <typename T>
void sequence_backward(const Cell<T>& cell, const LayerWeights<T>& w, const T* x, const T* h0,
                       const T* carry0, int steps, int B, int I, int H, bool reverse,
                       const SequenceSteps<const T>& kept, const T* dy, const T* dh_n,
                       const T* dcarry_n, T* dx, T* dh0, T* dcarry0, const LayerGrads<T>& grads);

}  // namespace tbptt
