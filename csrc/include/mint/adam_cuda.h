// Torch-free launcher of the multi-tensor fused AdamW CUDA kernel (csrc/cuda/kernels/adam.cu).
//
// The binding (csrc/cuda/adam.cpp) validates the call, advances the step counters on the host and
// builds three tables in device memory: one AdamTensor per parameter that has a gradient (with its
// per-tensor scalars already rounded to float, exactly as the CPU kernel rounds them), the chunks
// (pieces of at most kAdamChunk elements of one tensor) that the update visits, and the chunks of the
// tensors whose group clips (visited first, to compute those groups' gradient norms).
//
// Norms are deterministic: each chunk's sum of squares is a double reduced in a fixed order inside one
// block, and each group's total is summed over its chunks in chunk order by one thread.
#pragma once

#include <mint/cuda_common.h>

#include <cstdint>

namespace mint {
namespace cuda {

constexpr int64_t kAdamChunk = int64_t{1} << 16;

struct AdamTensor {
  void* param;
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  int64_t numel;
  int32_t group;
  int32_t param_dtype;     // DType of param and grad
  int32_t exp_avg_f32;     // 1: exp_avg is float32, 0: the param dtype
  int32_t exp_avg_sq_f32;  // 1: exp_avg_sq is float32, 0: the param dtype
  float decay;             // 1 - lr * weight_decay
  float lerp_w;            // 1 - beta1
  int32_t lerp_small;      // |lerp_w| < 0.5 (torch's lerp formula choice)
  float beta2;
  float one_minus_beta2;
  float bc2_sqrt;          // sqrt(1 - beta2^t)
  float eps;
  float neg_step_size;     // -lr / (1 - beta1^t)
};

struct AdamChunk {
  int64_t tensor;  // index into the AdamTensor table
  int64_t begin;   // element range [begin, end) of that tensor
  int64_t end;
};

struct AdamGroup {
  double max_grad_norm;  // > 0: clip the group's gradients to this global L2 norm
  int32_t clips;
  int32_t pad;
};

// Device scratch the launcher needs: doubles for partial sums, floats for the clip factors.
struct AdamWorkspace {
  double* clip_partial;    // [num_clip_chunks]
  double* update_partial;  // [num_chunks]
  float* clip_coef;        // [G]
};

// One fused AdamW step. `norms` (float32 [G], device) receives each group's gradient norm before
// clipping (0 for a group without chunks).
cudaError_t adamw_multi_tensor(const AdamTensor* tensors, const AdamChunk* chunks, int64_t num_chunks,
                               const AdamChunk* clip_chunks, int64_t num_clip_chunks,
                               const AdamGroup* groups, int64_t num_groups, AdamWorkspace workspace,
                               float* norms, cudaStream_t stream);

}  // namespace cuda
}  // namespace mint
