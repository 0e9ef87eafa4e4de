// Torch-free launcher of the fused top-k / top-p sampling CUDA kernel (csrc/cuda/kernels/sampling.cu).
//
// Semantics are those of the CPU op (csrc/cpu/sampling.cpp, python/mint/ops/sampling.py): one block per
// row; the kept set is a prefix of the order "higher logit first, lower index on ties", found without
// sorting by radix selection over the logits' order-preserving 32-bit keys (top-k: counts; top-p:
// fixed-point probability mass, integer adds, so the result does not depend on thread scheduling);
// the draw is one Philox4x32-10 block keyed by key = seed, counter = (offset, subsequence) and an
// inverse-CDF walk over the kept tokens in index order, as on the CPU.
#pragma once

#include <mint/cuda_common.h>

#include <cstdint>

namespace mint {
namespace cuda {

struct SampleRowParams {
  const float* temperature;    // [B]; >= 0 and finite (checked by the caller); 0 = greedy
  const int64_t* top_k;        // [B]; <= 0 or >= V: no top-k
  const float* top_p;          // [B]; > 0 (checked by the caller); >= 1: no top-p
  const int64_t* seed;         // [B]
  const int64_t* subsequence;  // [B]
  const int64_t* offset;       // [B]
};

// logits: [B, V] with strides (row_stride, col_stride) in elements. tokens: int64 [B], logprobs:
// float32 [B]; a row with NaN or +inf, or all -inf, gives token -1 and logprob NaN.
cudaError_t sample_rows(DType dtype, const void* logits, int64_t batch, int64_t vocab, int64_t row_stride,
                        int64_t col_stride, SampleRowParams params, int64_t* tokens, float* logprobs,
                        cudaStream_t stream);

}  // namespace cuda
}  // namespace mint
