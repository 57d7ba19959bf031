// The stateless pass of one recurrent layer over a whole sequence, in one direction: a forward
// that keeps what its backward needs, and that backward, in the shape of haste's ForwardPass /
// BackwardPass and llm.c's *_forward / *_backward. It is what tbptt.torch's layers run under
// autograd; the TBPTT engine (engine.h) runs the same step kernels (layer.h: layer_step_forward,
// layer_step_backward) over its window of steps.
//
// Legend: T = steps, B = streams (batch), I = input size, H = hidden size, and per hidden unit
// the cell's G = gates * H, E = extra * H, C = carried * H values (cells/cell.h). Every buffer is
// [rows][...] row-major in time order, whatever the direction: `reverse` runs from step T - 1
// down to step 0 (the backward direction of a bidirectional layer) with no copy of the input.
//
// Rows: step t holds the rows of its active streams, [0, active[t]), so a batch of sequences of
// different lengths, longest first, needs no padding (torch's PackedSequence: active = its
// batch_sizes). A stream's state leaving the sequence is the one after its own last step; in
// reverse, a stream starts from its initial state at its own last step.
#pragma once

#include <cstdint>
#include <vector>

#include "cells/cell.h"
#include "layer.h"

namespace tbptt {

struct SequenceRows {
    int steps = 0, B = 0;
    std::vector<int64_t> active, offset;  // [T] streams at step t; [T + 1] its first row

    // Every stream at every step: rows [t][B].
    static SequenceRows padded(int steps, int B);
    // active[t] streams at step t, non-increasing, active[0] = B (checked by the caller).
    static SequenceRows packed(const int64_t* active, int steps);
    int64_t rows() const { return offset[steps]; }
    bool every_stream_every_step() const { return rows() == int64_t(steps) * B; }
};

// What the forward keeps of every step for the backward (P = T to write, const T to read).
// Inference keeps nothing: gates and extra nullptr, and the forward uses buffers of its own, of
// one step's rows when it can (they stay in cache: 5-8% faster at (T, B, H) = (100, 32, 128)).
template <typename P>
struct SequenceSteps {
    P* gates;  // [T][B][G]
    P* extra;  // [T][B][E]
    P* carry;  // [T][B][C] the carried state leaving each step
    P* h;      // [T][B][H] the layer's output: the hidden state leaving each step
};

// h, gates, extra, carry of every row from x [rows][I] and the state entering each stream
// (h0 [B][H], carry0 [B][C]); the state leaving each stream into h_n [B][H], carry_n [B][C].
template <typename T>
void sequence_forward(const Cell<T>& cell, const LayerWeights<T>& w, const SequenceRows& rows,
                      const T* x, const T* h0, const T* carry0, int I, int H, bool reverse,
                      const SequenceSteps<T>& out, T* h_n, T* carry_n);

// The gradients of the sequence's loss, given dL/dh of every row (dy [rows][H], or nullptr for
// none) and of the state leaving each stream (dh_n [B][H], dcarry_n [B][C]): dL/dx into
// dx [rows][I] (unless nullptr), dL/d(the state entering each stream) into dh0 [B][H] and
// dcarry0 [B][C], and the weights' gradients *added* into `grads`.
template <typename T>
void sequence_backward(const Cell<T>& cell, const LayerWeights<T>& w, const SequenceRows& rows,
                       const T* x, const T* h0, const T* carry0, int I, int H, bool reverse,
                       const SequenceSteps<const T>& kept, const T* dy, const T* dh_n,
                       const T* dcarry_n, T* dx, T* dh0, T* dcarry0, const LayerGrads<T>& grads);

}  // namespace tbptt
