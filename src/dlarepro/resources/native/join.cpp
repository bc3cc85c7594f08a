// A layer-attention block's join, y = ReLU(branch + s) with GAP(y) (and, optionally, GAP(s)), forward
// and backward, each in one pass at the memory's speed (the tails mode `native`: the forward of
// MRLA-B's and DLA-B's join, dlarepro.models.native_base.BaseJoin, whose backward is the value map's
// pass in base_tail.cpp; both ways for tails.Join where the B tail cannot run natively; the light
// methods' join is part of light_block.cpp). The backward adds the gradients that y's and s's other
// consumers sent to their own handles on those maps (tails.Join) inside its pass.
//
// Maps are float32 or float64, channels-last ([B, H, W, C] in memory), C a multiple of 16; pooled
// vectors [B, C]. Pixels in chunks of about 16K values, every channel innermost; sums per chunk in
// the map's type, then per image in double, in a fixed order (deterministic).
#include <omp.h>

#include <cstdint>
#include <vector>

#include "common.h"

namespace {

using lanes::L, lanes::V, lanes::ld, lanes::st, lanes::bc, lanes::Items, lanes::Sums, lanes::ImageSums, lanes::add;

// Y = ReLU(Bn + S); PY = GAP(Y), and PS = GAP(S) unless null.
template <typename T>
int forward(const T* Bn, const T* S, int64_t B, int64_t C, int64_t P, T* Y, T* PY, T* PS, int threads) {
  if (C % L) return -1;
  omp_set_num_threads(threads);
  const Items it(B, C, P);
  const int64_t rows = PS ? 2 : 1;
  Sums part(it, rows);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < it.count(); ++i) {
    const int64_t b = it.image(i);
    std::vector<T> local(rows * C, T(0));
    for (int64_t p = it.begin(i); p < it.end(i); ++p)
      for (int64_t c0 = 0; c0 < C; c0 += L) {
        const int64_t o = (b * P + p) * C + c0;
        const V<T> s = ld(S + o), z = ld(Bn + o) + s, y = z > 0 ? z : bc<T>(0);
        st(Y + o, y);
        add(local, c0, y);
        if (PS) add(local, C + c0, s);
      }
    part.put(i, local);
  }
  ImageSums sums = part.images();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      PY[b * C + c] = T(sums.at(b, 0, c) / P);
      if (PS) PS[b * C + c] = T(sums.at(b, 1, c) / P);
    }
  return 0;
}

// GB = (GY [+ GYO] [+ GPY / P]) where Y > 0, else 0; GS = GB [+ GPS / P] + sum of the n maps GSO
// (GS null: the caller uses GB for it, there being nothing to add). GYO, GPY, GPS may be null.
template <typename T>
int backward(const T* GY, const T* GYO, const T* Y, const T* GPY, const T* GPS, const T* const* GSO, int64_t n,
             int64_t B, int64_t C, int64_t P, T* GB, T* GS, int threads) {
  if (C % L) return -1;
  omp_set_num_threads(threads);
  const Items it(B, C, P);
  const T inv = T(1) / T(P);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < it.count(); ++i) {
    const int64_t b = it.image(i);
    for (int64_t p = it.begin(i); p < it.end(i); ++p)
      for (int64_t c0 = 0; c0 < C; c0 += L) {
        const int64_t o = (b * P + p) * C + c0;
        V<T> g = ld(GY + o);
        if (GYO) g += ld(GYO + o);
        if (GPY) g += ld(GPY + b * C + c0) * inv;
        const V<T> gb = ld(Y + o) > 0 ? g : bc<T>(0);
        st(GB + o, gb);
        if (!GS) continue;
        V<T> gs = gb;
        if (GPS) gs += ld(GPS + b * C + c0) * inv;
        for (int64_t m = 0; m < n; ++m) gs += ld(GSO[m] + o);
        st(GS + o, gs);
      }
  }
  return 0;
}

}  // namespace

extern "C" {

#define JOIN(T, SUFFIX)                                                                                             \
  int join_forward_##SUFFIX(const T* Bn, const T* S, int64_t B, int64_t C, int64_t P, T* Y, T* PY, T* PS,          \
                            int threads) {                                                                        \
    return forward<T>(Bn, S, B, C, P, Y, PY, PS, threads);                                                         \
  }                                                                                                               \
  int join_backward_##SUFFIX(const T* GY, const T* GYO, const T* Y, const T* GPY, const T* GPS, const T* const* GSO, \
                             int64_t n, int64_t B, int64_t C, int64_t P, T* GB, T* GS, int threads) {             \
    return backward<T>(GY, GYO, Y, GPY, GPS, GSO, n, B, C, P, GB, GS, threads);                                    \
  }

JOIN(float, f32)
JOIN(double, f64)

}  // extern "C"
