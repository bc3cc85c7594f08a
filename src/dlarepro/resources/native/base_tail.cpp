// The base tail of MRLA-B / DLA-B, out = y + mask * ReLU(BN(a)) with a = sum_i c_i V_i (block t's
// weighted sum of the t value maps of its stage so far), forward and backward, with the block's own
// value map V_t = DW(y) (its depthwise 3x3 convolution) computed in the forward's first pass and
// its gradient taken through that convolution in the pass that sums it, never written (the tails
// mode `native`, dlarepro.models.native_base.StencilBaseTail; bench/step_time.py --stencil-tails).
//
// Each pass streams its maps once, whatever their number:
// - forward: y and the t - 1 earlier maps, writing V_t, `a` and the batch-norm sums; then `a` and y;
// - backward: the output gradient and `a` for the batch-norm sums; then those and the t maps again,
//   writing `a`'s gradient with the coefficients' gradients (its dot products with every map);
// - V_t's gradient: the `a` gradients of the blocks that read V_t and y, writing y's gradient, or
//   (the join's backward, native_base.BaseJoin) the branch's: through the ReLU, with GAP(y)'s share.
// Stencil loops run along one row per channel block, with the rows ahead prefetched (common.h); the
// other loops run pixel by pixel with all channels innermost.
//
// Maps are float32 or float64, channels-last ([B, H, W, C] in memory), C a multiple of 16;
// coefficients are [t, B, C] (per image and channel), drop-path's mask [B], taps [9, C]. Sums run
// per image (or chunk of about 16K values) in the map's type, then over those in double, in a
// fixed order (deterministic whatever the thread count).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

namespace {

using lanes::L, lanes::V, lanes::ld, lanes::st, lanes::bc, lanes::Win, lanes::Items, lanes::Sums, lanes::ImageSums,
    lanes::add;

// Batch norm, (a - mean) (rstd gamma) + beta, as the reference computes it: a folded shift
// (beta - mean rstd gamma) would cancel for maps whose mean is large against their spread, and
// the ReLU after it would then decide differently near zero.
template <typename T> struct Affine {
  std::vector<T> mean, scale, beta;
  Affine(int64_t C, const T* Mu, const T* rstd, const T* G, const T* Be) : mean(C), scale(C), beta(C) {
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = Mu[c];
      scale[c] = rstd[c] * G[c];
      beta[c] = Be[c];
    }
  }
  V<T> operator()(V<T> a, int64_t c0) const {
    return (a - ld(mean.data() + c0)) * ld(scale.data() + c0) + ld(beta.data() + c0);
  }
  V<T> out(V<T> y, T mask, V<T> a, int64_t c0) const {
    const V<T> z = (*this)(a, c0);
    return y + mask * (z > 0 ? z : bc<T>(0));
  }
};

// The forward after the attended map: the newest map's means (`pooled`, from row 3 of the sums),
// and in training the batch statistics (rows 0-2: the shift k, sums of a - k and (a - k)^2, see
// lanes::BatchMoments), then the output from A.
template <typename T>
void finish_forward(const Items& it, const ImageSums& sums, const T* A, const T* Y, const T* G, const T* Be,
                    const T* M, double eps, T* O, T* mean, T* var, T* rstd, T* pooled, int eval) {
  const int64_t B = it.B, C = it.C, P = it.P;
  if (pooled)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) pooled[b * C + c] = T(sums.at(b, 3, c) / P);
  if (eval) return;  // the output was written with the attended map
  lanes::BatchMoments moments(B, C, P);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      moments.put(b, c, sums.at(b, 0, c), sums.at(b, 1, c), sums.at(b, 2, c));
  for (int64_t c = 0; c < C; ++c) {
    double m, v;
    moments.channel(c, m, v);
    mean[c] = T(m); var[c] = T(v); rstd[c] = T(1.0 / std::sqrt(v + eps));
  }
  const Affine<T> bn(C, mean, rstd, G, Be);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < it.count(); ++i) {
    const int64_t b = it.image(i);
    const T mask = M ? M[b] : T(1);
    for (int64_t p = it.begin(i); p < it.end(i); ++p)
      for (int64_t c0 = 0; c0 < C; c0 += L) {
        const int64_t o = (b * P + p) * C + c0;
        st(O + o, bn.out(ld(Y + o), mask, ld(A + o), c0));
      }
  }
}

