// The light tail of MRLA-L / DLA-L, out = y + mask * BN(alpha * s + w * DW_kv(y) [+ DW_kr(s)]),
// forward and backward, with the depthwise 3x3 stencils computed inside the passes, so that neither
// DW(y) nor DW(s) (nor their gradients) is ever written to memory (the tails mode `native`,
// dlarepro.models.tails.StencilLightTail; bench/step_time.py --stencil-tails).
//
// Maps are float32 or float64, channels-last ([B, H, W, C] in memory), C a multiple of 16. Taps
// are [9, C] (tap t = 3 (dh + 1) + (dw + 1)). Plain C++ with GCC vector types of 16 lanes
// (common.h), OpenMP over images and channel blocks; called through ctypes (dlarepro.native), so
// the build needs g++ only. Batch-norm sums are per image in the map's type, over the batch in
// double, in a fixed order (deterministic).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

namespace {

using lanes::L, lanes::V, lanes::ld, lanes::st, lanes::bc, lanes::Win;

struct Shape {
  int64_t B, C, H, W;
  int64_t P() const { return H * W; }
  int64_t blocks() const { return C / L; }
};

// One (image, 16-channel block): its taps (also flipped, for the transposed stencils) and constants.
template <typename T> struct Block {
  using v16 = V<T>;
  v16 kv[9], kr[9], kvf[9], krf[9], al, w;
  T mask;
  Block(const T* KV, const T* KR, const T* A, bool alpha_per_image, const T* Wt, const T* M,
        int64_t b, int64_t c0, int64_t C) {
    for (int t = 0; t < 9; ++t) {
      kv[t] = ld(KV + t * C + c0);
      kr[t] = KR ? ld(KR + t * C + c0) : bc<T>(0);
    }
    for (int t = 0; t < 9; ++t) { kvf[t] = kv[8 - t]; krf[t] = kr[8 - t]; }
    al = ld(A + (alpha_per_image ? b * C : 0) + c0);
    w = ld(Wt + b * C + c0);
    mask = M ? M[b] : T(1);
  }
};

// The attended map a = alpha s + w DW_kv(y) [+ DW_kr(s)] of one (image, channel block), pixel by
// pixel along a row; `v` and `s_here` keep the current pixel's DW_kv(y) and s, `wy` its window of y.
template <typename T> struct Attended {
  using v16 = V<T>;
  const Block<T>& k;
  const T *y, *s, *zero;
  int64_t H, W, C, h = 0;
  bool refresh;
  Win<T> wy, ws;
  v16 v, s_here;
  Attended(const Block<T>& blk, const T* Y, const T* S, const T* Z, int64_t Hh, int64_t Wd, int64_t Cc, bool R)
      : k(blk), y(Y), s(S), zero(Z), H(Hh), W(Wd), C(Cc), refresh(R) {}
  const T* s_ahead = nullptr;  // without the refresh window: the next row of s, prefetched
  void start(int64_t row) {
    h = row;
    wy.start(y, zero, H, W, C, h);
    wy.ahead = h + 2 < H ? y + (h + 2) * W * C : nullptr;
    if (refresh) {
      ws.start(s, zero, H, W, C, h);
      ws.ahead = h + 2 < H ? s + (h + 2) * W * C : nullptr;
    } else {
      s_ahead = h + 1 < H ? s + (h + 1) * W * C : nullptr;
    }
  }
  v16 at(int64_t x) {  // x = 0, 1, ..., W - 1 in turn after start()
    if (x) { wy.next(); if (refresh) ws.next(); }
    if (s_ahead) __builtin_prefetch(s_ahead + x * C);
    v = wy.apply(k.kv);
    s_here = ld(s + (h * W + x) * C);
    v16 a = k.al * s_here + k.w * v;
    if (refresh) a += ws.apply(k.kr);
    return a;
  }
};

// out = y + mask (scale (alpha s + w DW_kv(y) + DW_kr(s)) + shift). In training (eval == 0) the
// batch's mean, var (biased) and rstd are written to [C]; in eval they are read (running statistics).
template <typename T>
int forward(const T* Y, const T* S, const T* KV, const T* KR, const T* Wt, const T* A, int alpha_per_image,
            const T* G, const T* Be, const T* M, double eps, int64_t B, int64_t C, int64_t H, int64_t W, T* O, T* mean,
            T* var, T* rstd, int eval, int threads) {
  using v16 = V<T>;
  if (C % L) return -1;
  omp_set_num_threads(threads);
  const Shape sh{B, C, H, W};
  const int64_t P = sh.P(), NB = sh.blocks();
  const bool R = KR != nullptr;
  std::vector<T> zero_row(W * C, T(0));
  const T* Z = zero_row.data();
  lanes::BatchMoments moments(B, C, P);
#pragma omp parallel for collapse(2) schedule(static) if (!eval)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t cb = 0; cb < NB; ++cb) {
      if (eval) continue;
      const int64_t c0 = cb * L, off = b * P * C + c0;
      const Block<T> k(KV, KR, A, alpha_per_image, Wt, M, b, c0, C);
      v16 shift = bc<T>(0), s1 = bc<T>(0), s2 = bc<T>(0);
      Attended<T> att(k, Y + off, S + off, Z, H, W, C, R);
      for (int64_t h = 0; h < H; ++h) {
        att.start(h);
        for (int64_t x = 0; x < W; ++x) {
          const v16 a = att.at(x);
          if (h == 0 && x == 0) shift = a;
          const v16 d = a - shift;
          s1 += d;
          s2 += d * d;
        }
      }
      for (int j = 0; j < L; ++j) moments.put(b, c0 + j, shift[j], s1[j], s2[j]);
    }
  std::vector<T> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    double m = mean[c], rs = rstd[c];
    if (!eval) {
      double v;
      moments.channel(c, m, v);
      rs = 1.0 / std::sqrt(v + eps);
      mean[c] = m; var[c] = v; rstd[c] = rs;
    }
    scale[c] = rs * G[c];
    shift[c] = Be[c] - m * rs * G[c];
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t cb = 0; cb < NB; ++cb) {
      const int64_t c0 = cb * L, off = b * P * C + c0;
      const Block<T> k(KV, KR, A, alpha_per_image, Wt, M, b, c0, C);
      const v16 sc = ld(scale.data() + c0) * k.mask, sf = ld(shift.data() + c0) * k.mask;
      Attended<T> att(k, Y + off, S + off, Z, H, W, C, R);
      for (int64_t h = 0; h < H; ++h) {
        att.start(h);
        for (int64_t x = 0; x < W; ++x) {
          const v16 a = att.at(x);
          st(O + off + (h * W + x) * C, att.wy.col[1][1] + sc * a + sf);  // col[1][1]: y at this pixel
        }
      }
    }
  return 0;
}

