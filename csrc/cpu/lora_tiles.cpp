// Register-blocked row kernels of the CPU LoRA ops; contracts in lora_tiles.h.
//
// dot_rows keeps an MR x NR block of dot products in vector accumulators (lanes along k) and reduces
// each once at the end; axpy_rows keeps an MR x (NC vectors) block of outputs and streams the rank
// dimension through it, so y is read once and the output written once. bf16 / fp16 are widened in
// registers: no fp32 copies of the inputs. Loaded vectors pass through opaque() so that each load is
// one instruction, not one memory operand per fma that uses it.
#include "vec_capability.h"

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include "lora_tiles.h"
#include "vec_opaque.h"

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

namespace mint::lora_tiles {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();
constexpr bool kWide = W >= 16;  // 32 vector registers (AVX-512) instead of 16
// dots: MR x NR accumulators + NR weight vectors + 1 row vector (29 / 13 registers). Measured on AVX-512
// (same loop, aligned data in L1 or L2): 6 x 4 ~133, 8 x 3 ~125, 4 x 4 ~127 GFLOP/s per core.
constexpr int kDotRows = kWide ? 6 : 2, kDotCols = 4;
constexpr int kAxpyRows = kWide ? 6 : 4, kAxpyVecs = kWide ? 4 : 2;  // 24 / 8 accumulators

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

// acc[i][j] = sum_p x[i, p] * w[j, p] for an MR x NR block, over p in [p0, p1) of k (p0 a multiple of W).
// Lane l of acc[i][j] sums the p = l (mod W) in increasing p, so a k range split at multiples of W gives
// the same bits as one pass. partial: null for one pass over all of k; else the block's MR * NR vectors
// carried between ranges (read unless p0 == 0, written unless p1 == k). At p1 == k, sums[i * NR + j]
// gets the reduced values.
// Ahead: prefetch each weight row ~2 KB ahead (weights streamed from memory rather than reused from L2; on
// L2-resident weights the extra instructions cost ~5%).
template <int MR, int NR, bool Ahead, typename T>
C10_ALWAYS_INLINE void dot_block(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t p0, int64_t p1,
                                 int64_t k, Vec* partial, float* sums) {
  Vec acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = partial != nullptr && p0 > 0 ? partial[i * NR + j] : Vec(0.f);
  }
  int64_t p = p0;
  // the NR weight vectors stay in registers while each row's vector is loaded once and used NR times
  for (; p + W <= p1; p += W) {
    Vec wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      if constexpr (Ahead) __builtin_prefetch(w + j * ldw + p + 2048 / static_cast<int64_t>(sizeof(T)));
      wv[j] = opaque(Io<T>::load(w + j * ldw + p));
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec xv = opaque(Io<T>::load(x + i * ldx + p));
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = at::vec::fmadd(xv, wv[j], acc[i][j]);
    }
  }
  if (p < p1) {  // masked tail (p1 == k): missing lanes load as 0
    const int64_t n = p1 - p;
    Vec wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = Io<T>::load(w + j * ldw + p, n);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec xv = Io<T>::load(x + i * ldx + p, n);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = at::vec::fmadd(xv, wv[j], acc[i][j]);
    }
  }
  if (p1 < k) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) partial[i * NR + j] = acc[i][j];
    }
    return;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      sums[i * NR + j] = at::vec::vec_reduce_all<float>([](Vec a, Vec b) { return a + b; }, acc[i][j]);
    }
  }
}

#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
constexpr bool kBf16Pairs = true;

C10_ALWAYS_INLINE __m512bh load_pairs(const c10::BFloat16* p, __mmask32 mask) {
  return (__m512bh)_mm512_maskz_loadu_epi16(mask, p);
}

// dot_block for bf16 with the CPU's bf16 pair dot product (vdpbf16ps: 32 products per instruction, summed
// into 16 fp32 lanes; bf16 products are exact in fp32).
template <int MR, int NR>
C10_ALWAYS_INLINE void dot_block_pairs(const c10::BFloat16* x, int64_t ldx, const c10::BFloat16* w, int64_t ldw,
                                       int64_t k, float* sums) {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < k; p += 32) {
    const __mmask32 mask = k - p >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((uint64_t{1} << (k - p)) - 1);
    __m512bh wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = load_pairs(w + j * ldw + p, mask);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512bh xv = load_pairs(x + i * ldx + p, mask);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) sums[i * NR + j] = _mm512_reduce_add_ps(acc[i][j]);
  }
}
#else
constexpr bool kBf16Pairs = false;
#endif

