// What every kernel source of dlarepro.native shares: GCC vector types of 16 lanes (one AVX-512
// register of floats, or several narrower ones) with unaligned loads and stores and broadcasts;
// the 3x3 window the depthwise stencils slide along a row; batch statistics from shifted sums;
// and the split of a batch's pixels into work items with their per-item sums.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lanes {

constexpr int L = 16;
template <typename T> struct Lanes;
template <> struct Lanes<float> { typedef float v __attribute__((vector_size(16 * sizeof(float)))); };
template <> struct Lanes<double> { typedef double v __attribute__((vector_size(16 * sizeof(double)))); };

template <typename T> using V = typename Lanes<T>::v;
template <typename T> inline V<T> ld(const T* p) { V<T> r; std::memcpy(&r, p, sizeof r); return r; }
template <typename T> inline void st(T* p, V<T> v) { std::memcpy(p, &v, sizeof v); }
template <typename T> inline V<T> bc(T x) { return V<T>{} + x; }

// A 3x3 window sliding along row h of one image's 16-channel block: col[i][j] is row h-1+i,
// column x-1+j. Each step loads one new column (3 vectors); the stencils reuse the other six.
template <typename T> struct Win {
  using v16 = V<T>;
  const T* r[3];
  int64_t C, W, x;
  v16 col[3][3];
  void start(const T* base, const T* zero_row, int64_t H, int64_t Wd, int64_t Cc, int64_t h) {
    const T* rows[3];
    for (int i = 0; i < 3; ++i) {
      const int64_t hh = h - 1 + i;
      rows[i] = (hh >= 0 && hh < H) ? base + hh * Wd * Cc : zero_row;
    }
    start_rows(rows[0], rows[1], rows[2], Wd, Cc);
  }
  // rows h-1, h, h+1 given directly; pixels `stride` apart
  void start_rows(const T* r0, const T* r1, const T* r2, int64_t Wd, int64_t stride) {
    C = stride; W = Wd; x = 0;
    r[0] = r0; r[1] = r1; r[2] = r2;
    for (int i = 0; i < 3; ++i) {
      col[i][0] = bc<T>(0);
      col[i][1] = ld(r[i]);
      col[i][2] = W > 1 ? ld(r[i] + C) : bc<T>(0);
    }
  }
  // one more row, `ahead` (null: none), to prefetch along the window: a channel block's loads are
  // strided (one cache line per pixel), which the hardware prefetchers follow too late
  const T* ahead = nullptr;
  void next() {
    ++x;
    if (ahead) __builtin_prefetch(ahead + (x + 1) * C);
    for (int i = 0; i < 3; ++i) {
      col[i][0] = col[i][1];
      col[i][1] = col[i][2];
      col[i][2] = x + 1 < W ? ld(r[i] + (x + 1) * C) : bc<T>(0);
    }
  }
  v16 apply(const v16* k) const {  // sum over taps t = 3 i + j of k[t] * col[i][j]
    v16 a = k[0] * col[0][0];
    a += k[1] * col[0][1]; a += k[2] * col[0][2]; a += k[3] * col[1][0]; a += k[4] * col[1][1];
    a += k[5] * col[1][2]; a += k[6] * col[2][0]; a += k[7] * col[2][1]; a += k[8] * col[2][2];
    return a;
  }
  // The taps' gradient of a stencil: acc[t] += m * (this window at minus tap t's offset), m the centre
  // of the other map. Summed over a plane (both maps zero outside) it equals the correlation of this
  // map's centre with the other map at tap t's offset, with one window live instead of two: the
  // backward passes' windows on y or s (9 more registers) spilled to the stack (measured: those
  // passes 5-14 % faster without them).
  void correlate_flipped(v16 m, v16* acc) const {
    acc[0] += m * col[2][2]; acc[1] += m * col[2][1]; acc[2] += m * col[2][0];
    acc[3] += m * col[1][2]; acc[4] += m * col[1][1]; acc[5] += m * col[1][0];
    acc[6] += m * col[0][2]; acc[7] += m * col[0][1]; acc[8] += m * col[0][0];
  }
};

