// The per-step products of a layer, C (+)= A · W, for a W that stays fixed over many steps.
//
// A general GEMM (Eigen's, BLAS's) repacks W into cache-friendly panels on every call. The
// products of an LSTM step use the same W_hh (and W_ih) for every step between two updates, and
// with few streams (small A) that repacking costs as much as the product itself. Here W is packed once per
// update into panels of NR columns, and every step only streams through them: one broadcast element
// of A times the contiguous panel row, accumulated in registers (the BLIS/llm.c micro-kernel shape).
//
//   W (K x N), panel p = columns [p*NR, p*NR + NR):  packed[p][k][0..NR) = W[k][p*NR + 0..NR)
//
// The last panel is zero-padded, so kernels never branch on N inside the k loop. The SIMD width is
// Eigen's packet for the instruction set this module is compiled for (SSE2, AVX2/FMA, AVX-512,
// NEON), so one source serves every build.
#pragma once

#include <algorithm>
#include <cstdint>

#include "tensor.h"
#include "threads.h"

namespace tbptt {

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: blocks of PS x PS transposed in
// registers (a plain loop reads src with a stride, 3x slower), the edges one by one.
template <typename T>
inline void transpose_copy(T* dst, int64_t ldd, const T* src, int64_t lds, int rows, int cols) {
    using namespace Eigen::internal;
    using Packet = typename packet_traits<T>::type;
    constexpr int PS = unpacket_traits<Packet>::size;
    int R = 0, C = 0;  // the blocked part: rows [0, R), columns [0, C)
    if constexpr (PS > 1) {
        R = rows - rows % PS, C = cols - cols % PS;
        for (int i = 0; i < R; i += PS)
            for (int j = 0; j < C; j += PS) {
                PacketBlock<Packet, PS> block;
                for (int k = 0; k < PS; ++k)
                    block.packet[k] = ploadu<Packet>(src + (i + k) * lds + j);
                ptranspose(block);
                for (int k = 0; k < PS; ++k) pstoreu(dst + (j + k) * ldd + i, block.packet[k]);
            }
    }
    for (int i = 0; i < rows; ++i)
        for (int j = i < R ? C : 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

template <typename T>
struct PackedMatrix {
    using Packet = typename Eigen::internal::packet_traits<T>::type;
    static constexpr int PS = Eigen::internal::unpacket_traits<Packet>::size;
    static constexpr int NR = 2 * PS;  // columns per panel: two packets

    int K = 0, N = 0;
    Buffer<T> data;  // [panels][K][NR]

    int panels() const { return (N + NR - 1) / NR; }
    bool empty() const { return data.empty(); }
    void clear() { K = N = 0, data.clear(); }
    const T* panel(int p) const { return data.data() + size_t(p) * K * NR; }

    // Packs W (K x N) given as a row-major matrix w with leading dimension ld, or as the transpose
    // of one (w is N x K, transposed).
    void pack(const T* w, int K_, int N_, int64_t ld, bool transposed) {
        K = K_, N = N_;
        data.resize(size_t(panels()) * K * NR);
        // Panels are independent: share them among the calling thread's OpenMP threads (threads.h)
        // when there is enough to copy.
        const int64_t per_piece = int64_t(K) * N >= (1 << 18) ? 1 : panels();
        for_pieces(panels(), per_piece, [&](int64_t, int64_t p0, int64_t p1) {
            for (int64_t p = p0; p < p1; ++p) pack_panel(int(p), w, ld, transposed);
        });
    }

  private:
    void pack_panel(int p, const T* w, int64_t ld, bool transposed) {
        MatrixMap<T> out(data.data() + size_t(p) * K * NR, K, NR);
        const int n0 = p * NR, cols = std::min(NR, N - n0);
        if (cols < NR) out.rightCols(NR - cols).setZero();
        if (transposed) {
            transpose_copy(out.data(), NR, w + n0 * ld, ld, cols, K);
        } else {
            using Strided = Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>>;
            out.leftCols(cols) = Strided(w + n0, K, cols, Eigen::OuterStride<>(ld));
        }
    }
};

namespace detail {

// One tile: MR rows of C by NP panels, all in registers across the k loop.
template <typename T, int MR, int NP>
inline void packed_tile(T* C, int64_t ldc, const T* A, int64_t lda, const PackedMatrix<T>& W,
                        int p0, bool accumulate) {
    using namespace Eigen::internal;
    using Packet = typename PackedMatrix<T>::Packet;
    constexpr int PS = PackedMatrix<T>::PS, NR = PackedMatrix<T>::NR;
    const int K = W.K;
    const int cols = std::min(NP * NR, W.N - p0 * NR);  // valid columns of this tile

    Packet acc[MR][2 * NP];
    for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 2 * NP; ++q) acc[r][q] = pset1<Packet>(T(0));

    const T* panel[NP];
    for (int p = 0; p < NP; ++p) panel[p] = W.panel(p0 + p);
    for (int k = 0; k < K; ++k) {
        Packet w[2 * NP];
        for (int p = 0; p < NP; ++p) {
            w[2 * p] = pload<Packet>(panel[p] + size_t(k) * NR);
            w[2 * p + 1] = pload<Packet>(panel[p] + size_t(k) * NR + PS);
        }
        for (int r = 0; r < MR; ++r) {
            const Packet a = pset1<Packet>(A[r * lda + k]);
            for (int q = 0; q < 2 * NP; ++q) acc[r][q] = pmadd(a, w[q], acc[r][q]);
        }
    }

    if (cols == NP * NR) {
        for (int r = 0; r < MR; ++r)
            for (int q = 0; q < 2 * NP; ++q) {
                T* c = C + r * ldc + q * PS;
                pstoreu(c, accumulate ? padd(ploadu<Packet>(c), acc[r][q]) : acc[r][q]);
            }
        return;
    }
    alignas(64) T row[2 * NP * PS];  // the zero-padded edge: only `cols` columns exist in C
    for (int r = 0; r < MR; ++r) {
        for (int q = 0; q < 2 * NP; ++q) pstore(row + q * PS, acc[r][q]);
        T* c = C + r * ldc;
        for (int j = 0; j < cols; ++j) c[j] = accumulate ? c[j] + row[j] : row[j];
    }
}

}  // namespace detail

// C[M x N] = A[M x K] · W, or += when accumulate. Row-major C and A with leading dimensions ldc, lda.
// Only the columns of panels [p0, p1) when given (a thread's share of a product split by columns).
// Single-threaded: the engine splits streams (rows) over threads itself.
template <typename T>
void packed_gemm(T* C, int64_t ldc, const T* A, int64_t lda, int M, const PackedMatrix<T>& W,
                 bool accumulate, int p0 = 0, int p1 = -1) {
    using detail::packed_tile;
    constexpr int NR = PackedMatrix<T>::NR;
    const int panels = p1 < 0 ? W.panels() : p1;
    if (M < 4) {  // a few streams: more panels per tile instead, to keep 8 accumulators busy
        for (int r = 0; r < M;) {
            const int mr = std::min(M - r, 2), np = mr == 1 ? 4 : 2;
            T* c = C + r * ldc;
            const T* a = A + r * lda;
            int p = p0;
            for (; p + np <= panels; p += np) {
                if (mr == 1)
                    packed_tile<T, 1, 4>(c + p * NR, ldc, a, lda, W, p, accumulate);
                else
                    packed_tile<T, 2, 2>(c + p * NR, ldc, a, lda, W, p, accumulate);
            }
            for (; p < panels; ++p) {
                if (mr == 1)
                    packed_tile<T, 1, 1>(c + p * NR, ldc, a, lda, W, p, accumulate);
                else
                    packed_tile<T, 2, 1>(c + p * NR, ldc, a, lda, W, p, accumulate);
            }
            r += mr;
        }
        return;
    }
    // Panel by panel, each read once from memory and then from cache for every block of rows; A
    // is the small operand and stays cached. Blocks of 8 rows where there are registers for their
    // 16 accumulators (AVX-512, NEON: 32), else of 4 (8 accumulators: just enough to hide the FMA
    // latency). Every element of C sums its k terms in the same order whatever the block.
    constexpr bool wide = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32;
    for (int p = p0; p < panels; ++p) {
        int r = 0;
        if constexpr (wide)
            for (; r + 8 <= M; r += 8)
                packed_tile<T, 8, 1>(C + r * ldc + p * NR, ldc, A + r * lda, lda, W, p, accumulate);
        for (; r + 4 <= M; r += 4)
            packed_tile<T, 4, 1>(C + r * ldc + p * NR, ldc, A + r * lda, lda, W, p, accumulate);
        for (; r < M; ++r)
            packed_tile<T, 1, 1>(C + r * ldc + p * NR, ldc, A + r * lda, lda, W, p, accumulate);
    }
}

}  // namespace tbptt
