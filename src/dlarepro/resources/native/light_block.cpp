// A light block of MRLA-L / DLA-L after its convolutions, from the branch b and the shortcut s:
//   y = ReLU(b + s),  a = alpha s + w DW_kv(y) [+ DW_kr(s)],  out = y + mask BN(a),
// forward and backward in four passes over the maps (the tails mode `native`,
// dlarepro.models.native_tails.LightJoin / LightTail; bench/step_time.py --stencil-tails):
//   join:            reads b, s: GAP(y), GAP(s) and every per-image sum that batch norm's statistics
//                    need, whatever w and alpha turn out to be (they come from GAP(y) and GAP(s));
//   forward:         reads b, s, writes out (one pass: the statistics come from the join's sums);
//   backward_sums:   reads the output gradient, b, s: the gradients of w, alpha, gamma and beta;
//   backward_maps:   reads them again, writes the gradients of b and s, the residual's, the ReLU's
//                    and the pooled vectors' included (the join has no backward of its own).
// y, DW(y), DW(s) and a are never written: y is recomputed row by row into a ring of four rows,
// the stencils slide along it.
//
// Maps are float32 or float64, channels-last ([B, H, W, C] in memory), C a multiple of 16. Taps
// are [9, C] (tap t = 3 (dh + 1) + (dw + 1)). Plain C++ with GCC vector types of 16 lanes
// (common.h), OpenMP over images and channel blocks; called through ctypes (dlarepro.native), so
// the build needs g++ only. Sums are per row in the map's type (shifted by the image's first value
// where they feed a variance), over rows and images in double, in a fixed order (deterministic).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

namespace {

using lanes::L, lanes::V, lanes::ld, lanes::st, lanes::bc, lanes::Win;

// The join's per-image sums, [B, MOMENTS, C] in double: of s, v = DW_kv(y), r = DW_kr(s) and their
// products, from which the sums of a and a^2 follow for any alpha and w.
enum Moment { S, SV, R, SS, VV, RR, SxV, SxR, VxR, MOMENTS };

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
    al = A ? ld(A + (alpha_per_image ? b * C : 0) + c0) : bc<T>(0);  // the join runs before alpha and w exist
    w = Wt ? ld(Wt + b * C + c0) : bc<T>(0);
    mask = M ? M[b] : T(1);
  }
};

// How many rows ahead the strided loads of a channel block are prefetched (measured: 1 beats 3 and 6).
constexpr int64_t AHEAD = 1;

// What every pass needs: sizes, a row of zeros (the stencils' padding) and per-thread scratch rows
// (the y ring, the backward's grad_a ring and the join's row of DW_kr(s): 8 rows of W x 16),
// allocated once per call.
template <typename T> struct Setup {
  int64_t P, NB, H, W, C;
  bool R;
  std::vector<T> zero_row, rows;
  Setup(int64_t Cc, int64_t Hh, int64_t Wd, const T* KR, int threads)
      : P(Hh * Wd), NB(Cc / L), H(Hh), W(Wd), C(Cc), R(KR != nullptr), zero_row(Wd * Cc, T(0)),
        rows(threads * 8 * Wd * L) {
    omp_set_num_threads(threads);
  }
  const T* zero() const { return zero_row.data(); }
  T* y_ring() { return rows.data() + omp_get_thread_num() * 8 * W * L; }
  T* grad_ring() { return y_ring() + 4 * W * L; }
  T* r_row() { return y_ring() + 7 * W * L; }
};

// y = ReLU(b + s) of one (image, channel block), row by row into a ring of four rows of W x 16
// (rows h - 1 .. h + 2 at once: the backward's map pass reads row h's window while computing row
// h + 1's attended values).
template <typename T> struct YRing {
  const T *bn, *s, *zero;
  int64_t H, W, C, filled = 0;
  T* buf;  // 4 W L values, the calling thread's (Setup::y_ring)
  YRing(const T* Bn, const T* Sc, Setup<T>& set)
      : bn(Bn), s(Sc), zero(set.zero()), H(set.H), W(set.W), C(set.C), buf(set.y_ring()) {}
  const T* row(int64_t h) const { return h < 0 || h >= H ? zero : buf + (h & 3) * W * L; }
  void upto(int64_t h) {  // rows 0 .. min(h, H - 1) computed
    for (; filled <= h && filled < H; ++filled) {
      const T *b = bn + filled * W * C, *sr = s + filled * W * C;
      T* out = buf + (filled & 3) * W * L;
      const bool ahead = filled + AHEAD < H;
      for (int64_t x = 0; x < W; ++x) {
        if (ahead) { __builtin_prefetch(b + (AHEAD * W + x) * C); __builtin_prefetch(sr + (AHEAD * W + x) * C); }
        const V<T> z = ld(b + x * C) + ld(sr + x * C);
        st(out + x * L, z > 0 ? z : bc<T>(0));
      }
    }
  }
};