// Batch statistics from per-image sums of d = x - k and d^2, k the image's first value of x (per
// channel): the shift keeps float sums accurate for maps whose mean is large against their spread,
// where var = E[x^2] - E[x]^2 would cancel. Per image: mean_b = k + S1 / P, m2_b = S2 - S1^2 / P;
// over the batch (Chan et al.), in double: mean = mean of mean_b, var = (sum m2_b + P sum
// (mean_b - mean)^2) / (B P).
struct BatchMoments {
  int64_t B, C, P;
  std::vector<double> mean_b, m2_b;  // [B, C]
  BatchMoments(int64_t b, int64_t c, int64_t p) : B(b), C(c), P(p), mean_b(b * c), m2_b(b * c) {}
  void put(int64_t b, int64_t c, double k, double s1, double s2) {
    mean_b[b * C + c] = k + s1 / P;
    m2_b[b * C + c] = std::max(s2 - s1 * s1 / P, 0.0);
  }
  void channel(int64_t c, double& mean, double& var) const {
    mean = 0;
    for (int64_t b = 0; b < B; ++b) mean += mean_b[b * C + c];
    mean /= B;
    double m2 = 0;
    for (int64_t b = 0; b < B; ++b) {
      const double d = mean_b[b * C + c] - mean;
      m2 += m2_b[b * C + c] + P * d * d;
    }
    var = m2 / (double(B) * P);
  }
};

// The work: image b's pixels [begin, end) for item i.
struct Items {
  int64_t B, C, P, chunk, per_image;
  Items(int64_t b, int64_t c, int64_t p) : B(b), C(c), P(p) {
    chunk = std::max<int64_t>(1, std::min<int64_t>(P, 16384 / C));
    per_image = (P + chunk - 1) / chunk;
  }
  int64_t count() const { return B * per_image; }
  int64_t image(int64_t i) const { return i / per_image; }
  int64_t begin(int64_t i) const { return (i % per_image) * chunk; }
  int64_t end(int64_t i) const { return std::min(P, begin(i) + chunk); }
};

// Per-image sums of [k, C] values, [B, k, C], in double; `batch` sums them over the images in order.
struct ImageSums {
  int64_t B, k, C;
  std::vector<double> s;
  ImageSums(int64_t b, int64_t rows, int64_t c) : B(b), k(rows), C(c), s(b * rows * c, 0.0) {}
  double& at(int64_t b, int64_t row, int64_t c) { return s[(b * k + row) * C + c]; }
  double at(int64_t b, int64_t row, int64_t c) const { return s[(b * k + row) * C + c]; }
  double batch(int64_t row, int64_t c) const {
    double t = 0;
    for (int64_t b = 0; b < B; ++b) t += s[(b * k + row) * C + c];
    return t;
  }
};

// Per-item sums of [k, C] values (in the map's type), then per image in item order.
struct Sums {
  const Items& it;
  int64_t k;
  std::vector<double> part;
  Sums(const Items& items, int64_t rows) : it(items), k(rows), part(items.count() * rows * items.C) {}
  template <typename T> void put(int64_t i, const std::vector<T>& local) {
    std::copy(local.begin(), local.end(), part.begin() + i * k * it.C);
  }
  ImageSums images() const {
    ImageSums out(it.B, k, it.C);
    for (int64_t i = 0; i < it.count(); ++i)
      for (int64_t r = 0; r < k * it.C; ++r) out.s[it.image(i) * k * it.C + r] += part[i * k * it.C + r];
    return out;
  }
};

template <typename T> inline void add(std::vector<T>& acc, int64_t at, V<T> v) {
  st(acc.data() + at, ld(acc.data() + at) + v);
}

}  // namespace lanes
