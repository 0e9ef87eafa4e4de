// AMX kernels of the CPU LoRA ops; contracts in lora_amx.h.
//
// Tiles (palette 1, 64 bytes a row). Row dots and the expand: tmm0-3 accumulate m rows x 16 outputs of fp32
// each (up to 64 outputs), tmm4 holds m rows x 32 bf16 of x (or of the zero-padded h), tmm5-7 the packed
// weights of one 16-output group: 16 rows of product pairs (k = 2p, 2p + 1) x 16 outputs. A block of
// m < 16 rows configures m-row tiles, so no row past the block is read; a k that is not a multiple of 32
// ends with a zero-padded copy of the last chunk. Weight gradients: tmm0-3 hold two 16-rank x two 16-column
// accumulators, tmm4-5 the coefficients, tmm6-7 the token-pair rows.
#include "lora_amx.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 11))
#define MINT_AMX_BUILD 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define MINT_AMX_TARGET \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#else
#define MINT_AMX_BUILD 0
#endif

namespace mint::lora_amx {

int64_t packed_dot_elems(int64_t n, int64_t k) { return ((n + 15) / 16) * 16 * ((k + 31) / 32) * 32; }

int64_t packed_axpy_elems(int64_t r, int64_t cols) { return ((r + 31) / 32) * 32 * ((cols + 15) / 16) * 16; }

#if MINT_AMX_BUILD
namespace {

constexpr int64_t kTileElems = 512;  // 16 rows x 32 bf16

// The tile loads and stores are inline asm that names only the address: this tells the compiler that memory
// is read or written there (the zero-padded tail copy, the accumulator dump).
inline void memory_barrier() { asm volatile("" ::: "memory"); }

bool detect() {
  const char* env = std::getenv("MINT_CPU_AMX");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);  // F DQ BW VL
  const bool amx = ((d >> 22) & 1) && ((d >> 24) & 1);                                            // BF16, TILE
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  if (!__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) return false;
  const bool avx512_bf16 = (a1 >> 5) & 1;
  if (!(avx512 && amx && avx512_bf16)) return false;
  // Linux hands out the 8 KB tile state only on request (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA).
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Accumulators and x tiles of m rows, weight tiles of 16 pair rows; every row 64 bytes.
MINT_AMX_TARGET void configure(int64_t m) {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = static_cast<uint8_t>(t < 5 ? m : 16);
  }
  _tile_loadconfig(&cfg);
}

// One k chunk: x tile from src (row stride in bytes), then the JB weight tiles of the chunk at b.
template <int JB>
MINT_AMX_TARGET inline void chunk(const uint16_t* src, int64_t stride_bytes, const uint16_t* b) {
  _tile_loadd(4, src, stride_bytes);
  _tile_loadd(5, b, 64);
  _tile_dpbf16ps(0, 4, 5);
  if constexpr (JB > 1) {
    _tile_loadd(6, b + kTileElems, 64);
    _tile_dpbf16ps(1, 4, 6);
  }
  if constexpr (JB > 2) {
    _tile_loadd(7, b + 2 * kTileElems, 64);
    _tile_dpbf16ps(2, 4, 7);
  }
  if constexpr (JB > 3) {
    _tile_loadd(5, b + 3 * kTileElems, 64);
    _tile_dpbf16ps(3, 4, 5);
  }
}

// acc[i, j] (row stride 64 floats) = sum over k of x[i, :] W[j, :] for i < m, j < 16 * JB.
template <int JB>
MINT_AMX_TARGET void dot_block(const uint16_t* x, int64_t ldx, const uint16_t* packed, int64_t m, int64_t k,
                               float* acc) {
  _tile_zero(0);
  if constexpr (JB > 1) _tile_zero(1);
  if constexpr (JB > 2) _tile_zero(2);
  if constexpr (JB > 3) _tile_zero(3);
  const int64_t full = k / 32, rest = k % 32;
  for (int64_t kc = 0; kc < full; ++kc) chunk<JB>(x + kc * 32, ldx * 2, packed + kc * JB * kTileElems);
  if (rest > 0) {
    alignas(64) uint16_t tail[16 * 32];
    std::memset(tail, 0, sizeof tail);
    for (int64_t i = 0; i < m; ++i) std::memcpy(tail + i * 32, x + i * ldx + full * 32, rest * 2);
    memory_barrier();
    chunk<JB>(tail, 64, packed + full * JB * kTileElems);
  }
  _tile_stored(0, acc, 256);
  if constexpr (JB > 1) _tile_stored(1, acc + 16, 256);
  if constexpr (JB > 2) _tile_stored(2, acc + 32, 256);
  if constexpr (JB > 3) _tile_stored(3, acc + 48, 256);
  memory_barrier();
}

// fp32 -> bf16 bits, round to nearest even, NaN -> 0x7FC0: c10::BFloat16's conversion, 16 lanes at a time.
MINT_AMX_TARGET inline __m256i to_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

// out[i, c .. c + n) = bf16(base[i, c ..] + alpha * acc[i, 0 .. n)) for i < m (base == nullptr: no base term);
// acc has row stride lda floats.
MINT_AMX_TARGET void store_scaled(const float* acc, int64_t lda, const uint16_t* base, int64_t ldb, int64_t m,
                                  int64_t c, int64_t n, float alpha, uint16_t* out, int64_t ldo) {
  const __m512 scale = _mm512_set1_ps(alpha);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; j += 16) {
      const int64_t cnt = n - j < 16 ? n - j : 16;
      const __mmask16 mask = static_cast<__mmask16>((1u << cnt) - 1);
      __m512 v = _mm512_mul_ps(_mm512_loadu_ps(acc + i * lda + j), scale);
      if (base != nullptr) {
        const __m256i b16 = _mm256_maskz_loadu_epi16(mask, base + i * ldb + c + j);
        v = _mm512_add_ps(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b16), 16)), v);
      }
      _mm256_mask_storeu_epi16(out + i * ldo + c + j, mask, to_bf16(v));
    }
  }
}

