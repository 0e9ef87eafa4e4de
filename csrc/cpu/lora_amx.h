// The bf16 row-dot kernel of the CPU LoRA ops on AMX tiles (csrc/cpu/lora_amx.cpp).
//
// out = x @ W^T (the shrink h = x A^T and grad_h = s grad_y B^T) for bf16 on CPUs with AMX-BF16: one
// tile multiply adds 16 rows x 16 outputs x 32 products, 16 times the work of an AVX-512 bf16 pair dot.
// The weights W [n, k] of one slot (n <= 64) are first packed into the tile layout (pack_dot), once per
// call; rows are then read where they lie. Every output element is the fp32 sum over k in one fixed order
// (32 products per tile step, steps in k order), scaled and rounded once, so a row's result does not
// depend on the other rows, the blocking or the thread count.
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

}  // namespace mint::lora_amx
