// A layer's matrix products (see layer.h for shapes). Products write into existing buffers with
// .noalias(); no allocation per step.
#include "layer.h"

#include "tensor.h"

namespace tbptt {

template <typename T>
void PackedWeights<T>::prepare(const LayerWeights<T>& w_, int I_, int H_, int G_, bool separate_,
                               int B, bool pack_input, bool with_backward) {
    w = w_, I = I_, H = H_, G = G_, separate = separate_;
    bias.resize(size_t(G));
    VectorMap<T>(bias.data(), G) = ConstVectorMap<T>(w.b_ih, G);
    if (!separate) VectorMap<T>(bias.data(), G) += ConstVectorMap<T>(w.b_hh, G);
    const bool packed = B >= 4;
    if (packed && pack_input) input.pack(w.W_ih, I, G, /*ld=*/I, /*transposed=*/true);
    else input.clear();
    if (packed) forward.pack(w.W_hh, H, G, /*ld=*/H, /*transposed=*/true);
    else forward.clear();
    if (packed && with_backward) backward.pack(w.W_hh, G, H, /*ld=*/H, /*transposed=*/false);
    else backward.clear();
}

template <typename T>
void PackedWeights<T>::project_run(T* gates, const Inputs<T>& in, int rows) const {
    MatrixMap<T> out(gates, rows, G);
    ConstVectorMap<T> b(bias.data(), G);
    if (in.are_tokens()) {
        ConstMatrixMap<T> W_ih_T(w.W_ih_T, I, G);
        for (int r = 0; r < rows; ++r) out.row(r).noalias() = W_ih_T.row(in.ids[r]) + b;
        return;
    }
    out.noalias() = ConstMatrixMap<T>(in.x, rows, I) * ConstMatrixMap<T>(w.W_ih, G, I).transpose();
    out.rowwise() += b;
}

template <typename T>
void PackedWeights<T>::project(T* gates, const T* x, int B) const {
    for (int r = 0; r < B; ++r) std::copy(bias.begin(), bias.end(), gates + size_t(r) * G);
    packed_gemm(gates, G, x, input.K, B, input, /*accumulate=*/true);
}

template <typename T>
void PackedWeights<T>::recur(T* gates, T* recurrent, const T* h_prev, int B) const {
    T* out = gates;
    if (separate) {
        out = recurrent;
        for (int r = 0; r < B; ++r) std::copy(w.b_hh, w.b_hh + G, out + size_t(r) * G);
    }
    if (!forward.empty()) return packed_gemm(out, G, h_prev, H, B, forward, /*accumulate=*/true);
    MatrixMap<T>(out, B, G).noalias() +=
        ConstMatrixMap<T>(h_prev, B, H) * ConstMatrixMap<T>(w.W_hh, G, H).transpose();
}

template <typename T>
void PackedWeights<T>::backprop(T* dh_prev, const T* drecurrent, int B) const {
    if (!backward.empty())
        return packed_gemm(dh_prev, H, drecurrent, G, B, backward, /*accumulate=*/separate);
    auto product = ConstMatrixMap<T>(drecurrent, B, G) * ConstMatrixMap<T>(w.W_hh, G, H);
    if (separate) MatrixMap<T>(dh_prev, B, H).noalias() += product;
    else MatrixMap<T>(dh_prev, B, H).noalias() = product;
}

// Σ over rows of a [rows, G] matrix into a (G,) gradient, along rows: contiguous and vectorised,
// unlike colwise().sum().
template <typename T>
static void add_row_sums(T* db, const T* d, int rows, int G) {
    VectorMap<T> out(db, G);
    ConstMatrixMap<T> m(d, rows, G);
    for (int r = 0; r < rows; ++r) out += m.row(r);
}

template <typename T>
void layer_weight_backward(const LayerGrads<T>& grad, const T* dgates, const T* drecurrent,
                           const Inputs<T>& in, const T* h_prev, int rows, int I, int H, int G) {
    ConstMatrixMap<T> dz(dgates, rows, G);
    if (in.are_tokens()) {
        MatrixMap<T> dW_ih_T(grad.W_ih_T, I, G);
        for (int r = 0; r < rows; ++r) dW_ih_T.row(in.ids[r]) += dz.row(r);
    } else {
        MatrixMap<T>(grad.W_ih, G, I).noalias() += dz.transpose() * ConstMatrixMap<T>(in.x, rows, I);
    }
    MatrixMap<T>(grad.W_hh, G, H).noalias() +=
        ConstMatrixMap<T>(drecurrent, rows, G).transpose() * ConstMatrixMap<T>(h_prev, rows, H);
    add_row_sums(grad.b_ih, dgates, rows, G);
    add_row_sums(grad.b_hh, drecurrent, rows, G);
}

template struct PackedWeights<float>;
template struct PackedWeights<double>;
template void layer_weight_backward<float>(const LayerGrads<float>&, const float*, const float*,
                                           const Inputs<float>&, const float*, int, int, int, int);
template void layer_weight_backward<double>(const LayerGrads<double>&, const double*, const double*,
                                            const Inputs<double>&, const double*, int, int, int, int);

}  // namespace tbptt
