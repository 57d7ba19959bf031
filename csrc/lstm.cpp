// LSTM layer kernels (see lstm.h for shapes). Elementwise work is fused into one Eigen expression
// per quantity; products write into existing buffers with .noalias(); no allocation per step.
#include "lstm.h"

#include "tensor.h"

namespace tbptt {

template <typename T>
void lstm_input_projection(T* gates, const T* x, const int64_t* tokens, const LayerWeights<T>& w,
                           int rows, int I, int H) {
    const int G = 4 * H;
    MatrixMap<T> out(gates, rows, G);
    ConstVectorMap<T> b_ih(w.b_ih, G), b_hh(w.b_hh, G);
    ConstMatrixMap<T> W_ih(w.W_ih, G, I);
    if (tokens) {
        ConstMatrixMap<T> W_ih_T(w.W_ih_T, I, G);
        for (int r = 0; r < rows; ++r) out.row(r).noalias() = W_ih_T.row(tokens[r]) + b_ih + b_hh;
        return;
    }
    out.noalias() = ConstMatrixMap<T>(x, rows, I) * W_ih.transpose();
    out.rowwise() += b_ih + b_hh;
}

template <typename T>
void PackedWeights<T>::prepare(const LayerWeights<T>& w, int I, int H_, int B, bool pack_input,
                               bool with_backward) {
    W_hh = w.W_hh, H = H_;
    const bool packed = B >= 4;
    if (packed && pack_input) {
        input.pack(w.W_ih, I, 4 * H, /*ld=*/I, /*transposed=*/true);
        bias.resize(4 * size_t(H));
        VectorMap<T>(bias.data(), 4 * H) =
            ConstVectorMap<T>(w.b_ih, 4 * H) + ConstVectorMap<T>(w.b_hh, 4 * H);
    } else {
        input.clear();
    }
    if (packed) forward.pack(w.W_hh, H, 4 * H, /*ld=*/H, /*transposed=*/true);
    else forward.clear();
    if (packed && with_backward) backward.pack(w.W_hh, 4 * H, H, /*ld=*/H, /*transposed=*/false);
    else backward.clear();
}

template <typename T>
void PackedWeights<T>::project(T* gates, const T* x, int B) const {
    const int G = 4 * H;
    for (int r = 0; r < B; ++r) std::copy(bias.begin(), bias.end(), gates + size_t(r) * G);
    packed_gemm(gates, G, x, input.K, B, input, /*accumulate=*/true);
}

template <typename T>
void PackedWeights<T>::add_step(T* gates, const T* h_prev, int B) const {
    if (!forward.empty()) return packed_gemm(gates, 4 * H, h_prev, H, B, forward, /*accumulate=*/true);
    MatrixMap<T>(gates, B, 4 * H).noalias() +=
        ConstMatrixMap<T>(h_prev, B, H) * ConstMatrixMap<T>(W_hh, 4 * H, H).transpose();
}

template <typename T>
void PackedWeights<T>::backprop(T* dh_prev, const T* dgates, int B) const {
    if (!backward.empty()) return packed_gemm(dh_prev, H, dgates, 4 * H, B, backward, /*accumulate=*/false);
    MatrixMap<T>(dh_prev, B, H).noalias() =
        ConstMatrixMap<T>(dgates, B, 4 * H) * ConstMatrixMap<T>(W_hh, 4 * H, H);
}

template <typename T>
void lstm_step_forward(T* gates, T* c, T* h, const T* h_prev, const T* c_prev,
                       const PackedWeights<T>& packed, int B, int H) {
    const int G = 4 * H;
    packed.add_step(gates, h_prev, B);
    MatrixMap<T> z(gates, B, G);
    auto i = z.middleCols(0, H).array();
    auto f = z.middleCols(H, H).array();
    auto g = z.middleCols(2 * H, H).array();
    auto o = z.middleCols(3 * H, H).array();
    i = i.logistic();
    f = f.logistic();
    g = g.tanh();
    o = o.logistic();
    auto C = MatrixMap<T>(c, B, H).array();
    C = f * ConstMatrixMap<T>(c_prev, B, H).array() + i * g;
    MatrixMap<T>(h, B, H).array() = o * C.tanh();
}

template <typename T>
double lstm_step_backward(T* dgates, T* dc, const T* dh, const T* gates, const T* c,
                          const T* c_prev, T* tanh_c, int B, int H) {
    const int G = 4 * H;
    ConstMatrixMap<T> z(gates, B, G);
    const auto i = z.middleCols(0, H).array();
    const auto f = z.middleCols(H, H).array();
    const auto g = z.middleCols(2 * H, H).array();
    const auto o = z.middleCols(3 * H, H).array();
    MatrixMap<T> dz(dgates, B, G);
    auto tc = MatrixMap<T>(tanh_c, B, H).array();
    const auto dH = ConstMatrixMap<T>(dh, B, H).array();
    auto dC = MatrixMap<T>(dc, B, H).array();

    tc = ConstMatrixMap<T>(c, B, H).array().tanh();
    dC += dH * o * (T(1) - tc * tc);                                    // through h = o tanh(c)
    const double dc_squares = double(dC.square().sum());
    dz.middleCols(3 * H, H).array() = dH * tc * o * (T(1) - o);         // do, through the sigmoid
    dz.middleCols(0, H).array() = dC * g * i * (T(1) - i);              // di
    dz.middleCols(H, H).array() = dC * ConstMatrixMap<T>(c_prev, B, H).array() * f * (T(1) - f);
    dz.middleCols(2 * H, H).array() = dC * i * (T(1) - g * g);          // dg
    dC *= f;                                                            // into c_{t-1}
    return dc_squares;
}

template <typename T>
void lstm_weight_backward(const LayerGrads<T>& grad, const T* dgates, const T* x,
                          const int64_t* tokens, const T* h_prev, int rows, int I, int H) {
    const int G = 4 * H;
    ConstMatrixMap<T> dz(dgates, rows, G);
    if (tokens) {
        MatrixMap<T> dW_ih_T(grad.W_ih_T, I, G);
        for (int r = 0; r < rows; ++r) dW_ih_T.row(tokens[r]) += dz.row(r);
    } else {
        MatrixMap<T>(grad.W_ih, G, I).noalias() += dz.transpose() * ConstMatrixMap<T>(x, rows, I);
    }
    MatrixMap<T>(grad.W_hh, G, H).noalias() += dz.transpose() * ConstMatrixMap<T>(h_prev, rows, H);
    VectorMap<T> db_ih(grad.b_ih, G), db_hh(grad.b_hh, G);
    for (int r = 0; r < rows; ++r) {  // along rows: contiguous and vectorised, unlike colwise().sum()
        db_ih += dz.row(r);
        db_hh += dz.row(r);
    }
}

#define TBPTT_INSTANTIATE(T)                                                                        \
    template void lstm_input_projection<T>(T*, const T*, const int64_t*, const LayerWeights<T>&,   \
                                           int, int, int);                                          \
    template struct PackedWeights<T>;                                                            \
    template void lstm_step_forward<T>(T*, T*, T*, const T*, const T*, const PackedWeights<T>&,  \
                                       int, int);                                                   \
    template double lstm_step_backward<T>(T*, T*, const T*, const T*, const T*, const T*, T*, int,  \
                                          int);                                                     \
    template void lstm_weight_backward<T>(const LayerGrads<T>&, const T*, const T*, const int64_t*, \
                                          const T*, int, int, int);
TBPTT_INSTANTIATE(float)
TBPTT_INSTANTIATE(double)
#undef TBPTT_INSTANTIATE

}  // namespace tbptt
