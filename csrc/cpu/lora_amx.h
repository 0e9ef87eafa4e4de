// The bf16 kernels of the CPU LoRA ops on AMX tiles (csrc/cpu/lora_amx.cpp).
//
// For bf16 on CPUs with AMX-BF16, every product of the LoRA ops: dot_rows computes x @ W^T (the shrink
// h = x A^T and grad_h = s grad_y B^T), axpy_rows base + s h @ W (the expand y + s h B and grad_x = grad_h A),
// outer_rows the weight gradients over a slot's tokens. One tile multiply adds 16 rows x 16 outputs x 32
// products, 16 times the work of an AVX-512 bf16 pair dot. The weights of one slot (rank <= 64) are first
// packed into the tile layout (pack_dot / pack_axpy; the callers keep one pack per thread and slot); rows are
// read where they lie. Every output element is an fp32 sum in one fixed order (32 products per tile step,
// steps in order), scaled (and added to base) and rounded once, so a row's result does not depend on the
// other rows, the blocking or the thread count.
//
// The file is compiled for any x86-64 target (the kernels carry their own target attributes); available()
// says at run time whether the CPU has AMX-BF16 and the OS granted this process the tile state. Pointers
// hold bf16 bit patterns (uint16_t), so no torch header is compiled with the AMX / AVX-512 target.
#pragma once

#include <cstdint>

namespace mint::lora_amx {

// True when the kernels can run here: CPU support (AMX-TILE, AMX-BF16, AVX512-BF16), the OS's permission
// for the tile state (asked once), and MINT_CPU_AMX is not "0". Always false off x86-64.
bool available();

// The largest n (outputs per row) the kernel takes: four 16-column accumulator tiles.
constexpr int64_t kMaxCols = 64;

// bf16 elements of W [n, k] in the tile layout: ceil(n / 16) * 16 columns x ceil(k / 32) * 32 products.
int64_t packed_dot_elems(int64_t n, int64_t k);

// Packs W [n, k] (row stride ldw, unit column stride, n <= kMaxCols) into packed_dot_elems(n, k) elements,
// zero beyond n and k.
void pack_dot(const uint16_t* w, int64_t ldw, int64_t n, int64_t k, uint16_t* packed);

// out[i, j] = bf16(alpha * sum_p x[i, p] * W[j, p]) for i < m, j < n; out[i, j] = 0 for n <= j < n_zero.
//   x: [m, k] (row stride ldx, unit column stride), packed: pack_dot(W, ..., n, k), out: row stride ldo.
void dot_rows(const uint16_t* x, int64_t ldx, const uint16_t* packed, int64_t m, int64_t n, int64_t k, float alpha,
              uint16_t* out, int64_t ldo, int64_t n_zero);

// bf16 elements of W [r, cols] in the expand's tile layout: ceil(r / 32) * 32 ranks x ceil(cols / 16) * 16
// columns.
int64_t packed_axpy_elems(int64_t r, int64_t cols);

// Packs W [r, cols] (row stride ldw, unit column stride, r <= kMaxCols) into packed_axpy_elems(r, cols)
// elements, zero beyond r and cols.
void pack_axpy(const uint16_t* w, int64_t ldw, int64_t r, int64_t cols, uint16_t* packed);

// out[i, c] = bf16(base[i, c] + alpha * sum_j h[i, j] * W[j, c]) for i < m, c0 <= c < c1 (base == nullptr: 0);
// the product is summed in fp32, then scaled, added and rounded once.
//   base: row stride ldb (may be out itself), h: [m, r] (row stride ldh; columns past r are not read),
//   packed: pack_axpy(W, ..., r, cols), out: row stride ldo. c0 must be a multiple of 16.
void axpy_rows(const uint16_t* base, int64_t ldb, const uint16_t* h, int64_t ldh, const uint16_t* packed, int64_t m,
               int64_t r, int64_t cols, int64_t c0, int64_t c1, float alpha, uint16_t* out, int64_t ldo);

// out[j, c] = bf16(alpha * sum_t coef[j, t] * S[t, c]) for j < rank (<= kMaxCols), c < width: the weight
// gradients (dB = s h^T grad_y, dA = grad_h^T x), t over one slot's count tokens.
//   coef: [rank, ceil(count / 32) * 32] (row stride ldc, zero past count), packed: pack_axpy(S, ..., count,
//   width) of the token rows S [count, width], out: row stride ldo. The sum runs in token order in fp32.
void outer_rows(const uint16_t* coef, int64_t ldc, const uint16_t* packed, int64_t rank, int64_t count,
                int64_t width, float alpha, uint16_t* out, int64_t ldo);

}  // namespace mint::lora_amx