// dot_block over [p0, p1) of k; bf16 on builds with pair dot instructions takes them (one range only).
template <int MR, int NR, bool Ahead, typename T>
C10_ALWAYS_INLINE void dot_any(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t p0, int64_t p1, int64_t k,
                               Vec* partial, float* sums) {
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    dot_block_pairs<MR, NR>(x, ldx, w, ldw, k, sums);
    return;
  }
#endif
  dot_block<MR, NR, Ahead>(x, ldx, w, ldw, p0, p1, k, partial, sums);
}

// One block of MR rows over [p0, p1) of k: all n dot columns (partial: MR * n vectors carried between
// ranges, or null for one range). At p1 == k the sums are rounded once into out (zeros up to n_zero).
template <int MR, bool Ahead, typename T>
void dot_row_block(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t n, int64_t p0, int64_t p1, int64_t k,
                   Vec* partial, float alpha, T* out, int64_t ldo, int64_t n_zero) {
  float sums[MR * kDotCols];
  const auto part = [&](int64_t j) { return partial == nullptr ? nullptr : partial + j * MR; };
  const bool last = p1 == k;
  int64_t j = 0;
  for (; j + kDotCols <= n; j += kDotCols) {
    dot_any<MR, kDotCols, Ahead>(x, ldx, w + j * ldw, ldw, p0, p1, k, part(j), sums);
    if (!last) continue;
    for (int i = 0; i < MR; ++i) {
      for (int c = 0; c < kDotCols; ++c) out[i * ldo + j + c] = static_cast<T>(alpha * sums[i * kDotCols + c]);
    }
  }
  for (; j < n; ++j) {  // the last n % kDotCols columns one at a time
    dot_any<MR, 1, Ahead>(x, ldx, w + j * ldw, ldw, p0, p1, k, part(j), sums);
    if (!last) continue;
    for (int i = 0; i < MR; ++i) out[i * ldo + j] = static_cast<T>(alpha * sums[i]);
  }
  if (!last) return;
  for (int i = 0; i < MR; ++i) {
    std::fill(out + i * ldo + n, out + i * ldo + n_zero, static_cast<T>(0.f));
  }
}

// Prefetches weight row j's NC vectors of the column block after the one at c (rows 2-44 KB apart are
// separate streams that the hardware prefetchers pick up late).
template <int NC, typename T>
C10_ALWAYS_INLINE void prefetch_next_block(const T* w, int64_t ldw, int64_t j, int64_t c) {
  constexpr int64_t kLines = NC * W * static_cast<int64_t>(sizeof(T)) / 64;
  const char* next = reinterpret_cast<const char*>(w + j * ldw + c + NC * W);
#pragma GCC unroll 8
  for (int64_t l = 0; l < kLines; ++l) __builtin_prefetch(next + 64 * l);
}

// out[i, c..c + NC*W) (or the first `tail` elements of one vector when NC == 1 and tail < W)
// = base + sum_j hs[i * ldhs + j] * w[j, ...], hs already scaled. Ahead: also prefetch the next column
// block's weights, one rank row per step.
template <int MR, int NC, bool Ahead = false, typename T>
C10_ALWAYS_INLINE void axpy_block(const T* base, int64_t ldb, const float* hs, int64_t ldhs, int64_t r,
                                  const T* w, int64_t ldw, T* out, int64_t ldo, int64_t c, int64_t tail) {
  Vec acc[MR][NC];
  const bool full = tail == W;
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NC; ++v) {
      if (base == nullptr) {
        acc[i][v] = Vec(0.f);
      } else {
        const T* src = base + i * ldb + c + v * W;
        acc[i][v] = full ? Io<T>::load(src) : Io<T>::load(src, tail);
      }
    }
  }
