// The per-block vector work of the layer-attention methods in one call each way (the tails mode
// `native`, dlarepro.models.native_tails.ChannelConv / LightHead): run as torch operators, these
// vectors of a few hundred values cost ~25 operator calls forward and as many backward per block,
// each far slower than its arithmetic.
//   channel_conv:  out[n, c] = sum_j w[j] v[n, c + j - pad], zero-padded, k = 2 pad + 1 odd taps
//                  (ECA's convolution across channels: MRLA's and DLA's queries and keys);
//   light_head:    MRLA-L's and DLA-L's attention weights, q = conv(p, wq), k = conv(p, wk),
//                  s = <q_h, k_h> / sqrt(d) per head of d channels, w[c] = sigmoid(s[head(c)]).
// Vectors are [N, C] rows, contiguous, float32 or float64. Taps are added in the order the torch
// path adds them (parts.ChannelConvFunction); the taps' gradients sum in double. Loops run along
// the channels (vectorised; `omp simd` lets the sums be split across lanes, the same way in every
// call). Single-threaded: a call's work is a few microseconds.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// The channels c of a row for which tap j reads inside the row: c + j - pad in [0, C).
struct TapRange {
  int64_t lo, hi;
  TapRange(int64_t j, int64_t pad, int64_t C) : lo(std::max<int64_t>(0, pad - j)), hi(std::min(C, C + pad - j)) {}
};

template <typename T> void conv(const T* v, const T* w, int64_t k, int64_t N, int64_t C, T* out) {
  const int64_t pad = (k - 1) / 2;
  for (int64_t n = 0; n < N; ++n) {
    T* o = out + n * C;
    const T* x = v + n * C - pad;  // x[c + j] = v[n, c + j - pad]
    std::fill(o, o + C, T(0));
    for (int64_t j = 0; j < k; ++j) {
      const TapRange r(j, pad, C);
      const T wj = w[j];
#pragma omp simd
      for (int64_t c = r.lo; c < r.hi; ++c) o[c] += wj * x[c + j];
    }
  }
}

// Given g = d loss / d out: GV (the input's gradient: the convolution with the taps reversed;
// added to when `accumulate`) and GW[j] += sum_{n, c} g[n, c] v[n, c + j - pad].
template <typename T>
void conv_backward(const T* g, const T* v, const T* w, int64_t k, int64_t N, int64_t C, T* GV, bool accumulate,
                   double* GW) {
  const int64_t pad = (k - 1) / 2;
  std::vector<T> row(C);
  for (int64_t n = 0; n < N; ++n) {
    const T* gn = g + n * C;
    const T* x = v + n * C - pad;
    std::fill(row.begin(), row.end(), T(0));
    for (int64_t j = 0; j < k; ++j) {
      const TapRange r(j, pad, C);
      const T wj = w[j];
      T* gi = row.data() + j - pad;  // tap j carried v[c + j - pad] to out[c]
#pragma omp simd
      for (int64_t c = r.lo; c < r.hi; ++c) gi[c] += wj * gn[c];
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t c = r.lo; c < r.hi; ++c) s += double(gn[c]) * double(x[c + j]);
      GW[j] += s;
    }
    T* out = GV + n * C;
    for (int64_t c = 0; c < C; ++c) out[c] = accumulate ? out[c] + row[c] : row[c];
  }
}

template <typename T> void store(const std::vector<double>& from, T* to) {
  for (size_t j = 0; j < from.size(); ++j) to[j] = T(from[j]);
}

}  // namespace