// out = y + mask ReLU(BN(a)), a = sum_i Co[i] Vs[i], where the newest map Vs[t - 1] is the block's
// depthwise convolution of y with taps KV ([9, C]), computed here and written. Writes A (a) and O
// (out); in training (eval == 0) the batch mean, var (biased) and rstd to [C], in eval reads mean
// and rstd (running statistics). With `pooled` ([B, C]) also the mean over each image of Vs[t - 1].
template <typename T>
int forward(T* const* Vs, int64_t t, const T* KV, const T* Co, const T* Y, const T* G, const T* Be, const T* M,
            double eps, int64_t B, int64_t C, int64_t H, int64_t W, T* A, T* O, T* mean, T* var, T* rstd, T* pooled,
            int eval, int threads) {
  if (C % L || t < 1) return -1;
  omp_set_num_threads(threads);
  const int64_t P = H * W;
  const Items it(B, C, P);
  const Affine<T> bn_eval = eval ? Affine<T>(C, mean, rstd, G, Be) : Affine<T>(0, mean, rstd, G, Be);
  const int64_t rows = pooled ? 4 : 3;  // the shift k (a's first pixel), sum a - k, sum (a - k)^2, the newest map's sum
  ImageSums sums(B, rows, C);
  const std::vector<T> zero_row(W * C, T(0));
  // pass 1, image by image, row by row: the stencil along the row (channel block by channel block,
  // its three rows of y in cache), then the weighted sum with every channel innermost: a, its sums
  // (training) or the output (eval), the newest map's sum
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const T mask = M ? M[b] : T(1);
    const T* y = Y + b * P * C;
    std::vector<T> local(rows * C, T(0));
    for (int64_t h = 0; h < H; ++h) {
      const int64_t row = (b * P + h * W) * C;
      const T* up = h > 0 ? y + (h - 1) * W * C : zero_row.data();
      const T* down = h + 1 < H ? y + (h + 1) * W * C : zero_row.data();
      for (int64_t c0 = 0; c0 < C; c0 += L) {
        V<T> kv[9];
        for (int k = 0; k < 9; ++k) kv[k] = ld(KV + k * C + c0);
        Win<T> wy;
        wy.start_rows(up + c0, y + h * W * C + c0, down + c0, W, C);
        wy.ahead = h + 2 < H ? y + (h + 2) * W * C + c0 : nullptr;
        for (int64_t x = 0; x < W; ++x) {
          if (x) wy.next();
          // the next row's lines of V_t, prefetched for writing: these stores are strided, a line per
          // pixel (as the light kernels'; measured: this forward 3-11 % faster on cold maps)
          if (h + 1 < H) __builtin_prefetch(Vs[t - 1] + row + (W + x) * C + c0, 1);
          st(Vs[t - 1] + row + x * C + c0, wy.apply(kv));
        }
      }
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c0 = 0; c0 < C; c0 += L) {
          const int64_t o = row + x * C + c0;
          V<T> a = bc<T>(0);
          for (int64_t m = 0; m < t; ++m) a += ld(Co + (m * B + b) * C + c0) * ld(Vs[m] + o);
          st(A + o, a);
          if (eval) {
            st(O + o, bn_eval.out(ld(Y + o), mask, a, c0));
          } else {
            if (h == 0 && x == 0) st(local.data() + c0, a);
            const V<T> d = a - ld(local.data() + c0);
            add(local, C + c0, d);
            add(local, 2 * C + c0, d * d);
          }
          if (pooled) add(local, 3 * C + c0, ld(Vs[t - 1] + o));
        }
    }
    std::copy(local.begin(), local.end(), sums.s.begin() + b * rows * C);
  }
  finish_forward(it, sums, A, Y, G, Be, M, eps, O, mean, var, rstd, pooled, eval);
  return 0;
}

