// Dropout on a layer's output, with masks from a counter-based generator.
//
// The mask of unit u of stream b at global step s, on the output of layer l, is a pure function of
// (seed, l, s, b, u): no generator state to carry, checkpoint or share between threads, so a run
// is reproducible from its seed, resumes exactly, splits into calls and threads freely, and the
// NumPy reference (python/tbptt/reference.py, `dropout_keep`) draws the very same masks.
//
//   z    = mix(mix(mix(seed + φ·(l + 1)) ^ s) ^ b) ^ u)    splitmix64's finaliser, φ = 2^64 / golden
//   keep = (z >> 40) < round((1 - p) · 2^24)              a 24-bit uniform against 1 - p
//   out  = keep ? in / (1 - p) : 0                        inverted dropout: no scaling at inference
//
// Legend: B = streams, H = hidden size, n = steps in a run; rows are [step][B][H].
#pragma once

#include <cstdint>

namespace tbptt {

struct Dropout {
    double p = 0.0;  // probability of dropping a unit; 0: off
    uint64_t seed = 0;
    int layer = 0;              // whose output: layer l < L - 1 feeds layer l + 1, L - 1 the head
    int64_t stream_offset = 0;  // the first stream's index (streams split over processes)

    bool on() const { return p > 0.0; }

    static uint64_t mix(uint64_t x) {  // splitmix64's finaliser
        x += 0x9E3779B97F4A7C15ull;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        return x ^ (x >> 31);
    }

    // out[n*B, H] = in ⊙ mask / (1 - p) for the steps s0 .. s0 + n - 1 (out may be in).
    template <typename T>
    void apply(T* out, const T* in, int64_t s0, int n, int B, int H) const {
        const uint64_t threshold = uint64_t((1.0 - p) * double(1 << 24) + 0.5);
        const T scale = T(1.0 / (1.0 - p));
        const uint64_t key = mix(seed + 0x9E3779B97F4A7C15ull * uint64_t(layer + 1));
        for (int j = 0; j < n; ++j) {
            const uint64_t step = mix(key ^ uint64_t(s0 + j));
            for (int b = 0; b < B; ++b) {
                const uint64_t stream = mix(step ^ uint64_t(stream_offset + b));
                const size_t row = (size_t(j) * B + b) * H;
                for (int u = 0; u < H; ++u) {
                    const bool keep = (mix(stream ^ uint64_t(u)) >> 40) < threshold;
                    out[row + u] = keep ? in[row + u] * scale : T(0);
                }
            }
        }
    }
};

}  // namespace tbptt
