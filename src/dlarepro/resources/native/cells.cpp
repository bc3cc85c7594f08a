// The DSU cell's gate arithmetic (DLA's recurrent cell, dlarepro.models.native_vectors.DSUGates):
// from the two paths' gates it computes
//   i, f, g = (a + b) split in three;  c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigma(c')
// in one pass forward and one backward. As torch operators this is ~10 element-wise passes each
// way plus their autograd nodes, per cell call; DLA-B calls the cell on every earlier token of the
// stage in every block.
//   a [M, 3C]: the input path's gates, M = L * B rows (L tokens per image, token-major);
//   b [B, 3C]: the hidden path's, shared by the L tokens of an image; c [B, C]: the cell state.
//   sigma: 0 sigmoid, 1 identity, 2 tanh, 3 relu (Table 5 of the DLA paper).
// float32 uses exp and tanh of its own (vectorised, a few ulp from libm: the `omp simd` loops
// would call scalar libm); float64 (the tests) uses libm.
// The clamps and selects below are if-converted (and the loops vectorised) only when compares may
// not trap; nothing here reads the floating-point exception flags.
#pragma GCC optimize("no-trapping-math")
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

inline __attribute__((always_inline)) float exp_approx(float x) {
  // Cephes' expf: e^x = 2^n e^r, |r| <= ln2 / 2, e^r by a degree-6 polynomial; clamped so 2^n is normal
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  // (std::fmin / fmax would call libm)
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline __attribute__((always_inline)) float tanh_approx(float x) {
  // Cephes' tanhf: an odd polynomial below 0.625, else 1 - 2 / (e^{2|x|} + 1)
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float large = std::copysign(1.0f - 2.0f / (exp_approx(2.0f * std::fabs(x)) + 1.0f), x);
  return std::fabs(x) < 0.625f ? small : large;
}

template <typename T> struct Math;
template <> struct Math<float> {
  static float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
  static float tanh(float x) { return tanh_approx(x); }
};
template <> struct Math<double> {
  static double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
  static double tanh(double x) { return std::tanh(x); }
};

template <typename T, int S> inline T apply_sigma(T c) {
  if constexpr (S == 0) return Math<T>::sigmoid(c);
  if constexpr (S == 1) return c;
  if constexpr (S == 2) return Math<T>::tanh(c);
  if constexpr (S == 3) return c > T(0) ? c : T(0);
}

// d sigma(c) / d c from c and h = sigma(c)
template <typename T, int S> inline T sigma_slope(T c, T h) {
  if constexpr (S == 0) return h * (T(1) - h);
  if constexpr (S == 1) return T(1);
  if constexpr (S == 2) return T(1) - h * h;
  if constexpr (S == 3) return c > T(0) ? T(1) : T(0);
}

// One channel's gates: a and b point at a row's i, f, g thirds (C apart), c at its state.
template <typename T> struct Gates {
  T si, sf, tg, cn;
};
template <typename T>
inline __attribute__((always_inline)) Gates<T> gates_at(const T* a, const T* b, const T* c, int64_t C, int64_t ch) {
  Gates<T> g;
  g.si = Math<T>::sigmoid(a[ch] + b[ch]);
  g.sf = Math<T>::sigmoid(a[C + ch] + b[C + ch]);
  g.tg = Math<T>::tanh(a[2 * C + ch] + b[2 * C + ch]);
  g.cn = g.sf * c[ch] + g.si * g.tg;
  return g;
}

// Small calls (a [B, C] context update) stay on one thread: a fork would cost more than the work.
#define CELL_THREADS num_threads(threads) if (M * C >= 16384)

template <typename T, int S>
void forward(const T* a, const T* b, const T* c, int64_t M, int64_t B, int64_t C, int threads, T* H, T* CN) {
#pragma omp parallel for schedule(static) CELL_THREADS
  for (int64_t m = 0; m < M; ++m) {
    const int64_t n = m % B;
    const T *am = a + m * 3 * C, *bn = b + n * 3 * C, *cs = c + n * C;
    T* h = H + m * C;
    T* cn = CN + m * C;
#pragma omp simd
    for (int64_t ch = 0; ch < C; ++ch) {
      const Gates<T> g = gates_at(am, bn, cs, C, ch);
      cn[ch] = g.cn;
      h[ch] = apply_sigma<T, S>(g.cn);
    }
  }
}

// From GH and GC (the gradients of h' and c'; GC may be null): GA [M, 3C], and GB [B, 3C] and
// GCS [B, C] summed over the L tokens of each image. Images are split across threads, so every sum
// has one writer and runs in token order.
template <typename T, int S, bool WITH_GC>
void backward(const T* GH, const T* GC, const T* a, const T* b, const T* c, int64_t M, int64_t B, int64_t C,
              int threads, T* GA, T* GB, T* GCS) {
  const int64_t L = M / B;
#pragma omp parallel for schedule(static) CELL_THREADS
  for (int64_t n = 0; n < B; ++n) {
    T* gb = GB + n * 3 * C;
    T* gcs = GCS + n * C;
    const T *bn = b + n * 3 * C, *cs = c + n * C;
    std::memset(gb, 0, 3 * C * sizeof(T));
    std::memset(gcs, 0, C * sizeof(T));
    for (int64_t l = 0; l < L; ++l) {
      const int64_t m = l * B + n;
      const T* am = a + m * 3 * C;
      T* ga = GA + m * 3 * C;
      const T* gh = GH + m * C;
      const T* gc = WITH_GC ? GC + m * C : nullptr;
#pragma omp simd
      for (int64_t ch = 0; ch < C; ++ch) {
        const Gates<T> g = gates_at(am, bn, cs, C, ch);
        T d = gh[ch] * sigma_slope<T, S>(g.cn, apply_sigma<T, S>(g.cn));
        if constexpr (WITH_GC) d += gc[ch];
        const T gi = d * g.tg * g.si * (T(1) - g.si);
        const T gf = d * cs[ch] * g.sf * (T(1) - g.sf);
        const T gg = d * g.si * (T(1) - g.tg * g.tg);
        ga[ch] = gi;
        ga[C + ch] = gf;
        ga[2 * C + ch] = gg;
        gb[ch] += gi;
        gb[C + ch] += gf;
        gb[2 * C + ch] += gg;
        gcs[ch] += d * g.sf;
      }
    }
  }
}

// One pass: forward (GH null; O1, O2 = H, CN) or backward (O1, O2, O3 = GA, GB, GCS)
template <typename T, int S>
void pass(const T* GH, const T* GC, const T* a, const T* b, const T* c, int64_t M, int64_t B, int64_t C, int threads,
          T* O1, T* O2, T* O3) {
  if (!GH) forward<T, S>(a, b, c, M, B, C, threads, O1, O2);
  else if (GC) backward<T, S, true>(GH, GC, a, b, c, M, B, C, threads, O1, O2, O3);
  else backward<T, S, false>(GH, GC, a, b, c, M, B, C, threads, O1, O2, O3);
}

// sigma (0-3) as a template argument: the loops stay free of branches
template <typename T>
int run(int sigma, const T* GH, const T* GC, const T* a, const T* b, const T* c, int64_t M, int64_t B, int64_t C,
        int threads, T* O1, T* O2, T* O3) {
  if (B < 1 || M % B || threads < 1) return -1;
  switch (sigma) {
    case 0: pass<T, 0>(GH, GC, a, b, c, M, B, C, threads, O1, O2, O3); return 0;
    case 1: pass<T, 1>(GH, GC, a, b, c, M, B, C, threads, O1, O2, O3); return 0;
    case 2: pass<T, 2>(GH, GC, a, b, c, M, B, C, threads, O1, O2, O3); return 0;
    case 3: pass<T, 3>(GH, GC, a, b, c, M, B, C, threads, O1, O2, O3); return 0;
    default: return -1;
  }
}

}  // namespace

extern "C" {

// H, CN [M, C]: h' and c'; `threads`: torch's thread count (large calls split images across them)
#define CELLS(T, SUFFIX)                                                                                           \
  int dsu_gates_forward_##SUFFIX(const T* a, const T* b, const T* c, int64_t M, int64_t B, int64_t C, int sigma,  \
                                 int threads, T* H, T* CN) {                                                       \
    return run<T>(sigma, nullptr, nullptr, a, b, c, M, B, C, threads, H, CN, nullptr);                            \
  }                                                                                                                \
  int dsu_gates_backward_##SUFFIX(const T* GH, const T* GC, const T* a, const T* b, const T* c, int64_t M,        \
                                  int64_t B, int64_t C, int sigma, int threads, T* GA, T* GB, T* GCS) {           \
    if (!GH) return -1;                                                                                            \
    return run<T>(sigma, GH, GC, a, b, c, M, B, C, threads, GA, GB, GCS);                                          \
  }

CELLS(float, f32)
CELLS(double, f64)

}  // extern "C"