// How a pass computes the refresh's r = DW_kr(s): as the call says (KR null: none), with a window
// on s beside the one on y; or fixed when the pass is compiled: none, or a row of r computed ahead of
// the y stencil. These kernels are bound by their instructions, and two windows and the join's ten
// sums do not fit the 32 vector registers. Measured against the call's mode: the join compiled for
// each case 5-24 % faster; the forward and the sums compiled without the refresh 1-10 % (with a row
// ahead 2-20 % slower); the map pass slower either way, so it keeps the call's mode.
enum class Refresh { AsCalled, None, RowAhead };

// The attended map's parts at each pixel of one (image, channel block) of the branch Bn and the
// shortcut S, along a row: `v` = DW_kv(y), `r` = DW_kr(s) (0 without the refresh), `s_here` = s;
// `y()` the pixel's y, from its own ring of y rows (`yr`).
template <typename T, Refresh M = Refresh::AsCalled> struct Attended {
  using v16 = V<T>;
  const Block<T>& k;
  YRing<T> yr;
  const T *s, *zero;
  int64_t H, W, C, h = 0;
  bool refresh;
  Win<T> wy, ws;
  T* r_row;
  v16 v, r, s_here;
  Attended(const Block<T>& blk, Setup<T>& set, const T* Bn, const T* Sc)
      : k(blk), yr(Bn, Sc, set), s(Sc), zero(set.zero()), H(set.H), W(set.W), C(set.C),
        refresh(M == Refresh::AsCalled ? set.R : M == Refresh::RowAhead), r_row(set.r_row()) {}
  void start(int64_t row) {
    h = row;
    yr.upto(h + 1);
    wy.start_rows(yr.row(h - 1), yr.row(h), yr.row(h + 1), W, L);
    if (M == Refresh::None || !refresh) return;
    ws.start(s, zero, H, W, C, h);
    ws.ahead = h + 1 + AHEAD < H ? s + (h + 1 + AHEAD) * W * C : nullptr;
    if constexpr (M == Refresh::RowAhead)
      for (int64_t x = 0; x < W; ++x) {
        if (x) ws.next();
        st(r_row + x * L, ws.apply(k.kr));
      }
  }
  void load(int64_t x) {  // x = 0, 1, ..., W - 1 in turn after start()
    if (x) { wy.next(); if (M == Refresh::AsCalled && refresh) ws.next(); }
    v = wy.apply(k.kv);
    if (M == Refresh::RowAhead) {
      s_here = ld(s + (h * W + x) * C);
      r = ld(r_row + x * L);
    } else if (M == Refresh::AsCalled && refresh) {
      s_here = ws.col[1][1];
      r = ws.apply(k.kr);
    } else {
      s_here = ld(s + (h * W + x) * C);
      r = bc<T>(0);
    }
  }
  v16 a() const {
    if constexpr (M == Refresh::None) return k.al * s_here + k.w * v;
    return k.al * s_here + k.w * v + r;
  }
  v16 y() const { return wy.col[1][1]; }
};

// n running sums of one (image, channel block) in the map's type, added into double totals after each
// row (a row's few values add in float without losing much; a whole image's would, in float32).
template <typename T, int N> struct RowSums {
  using dv16 = V<double>;
  V<T> row[N];
  dv16 total[N];
  RowSums() {
    for (int i = 0; i < N; ++i) { row[i] = bc<T>(0); total[i] = bc<double>(0); }
  }
  void flush() {
    for (int i = 0; i < N; ++i) { total[i] += __builtin_convertvector(row[i], dv16); row[i] = bc<T>(0); }
  }
};