// Gradients: GY (the residual's included), GS (maps); GW, GAL ([B, C]: of w and of alpha per image);
// GKV, GKR ([9, C]); GG, GB ([C]: gamma, beta).
template <typename T>
int backward(const T* GO, const T* Y, const T* S, const T* KV, const T* KR, const T* Wt, const T* A,
             int alpha_per_image, const T* G, const T* Mu, const T* Rs, const T* M, int training, int64_t B, int64_t C,
             int64_t H, int64_t W, T* GY, T* GS, T* GW, T* GAL, T* GKV, T* GKR, T* GG, T* GB, int threads) {
  using v16 = V<T>;
  if (C % L) return -1;
  omp_set_num_threads(threads);
  const Shape sh{B, C, H, W};
  const int64_t P = sh.P(), NB = sh.blocks();
  const bool R = KR != nullptr;
  std::vector<T> zero_row(W * C, T(0));
  const T* Z = zero_row.data();
  // pass 1: per image and channel, the sums of g and of g (a - mean) (g: the masked output
  // gradient; centred, so that gamma's gradient does not cancel)
  std::vector<double> sg(B * C), sga(B * C);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t cb = 0; cb < NB; ++cb) {
      const int64_t c0 = cb * L, off = b * P * C + c0;
      const Block<T> k(KV, KR, A, alpha_per_image, Wt, M, b, c0, C);
      v16 s1 = bc<T>(0), s2 = bc<T>(0);
      const v16 mu = ld(Mu + c0);
      Attended<T> att(k, Y + off, S + off, Z, H, W, C, R);
      for (int64_t h = 0; h < H; ++h) {
        att.start(h);
        for (int64_t x = 0; x < W; ++x) {
          if (h + 1 < H) __builtin_prefetch(GO + off + ((h + 1) * W + x) * C);
          const v16 g = ld(GO + off + (h * W + x) * C), a = att.at(x);
          s1 += g;
          s2 += g * (a - mu);  // gamma's gradient needs it in eval too
        }
      }
      for (int j = 0; j < L; ++j) { sg[b * C + c0 + j] = s1[j] * k.mask; sga[b * C + c0 + j] = s2[j] * k.mask; }
    }
  // batch norm's backward per channel: grad_a = c1 g + c2 + c3 a
  std::vector<T> c1(C), c2(C), c3(C);
  const double n = double(B) * P;
  for (int64_t c = 0; c < C; ++c) {
    double g = 0, gac = 0;
    for (int64_t b = 0; b < B; ++b) { g += sg[b * C + c]; gac += sga[b * C + c]; }
    const double gx = gac * Rs[c], k1 = double(G[c]) * Rs[c];
    GG[c] = gx; GB[c] = g; c1[c] = k1;
    if (training) {
      const double k3 = -k1 * Rs[c] * gx / n;
      c3[c] = k3; c2[c] = -k1 * g / n - k3 * Mu[c];
    } else {
      c2[c] = c3[c] = 0;
    }
  }
  // pass 2, row by row: grad_a = c1 g + c2 + c3 a of row h + 1 into a ring of three rows (never
  // written to memory), with its sums against DW(y) and s (the gradients of w and alpha); then
  // row h's transposed stencils, which read grad_a rows h - 1 .. h + 1:
  //   grad_y = grad_out + w DW_kv^T(grad_a), the value taps' gradients from grad_a and y;
  //   grad_s = alpha grad_a + DW_kr^T(grad_a), the refresh taps' gradients from grad_a and s
  std::vector<T> dkv(B * 9 * C), dkr(B * 9 * C, T(0));
  const std::vector<T> zero_ring_row(W * L, T(0));
  const T* ZR = zero_ring_row.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t cb = 0; cb < NB; ++cb) {
      const int64_t c0 = cb * L, off = b * P * C + c0;
      const Block<T> k(KV, KR, A, alpha_per_image, Wt, M, b, c0, C);
      const v16 k1 = ld(c1.data() + c0) * k.mask, k2 = ld(c2.data() + c0), k3 = ld(c3.data() + c0);
      v16 sv = bc<T>(0), ss = bc<T>(0), av[9], ar[9];
      for (int t = 0; t < 9; ++t) av[t] = ar[t] = bc<T>(0);
      std::vector<T> ring(3 * W * L);
      Attended<T> att(k, Y + off, S + off, Z, H, W, C, R);
      Win<T> wy, ws, wg;
      auto ring_row = [&](int64_t h) -> T* { return ring.data() + (h % 3) * W * L; };
      auto grad_a_row = [&](int64_t h) {
        T* row = ring_row(h);
        att.start(h);
        for (int64_t x = 0; x < W; ++x) {
          if (h + 1 < H) __builtin_prefetch(GO + off + ((h + 1) * W + x) * C);
          const v16 a = att.at(x), g = k1 * ld(GO + off + (h * W + x) * C) + k2 + k3 * a;
          st(row + x * L, g);
          sv += g * att.v;
          ss += g * att.s_here;
        }
      };
      grad_a_row(0);
      for (int64_t h = 0; h < H; ++h) {
        if (h + 1 < H) grad_a_row(h + 1);
        const T *g0 = h > 0 ? ring_row(h - 1) : ZR, *g1 = ring_row(h), *g2 = h + 1 < H ? ring_row(h + 1) : ZR;
        wg.start_rows(g0, g1, g2, W, L);
        wy.start(Y + off, Z, H, W, C, h);
        for (int64_t x = 0; x < W; ++x) {
          if (x) { wg.next(); wy.next(); }
          const int64_t o = off + (h * W + x) * C;
          st(GY + o, ld(GO + o) + k.w * wg.apply(k.kvf));
          wy.correlate(wg.col[1][1], av);
        }
        if (!R) {
          for (int64_t x = 0; x < W; ++x) st(GS + off + (h * W + x) * C, k.al * ld(g1 + x * L));
          continue;
        }
        wg.start_rows(g0, g1, g2, W, L);
        ws.start(S + off, Z, H, W, C, h);
        for (int64_t x = 0; x < W; ++x) {
          if (x) { wg.next(); ws.next(); }
          const int64_t o = off + (h * W + x) * C;
          st(GS + o, k.al * wg.col[1][1] + wg.apply(k.krf));
          ws.correlate(wg.col[1][1], ar);
        }
      }
      st(GW + b * C + c0, sv);
      st(GAL + b * C + c0, ss);
      for (int t = 0; t < 9; ++t) {
        st(dkv.data() + (b * 9 + t) * C + c0, av[t] * k.w);
        st(dkr.data() + (b * 9 + t) * C + c0, ar[t]);
      }
    }
  for (int t = 0; t < 9; ++t)
    for (int64_t c = 0; c < C; ++c) {
      double a = 0, r = 0;
      for (int64_t b = 0; b < B; ++b) { a += dkv[(b * 9 + t) * C + c]; r += dkr[(b * 9 + t) * C + c]; }
      GKV[t * C + c] = a;
      GKR[t * C + c] = r;
    }
  return 0;
}

}  // namespace

