// Register-blocked row kernels of the CPU LoRA ops; contracts in lora_tiles.h.
//
// dot_rows keeps an MR x NR block of dot products in vector accumulators (lanes along k) and reduces
// each once at the end; axpy_rows keeps an MR x (NC vectors) block of outputs and streams the rank
// dimension through it, so y is read once and the output written once. bf16 / fp16 are widened in
// registers: no fp32 copies of the inputs.
#include "vec_capability.h"

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "lora_tiles.h"

#include <algorithm>
#include <tuple>
#include <vector>

namespace mint::lora_tiles {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();
constexpr bool kWide = W >= 16;  // 32 vector registers (AVX-512) instead of 16
constexpr int kDotRows = kWide ? 4 : 2, kDotCols = 4;
constexpr int kAxpyRows = 4, kAxpyVecs = kWide ? 4 : 2;

template <typename T>
struct Io {  // bf16 / fp16: widened to fp32 on load, rounded to nearest even on store
  static C10_ALWAYS_INLINE Vec load(const T* p) {
    Vec v;
    at::vec::load_to_float(p, v);
    return v;
  }
  static C10_ALWAYS_INLINE Vec load(const T* p, int64_t n) {
    return std::get<0>(at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(p, static_cast<int16_t>(n))));
  }
  static C10_ALWAYS_INLINE void store(T* p, const Vec& v, int64_t n = W) {
    at::vec::convert_from_float<T>(v, v).store(p, static_cast<int>(n));
  }
};

template <>
struct Io<float> {
  static C10_ALWAYS_INLINE Vec load(const float* p) { return Vec::loadu(p); }
  static C10_ALWAYS_INLINE Vec load(const float* p, int64_t n) { return Vec::loadu(p, n); }
  static C10_ALWAYS_INLINE void store(float* p, const Vec& v, int64_t n = W) { v.store(p, n); }
};

// acc[i][j] = sum_p x[i, p] * w[j, p] for an MR x NR block; sums[i * NR + j] gets the reduced values.
template <int MR, int NR, typename T>
C10_ALWAYS_INLINE void dot_block(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t k, float* sums) {
  Vec acc[MR][NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = Vec(0.f);
  }
  int64_t p = 0;
  for (; p + W <= k; p += W) {
    Vec xv[MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) xv[i] = Io<T>::load(x + i * ldx + p);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const Vec wv = Io<T>::load(w + j * ldw + p);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) acc[i][j] = at::vec::fmadd(xv[i], wv, acc[i][j]);
    }
  }
  if (p < k) {  // masked tail: missing lanes load as 0
    const int64_t n = k - p;
    Vec xv[MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) xv[i] = Io<T>::load(x + i * ldx + p, n);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const Vec wv = Io<T>::load(w + j * ldw + p, n);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) acc[i][j] = at::vec::fmadd(xv[i], wv, acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      sums[i * NR + j] = at::vec::vec_reduce_all<float>([](Vec a, Vec b) { return a + b; }, acc[i][j]);
    }
  }
}

// One block of MR rows: all n dot columns, rounded once into out (zeros up to n_zero).
template <int MR, typename T>
void dot_row_block(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t n, int64_t k, float alpha,
                   T* out, int64_t ldo, int64_t n_zero) {
  float sums[MR * kDotCols];
  int64_t j = 0;
  for (; j + kDotCols <= n; j += kDotCols) {
    dot_block<MR, kDotCols>(x, ldx, w + j * ldw, ldw, k, sums);
    for (int i = 0; i < MR; ++i) {
      for (int c = 0; c < kDotCols; ++c) out[i * ldo + j + c] = static_cast<T>(alpha * sums[i * kDotCols + c]);
    }
  }
  for (; j < n; ++j) {
    dot_block<MR, 1>(x, ldx, w + j * ldw, ldw, k, sums);
    for (int i = 0; i < MR; ++i) out[i * ldo + j] = static_cast<T>(alpha * sums[i]);
  }
  for (int i = 0; i < MR; ++i) {
    std::fill(out + i * ldo + n, out + i * ldo + n_zero, static_cast<T>(0.f));
  }
}

// out[i, c..c + NC*W) (or the first `tail` elements of one vector when NC == 1 and tail < W)
// = base + sum_j hs[i * ldhs + j] * w[j, ...], hs already scaled.
template <int MR, int NC, typename T>
C10_ALWAYS_INLINE void axpy_block(const T* base, int64_t ldb, const float* hs, int64_t ldhs, int64_t r,
                                  const T* w, int64_t ldw, T* out, int64_t ldo, int64_t c, int64_t tail) {
  Vec acc[MR][NC];
  const bool full = tail == W;
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NC; ++v) {
      if (base == nullptr) {
        acc[i][v] = Vec(0.f);
      } else {
        const T* src = base + i * ldb + c + v * W;
        acc[i][v] = full ? Io<T>::load(src) : Io<T>::load(src, tail);
      }
    }
  }
  for (int64_t j = 0; j < r; ++j) {
    Vec wv[NC];
#pragma GCC unroll 4
    for (int v = 0; v < NC; ++v) {
      const T* src = w + j * ldw + c + v * W;
      wv[v] = full ? Io<T>::load(src) : Io<T>::load(src, tail);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const Vec hv(hs[i * ldhs + j]);
#pragma GCC unroll 4
      for (int v = 0; v < NC; ++v) acc[i][v] = at::vec::fmadd(hv, wv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NC; ++v) Io<T>::store(out + i * ldo + c + v * W, acc[i][v], tail);
  }
}