// The join: PY = GAP(y), PS = GAP(s) (unless null) and, unless MOM is null, the per-image moments;
// compiled for each refresh mode (None: KR is null; RowAhead: it is not).
template <typename T, Refresh M>
int join(const T* Bn, const T* S_, const T* KV, const T* KR, int64_t B, int64_t C, int64_t H, int64_t W, T* PY,
         T* PS, double* MOM, int threads) {
  using v16 = V<T>;
  if (C % L) return -1;
  Setup<T> set(C, H, W, KR, threads);
  const int64_t P = set.P;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t cb = 0; cb < set.NB; ++cb) {
      const int64_t c0 = cb * L, off = b * P * C + c0;
      const Block<T> k(KV, KR, nullptr, false, nullptr, nullptr, b, c0, C);
      Attended<T, M> att(k, set, Bn + off, S_ + off);
      v16 ks = bc<T>(0), kv = ks, kr = ks;
      RowSums<T, MOMENTS + 1> m;  // the moments (s, v, r shifted by their first values), then y
      v16* sum = m.row;
      for (int64_t h = 0; h < H; ++h) {
        att.start(h);
        for (int64_t x = 0; x < W; ++x) {
          att.load(x);
          sum[MOMENTS] += att.y();
          if (h == 0 && x == 0) { ks = att.s_here; kv = att.v; kr = att.r; }
          const v16 ds = att.s_here - ks, dv = att.v - kv, dr = att.r - kr;
          sum[S] += ds; sum[SV] += dv; sum[SS] += ds * ds; sum[VV] += dv * dv; sum[SxV] += ds * dv;
          if constexpr (M != Refresh::None) {  // r = 0 without the refresh: its sums stay 0
            sum[R] += dr; sum[RR] += dr * dr; sum[SxR] += ds * dr; sum[VxR] += dv * dr;
          }
        }
        m.flush();
      }
      const auto& t = m.total;
      for (int j = 0; j < L; ++j) {
        const int64_t c = c0 + j;
        const double s1 = t[S][j], v1 = t[SV][j], r1 = t[R][j], a = ks[j], e = kv[j], f = kr[j];
        PY[b * C + c] = T(t[MOMENTS][j] / P);
        if (PS) PS[b * C + c] = T(a + s1 / P);
        if (!MOM) continue;
        double* out = MOM + b * MOMENTS * C + c;  // raw sums from the shifted ones
        out[S * C] = P * a + s1;
        out[SV * C] = P * e + v1;
        out[R * C] = P * f + r1;
        out[SS * C] = t[SS][j] + 2 * a * s1 + P * a * a;
        out[VV * C] = t[VV][j] + 2 * e * v1 + P * e * e;
        out[RR * C] = t[RR][j] + 2 * f * r1 + P * f * f;
        out[SxV * C] = t[SxV][j] + e * s1 + a * v1 + P * a * e;
        out[SxR * C] = t[SxR][j] + f * s1 + a * r1 + P * a * f;
        out[VxR * C] = t[VxR][j] + f * v1 + e * r1 + P * e * f;
      }
    }
  return 0;
}

// Image b's sums of a and a^2 from the join's moments (channel c, coefficients al and w).
inline void attended_sums(const double* mom, int64_t C, double al, double w, double& sa, double& saa) {
  auto at = [&](Moment m) { return mom[m * C]; };
  sa = al * at(S) + w * at(SV) + at(R);
  saa = al * al * at(SS) + w * w * at(VV) + at(RR) + 2 * (al * w * at(SxV) + al * at(SxR) + w * at(VxR));
}