// Transposes 16 x 16 32-bit elements: rows r[0..15] in, out[p] = (r[0][p], ..., r[15][p]).
MINT_AMX_TARGET void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {  // u[4g + c], lane L: rows 4g..4g+3 at column 4L + c
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xDD);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88);
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xDD);
    r[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    r[8 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    r[4 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

// Lanes [0, n) of 32 bf16 (n clamped to [0, 32]).
MINT_AMX_TARGET inline __mmask32 first_lanes32(int64_t n) {
  return n >= 32 ? ~__mmask32{0} : n <= 0 ? __mmask32{0} : static_cast<__mmask32>((uint32_t{1} << n) - 1);
}

// acc[i, 16 g + c] (row stride 64 floats) = sum over ranks of hb[i, :] W[:, c0 + 16 g + c] for i < m, g < G:
// hb is the zero-padded h block (row stride 64 bf16), packed the expand layout with rk rank chunks.
template <int G>
MINT_AMX_TARGET void axpy_block(const uint16_t* hb, const uint16_t* packed, int64_t rk, int64_t group0, float* acc) {
  _tile_zero(0);
  if constexpr (G > 1) _tile_zero(1);
  if constexpr (G > 2) _tile_zero(2);
  if constexpr (G > 3) _tile_zero(3);
  for (int64_t kc = 0; kc < rk; ++kc) {
    _tile_loadd(4, hb + kc * 32, 128);
    const uint16_t* b = packed + (group0 * rk + kc) * kTileElems;
    _tile_loadd(5, b, 64);
    _tile_dpbf16ps(0, 4, 5);
    if constexpr (G > 1) {
      _tile_loadd(6, b + rk * kTileElems, 64);
      _tile_dpbf16ps(1, 4, 6);
    }
    if constexpr (G > 2) {
      _tile_loadd(7, b + 2 * rk * kTileElems, 64);
      _tile_dpbf16ps(2, 4, 7);
    }
    if constexpr (G > 3) {
      _tile_loadd(5, b + 3 * rk * kTileElems, 64);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  _tile_stored(0, acc, 256);
  if constexpr (G > 1) _tile_stored(1, acc + 16, 256);
  if constexpr (G > 2) _tile_stored(2, acc + 32, 256);
  if constexpr (G > 3) _tile_stored(3, acc + 48, 256);
  memory_barrier();
}


// Weight-gradient tiles: rank tiles 0 / 1 (m0, m1 rows) x column groups 0 / 1 in tmm0-3, coef in tmm4-5,
// token-pair rows of S in tmm6-7.
MINT_AMX_TARGET void configure_outer(int64_t m0, int64_t m1) {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  const uint8_t rows[8] = {static_cast<uint8_t>(m0), static_cast<uint8_t>(m0), static_cast<uint8_t>(m1),
                           static_cast<uint8_t>(m1), static_cast<uint8_t>(m0), static_cast<uint8_t>(m1), 16, 16};
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = rows[t] == 0 ? 0 : 64;
    cfg.rows[t] = rows[t];
  }
  _tile_loadconfig(&cfg);
}

// acc [32 rows x 32 floats] = coef rows (a0: m0 rows, a1: m1 rows when R2) x two column groups (b0 and, when
// G2, b0 + one group) over kcs token chunks.
template <bool R2, bool G2>
MINT_AMX_TARGET void outer_block(const uint16_t* a0, const uint16_t* a1, int64_t ldc_bytes, const uint16_t* b0,
                                 int64_t kcs, float* acc) {
  _tile_zero(0);
  if constexpr (G2) _tile_zero(1);
  if constexpr (R2) _tile_zero(2);
  if constexpr (R2 && G2) _tile_zero(3);
  const uint16_t* b1 = b0 + kcs * kTileElems;
  for (int64_t kc = 0; kc < kcs; ++kc) {
    _tile_loadd(4, a0 + kc * 32, ldc_bytes);
    _tile_loadd(6, b0 + kc * kTileElems, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (G2) {
      _tile_loadd(7, b1 + kc * kTileElems, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (R2) {
      _tile_loadd(5, a1 + kc * 32, ldc_bytes);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (G2) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, acc, 128);
  if constexpr (G2) _tile_stored(1, acc + 16, 128);
  if constexpr (R2) _tile_stored(2, acc + 16 * 32, 128);
  if constexpr (R2 && G2) _tile_stored(3, acc + 16 * 32 + 16, 128);
  memory_barrier();
}

}  // namespace

bool available() {
  static const bool ok = detect();
  return ok;
}

MINT_AMX_TARGET void pack_dot(const uint16_t* w, int64_t ldw, int64_t n, int64_t k, uint16_t* packed) {
  const int64_t jbs = (n + 15) / 16, kcs = (k + 31) / 32;
  for (int64_t kc = 0; kc < kcs; ++kc) {
    const __mmask32 kmask = first_lanes32(k - 32 * kc);  // zeros past k
    for (int64_t jb = 0; jb < jbs; ++jb) {
      // 16 rows of W (zero past n) x 32 products = 16 x 16 pairs, transposed to 16 pair rows x 16 outputs
      __m512i r[16];
      for (int64_t jj = 0; jj < 16; ++jj) {
        const int64_t j = 16 * jb + jj;
        r[jj] = j < n ? _mm512_maskz_loadu_epi16(kmask, w + j * ldw + 32 * kc) : _mm512_setzero_si512();
      }
      transpose16(r);
      uint16_t* tile = packed + (kc * jbs + jb) * kTileElems;
      for (int p = 0; p < 16; ++p) _mm512_storeu_si512(tile + p * 32, r[p]);
    }
  }
}

MINT_AMX_TARGET void dot_rows(const uint16_t* x, int64_t ldx, const uint16_t* packed, int64_t m, int64_t n,
                              int64_t k, float alpha, uint16_t* out, int64_t ldo, int64_t n_zero) {
  alignas(64) float acc[16 * 64];
  const int64_t jbs = (n + 15) / 16;
  if (jbs == 0) {
    for (int64_t i = 0; i < m; ++i) std::memset(out + i * ldo, 0, n_zero * 2);
    return;
  }
  memory_barrier();
  for (int64_t i0 = 0; i0 < m; i0 += 16) {
    const int64_t rows = m - i0 < 16 ? m - i0 : 16;
    configure(rows);
    const uint16_t* xi = x + i0 * ldx;
    switch (jbs) {
      case 1: dot_block<1>(xi, ldx, packed, rows, k, acc); break;
      case 2: dot_block<2>(xi, ldx, packed, rows, k, acc); break;
      case 3: dot_block<3>(xi, ldx, packed, rows, k, acc); break;
      default: dot_block<4>(xi, ldx, packed, rows, k, acc); break;
    }
    store_scaled(acc, 64, nullptr, 0, rows, 0, n, alpha, out + i0 * ldo, ldo);
    if (n_zero > n) {
      for (int64_t i = 0; i < rows; ++i) std::memset(out + (i0 + i) * ldo + n, 0, (n_zero - n) * 2);
    }
  }
  _tile_release();
}

MINT_AMX_TARGET void pack_axpy(const uint16_t* w, int64_t ldw, int64_t r, int64_t cols, uint16_t* packed) {
  const int64_t rk = (r + 31) / 32, groups = (cols + 15) / 16;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t c = 16 * g;
    const __mmask16 cmask = static_cast<__mmask16>(first_lanes32(cols - c));  // zeros past cols
    for (int64_t kc = 0; kc < rk; ++kc) {
      uint16_t* tile = packed + (g * rk + kc) * kTileElems;
      for (int64_t p = 0; p < 16; ++p) {  // tile row p: ranks 32 kc + 2p and + 1, interleaved over 16 columns
        const int64_t j0 = 32 * kc + 2 * p;
        const __m256i lo = j0 < r ? _mm256_maskz_loadu_epi16(cmask, w + j0 * ldw + c) : _mm256_setzero_si256();
        const __m256i hi =
            j0 + 1 < r ? _mm256_maskz_loadu_epi16(cmask, w + (j0 + 1) * ldw + c) : _mm256_setzero_si256();
        _mm512_storeu_si512(tile + p * 32, _mm512_or_si512(_mm512_cvtepu16_epi32(lo),
                                                           _mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16)));
      }
    }
  }
}

MINT_AMX_TARGET void axpy_rows(const uint16_t* base, int64_t ldb, const uint16_t* h, int64_t ldh,
                               const uint16_t* packed, int64_t m, int64_t r, int64_t cols, int64_t c0, int64_t c1,
                               float alpha, uint16_t* out, int64_t ldo) {
  (void)cols;
  alignas(64) float acc[16 * 64];
  alignas(64) uint16_t hb[16 * 64];  // the block's h, zero past the rank (h there need not be finite)
  const int64_t rk = (r + 31) / 32;
  for (int64_t i0 = 0; i0 < m; i0 += 16) {
    const int64_t rows = m - i0 < 16 ? m - i0 : 16;
    std::memset(hb, 0, sizeof hb);
    for (int64_t i = 0; i < rows; ++i) std::memcpy(hb + i * 64, h + (i0 + i) * ldh, r * 2);
    memory_barrier();
    configure(rows);
    const uint16_t* bi = base == nullptr ? nullptr : base + i0 * ldb;
    for (int64_t c = c0; c < c1; c += 64) {
      const int64_t n = c1 - c < 64 ? c1 - c : 64, groups = (n + 15) / 16;
      if (rk == 0) {
        std::memset(acc, 0, sizeof acc);
      } else {
        switch (groups) {
          case 1: axpy_block<1>(hb, packed, rk, c / 16, acc); break;
          case 2: axpy_block<2>(hb, packed, rk, c / 16, acc); break;
          case 3: axpy_block<3>(hb, packed, rk, c / 16, acc); break;
          default: axpy_block<4>(hb, packed, rk, c / 16, acc); break;
        }
      }
      store_scaled(acc, 64, bi, ldb, rows, c, n, alpha, out + i0 * ldo, ldo);
    }
  }
  _tile_release();
}

MINT_AMX_TARGET void outer_rows(const uint16_t* coef, int64_t ldc, const uint16_t* packed, int64_t rank,
                                int64_t count, int64_t width, float alpha, uint16_t* out, int64_t ldo) {
  alignas(64) float acc[32 * 32];
  const int64_t kcs = (count + 31) / 32, groups = (width + 15) / 16;
  for (int64_t j0 = 0; j0 < rank; j0 += 32) {
    const int64_t m0 = rank - j0 < 16 ? rank - j0 : 16, m1 = rank - j0 - 16 > 16 ? 16 : rank - j0 - 16;
    const bool r2 = m1 > 0;
    configure_outer(m0, r2 ? m1 : 0);
    const uint16_t* a0 = coef + j0 * ldc;
    const uint16_t* a1 = a0 + 16 * ldc;
    for (int64_t g = 0; g < groups; g += 2) {
      const bool g2 = g + 1 < groups;
      const uint16_t* b0 = packed + g * kcs * kTileElems;
      if (kcs == 0) {
        std::memset(acc, 0, sizeof acc);
      } else if (r2 && g2) {
        outer_block<true, true>(a0, a1, ldc * 2, b0, kcs, acc);
      } else if (r2) {
        outer_block<true, false>(a0, a1, ldc * 2, b0, kcs, acc);
      } else if (g2) {
        outer_block<false, true>(a0, a1, ldc * 2, b0, kcs, acc);
      } else {
        outer_block<false, false>(a0, a1, ldc * 2, b0, kcs, acc);
      }
      const int64_t c = 16 * g, n = (g2 ? 32 : 16) < width - c ? (g2 ? 32 : 16) : width - c;
      store_scaled(acc, 32, nullptr, 0, m0 + (r2 ? m1 : 0), c, n, alpha, out + j0 * ldo, ldo);
    }
  }
  _tile_release();
}

#else  // no AMX in this build

bool available() { return false; }

void pack_dot(const uint16_t*, int64_t, int64_t, int64_t, uint16_t*) { std::abort(); }

void dot_rows(const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, float, uint16_t*, int64_t,
              int64_t) {
  std::abort();
}

void pack_axpy(const uint16_t*, int64_t, int64_t, int64_t, uint16_t*) { std::abort(); }

void outer_rows(const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, float, uint16_t*, int64_t) {
  std::abort();
}

void axpy_rows(const uint16_t*, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, int64_t,
               int64_t, float, uint16_t*, int64_t) {
  std::abort();
}

#endif

}  // namespace mint::lora_amx