extern "C" {

#define VECTORS(T, SUFFIX)                                                                                         \
  int channel_conv_forward_##SUFFIX(const T* v, const T* w, int64_t k, int64_t N, int64_t C, T* out) {             \
    if (k % 2 == 0) return -1;                                                                                    \
    conv(v, w, k, N, C, out);                                                                                      \
    return 0;                                                                                                     \
  }                                                                                                               \
  int channel_conv_backward_##SUFFIX(const T* g, const T* v, const T* w, int64_t k, int64_t N, int64_t C, T* GV,  \
                                     T* GW) {                                                                     \
    if (k % 2 == 0) return -1;                                                                                    \
    std::vector<double> gw(k, 0.0);                                                                                \
    conv_backward(g, v, w, k, N, C, GV, false, gw.data());                                                        \
    store(gw, GW);                                                                                                \
    return 0;                                                                                                     \
  }                                                                                                               \
  /* W [N, C] = sigmoid of each channel's head score; QK [2, N, C] keeps q and k for the backward */            \
  int light_head_forward_##SUFFIX(const T* p, const T* wq, const T* wk, int64_t k, int64_t N, int64_t C,          \
                                  int64_t heads, T* W, T* QK) {                                                   \
    if (k % 2 == 0 || heads < 1 || C % heads) return -1;                                                          \
    T *Q = QK, *K = QK + N * C;                                                                                   \
    conv(p, wq, k, N, C, Q);                                                                                       \
    conv(p, wk, k, N, C, K);                                                                                       \
    const int64_t d = C / heads;                                                                                  \
    const T root = std::sqrt(T(d));                                                                               \
    for (int64_t n = 0; n < N; ++n)                                                                               \
      for (int64_t h = 0; h < heads; ++h) {                                                                       \
        const int64_t o = n * C + h * d;                                                                          \
        T s = 0;                                                                                                  \
        _Pragma("omp simd reduction(+ : s)") for (int64_t c = 0; c < d; ++c) s += Q[o + c] * K[o + c];            \
        const T w = T(1) / (T(1) + std::exp(-(s / root)));                                                       \
        std::fill(W + o, W + o + d, w);                                                                           \
      }                                                                                                           \
    return 0;                                                                                                     \
  }                                                                                                               \
  /* from GW (of W) and the forward's W and QK: GP (of p), GWQ and GWK (of the taps) */                          \
  int light_head_backward_##SUFFIX(const T* GW, const T* W, const T* QK, const T* p, const T* wq, const T* wk,    \
                                   int64_t k, int64_t N, int64_t C, int64_t heads, T* GP, T* GWQ, T* GWK) {      \
    if (k % 2 == 0 || heads < 1 || C % heads) return -1;                                                          \
    const T *Q = QK, *K = QK + N * C;                                                                             \
    const int64_t d = C / heads;                                                                                  \
    const T root = std::sqrt(T(d));                                                                               \
    std::vector<T> gq(N * C), gk(N * C);                                                                          \
    for (int64_t n = 0; n < N; ++n)                                                                               \
      for (int64_t h = 0; h < heads; ++h) {                                                                       \
        const int64_t o = n * C + h * d;                                                                          \
        /* every channel of a head carries the same weight w = sigmoid(s): d w / d s = w (1 - w) */               \
        T g = 0;                                                                                                  \
        _Pragma("omp simd reduction(+ : g)") for (int64_t c = 0; c < d; ++c) g += GW[o + c];                      \
        const T w = W[o], gs = g * w * (T(1) - w) / root;                                                         \
        _Pragma("omp simd") for (int64_t c = 0; c < d; ++c) {                                                     \
          gq[o + c] = gs * K[o + c];                                                                              \
          gk[o + c] = gs * Q[o + c];                                                                              \
        }                                                                                                         \
      }                                                                                                           \
    std::vector<double> gwq(k, 0.0), gwk(k, 0.0);                                                                  \
    conv_backward(gq.data(), p, wq, k, N, C, GP, false, gwq.data());                                              \
    conv_backward(gk.data(), p, wk, k, N, C, GP, true, gwk.data());                                               \
    store(gwq, GWQ);                                                                                              \
    store(gwk, GWK);                                                                                              \
    return 0;                                                                                                     \
  }

VECTORS(float, f32)
VECTORS(double, f64)

}  // extern "C"