// MR rows of out over columns [c0, c1), from MR rows of pre-scaled fp32 coefficients hs (row stride ldhs).
template <int MR, typename T>
void axpy_row_block(const T* base, int64_t ldb, const float* hs, int64_t ldhs, const T* w, int64_t ldw,
                    int64_t r, int64_t c0, int64_t c1, T* out, int64_t ldo) {
  int64_t c = c0;
  for (; c + kAxpyVecs * W <= c1; c += kAxpyVecs * W) {
    axpy_block<MR, kAxpyVecs>(base, ldb, hs, ldhs, r, w, ldw, out, ldo, c, W);
  }
  for (; c < c1; c += W) axpy_block<MR, 1>(base, ldb, hs, ldhs, r, w, ldw, out, ldo, c, std::min(W, c1 - c));
}

template <typename T>
void axpy_scaled(const T* base, int64_t ldb, const float* hs, int64_t ldhs, const T* w, int64_t ldw, int64_t m,
                 int64_t r, int64_t c0, int64_t c1, T* out, int64_t ldo) {
  const auto rows = [&](int64_t i0) { return base == nullptr ? nullptr : base + i0 * ldb; };
  int64_t i = 0;
  for (; i + kAxpyRows <= m; i += kAxpyRows) {
    axpy_row_block<kAxpyRows>(rows(i), ldb, hs + i * ldhs, ldhs, w, ldw, r, c0, c1, out + i * ldo, ldo);
  }
  for (; i < m; ++i) axpy_row_block<1>(rows(i), ldb, hs + i * ldhs, ldhs, w, ldw, r, c0, c1, out + i * ldo, ldo);
}

}  // namespace

template <typename T>
void axpy_rows_f32(const T* base, int64_t ldb, const float* hs, int64_t ldhs, const T* w, int64_t ldw,
                   int64_t m, int64_t r, int64_t c0, int64_t c1, T* out, int64_t ldo) {
  axpy_scaled(base, ldb, hs, ldhs, w, ldw, m, r, c0, c1, out, ldo);
}

template <typename T>
void dot_rows(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t m, int64_t n, int64_t k, float alpha,
              T* out, int64_t ldo, int64_t n_zero) {
  int64_t i = 0;
  for (; i + kDotRows <= m; i += kDotRows) {
    dot_row_block<kDotRows>(x + i * ldx, ldx, w, ldw, n, k, alpha, out + i * ldo, ldo, n_zero);
  }
  for (; i < m; ++i) dot_row_block<1>(x + i * ldx, ldx, w, ldw, n, k, alpha, out + i * ldo, ldo, n_zero);
}

template <typename T>
void axpy_rows(const T* base, int64_t ldb, const T* h, int64_t ldh, const T* w, int64_t ldw, int64_t m,
               int64_t r, int64_t c0, int64_t c1, float alpha, T* out, int64_t ldo) {
  // h scaled once into fp32 (alpha * h matches the reference's scale * (h @ B) up to fp32 rounding).
  constexpr int64_t kStackFloats = 16 * 256;
  float stack[kStackFloats];
  std::vector<float> heap;
  float* hs = stack;
  if (m * r > kStackFloats) {
    heap.resize(m * r);
    hs = heap.data();
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < r; ++j) hs[i * r + j] = alpha * static_cast<float>(h[i * ldh + j]);
  }
  axpy_scaled(base, ldb, hs, r, w, ldw, m, r, c0, c1, out, ldo);
}

int64_t vector_width() { return W; }

#define MINT_LORA_TILES_INSTANTIATE(T)                                                                      \
  template void dot_rows<T>(const T*, int64_t, const T*, int64_t, int64_t, int64_t, int64_t, float, T*,   \
                            int64_t, int64_t);                                                             \
  template void axpy_rows<T>(const T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t,    \
                             int64_t, int64_t, float, T*, int64_t);                                        \
  template void axpy_rows_f32<T>(const T*, int64_t, const float*, int64_t, const T*, int64_t, int64_t,     \
                                 int64_t, int64_t, int64_t, T*, int64_t);
MINT_LORA_TILES_INSTANTIATE(float)
MINT_LORA_TILES_INSTANTIATE(c10::BFloat16)
MINT_LORA_TILES_INSTANTIATE(c10::Half)

}  // namespace mint::lora_tiles
