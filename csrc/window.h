// Ring buffer of the activations of the last `capacity` steps: what a backward window needs.
// Legend: S = capacity (max(k1, k2) + 1 steps: a window of k2 steps also needs the state entering
// it), B = streams, I = input size, H = hidden size, L = layers, and per hidden unit the cell's
// G = gates * H, E = extra * H, C = carried * H values (cells/cell.h).
//
// Step s (a global count since training began) lives in slot s % S. Per layer the slots are
// contiguous, [L][S][B][...], so a run of steps that does not wrap is one matrix of rows = n*B.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cells/cell.h"
#include "layer.h"
#include "tensor.h"

namespace tbptt {

template <typename T>
struct Window {
    int S = 0, B = 0, I = 0, H = 0, L = 0, G = 0, E = 0, C = 0;
    bool tokens = false;
    Buffer<T> x;                // [S][B][I] layer-0 features (when !tokens)
    Buffer<int64_t> ids;        // [S][B] layer-0 token ids (when tokens)
    Buffer<T> gates;            // [L][S][B][G] what the cell keeps of its gates
    Buffer<T> extra;            // [L][S][B][E] further values the cell keeps for backward
    Buffer<T> carry;            // [L][S][B][C] the carried state besides h
    Buffer<T> h;                // [L][S][B][H]
    Buffer<uint8_t> resets;     // [S][B] state zeroed before this step
    Buffer<uint8_t> any_reset;  // [S]

    void allocate(int S_, int B_, int I_, int H_, int L_, const CellTraits& cell, bool tokens_) {
        S = S_, B = B_, I = I_, H = H_, L = L_, tokens = tokens_;
        G = cell.gates * H, E = cell.extra * H, C = cell.carried * H;
        x.assign(tokens ? 0 : size_t(S) * B * I, T(0));
        ids.assign(tokens ? size_t(S) * B : 0, 0);
        gates.assign(size_t(L) * S * B * G, T(0));
        extra.assign(size_t(L) * S * B * E, T(0));
        carry.assign(size_t(L) * S * B * C, T(0));
        h.assign(size_t(L) * S * B * H, T(0));
        resets.assign(size_t(S) * B, 0);
        any_reset.assign(S, 0);
    }

    // Values per step of every stream, for the size of a window before allocating it.
    static double values_per_step(int B, int I, int H, int L, const CellTraits& cell, bool tokens) {
        return double(B) *
               (double(L) * H * (cell.gates + cell.extra + cell.carried + 1) + (tokens ? 0 : I));
    }

    int slot(int64_t step) const { return int(step % S); }
    size_t row(int l, int64_t s) const { return (size_t(l) * S + slot(s)) * B; }  // [L][S][B] row
    T* x_at(int64_t s) { return x.data() + size_t(slot(s)) * B * I; }
    int64_t* ids_at(int64_t s) { return ids.data() + size_t(slot(s)) * B; }
    T* gates_at(int l, int64_t s) { return gates.data() + row(l, s) * G; }
    T* extra_at(int l, int64_t s) { return extra.data() + row(l, s) * E; }
    T* carry_at(int l, int64_t s) { return carry.data() + row(l, s) * C; }
    T* h_at(int l, int64_t s) { return h.data() + row(l, s) * H; }
    const T* h_at(int l, int64_t s) const { return h.data() + row(l, s) * H; }
    const T* carry_at(int l, int64_t s) const { return carry.data() + row(l, s) * C; }
    uint8_t* resets_at(int64_t s) { return resets.data() + size_t(slot(s)) * B; }
    bool reset_in(int64_t s) const { return any_reset[slot(s)] != 0; }

    // Layer 0's inputs of the steps from s on (features or token ids).
    Inputs<T> inputs_at(int64_t s) {
        return tokens ? Inputs<T>::tokens(ids_at(s)) : Inputs<T>::features(x_at(s));
    }

    // Steps from s to the end of the ring: a run starting at s may not be longer.
    int contiguous_from(int64_t s) const { return S - slot(s); }
    // body(s, n) for the runs of steps [s0, s1), each within one turn of the ring.
    template <typename F>
    void for_runs(int64_t s0, int64_t s1, F&& body) const {
        for (int64_t s = s0; s < s1;) {
            const int n = int(std::min<int64_t>(s1 - s, contiguous_from(s)));
            body(s, n);
            s += n;
        }
    }

    // What step s holds in every buffer (all layers), to put back after a forward step that
    // must leave no trace (Engine::peek). No allocation after the first call.
    struct StepCopy {
        Buffer<T> values;  // x, then per layer gates, extra, carry, h
        Buffer<int64_t> ids;
        Buffer<uint8_t> resets;  // [B] and any_reset
    };
    void save_step(int64_t s, StepCopy* copy) { move_step(s, copy, /*save=*/true); }
    void load_step(int64_t s, StepCopy* copy) { move_step(s, copy, /*save=*/false); }

  private:
    void move_step(int64_t s, StepCopy* copy, bool save) {
        const size_t per_layer = size_t(B) * (G + E + C + H);
        copy->values.resize(size_t(B) * (tokens ? 0 : I) + size_t(L) * per_layer);
        copy->ids.resize(tokens ? size_t(B) : 0);
        copy->resets.resize(size_t(B) + 1);
        auto move = [save](auto* window_part, auto* saved, size_t n) {
            if (save)
                std::copy(window_part, window_part + n, saved);
            else
                std::copy(saved, saved + n, window_part);
        };
        T* v = copy->values.data();
        if (tokens)
            move(ids_at(s), copy->ids.data(), size_t(B));
        else
            move(x_at(s), v, size_t(B) * I), v += size_t(B) * I;
        for (int l = 0; l < L; ++l) {
            move(gates_at(l, s), v, size_t(B) * G), v += size_t(B) * G;
            move(extra_at(l, s), v, size_t(B) * E), v += size_t(B) * E;
            move(carry_at(l, s), v, size_t(B) * C), v += size_t(B) * C;
            move(h_at(l, s), v, size_t(B) * H), v += size_t(B) * H;
        }
        move(resets_at(s), copy->resets.data(), size_t(B));
        move(&any_reset[slot(s)], copy->resets.data() + B, 1);
    }
};

}  // namespace tbptt
