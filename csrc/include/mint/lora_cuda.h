// Torch-free launchers of the segmented multi-adapter LoRA CUDA kernels (csrc/cuda/kernels/lora.cu).
//
// The binding (csrc/cuda/lora.cpp) validates the index tensors on the host and turns them into work
// lists that live in device memory:
//   - LoraTile: up to kLoraTileRows consecutive token rows that all use one adapter slot; used by the
//     row-wise products (shrink, expand and the dx / dh parts of the backward).
//   - LoraSlotWork + LoraRange: every row range of one slot, in segment order; used by the per-slot
//     reductions dA / dB, which sum over the slot's rows in that fixed order (deterministic, no atomics).
// All products accumulate in fp32 whatever the element type. With tensor_cores = true, bf16 / fp16 row
// products use WMMA tensor-core tiles (fp32 accumulation); fp32 always uses the FMA kernels, and
// rows_times_wt tiles of <= 4 rows (decode) use a warp-per-rank memory-bound path either way. Matrices are row-major with an explicit
// leading dimension (elements between rows); the column stride is 1.
#pragma once

#include <mint/cuda_common.h>

#include <cstdint>

namespace mint {
namespace cuda {

constexpr int kLoraTileRows = 16;

struct LoraTile {
  int64_t row_begin;  // first token row
  int64_t row_end;    // one past the last row; row_end - row_begin in [1, kLoraTileRows]
  int32_t slot;       // adapter slot
  int32_t rank;       // rank of the slot, >= 1
  float scale;        // factor applied to the product
  int32_t pad;
};

struct LoraSlotWork {
  int64_t part_begin;  // the slot's parts: [part_begin, part_end) of the LoraPart list
  int64_t part_end;
  int32_t slot;
  int32_t rank;
  float scale;
  int32_t pad;
};

struct LoraRange {
  int64_t row_begin;
  int64_t row_end;
};

// Up to kLoraPartRows consecutive rows of one slot's row sequence (its ranges in order), starting at
// row `row` of range `range`; the per-slot reductions sum each part separately, then the parts in order.
constexpr int64_t kLoraPartRows = 256;

struct LoraPart {
  int64_t work;   // index into the LoraSlotWork list
  int64_t range;  // index into the LoraRange list of the first row
  int64_t row;    // first row
  int64_t count;  // rows, >= 1
};

// out[t, r] = scale * sum_k in[t, k] * w[slot, r, k]   for r < rank, every t of every tile.
// in: [T, K] (leading dim ld_in); w: [N, R, K] (strides w_slot, w_row); out: [T, *] (ld_out).
// Columns r >= rank of out are not written. max_rank bounds every tile's rank.
cudaError_t lora_rows_times_wt(DType dtype, const void* in, int64_t ld_in, int64_t K, const void* w,
                               int64_t w_slot, int64_t w_row, void* out, int64_t ld_out,
                               const LoraTile* tiles, int64_t num_tiles, int32_t max_rank, bool tensor_cores,
                               cudaStream_t stream);

// out[t, c] = (base ? base[t, c] : 0) + scale * sum_{r < rank} in[t, r] * w[slot, r, c]
// for every t of every tile and c < C. in: [T, R] (ld_in); w: [N, R, C] (w_slot, w_row);
// base and out: [T, C] (ld_base, ld_out); base may equal out (in-place accumulate) or be null.
cudaError_t lora_rows_times_w(DType dtype, const void* in, int64_t ld_in, const void* w, int64_t w_slot,
                              int64_t w_row, int64_t C, const void* base, int64_t ld_base, void* out,
                              int64_t ld_out, const LoraTile* tiles, int64_t num_tiles, bool tensor_cores,
                              cudaStream_t stream);

// dw[slot, r, c] = scale * sum_{t in the slot's rows, in order} left[t, r] * right[t, c]
// for r < rank, c < C, every slot of `work`. left: [T, R] (ld_left); right: [T, C] (ld_right);
// dw: [N, R, C] (dw_slot, dw_row). Rows r >= rank are not written. max_rank bounds every rank.
// Two phases, no atomics: each part's sums go to `partial` (float32, num_parts * max_rank * C, device),
// then each slot adds its parts in order.
cudaError_t lora_slot_reduce(DType dtype, const void* left, int64_t ld_left, const void* right,
                             int64_t ld_right, int64_t C, void* dw, int64_t dw_slot, int64_t dw_row,
                             const LoraSlotWork* work, int64_t num_work, const LoraPart* parts, int64_t num_parts,
                             const LoraRange* ranges, int32_t max_rank, float* partial, cudaStream_t stream);

}  // namespace cuda
}  // namespace mint