// out = y + mask (scale a + shift). In training (eval == 0) the batch's mean, var (biased) and rstd
// are written to [C] from the join's moments MOM; in eval they are read (running statistics).
template <typename T, Refresh RM>
int forward(const T* Bn, const T* S_, const T* KV, const T* KR, const T* Wt, const T* A, int alpha_per_image,
            const T* G, const T* Be, const T* M, const double* MOM, double eps, int64_t B, int64_t C, int64_t H,
            int64_t W, T* O, T* mean, T* var, T* rstd, int eval, int threads) {
  using v16 = V<T>;
  if (C % L || (!eval && !MOM)) return -1;
  Setup<T> set(C, H, W, KR, threads);
  const int64_t P = set.P;
  std::vector<T> scale(C), shift(C);
  lanes::BatchMoments moments(B, C, P);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    double m = mean[c], rs = rstd[c];
    if (!eval) {
      for (int64_t b = 0; b < B; ++b) {
        double sa, saa;
        attended_sums(MOM + b * MOMENTS * C + c, C, A[(alpha_per_image ? b * C : 0) + c], Wt[b * C + c], sa, saa);
        moments.put(b, c, 0.0, sa, saa);
      }
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
    for (int64_t cb = 0; cb < set.NB; ++cb) {
      const int64_t c0 = cb * L, off = b * P * C + c0;
      const Block<T> k(KV, KR, A, alpha_per_image, Wt, M, b, c0, C);
      const v16 sc = ld(scale.data() + c0) * k.mask, sf = ld(shift.data() + c0) * k.mask;
      Attended<T, RM> att(k, set, Bn + off, S_ + off);
      for (int64_t h = 0; h < H; ++h) {
        att.start(h);
        for (int64_t x = 0; x < W; ++x) {
          // the next row's output lines, prefetched for writing: a channel block's stores are strided
          // (a line per pixel), and a store that misses waits for its line
          if (h + 1 < H) __builtin_prefetch(O + off + ((h + 1) * W + x) * C, 1);
          att.load(x);
          st(O + off + (h * W + x) * C, att.y() + sc * att.a() + sf);
        }
      }
    }
  return 0;
}

// The backward's first pass: GW, GAL ([B, C]: the gradients of w and of alpha per image), GG, GB
// ([C]: gamma's and beta's), and batch norm's backward per channel, grad_a = C1 mask g + C2 + C3 a
// (C1, C2, C3 [C], for backward_maps). Per image: the sums of g, g s, g v and g r; the rest follows
// from the join's moments (MOM; null in eval, where C2 = C3 = 0 and they are not needed).
template <typename T, Refresh RM>
int backward_sums(const T* GO, const T* Bn, const T* S_, const T* KV, const T* KR, const T* Wt, const T* A,
                  int alpha_per_image, const T* G, const T* Mu, const T* Rs, const T* M, const double* MOM,
                  int training, int64_t B, int64_t C, int64_t H, int64_t W, T* GW, T* GAL, T* GG, T* GB, T* C1, T* C2,
                  T* C3, int threads) {
  using v16 = V<T>;
  if (C % L || (training && !MOM)) return -1;
  Setup<T> set(C, H, W, KR, threads);
  const int64_t P = set.P;
  enum { G1, GS, GV, GR, SUMS };
  std::vector<double> sums(B * SUMS * C);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t cb = 0; cb < set.NB; ++cb) {
      const int64_t c0 = cb * L, off = b * P * C + c0;
      const Block<T> k(KV, KR, A, alpha_per_image, Wt, M, b, c0, C);
      Attended<T, RM> att(k, set, Bn + off, S_ + off);
      RowSums<T, SUMS> sum;
      v16* g1 = sum.row;
      for (int64_t h = 0; h < H; ++h) {
        att.start(h);
        for (int64_t x = 0; x < W; ++x) {
          if (h + AHEAD < H) __builtin_prefetch(GO + off + ((h + AHEAD) * W + x) * C);
          att.load(x);
          const v16 g = ld(GO + off + (h * W + x) * C);
          g1[G1] += g; g1[GS] += g * att.s_here; g1[GV] += g * att.v;
          if constexpr (RM != Refresh::None) g1[GR] += g * att.r;
        }
        sum.flush();
      }
      double* out = sums.data() + b * SUMS * C + c0;
      for (int w = 0; w < SUMS; ++w)
        for (int j = 0; j < L; ++j) out[w * C + j] = sum.total[w][j] * k.mask;
    }
  const double n = double(B) * P;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    auto alpha = [&](int64_t b) { return double(A[(alpha_per_image ? b * C : 0) + c]); };
    auto sum = [&](int64_t b, int which) { return sums[b * SUMS * C + which * C + c]; };
    double g = 0, gac = 0;  // sums of g and of g (a - mean) over the batch
    for (int64_t b = 0; b < B; ++b) {
      g += sum(b, G1);
      gac += alpha(b) * sum(b, GS) + Wt[b * C + c] * sum(b, GV) + sum(b, GR) - Mu[c] * sum(b, G1);
    }
    const double gx = gac * Rs[c], k1 = double(G[c]) * Rs[c];
    GG[c] = gx; GB[c] = g; C1[c] = k1;
    double k2 = 0, k3 = 0;
    if (training) { k3 = -k1 * Rs[c] * gx / n; k2 = -k1 * g / n - k3 * Mu[c]; }
    C2[c] = k2; C3[c] = k3;
    for (int64_t b = 0; b < B; ++b) {  // sum over the pixels of grad_a v and of grad_a s
      double gw = k1 * sum(b, GV), gal = k1 * sum(b, GS);
      if (training) {
        const double* mom = MOM + b * MOMENTS * C + c;
        auto at = [&](Moment m) { return mom[m * C]; };
        const double al = alpha(b), w = Wt[b * C + c];
        // k2 sum(v) + k3 sum(a v) = -k1 (g / n) sum(v) + k3 sum((a - mean) v): no large terms cancel
        gw += -k1 * g / n * at(SV) + k3 * (al * at(SxV) + w * at(VV) + at(VxR) - Mu[c] * at(SV));
        gal += -k1 * g / n * at(S) + k3 * (al * at(SS) + w * at(SxV) + at(SxR) - Mu[c] * at(S));
      }
      GW[b * C + c] = gw;
      GAL[b * C + c] = gal;
    }
  }
  return 0;
}

