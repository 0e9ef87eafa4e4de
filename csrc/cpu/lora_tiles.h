// Register-blocked row kernels of the CPU LoRA ops (csrc/cpu/lora_tiles.cpp).
//
// LoRA's products are slivers (one side is the rank, 8-64), on which library GEMMs reach a fraction of
// their peak and need gathered copies and extra passes for bf16. These two kernels cover the row-side
// products of every LoRA op: the forward shrink and expand, and the input gradients of both. Both
// accumulate in fp32 and round once to T; each output element is computed by one fixed sequence of
// fused multiply-adds that depends only on its own row, so results do not depend on how rows are tiled,
// batched or split over threads. Rows have unit column stride; row strides are free.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace mint::lora_tiles {

// out[i, j] = alpha * sum_p x[i, p] * w[j, p] for i < m, j < n; out[i, j] = 0 for n <= j < n_zero.
//   x: [m, k] (row stride ldx), w: [n, k] (row stride ldw), out: [m, n_zero] (row stride ldo).
// Used for h = x @ A^T (shrink) and grad_h = scale * grad_y @ B^T (expand backward).
template <typename T>
void dot_rows(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t m, int64_t n, int64_t k, float alpha,
              T* out, int64_t ldo, int64_t n_zero);

// out[i, c] = base[i, c] + sum_j (alpha * h[i, j]) * w[j, c] for i < m, c0 <= c < c1 (base == nullptr: 0).
//   base: [m, *] (row stride ldb), h: [m, r] (row stride ldh), w: [r, *] (row stride ldw), out: [m, *]
//   (row stride ldo; may be base itself).
// Used for y + scale * h @ B (expand) and grad_x = grad_h @ A (shrink backward).
template <typename T>
void axpy_rows(const T* base, int64_t ldb, const T* h, int64_t ldh, const T* w, int64_t ldw, int64_t m,
               int64_t r, int64_t c0, int64_t c1, float alpha, T* out, int64_t ldo);

// axpy_rows with the coefficients given as fp32, already scaled: hs [m, r] (row stride ldhs).
// Used for the weight gradients, dB = scale * h^T @ grad_y and dA = grad_h^T @ x, where r is the
// number of tokens (hs = the transposed, scaled h or grad_h) and w their rows of grad_y or x.
template <typename T>
void axpy_rows_f32(const T* base, int64_t ldb, const float* hs, int64_t ldhs, const T* w, int64_t ldw,
                   int64_t m, int64_t r, int64_t c0, int64_t c1, T* out, int64_t ldo);

// bf16 expand on the CPU's bf16 pair dot instructions (AVX512-BF16 builds). The weights [r, cols] are first
// packed into rank pairs: packed_pairs_elems(r, cols) bf16 elements (0 when the build lacks the
// instructions: use axpy_rows), filled by pack_pairs. axpy_rows_pairs then computes
// out = base + alpha * (h @ w) (the product summed in fp32, scaled and added once, rounded once);
// c0 must be a multiple of 32.
int64_t packed_pairs_elems(int64_t r, int64_t cols);
void pack_pairs(const c10::BFloat16* w, int64_t ldw, int64_t r, int64_t cols, c10::BFloat16* packed);
void axpy_rows_pairs(const c10::BFloat16* base, int64_t ldb, const c10::BFloat16* h, int64_t ldh,
                     const c10::BFloat16* packed, int64_t m, int64_t r, int64_t cols, int64_t c0, int64_t c1,
                     float alpha, c10::BFloat16* out, int64_t ldo);

// Elements per vector register of the build (16 with AVX-512, 8 with AVX2), for sizing work items.
int64_t vector_width();

}  // namespace mint::lora_tiles