// Gradients: GA (of a, [B, H, W, C]), GCO (of the coefficients, [t, B, C]: sum over each image of
// GA * V_i), GG and GB (gamma, beta).
template <typename T>
int backward(const T* GO, const T* A, const T* const* Vs, int64_t t, const T* G, const T* Be, const T* Mu,
             const T* Rs, const T* M, int training, int64_t B, int64_t C, int64_t P, T* GA, T* GCO, T* GG, T* GB,
             int threads) {
  if (C % L || t < 1) return -1;
  omp_set_num_threads(threads);
  const Items it(B, C, P);
  const Affine<T> bn(C, Mu, Rs, G, Be);
  const std::vector<T>& mu = bn.mean;
  // the output gradient through the ReLU, whose input is recomputed from a (the mask comes later)
  auto relu_grad = [&](int64_t o, int64_t c0) { return bn(ld(A + o), c0) > 0 ? ld(GO + o) : bc<T>(0); };
  // pass 1: per channel, the sums of g and of g (a - mean) (g: the masked output gradient after the ReLU)
  Sums part(it, 2);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < it.count(); ++i) {
    const int64_t b = it.image(i);
    const T mask = M ? M[b] : T(1);
    std::vector<T> local(2 * C, T(0));
    for (int64_t p = it.begin(i); p < it.end(i); ++p)
      for (int64_t c0 = 0; c0 < C; c0 += L) {
        const int64_t o = (b * P + p) * C + c0;
        const V<T> g = relu_grad(o, c0);
        add(local, c0, g);
        add(local, C + c0, g * (ld(A + o) - ld(mu.data() + c0)));  // centred: no cancellation later
      }
    for (auto& x : local) x *= mask;
    part.put(i, local);
  }
  const ImageSums bn_sums = part.images();
  // batch norm's backward per channel: grad_a = c1 g + c2 + c3 a
  std::vector<T> c1(C), c2(C, T(0)), c3(C, T(0));
  const double n = double(B) * P;
  for (int64_t c = 0; c < C; ++c) {
    const double g = bn_sums.batch(0, c), gx = bn_sums.batch(1, c) * Rs[c], k1 = double(G[c]) * Rs[c];
    GG[c] = T(gx); GB[c] = T(g); c1[c] = T(k1);
    if (training) {
      const double k3 = -k1 * Rs[c] * gx / n;
      c3[c] = T(k3); c2[c] = T(-k1 * g / n - k3 * Mu[c]);
    }
  }
  // pass 2: grad_a, written, and its dot products with every map over each image
  Sums dots(it, t);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < it.count(); ++i) {
    const int64_t b = it.image(i);
    const T mask = M ? M[b] : T(1);
    std::vector<T> local(t * C, T(0));
    for (int64_t p = it.begin(i); p < it.end(i); ++p)
      for (int64_t c0 = 0; c0 < C; c0 += L) {
        const int64_t o = (b * P + p) * C + c0;
        const V<T> ga =
            ld(c1.data() + c0) * mask * relu_grad(o, c0) + ld(c2.data() + c0) + ld(c3.data() + c0) * ld(A + o);
        st(GA + o, ga);
        for (int64_t m = 0; m < t; ++m) add(local, m * C + c0, ga * ld(Vs[m] + o));
      }
    dots.put(i, local);
  }
  ImageSums per_image = dots.images();
  for (int64_t m = 0; m < t; ++m)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) GCO[(m * B + b) * C + c] = T(per_image.at(b, m, c));
  return 0;
}