#pragma GCC unroll 1
  for (int64_t j = 0; j < r; ++j) {
    if constexpr (Ahead) prefetch_next_block<NC>(w, ldw, j, c);
    Vec wv[NC];
#pragma GCC unroll 8
    for (int v = 0; v < NC; ++v) {
      const T* src = w + j * ldw + c + v * W;
      wv[v] = opaque(full ? Io<T>::load(src) : Io<T>::load(src, tail));
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec hv(hs[i * ldhs + j]);
#pragma GCC unroll 8
      for (int v = 0; v < NC; ++v) acc[i][v] = at::vec::fmadd(hv, wv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NC; ++v) Io<T>::store(out + i * ldo + c + v * W, acc[i][v], tail);
  }
}

// All m rows of out over one column block [c, c + NC * W) (or the first `tail` columns of one vector),
// kAxpyRows rows at a time and the last m % kAxpyRows in one block of their own size.
// ahead: the first row group prefetches the next column block's weights.
template <int NC, typename T>
void axpy_column_block(const T* base, int64_t ldb, const float* hs, int64_t ldhs, const T* w, int64_t ldw,
                       int64_t m, int64_t r, T* out, int64_t ldo, int64_t c, int64_t tail, bool ahead = false) {
  const auto rows = [&](int64_t i0) { return base == nullptr ? nullptr : base + i0 * ldb; };
  int64_t i = 0;
  if (ahead && m >= kAxpyRows) {  // the first row group prefetches the next block's weights as it goes
    axpy_block<kAxpyRows, NC, true>(rows(0), ldb, hs, ldhs, r, w, ldw, out, ldo, c, tail);
    i = kAxpyRows;
  } else if (ahead) {  // fewer rows than one group (memory-bound): all of them up front
    for (int64_t j = 0; j < r; ++j) prefetch_next_block<NC>(w, ldw, j, c);
  }
  for (; i + kAxpyRows <= m; i += kAxpyRows) {
    axpy_block<kAxpyRows, NC>(rows(i), ldb, hs + i * ldhs, ldhs, r, w, ldw, out + i * ldo, ldo, c, tail);
  }
  const float* hi = hs + i * ldhs;
  T* oi = out + i * ldo;
  switch (m - i) {
    case 5: axpy_block<5, NC>(rows(i), ldb, hi, ldhs, r, w, ldw, oi, ldo, c, tail); break;
    case 4: axpy_block<4, NC>(rows(i), ldb, hi, ldhs, r, w, ldw, oi, ldo, c, tail); break;
    case 3: axpy_block<3, NC>(rows(i), ldb, hi, ldhs, r, w, ldw, oi, ldo, c, tail); break;
    case 2: axpy_block<2, NC>(rows(i), ldb, hi, ldhs, r, w, ldw, oi, ldo, c, tail); break;
    case 1: axpy_block<1, NC>(rows(i), ldb, hi, ldhs, r, w, ldw, oi, ldo, c, tail); break;
    default: break;
  }
}

template <typename T>
void axpy_scaled(const T* base, int64_t ldb, const float* hs, int64_t ldhs, const T* w, int64_t ldw, int64_t m,
                 int64_t r, int64_t c0, int64_t c1, T* out, int64_t ldo) {
  // Column blocks outermost: a block's r weight rows (rank 64 x 64 floats: 16 KB) stay in L1 while every row
  // group passes over them. Each element is the same chain of fmas (base, then j = 0..r-1) whatever the
  // blocking, so the results do not depend on it.
  const int64_t step = kAxpyVecs * W;
  int64_t c = c0;
  for (; c + step <= c1; c += step) {
    axpy_column_block<kAxpyVecs>(base, ldb, hs, ldhs, w, ldw, m, r, out, ldo, c, W, c + 2 * step <= c1);
  }
  for (; c < c1; c += W) axpy_column_block<1>(base, ldb, hs, ldhs, w, ldw, m, r, out, ldo, c, std::min(W, c1 - c));
}