// The backward's map pass, row by row: grad_a = C1 mask g + C2 + C3 a of row h + 1 into a ring of
// three rows (never written); then row h's transposed stencils, which read grad_a rows h - 1 .. h + 1:
//   gy = g + w DW_kv^T(grad_a) [+ GPY / P];  GBN = gy where y > 0, else 0 (the ReLU);
//   GS = GBN + alpha grad_a + DW_kr^T(grad_a) [+ GPS / P];
// and the taps' gradients, GKV from grad_a and y (times w), GKR from grad_a and s ([9, C]).
// GO null: no output gradient (only the pooled vectors were differentiated).
template <typename T>
int backward_maps(const T* GO, const T* Bn, const T* S_, const T* KV, const T* KR, const T* Wt, const T* A,
                  int alpha_per_image, const T* C1, const T* C2, const T* C3, const T* M, const T* GPY, const T* GPS,
                  int64_t B, int64_t C, int64_t H, int64_t W, T* GBN, T* GS, T* GKV, T* GKR, int threads) {
  using v16 = V<T>;
  if (C % L) return -1;
  Setup<T> set(C, H, W, KR, threads);
  const int64_t P = set.P;
  const bool R = set.R;
  const T* Z = set.zero();
  std::vector<T> dkv(B * 9 * C), dkr(B * 9 * C, T(0));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t cb = 0; cb < set.NB; ++cb) {
      const int64_t c0 = cb * L, off = b * P * C + c0;
      const Block<T> k(KV, KR, A, alpha_per_image, Wt, M, b, c0, C);
      const v16 k1 = GO ? ld(C1 + c0) * k.mask : bc<T>(0), k2 = GO ? ld(C2 + c0) : bc<T>(0),
                k3 = GO ? ld(C3 + c0) : bc<T>(0);
      const v16 gpy = GPY ? ld(GPY + b * C + c0) / T(P) : bc<T>(0), gps = GPS ? ld(GPS + b * C + c0) / T(P) : bc<T>(0);
      v16 av[9], ar[9];
      for (int t = 0; t < 9; ++t) av[t] = ar[t] = bc<T>(0);
      T* ring = set.grad_ring();
      Attended<T> att(k, set, Bn + off, S_ + off);
      const YRing<T>& yr = att.yr;
      Win<T> wg;
      auto go = [&](int64_t o) { return GO ? ld(GO + o) : bc<T>(0); };
      auto ring_row = [&](int64_t h) -> T* { return ring + (h % 3) * W * L; };
      auto grad_a_row = [&](int64_t h) {
        T* row = ring_row(h);
        att.start(h);
        for (int64_t x = 0; x < W; ++x) {
          if (GO && h + AHEAD < H) __builtin_prefetch(GO + off + ((h + AHEAD) * W + x) * C);
          // the lines row h - 1 writes next, prefetched for writing as in the forward (measured: this
          // backward ~5 % faster on cold maps, a light method's step ~1 %)
          if (h > 0) {
            __builtin_prefetch(GBN + off + ((h - 1) * W + x) * C, 1);
            __builtin_prefetch(GS + off + ((h - 1) * W + x) * C, 1);
          }
          att.load(x);
          st(row + x * L, k1 * go(off + (h * W + x) * C) + k2 + k3 * att.a());
        }
      };
      grad_a_row(0);
      for (int64_t h = 0; h < H; ++h) {
        if (h + 1 < H) grad_a_row(h + 1);
        const T *g0 = h > 0 ? ring_row(h - 1) : Z, *g1 = ring_row(h), *g2 = h + 1 < H ? ring_row(h + 1) : Z;
        wg.start_rows(g0, g1, g2, W, L);
        const T* y_row = yr.row(h);
        for (int64_t x = 0; x < W; ++x) {
          if (x) wg.next();
          const int64_t o = off + (h * W + x) * C;
          const v16 y = ld(y_row + x * L);
          const v16 gy = go(o) + k.w * wg.apply(k.kvf) + gpy, gb = y > 0 ? gy : bc<T>(0);
          st(GBN + o, gb);
          wg.correlate_flipped(y, av);
          if (!R) st(GS + o, gb + k.al * wg.col[1][1] + gps);
        }
        if (!R) continue;
        wg.start_rows(g0, g1, g2, W, L);
        for (int64_t x = 0; x < W; ++x) {
          if (x) wg.next();
          const int64_t o = off + (h * W + x) * C;
          st(GS + o, ld(GBN + o) + k.al * wg.col[1][1] + wg.apply(k.krf) + gps);
          wg.correlate_flipped(ld(S_ + o), ar);
        }
      }
      for (int t = 0; t < 9; ++t) {
        st(dkv.data() + (b * 9 + t) * C + c0, av[t] * k.w);
        st(dkr.data() + (b * 9 + t) * C + c0, ar[t]);
      }
    }