// The value map's gradient g = extra + sum_i Co[i] Ms[i] pushed through its depthwise convolution
// (taps KV) without writing it: GY = GO + DW_kv^T(g) (GO: y's gradient from elsewhere, the
// residual's; null: none), GKV ([9, C]) = the taps' gradient. Row h + 1 of g is computed ahead
// into a ring of three rows, from which the transposed stencil at row h reads. With `relu` (y is
// ReLU(branch + s), the B methods' join, whose backward this pass then is) GY is the branch's
// gradient instead: (GO + DW_kv^T(g) + GPY / P) where y > 0, else 0 (GPY [B, C]: the gradient of
// GAP(y); may be null).
template <typename T>
int value_gradient_stencil(const T* const* Ms, int64_t t, const T* Co, const T* extra, const T* Y, const T* KV,
                           const T* GO, const T* GPY, int relu, int64_t B, int64_t C, int64_t H, int64_t W, T* GY,
                           T* GKV, int threads) {
  if (C % L || t < 0) return -1;
  omp_set_num_threads(threads);
  const int64_t P = H * W;
  const std::vector<T> zero_row(W * C, T(0));
  std::vector<T> dk(B * 9 * C);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const T* y = Y + b * P * C;
    std::vector<T> ring(3 * W * C), acc(9 * C, T(0));
    auto ring_row = [&](int64_t h) -> const T* {
      return h < 0 || h >= H ? zero_row.data() : ring.data() + (h % 3) * W * C;
    };
    auto grad_row = [&](int64_t h) {  // every channel innermost
      T* out = ring.data() + (h % 3) * W * C;
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c0 = 0; c0 < C; c0 += L) {
          const int64_t o = (b * P + h * W + x) * C + c0;
          V<T> g = extra ? ld(extra + b * C + c0) : bc<T>(0);
          for (int64_t m = 0; m < t; ++m) g += ld(Co + (m * B + b) * C + c0) * ld(Ms[m] + o);
          st(out + x * C + c0, g);
        }
    };
    grad_row(0);
    for (int64_t h = 0; h < H; ++h) {
      if (h + 1 < H) grad_row(h + 1);
      for (int64_t c0 = 0; c0 < C; c0 += L) {  // the row's maps are in cache: channel block by block
        V<T> kvf[9], dkv[9];
        for (int k = 0; k < 9; ++k) { kvf[k] = ld(KV + (8 - k) * C + c0); dkv[k] = ld(acc.data() + k * C + c0); }
        Win<T> wg;
        wg.start_rows(ring_row(h - 1) + c0, ring_row(h) + c0, ring_row(h + 1) + c0, W, C);
        const T* y_row = y + h * W * C + c0;
        const T* y_ahead = h + 1 < H ? y_row + W * C : nullptr;
        const T* go_ahead = GO && h + 1 < H ? GO + (b * P + (h + 1) * W) * C + c0 : nullptr;
        const V<T> gpy = GPY ? ld(GPY + b * C + c0) / T(P) : bc<T>(0);
        for (int64_t x = 0; x < W; ++x) {
          if (x) wg.next();
          if (go_ahead) __builtin_prefetch(go_ahead + x * C);
          if (y_ahead) __builtin_prefetch(y_ahead + x * C);
          const int64_t o = (b * P + h * W + x) * C + c0;
          const V<T> yc = ld(y_row + x * C);
          const V<T> gy = (GO ? ld(GO + o) : bc<T>(0)) + wg.apply(kvf);
          st(GY + o, relu ? (yc > 0 ? gy + gpy : bc<T>(0)) : gy);
          wg.correlate_flipped(yc, dkv);  // the taps' gradient: g against y at each tap's offset
        }
        for (int k = 0; k < 9; ++k) st(acc.data() + k * C + c0, dkv[k]);
      }
    }
    std::copy(acc.begin(), acc.end(), dk.begin() + b * 9 * C);
  }
  for (int k = 0; k < 9; ++k)
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b) s += dk[(b * 9 + k) * C + c];
      GKV[k * C + c] = T(s);
    }
  return 0;
}

}  // namespace

extern "C" {

#define BASE_TAIL(T, SUFFIX)                                                                                       \
  int base_tail_forward_##SUFFIX(T* const* Vs, int64_t t, const T* KV, const T* Co, const T* Y, const T* G,         \
                                 const T* Be, const T* M, double eps, int64_t B, int64_t C, int64_t H, int64_t W,  \
                                 T* A, T* O, T* mean, T* var, T* rstd, T* pooled, int eval, int threads) {         \
    return forward<T>(Vs, t, KV, Co, Y, G, Be, M, eps, B, C, H, W, A, O, mean, var, rstd, pooled, eval, threads);  \
  }                                                                                                               \
  int base_tail_backward_##SUFFIX(const T* GO, const T* A, const T* const* Vs, int64_t t, const T* G, const T* Be, \
                                  const T* Mu, const T* Rs, const T* M, int training, int64_t B, int64_t C,        \
                                  int64_t P, T* GA, T* GCO, T* GG, T* GB, int threads) {                          \
    return backward<T>(GO, A, Vs, t, G, Be, Mu, Rs, M, training, B, C, P, GA, GCO, GG, GB, threads);              \
  }                                                                                                               \
  int value_gradient_stencil_##SUFFIX(const T* const* Ms, int64_t t, const T* Co, const T* extra, const T* Y,      \
                                      const T* KV, const T* GO, const T* GPY, int relu, int64_t B, int64_t C,      \
                                      int64_t H, int64_t W, T* GY, T* GKV, int threads) {                         \
    return value_gradient_stencil<T>(Ms, t, Co, extra, Y, KV, GO, GPY, relu, B, C, H, W, GY, GKV, threads);       \
  }

BASE_TAIL(float, f32)
BASE_TAIL(double, f64)

}  // extern "C"