#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
// The expand on bf16 pairs: for rank pair q and a block of 32 columns, the packed weights hold
// unpacklo / unpackhi of rows 2q and 2q+1 (per 128-bit lane: columns 8L..8L+3 and 8L+4..8L+7, each as
// (w[2q, c], w[2q+1, c]) pairs), so one vdpbf16ps adds h[i, 2q] w[2q, c] + h[i, 2q+1] w[2q+1, c] into 16
// fp32 lanes. Two permutes per stored block restore column order.
constexpr int kPairRows = 4, kPairBlocks = 2;

C10_ALWAYS_INLINE void store_pairs_block(const c10::BFloat16* base, float alpha, __m512 lo, __m512 hi,
                                         c10::BFloat16* out, int64_t n) {
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const Vec scale(alpha);
  Vec v0 = Vec(_mm512_permutex2var_ps(lo, first, hi)) * scale;
  Vec v1 = Vec(_mm512_permutex2var_ps(lo, second, hi)) * scale;
  using BVec = at::vec::Vectorized<c10::BFloat16>;
  if (base != nullptr) {  // one load and one store of the 32 columns: a masked store followed by a load of the
                          // same cache line's other half stalls (in place, base is out)
    const auto [b0, b1] = at::vec::convert_to_float<c10::BFloat16>(
        n == 32 ? BVec::loadu(base) : BVec::loadu(base, static_cast<int16_t>(n)));
    v0 = v0 + b0;
    v1 = v1 + b1;
  }
  at::vec::convert_from_float<c10::BFloat16>(v0, v1).store(out, static_cast<int>(n));
}

template <int MR, int NB>
C10_ALWAYS_INLINE void axpy_pairs_block(const c10::BFloat16* base, int64_t ldb, const uint32_t* hp, int64_t pairs,
                                        const c10::BFloat16* packed, int64_t block_stride, float alpha,
                                        c10::BFloat16* out, int64_t ldo, int64_t c, int64_t n) {
  __m512 acc[MR][NB][2];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 2
    for (int b = 0; b < NB; ++b) acc[i][b][0] = acc[i][b][1] = _mm512_setzero_ps();
  }
  const c10::BFloat16* wp = packed + (c / 32) * 64;
  for (int64_t q = 0; q < pairs; ++q, wp += block_stride) {
    __m512bh w[NB][2];
#pragma GCC unroll 2
    for (int b = 0; b < NB; ++b) {
      w[b][0] = (__m512bh)_mm512_loadu_si512(wp + b * 64);
      w[b][1] = (__m512bh)_mm512_loadu_si512(wp + b * 64 + 32);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const __m512bh hv = (__m512bh)_mm512_set1_epi32(static_cast<int>(hp[i * pairs + q]));
#pragma GCC unroll 2
      for (int b = 0; b < NB; ++b) {
        acc[i][b][0] = _mm512_dpbf16_ps(acc[i][b][0], hv, w[b][0]);
        acc[i][b][1] = _mm512_dpbf16_ps(acc[i][b][1], hv, w[b][1]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 2
    for (int b = 0; b < NB; ++b) {
      const int64_t col = c + 32 * b;
      store_pairs_block(base == nullptr ? nullptr : base + i * ldb + col, alpha, acc[i][b][0], acc[i][b][1],
                        out + i * ldo + col, std::min<int64_t>(32, n - 32 * b));
    }
  }
}

template <int MR>
void axpy_pairs_row_block(const c10::BFloat16* base, int64_t ldb, const uint32_t* hp, int64_t pairs,
                          const c10::BFloat16* packed, int64_t block_stride, int64_t c0, int64_t c1, float alpha,
                          c10::BFloat16* out, int64_t ldo) {
  int64_t c = c0;
  for (; c + 32 * kPairBlocks <= c1; c += 32 * kPairBlocks) {
    axpy_pairs_block<MR, kPairBlocks>(base, ldb, hp, pairs, packed, block_stride, alpha, out, ldo, c,
                                      32 * kPairBlocks);
  }
  for (; c < c1; c += 32) {
    axpy_pairs_block<MR, 1>(base, ldb, hp, pairs, packed, block_stride, alpha, out, ldo, c, std::min<int64_t>(32, c1 - c));
  }
}
#endif

}  // namespace

template <typename T>
void axpy_rows_f32(const T* base, int64_t ldb, const float* hs, int64_t ldhs, const T* w, int64_t ldw,
                   int64_t m, int64_t r, int64_t c0, int64_t c1, T* out, int64_t ldo) {
  axpy_scaled(base, ldb, hs, ldhs, w, ldw, m, r, c0, c1, out, ldo);
}

// The k range of one pass of dot_rows: all of k while the n weight rows fit in L2 (bf16 on pair dot
// instructions: always), else ranges of ~256 KB of weights, a multiple of the vector width. (Ranges sized
// for L1 instead, ~16 KB of a row group's x, measured no faster: the loop is bound by its load / FMA mix,
// not by where the operands come from.)
template <typename T>
int64_t dot_k_range(int64_t n, int64_t k) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    if (kBf16Pairs) return k;
  }
  const int64_t bytes_per_k = std::max<int64_t>(1, n) * static_cast<int64_t>(sizeof(T));
  if (bytes_per_k * k <= (int64_t{512} << 10)) return k;
  return std::max<int64_t>(4 * W, (int64_t{256} << 10) / bytes_per_k / W * W);
}

