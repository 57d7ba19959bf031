// Ring buffer of the activations of the last `capacity` steps: what a backward window needs.
// Legend: S = capacity (max(k1, k2) + 1 steps: a window of k2 steps also needs the state entering
// it), B = streams, I = input size, H = hidden size, L = layers.
//
// Step s (a global count since training began) lives in slot s % S. Per layer the slots are
// contiguous, [L][S][B][...], so a run of steps that does not wrap is one matrix of rows = n*B.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor.h"

namespace tbptt {

template <typename T>
struct Window {
    int S = 0, B = 0, I = 0, H = 0, L = 0;
    bool tokens = false;
    Buffer<T> x;              // [S][B][I] layer-0 features (when !tokens)
    Buffer<int64_t> ids;      // [S][B] layer-0 token ids (when tokens)
    Buffer<T> gates;          // [L][S][B][4H] activated gates (i, f, g, o)
    Buffer<T> c, h;           // [L][S][B][H]
    Buffer<uint8_t> resets;   // [S][B] state zeroed before this step
    Buffer<uint8_t> any_reset;  // [S]

    void allocate(int S_, int B_, int I_, int H_, int L_, bool tokens_) {
        S = S_, B = B_, I = I_, H = H_, L = L_, tokens = tokens_;
        x.assign(tokens ? 0 : size_t(S) * B * I, T(0));
        ids.assign(tokens ? size_t(S) * B : 0, 0);
        gates.assign(size_t(L) * S * B * 4 * H, T(0));
        c.assign(size_t(L) * S * B * H, T(0));
        h.assign(size_t(L) * S * B * H, T(0));
        resets.assign(size_t(S) * B, 0);
        any_reset.assign(S, 0);
    }

    int slot(int64_t step) const { return int(step % S); }
    T* x_at(int64_t s) { return x.data() + size_t(slot(s)) * B * I; }
    int64_t* ids_at(int64_t s) { return ids.data() + size_t(slot(s)) * B; }
    T* gates_at(int l, int64_t s) { return gates.data() + (size_t(l) * S + slot(s)) * B * 4 * H; }
    T* c_at(int l, int64_t s) { return c.data() + (size_t(l) * S + slot(s)) * B * H; }
    T* h_at(int l, int64_t s) { return h.data() + (size_t(l) * S + slot(s)) * B * H; }
    uint8_t* resets_at(int64_t s) { return resets.data() + size_t(slot(s)) * B; }
    bool reset_in(int64_t s) const { return any_reset[slot(s)] != 0; }

    // Steps from s to the end of the ring: a run starting at s may not be longer.
    int contiguous_from(int64_t s) const { return S - slot(s); }
};

}  // namespace tbptt