#pragma omp parallel for collapse(2) schedule(static)
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

#define LIGHT_BLOCK(T, SUFFIX)                                                                                     \
  int light_join_##SUFFIX(const T* Bn, const T* S, const T* KV, const T* KR, int64_t B, int64_t C, int64_t H,      \
                          int64_t W, T* PY, T* PS, double* MOM, int threads) {                                     \
    auto join_for = KR ? join<T, Refresh::RowAhead> : join<T, Refresh::None>;                                      \
    return join_for(Bn, S, KV, KR, B, C, H, W, PY, PS, MOM, threads);                                              \
  }                                                                                                               \
  int light_forward_##SUFFIX(const T* Bn, const T* S, const T* KV, const T* KR, const T* Wt, const T* A,          \
                             int alpha_per_image, const T* G, const T* Be, const T* M, const double* MOM,         \
                             double eps, int64_t B, int64_t C, int64_t H, int64_t W, T* O, T* mean, T* var,      \
                             T* rstd, int eval, int threads) {                                                    \
    auto forward_for = KR ? forward<T, Refresh::AsCalled> : forward<T, Refresh::None>;                             \
    return forward_for(Bn, S, KV, KR, Wt, A, alpha_per_image, G, Be, M, MOM, eps, B, C, H, W, O, mean, var, rstd,  \
                       eval, threads);                                                                             \
  }                                                                                                               \
  int light_backward_sums_##SUFFIX(const T* GO, const T* Bn, const T* S, const T* KV, const T* KR, const T* Wt,   \
                                   const T* A, int alpha_per_image, const T* G, const T* Mu, const T* Rs,         \
                                   const T* M, const double* MOM, int training, int64_t B, int64_t C, int64_t H, \
                                   int64_t W, T* GW, T* GAL, T* GG, T* GB, T* C1, T* C2, T* C3, int threads) {    \
    auto sums_for = KR ? backward_sums<T, Refresh::AsCalled> : backward_sums<T, Refresh::None>;                    \
    return sums_for(GO, Bn, S, KV, KR, Wt, A, alpha_per_image, G, Mu, Rs, M, MOM, training, B, C, H, W, GW, GAL,   \
                    GG, GB, C1, C2, C3, threads);                                                                  \
  }                                                                                                               \
  int light_backward_maps_##SUFFIX(const T* GO, const T* Bn, const T* S, const T* KV, const T* KR, const T* Wt,   \
                                   const T* A, int alpha_per_image, const T* C1, const T* C2, const T* C3,        \
                                   const T* M, const T* GPY, const T* GPS, int64_t B, int64_t C, int64_t H,       \
                                   int64_t W, T* GBN, T* GS, T* GKV, T* GKR, int threads) {                       \
    return backward_maps<T>(GO, Bn, S, KV, KR, Wt, A, alpha_per_image, C1, C2, C3, M, GPY, GPS, B, C, H, W, GBN,  \
                            GS, GKV, GKR, threads);                                                               \
  }

LIGHT_BLOCK(float, f32)
LIGHT_BLOCK(double, f64)

}  // extern "C"
