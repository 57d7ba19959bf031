// The cell interface: what a recurrent cell (LSTM, GRU, Elman RNN) gives the engine.
//
// A cell is the elementwise part of one layer at one step, in haste's shape: every cell has the
// same two kernels, `forward` (one step) and `backward` (one step back), and says in its traits
// how many gate rows it has per hidden unit, what it keeps per step for the backward and how many
// state tensors it carries. The matrix products around it (the input projection of a run of
// steps, the recurrent product of a step, dh_prev = dgates W_hh, the weight gradients of a block
// of steps) are the same for every cell and live in layer.h; the engine (schedule, window, loss,
// clipping, optimiser, horizon, snapshot) is written once over this interface and never names a
// cell. How to add a fourth cell: docs/cells.md.
//
// Legend: B = streams, H = hidden size, G = gates * H (the rows of W_ih and W_hh), E = extra * H
// (values kept per step besides the gates), C = carried * H (state besides h, e.g. the LSTM's c).
// Every buffer is [B][...] row-major.
#pragma once

#include <memory>
#include <string>

namespace tbptt {

struct CellTraits {
    int gates = 1;    // rows of W_ih / W_hh per hidden unit (LSTM 4, GRU 3, RNN 1)
    int extra = 0;    // values per unit kept by forward for backward, besides the gates and h
    int carried = 0;  // state tensors besides h (LSTM: 1, c)
    // The recurrent product h_prev W_hhᵀ + b_hh is kept apart from the input projection instead
    // of being added into it (GRU: b_hn sits inside r ⊙ (W_hn h + b_hn)). Then the input weights
    // and the recurrent weights see different gradients (dgates, drecurrent), and h_prev also
    // reaches h directly (dh_prev has a term of its own before the product through W_hh).
    bool separate_recurrence = false;
    // Backward reads the gates (and extra values) forward kept; false: h alone (the RNN), and a
    // snapshot's window/gates holds nothing for the cell.
    bool keeps_gates = true;
};

// One layer at one step, B rows.
template <typename T>
struct StepForward {
    T* gates;             // [B, G] in: the input projection (+ the recurrent product unless
                          //        separate); out: whatever the cell keeps of its gates
    T* extra;             // [B, E] out: further values backward needs
    T* h;                 // [B, H] out: the new hidden state
    T* carry;             // [B, C] out: the new carried state besides h
    const T* recurrent;   // [B, G] h_prev W_hhᵀ + b_hh (separate_recurrence only, else null)
    const T* h_prev;      // [B, H] the state entering the step
    const T* carry_prev;  // [B, C]
};

template <typename T>
struct StepBackward {
    T* dgates;      // [B, G] out: dL/d(gate pre-activations), as W_ih and b_ih see it
    T* drecurrent;  // [B, G] out: dL/d(h_prev W_hhᵀ + b_hh); the same buffer as dgates
                    //        unless separate_recurrence (then the cell writes both)
    T* dcarry;      // [B, C] in: dL/dcarry_t from step t+1; out: dL/dcarry_{t-1}
    T* dh_prev;     // [B, H] out (separate_recurrence only): the direct part of
                    //        dL/dh_{t-1}; the engine adds drecurrent W_hh to it
    T* scratch;     // [B, H]
    const T* dh;    // [B, H] in: dL/dh_t (from step t+1, the layer above or the head)
    // What forward kept: gates, extra, h, carry of this step; the state entering it.
    const T *gates, *extra, *h, *carry, *h_prev, *carry_prev;
};

template <typename T>
class Cell {
  public:
    explicit Cell(CellTraits traits) : traits(traits) {}
    virtual ~Cell() = default;

    const CellTraits traits;

    virtual void forward(const StepForward<T>& step, int B, int H) const = 0;
    // Returns Σ (dL/dcarry_t)², the squared norm of the full gradient into the carried state at
    // this step (the gradient horizon's dc; 0 for cells that carry nothing but h).
    virtual double backward(const StepBackward<T>& step, int B, int H) const = 0;
};

// The cell named `name`: "lstm", "gru", "rnn_tanh" or "rnn_relu"; nullptr for any other name.
template <typename T>
std::unique_ptr<Cell<T>> make_cell(const std::string& name);

// The traits of the cell named `name` (whatever T), for sizes; throws std::invalid_argument with
// unknown_cell_message(name) for a name make_cell does not know.
CellTraits cell_traits(const std::string& name);
std::string unknown_cell_message(const std::string& name);

}  // namespace tbptt
