// Vectorised row passes for the CPU sampler (csrc/cpu/sampling.cpp): AVX2 + FMA when the compiler
// targets them, otherwise scalar loops with the same results.
//
// The weight of a token is w = float(exp(double(z))) with z = float((double(l) - max) * inv_t), the
// formula of the CUDA kernel (csrc/cuda/kernels/sampling.cu): a double exp rounded once to float is
// the correctly rounded exp of z (bar double-rounding ties), so the CPU and CUDA ops draw the same
// token. The AVX2 exp below is a double-precision evaluation (relative error < 1e-12 before the
// rounding to float), so it gives the scalar result except for z within 1e-12 of a float midpoint.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MINT_SAMPLING_AVX2 1
#endif

namespace mint {
namespace sampling {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int64_t kLanes = 8;   // floats per vector step
constexpr int64_t kBlock = 64;  // elements per block of the draw's prefix sums (multiple of kLanes)
// Top-p histogram: bucket = floor(-z * kBucketScale), clamped to kBuckets - 1; one bucket spans a
// weight ratio of exp(1/16) ~ 1.06, and the last one holds every z < -64 (w < 2e-28).
constexpr int kBuckets = 1024;
constexpr float kBucketScale = 16.f;

// Scalar reference of a token's weight and bucket (also the vector tails' semantics).
inline float z_of(float l, double max, double inv_t) {
  return static_cast<float>((static_cast<double>(l) - max) * inv_t);
}
inline float weight_of_z(float z) { return static_cast<float>(std::exp(static_cast<double>(z))); }
inline int bucket_of_z(float z) {
  const float d = -z * kBucketScale;  // >= 0, or +inf
  return d >= static_cast<float>(kBuckets - 1) ? kBuckets - 1 : static_cast<int>(d);
}

#ifdef MINT_SAMPLING_AVX2
// exp of 4 doubles in [-inf, 0]: 2^n * e^r with |r| <= ln2 / 2, e^r by its degree-11 Taylor series
// (truncation error < 2e-15 relative); inputs below -120 give exp(-120), which rounds to 0 as a float.
inline __m256d exp4d(__m256d x) {
  x = _mm256_max_pd(x, _mm256_set1_pd(-120.0));
  const __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(0.693147180369123816490), x);  // ln2 high part
  r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.90821492927058770002e-10), r);       // ln2 low part
  __m256d p = _mm256_set1_pd(1.0 / 39916800.0);
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 3628800.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 362880.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 40320.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 5040.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 720.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 120.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 24.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 6.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(0.5));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  // 2^n for n in [-174, 0]: the exponent field (n + 1023) << 52.
  const __m128i ni = _mm256_cvtpd_epi32(n);
  const __m256i e = _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(ni), _mm256_set1_epi64x(1023)), 52);
  return _mm256_mul_pd(p, _mm256_castsi256_pd(e));
}

// z = float((double(l) - max) * inv_t) for 8 floats.
inline __m256 z8(__m256 l, __m256d max, __m256d inv_t) {
  const __m256d lo = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(l)), max), inv_t);
  const __m256d hi = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(l, 1)), max), inv_t);
  return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
}

// w = float(exp(double(z))) for 8 floats; also returns the weights as two double vectors.
inline __m256 w8(__m256 z, __m256d& lo, __m256d& hi) {
  lo = _mm256_cvtps_pd(_mm256_cvtpd_ps(exp4d(_mm256_cvtps_pd(_mm256_castps256_ps128(z)))));
  hi = _mm256_cvtps_pd(_mm256_cvtpd_ps(exp4d(_mm256_cvtps_pd(_mm256_extractf128_ps(z, 1)))));
  return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
}

inline __m256i bucket8(__m256 z) {
  const __m256 d = _mm256_min_ps(_mm256_mul_ps(z, _mm256_set1_ps(-kBucketScale)),
                                 _mm256_set1_ps(static_cast<float>(kBuckets - 1)));
  return _mm256_cvttps_epi32(d);
}

inline double hsum4d(__m256d v) {
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
#endif

// The row's maximum, or NaN when the row holds a NaN.
inline float row_max(const float* x, int64_t n) {
  int64_t j = 0;
  float best = -kInf;
  bool nan = false;
#ifdef MINT_SAMPLING_AVX2
  __m256 m0 = _mm256_set1_ps(-kInf), m1 = m0, m2 = m0, m3 = m0;
  __m256 bad = _mm256_setzero_ps();
  for (; j + 4 * kLanes <= n; j += 4 * kLanes) {
    const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + 8);
    const __m256 c = _mm256_loadu_ps(x + j + 16), d = _mm256_loadu_ps(x + j + 24);
    m0 = _mm256_max_ps(m0, a);
    m1 = _mm256_max_ps(m1, b);
    m2 = _mm256_max_ps(m2, c);
    m3 = _mm256_max_ps(m3, d);
    bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q), _mm256_cmp_ps(c, d, _CMP_UNORD_Q)));
  }
  best = hmax8(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
  nan = _mm256_movemask_ps(bad) != 0;
#endif
  for (; j < n; ++j) {
    nan |= std::isnan(x[j]);
    best = std::max(best, x[j]);
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : best;
}

// The lowest index holding `value` (which the row contains).
inline int64_t first_index_of(const float* x, int64_t n, float value) {
  int64_t j = 0;
#ifdef MINT_SAMPLING_AVX2
  const __m256 v = _mm256_set1_ps(value);
  for (; j + kLanes <= n; j += kLanes) {
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), v, _CMP_EQ_OQ));
    if (m) return j + __builtin_ctz(static_cast<unsigned>(m));
  }