// dot_rows over one range of k for every row group.
template <bool Ahead, typename T>
void dot_rows_range(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t m, int64_t n, int64_t p0, int64_t p1,
                    int64_t k, Vec* carry, float alpha, T* out, int64_t ldo, int64_t n_zero) {
  const auto partial = [&](int64_t i) { return carry == nullptr ? nullptr : carry + i * n; };
  int64_t i = 0;
  for (; i + kDotRows <= m; i += kDotRows) {
    dot_row_block<kDotRows, Ahead>(x + i * ldx, ldx, w, ldw, n, p0, p1, k, partial(i), alpha, out + i * ldo, ldo,
                                   n_zero);
  }
  // the last m % kDotRows rows in one block of their own size
  static_assert(kDotRows <= 6, "the tail cases below cover up to 5 rows");
  const T* xi = x + i * ldx;
  T* oi = out + i * ldo;
  Vec* pi = partial(i);
  switch (m - i) {
    case 5: dot_row_block<5, Ahead>(xi, ldx, w, ldw, n, p0, p1, k, pi, alpha, oi, ldo, n_zero); break;
    case 4: dot_row_block<4, Ahead>(xi, ldx, w, ldw, n, p0, p1, k, pi, alpha, oi, ldo, n_zero); break;
    case 3: dot_row_block<3, Ahead>(xi, ldx, w, ldw, n, p0, p1, k, pi, alpha, oi, ldo, n_zero); break;
    case 2: dot_row_block<2, Ahead>(xi, ldx, w, ldw, n, p0, p1, k, pi, alpha, oi, ldo, n_zero); break;
    case 1: dot_row_block<1, Ahead>(xi, ldx, w, ldw, n, p0, p1, k, pi, alpha, oi, ldo, n_zero); break;
    default: break;
  }
}

