// A layer's matrix products (see layer.h for shapes). Products write into existing buffers with
// .noalias(); no allocation per step.
#include "layer.h"

#include "tensor.h"
#include "threads.h"

namespace tbptt {

template <typename T>
void PackedWeights<T>::prepare(const LayerWeights<T>& w_, int I_, int H_, int G_, bool separate_,
                               int B, bool pack_input, bool with_backward, int steps) {
    w = w_, I = I_, H = H_, G = G_, separate = separate_;
    bias.resize(size_t(G));
    VectorMap<T>(bias.data(), G) = ConstVectorMap<T>(w.b_ih, G);
    if (!separate) VectorMap<T>(bias.data(), G) += ConstVectorMap<T>(w.b_hh, G);
    const bool pack_forward = copies(B, H, steps);  // backward only from 4 streams (see above)
    if (pack_forward && pack_input)
        input.pack(w.W_ih, I, G, /*ld=*/I, /*transposed=*/true);
    else
        input.clear();
    if (pack_forward)
        forward.pack(w.W_hh, H, G, /*ld=*/H, /*transposed=*/true);
    else
        forward.clear();
    if (B >= 4 && with_backward)
        backward.pack(w.W_hh, G, H, /*ld=*/H, /*transposed=*/false);
    else
        backward.clear();
}

template <typename T>
void PackedWeights<T>::project_run(T* gates, const Inputs<T>& in, int rows) const {
    ConstVectorMap<T> b(bias.data(), G);
    const int64_t per_row = in.are_tokens() ? G : int64_t(I) * G;
    for_pieces(rows, piece_rows(rows, per_row), [&](int64_t, int64_t r0, int64_t r1) {
        MatrixMap<T> out(gates + r0 * G, r1 - r0, G);
        if (in.are_tokens()) {
            ConstMatrixMap<T> W_ih_T(w.W_ih_T, I, G);
            for (int64_t r = r0; r < r1; ++r) out.row(r - r0).noalias() = W_ih_T.row(in.ids[r]) + b;
            return;
        }
        out.noalias() = ConstMatrixMap<T>(in.x + r0 * I, r1 - r0, I) *
                        ConstMatrixMap<T>(w.W_ih, G, I).transpose();
        out.rowwise() += b;
    });
}

// Rows [0, B) of columns [c0, c1) of out[B, G] = the row vector v.
template <typename T>
static void fill_rows(T* out, const T* v, int B, int G, int c0, int c1) {
    for (int r = 0; r < B; ++r) std::copy(v + c0, v + c1, out + size_t(r) * G + c0);
}

template <typename T>
void PackedWeights<T>::project(T* gates, const T* x, int B, int p0, int p1) const {
    constexpr int NR = PackedMatrix<T>::NR;
    fill_rows(gates, bias.data(), B, G, p0 * NR, std::min(G, p1 * NR));
    packed_gemm(gates, G, x, input.K, B, input, /*accumulate=*/true, p0, p1);
}

template <typename T>
void PackedWeights<T>::recur(T* gates, T* recurrent, const T* h_prev, int B, int p0, int p1) const {
    constexpr int NR = PackedMatrix<T>::NR;
    T* out = gates;
    const int c0 = forward.empty() ? 0 : p0 * NR, c1 = forward.empty() ? G : std::min(G, p1 * NR);
    if (separate) {
        out = recurrent;
        fill_rows(out, w.b_hh, B, G, c0, c1);
    }
    if (!forward.empty())
        return packed_gemm(out, G, h_prev, H, B, forward, /*accumulate=*/true, p0, p1);
    MatrixMap<T>(out, B, G).noalias() +=
        ConstMatrixMap<T>(h_prev, B, H) * ConstMatrixMap<T>(w.W_hh, G, H).transpose();
}

template <typename T>
void PackedWeights<T>::backprop(T* dh_prev, const T* drecurrent, int B) const {
    if (!backward.empty())
        return packed_gemm(dh_prev, H, drecurrent, G, B, backward, /*accumulate=*/separate);
    auto product = ConstMatrixMap<T>(drecurrent, B, G) * ConstMatrixMap<T>(w.W_hh, G, H);
    if (separate)
        MatrixMap<T>(dh_prev, B, H).noalias() += product;
    else
        MatrixMap<T>(dh_prev, B, H).noalias() = product;
}

// Σ over rows of columns [g0, g1) of a [rows, G] matrix into db[g0, g1), along rows: contiguous
// and vectorised, unlike colwise().sum().
template <typename T>
static void add_row_sums(T* db, const T* d, int rows, int G, int64_t g0, int64_t g1) {
    VectorMap<T> out(db + g0, g1 - g0);
    for (int r = 0; r < rows; ++r) out += ConstVectorMap<T>(d + size_t(r) * G + g0, g1 - g0);
}

// Rows [g0, g1) of every gradient: a piece no other piece writes.
template <typename T>
void layer_weight_backward(const LayerGrads<T>& grad, const T* dgates, const T* drecurrent,
                           const Inputs<T>& in, const T* h_prev, int rows, int I, int H, int G,
                           int piece) {
    ConstMatrixMap<T> dz(dgates, rows, G), drec(drecurrent, rows, G);
    for_pieces(G, piece_rows(G, int64_t(rows) * (I + H), piece),
               [&](int64_t, int64_t g0, int64_t g1) {
                   const int64_t n = g1 - g0;
                   if (in.are_tokens()) {
                       MatrixMap<T> dW_ih_T(grad.W_ih_T, I, G);
                       for (int r = 0; r < rows; ++r)
                           dW_ih_T.row(in.ids[r]).segment(g0, n) += dz.row(r).segment(g0, n);
                   } else {
                       MatrixMap<T>(grad.W_ih + g0 * I, n, I).noalias() +=
                           dz.middleCols(g0, n).transpose() * ConstMatrixMap<T>(in.x, rows, I);
                   }
                   MatrixMap<T>(grad.W_hh + g0 * H, n, H).noalias() +=
                       drec.middleCols(g0, n).transpose() * ConstMatrixMap<T>(h_prev, rows, H);
                   add_row_sums(grad.b_ih, dgates, rows, G, g0, g1);
                   add_row_sums(grad.b_hh, drecurrent, rows, G, g0, g1);
               });
}

template <typename T>
void layer_weight_backward_joint(const LayerGrads<T>& grad, const T* dgates, const T* inputs,
                                 int rows, int I, int H, int G, int piece) {
    const int K = I + H + 1;
    ConstMatrixMap<T> dz(dgates, rows, G), xh1(inputs, rows, K);
    for_pieces(G, piece_rows(G, int64_t(rows) * K, piece), [&](int64_t, int64_t g0, int64_t g1) {
        const int64_t n = g1 - g0;
        const Matrix<T> sums = dz.middleCols(g0, n).transpose() * xh1;  // [n, K]
        MatrixMap<T>(grad.W_ih + g0 * I, n, I) += sums.leftCols(I);
        MatrixMap<T>(grad.W_hh + g0 * H, n, H) += sums.middleCols(I, H);
        VectorMap<T>(grad.b_ih + g0, n) += sums.col(I + H).transpose();
        VectorMap<T>(grad.b_hh + g0, n) += sums.col(I + H).transpose();
    });
}

template <typename T>
void layer_input_backward(T* dx, const T* dgates, const T* W_ih, int rows, int I, int G) {
    for_pieces(rows, piece_rows(rows, int64_t(G) * I), [&](int64_t, int64_t r0, int64_t r1) {
        MatrixMap<T>(dx + r0 * I, r1 - r0, I).noalias() =
            ConstMatrixMap<T>(dgates + r0 * G, r1 - r0, G) * ConstMatrixMap<T>(W_ih, G, I);
    });
}

template struct PackedWeights<float>;
template struct PackedWeights<double>;
template void layer_weight_backward<float>(const LayerGrads<float>&, const float*, const float*,
                                           const Inputs<float>&, const float*, int, int, int, int,
                                           int);
template void layer_weight_backward<double>(const LayerGrads<double>&, const double*, const double*,
                                            const Inputs<double>&, const double*, int, int, int,
                                            int, int);
template void layer_weight_backward_joint<float>(const LayerGrads<float>&, const float*,
                                                 const float*, int, int, int, int, int);
template void layer_weight_backward_joint<double>(const LayerGrads<double>&, const double*,
                                                  const double*, int, int, int, int, int);
template void layer_input_backward<float>(float*, const float*, const float*, int, int, int);
template void layer_input_backward<double>(double*, const double*, const double*, int, int, int);

}  // namespace tbptt