extern "C" {

#define STENCIL_TAIL(T, SUFFIX)                                                                                  \
  int stencil_tail_forward_##SUFFIX(const T* Y, const T* S, const T* KV, const T* KR, const T* Wt, const T* A,     \
                                    int alpha_per_image, const T* G, const T* Be, const T* M, double eps,         \
                                    int64_t B, int64_t C, int64_t H, int64_t W, T* O, T* mean, T* var, T* rstd,   \
                                    int eval, int threads) {                                                      \
    return forward<T>(Y, S, KV, KR, Wt, A, alpha_per_image, G, Be, M, eps, B, C, H, W, O, mean, var, rstd, eval,  \
                      threads);                                                                                   \
  }                                                                                                               \
  int stencil_tail_backward_##SUFFIX(const T* GO, const T* Y, const T* S, const T* KV, const T* KR, const T* Wt,  \
                                     const T* A, int alpha_per_image, const T* G, const T* Mu, const T* Rs,       \
                                     const T* M, int training, int64_t B, int64_t C, int64_t H, int64_t W, T* GY, \
                                     T* GS, T* GW, T* GAL, T* GKV, T* GKR, T* GG, T* GB, int threads) {           \
    return backward<T>(GO, Y, S, KV, KR, Wt, A, alpha_per_image, G, Mu, Rs, M, training, B, C, H, W, GY, GS, GW,   \
                       GAL, GKV, GKR, GG, GB, threads);                                                           \
  }

STENCIL_TAIL(float, f32)
STENCIL_TAIL(double, f64)

}  // extern "C"