template <typename T>
void dot_rows(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t m, int64_t n, int64_t k, float alpha,
              T* out, int64_t ldo, int64_t n_zero) {
  // Weights larger than L2 are swept once per range of k for all m rows (each range then reused from L2 by
  // every row group) instead of once per row group, and prefetched as they stream in; partial sums carry
  // the vector accumulators across ranges, so the results are the same bits.
  const int64_t kc = std::max<int64_t>(1, dot_k_range<T>(n, k));
  thread_local std::vector<Vec> carry;
  if (kc < k && carry.size() < static_cast<size_t>(m * n)) carry.resize(static_cast<size_t>(m * n));
  Vec* cp = kc < k ? carry.data() : nullptr;
  int64_t p0 = 0;
  do {  // at least once: k == 0 writes zeros
    const int64_t p1 = std::min(k, p0 + kc);
    if (kc < k) {
      dot_rows_range<true>(x, ldx, w, ldw, m, n, p0, p1, k, cp, alpha, out, ldo, n_zero);
    } else {
      dot_rows_range<false>(x, ldx, w, ldw, m, n, p0, p1, k, cp, alpha, out, ldo, n_zero);
    }
    p0 = p1;
  } while (p0 < k);
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

int64_t packed_pairs_elems(int64_t r, int64_t cols) {
  return kBf16Pairs ? ((r + 1) / 2) * ((cols + 31) / 32) * 64 : 0;
}

void pack_pairs(const c10::BFloat16* w, int64_t ldw, int64_t r, int64_t cols, c10::BFloat16* packed) {
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
  const int64_t blocks = (cols + 31) / 32;
  for (int64_t q = 0; q < (r + 1) / 2; ++q) {
    const c10::BFloat16* r0 = w + 2 * q * ldw;
    const c10::BFloat16* r1 = 2 * q + 1 < r ? r0 + ldw : nullptr;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t n = std::min<int64_t>(32, cols - 32 * b);
      const __mmask32 mask = n == 32 ? ~__mmask32{0} : static_cast<__mmask32>((uint64_t{1} << n) - 1);
      const __m512i v0 = _mm512_maskz_loadu_epi16(mask, r0 + 32 * b);
      const __m512i v1 = r1 == nullptr ? _mm512_setzero_si512() : _mm512_maskz_loadu_epi16(mask, r1 + 32 * b);
      c10::BFloat16* dst = packed + (q * blocks + b) * 64;
      _mm512_storeu_si512(dst, _mm512_unpacklo_epi16(v0, v1));
      _mm512_storeu_si512(dst + 32, _mm512_unpackhi_epi16(v0, v1));
    }
  }
#else
  (void)w, (void)ldw, (void)r, (void)cols, (void)packed;
  TORCH_CHECK(false, "mint: pack_pairs needs a build with AVX512-BF16");
#endif
}

void axpy_rows_pairs(const c10::BFloat16* base, int64_t ldb, const c10::BFloat16* h, int64_t ldh,
                     const c10::BFloat16* packed, int64_t m, int64_t r, int64_t cols, int64_t c0, int64_t c1,
                     float alpha, c10::BFloat16* out, int64_t ldo) {
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
  TORCH_CHECK(c0 % 32 == 0, "mint: axpy_rows_pairs needs c0 on a 32-column boundary");
  const int64_t pairs = (r + 1) / 2, block_stride = ((cols + 31) / 32) * 64;
  // (h[i, 2q], h[i, 2q + 1]) as one 32-bit broadcast; the partner of an odd rank's last column is 0 (its
  // packed weights are 0 too, but h beyond the rank need not be finite).
  std::vector<uint32_t> hp(static_cast<size_t>(m * pairs));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t q = 0; q < pairs; ++q) {
      const uint32_t lo = h[i * ldh + 2 * q].x;
      const uint32_t hi = 2 * q + 1 < r ? h[i * ldh + 2 * q + 1].x : 0;
      hp[i * pairs + q] = lo | (hi << 16);
    }
  }
  const auto rows = [&](int64_t i0) { return base == nullptr ? nullptr : base + i0 * ldb; };
  // column chunks of ~128 KB of packed weights, as in axpy_scaled (whole 64-column blocks: same results)
  const int64_t step = 32 * kPairBlocks;
  const int64_t chunk = std::max(step, (int64_t{1} << 17) / std::max<int64_t>(1, 2 * r) / step * step);
  for (int64_t cc = c0; cc < c1; cc += chunk) {
    const int64_t ce = std::min(c1, cc + chunk);
    int64_t i = 0;
    for (; i + kPairRows <= m; i += kPairRows) {
      axpy_pairs_row_block<kPairRows>(rows(i), ldb, hp.data() + i * pairs, pairs, packed, block_stride, cc, ce, alpha,
                                      out + i * ldo, ldo);
    }
    for (; i < m; ++i) {
      axpy_pairs_row_block<1>(rows(i), ldb, hp.data() + i * pairs, pairs, packed, block_stride, cc, ce, alpha,
                              out + i * ldo, ldo);
    }
  }
#else
  (void)base, (void)ldb, (void)h, (void)ldh, (void)packed, (void)m, (void)r, (void)cols, (void)c0, (void)c1,
      (void)alpha, (void)out, (void)ldo;
  TORCH_CHECK(false, "mint: axpy_rows_pairs needs a build with AVX512-BF16");
#endif
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