#endif
  for (; j < n; ++j) {
    if (x[j] == value) return j;
  }
  return -1;
}

// Weights pass: w[j] for the whole row, the double sum of each kBlock-element block in blocks[], and,
// when hist is given, each weight added to hist[bucket(z)]. Returns the sum of the block sums.
// A partial last block is run through the vector code padded with -inf (weight 0).
inline double weights_pass(const float* x, int64_t n, double max, double inv_t, float* w, double* blocks,
                           double* hist) {
  double total = 0.0;
  for (int64_t start = 0, blk = 0; start < n; start += kBlock, ++blk) {
    const int64_t len = std::min(kBlock, n - start);
    double sum = 0.0;
#ifdef MINT_SAMPLING_AVX2
    alignas(32) float xin[kBlock];
    alignas(32) float wout[kBlock];
    const float* src = x + start;
    float* dst = w + start;
    if (len < kBlock) {
      std::fill(xin, xin + kBlock, -kInf);
      std::memcpy(xin, src, len * sizeof(float));
      src = xin;
      dst = wout;
    }
    const __m256d vmax = _mm256_set1_pd(max), vinv = _mm256_set1_pd(inv_t);
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    for (int64_t i = 0; i < kBlock; i += kLanes) {
      const __m256 z = z8(_mm256_loadu_ps(src + i), vmax, vinv);
      __m256d lo, hi;
      _mm256_storeu_ps(dst + i, w8(z, lo, hi));
      acc0 = _mm256_add_pd(acc0, lo);
      acc1 = _mm256_add_pd(acc1, hi);
      if (hist != nullptr) {
        alignas(32) int32_t b[kLanes];
        alignas(32) double wd[kLanes];
        _mm256_store_si256(reinterpret_cast<__m256i*>(b), bucket8(z));
        _mm256_store_pd(wd, lo);
        _mm256_store_pd(wd + 4, hi);
        for (int q = 0; q < kLanes; ++q) hist[b[q]] += wd[q];
      }
    }
    sum = hsum4d(_mm256_add_pd(acc0, acc1));
    if (len < kBlock) std::memcpy(w + start, wout, len * sizeof(float));
#else
    for (int64_t i = 0; i < len; ++i) {
      const float z = z_of(x[start + i], max, inv_t);
      const float wi = weight_of_z(z);
      w[start + i] = wi;
      sum += wi;
      if (hist != nullptr) hist[bucket_of_z(z)] += wi;
    }
#endif
    blocks[blk] = sum;
    total += sum;
  }
  return total;
}

// Appends to out the indices j (ascending) whose bucket(z) equals `bucket`.
inline void collect_bucket(const float* x, int64_t n, double max, double inv_t, int bucket,
                           std::vector<int64_t>& out) {
  int64_t j = 0;
#ifdef MINT_SAMPLING_AVX2
  const __m256d vmax = _mm256_set1_pd(max), vinv = _mm256_set1_pd(inv_t);
  const __m256i want = _mm256_set1_epi32(bucket);
  for (; j + kLanes <= n; j += kLanes) {
    const __m256i b = bucket8(z8(_mm256_loadu_ps(x + j), vmax, vinv));
    unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(b, want))));
    while (m) {
      out.push_back(j + __builtin_ctz(m));
      m &= m - 1;
    }
  }
#endif
  for (; j < n; ++j) {
    if (bucket_of_z(z_of(x[j], max, inv_t)) == bucket) out.push_back(j);
  }
}

// Kept set {j : l[j] > thr or (l[j] == thr and j <= last)}: the double sum of its weights in each
// kBlock-element block into blocks[]; returns the sum of the block sums.
inline double kept_block_sums(const float* x, const float* w, int64_t n, float thr, int64_t last,
                              double* blocks) {
  double total = 0.0;
  for (int64_t start = 0, blk = 0; start < n; start += kBlock, ++blk) {
    const int64_t end = std::min(start + kBlock, n);
    double sum = 0.0;
    int64_t j = start;
#ifdef MINT_SAMPLING_AVX2
    if (end <= last + 1 || start > last) {  // the block lies on one side of `last`: one compare
      const __m256 t = _mm256_set1_ps(thr);
      const int pred = end <= last + 1 ? _CMP_GE_OQ : _CMP_GT_OQ;
      __m256d acc = _mm256_setzero_pd();
      for (; j + kLanes <= end; j += kLanes) {
        const __m256 l = _mm256_loadu_ps(x + j);
        const __m256 keep = pred == _CMP_GE_OQ ? _mm256_cmp_ps(l, t, _CMP_GE_OQ) : _mm256_cmp_ps(l, t, _CMP_GT_OQ);
        const __m256 kw = _mm256_and_ps(keep, _mm256_loadu_ps(w + j));
        acc = _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(kw)),
                                               _mm256_cvtps_pd(_mm256_extractf128_ps(kw, 1))));
      }
      sum = hsum4d(acc);
    }
#endif
    for (; j < end; ++j) {
      if (x[j] > thr || (x[j] == thr && j <= last)) sum += w[j];
    }
    blocks[blk] = sum;
    total += sum;
  }
  return total;
}

}  // namespace sampling
}  // namespace mint
