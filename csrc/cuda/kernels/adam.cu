// Multi-tensor fused AdamW, torch-free (contract: mint/adam_cuda.h).
//
// One launch updates every chunk of every tensor of every group; the element arithmetic follows the CPU
// kernel (csrc/cpu/adam.cpp) operation by operation with explicitly rounded intrinsics, so the compiler
// cannot contract a product and a sum that torch rounds separately. The fma's that the CPU kernel uses
// (lerp, addcmul) are fmaf here.
#include <mint/adam_cuda.h>

#include "elem.cuh"

namespace mint {
namespace cuda {
namespace {

using detail::from_f32;
using detail::to_f32;

constexpr int kThreads = 512;

// Deterministic block sum of one double per thread (fixed tree); the result is valid in thread 0.
__device__ double block_sum(double v, double* shared) {
  const int tid = static_cast<int>(threadIdx.x);
  shared[tid] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) shared[tid] += shared[tid + s];
    __syncthreads();
  }
  return shared[0];
}

template <typename P>
__device__ double chunk_sumsq(const P* g, int64_t begin, int64_t end) {
  double acc = 0.0;
  for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) {
    const double x = static_cast<double>(to_f32(g[k]));
    acc = fma(x, x, acc);
  }
  return acc;
}

__global__ void __launch_bounds__(kThreads)
sumsq_kernel(const AdamTensor* __restrict__ tensors, const AdamChunk* __restrict__ chunks,
             double* __restrict__ partial) {
  __shared__ double red[kThreads];
  const AdamChunk ck = chunks[blockIdx.x];
  const AdamTensor& t = tensors[ck.tensor];
  double acc = 0.0;
  switch (static_cast<DType>(t.param_dtype)) {
    case DType::kFloat32: acc = chunk_sumsq(static_cast<const float*>(t.grad), ck.begin, ck.end); break;
    case DType::kBFloat16:
      acc = chunk_sumsq(static_cast<const __nv_bfloat16*>(t.grad), ck.begin, ck.end);
      break;
    case DType::kFloat16: acc = chunk_sumsq(static_cast<const __half*>(t.grad), ck.begin, ck.end); break;
  }
  const double total = block_sum(acc, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// One thread per group: the group's sum of squares over its chunks, in chunk order.
__device__ double group_total(const AdamTensor* tensors, const AdamChunk* chunks, const double* partial,
                              int64_t n, int64_t g) {
  double s = 0.0;
  for (int64_t c = 0; c < n; ++c) {
    if (tensors[chunks[c].tensor].group == g) s += partial[c];
  }
  return s;
}

__global__ void clip_coef_kernel(const AdamTensor* __restrict__ tensors, const AdamChunk* __restrict__ chunks,
                                 const double* __restrict__ partial, int64_t n,
                                 const AdamGroup* __restrict__ groups, int64_t num_groups,
                                 float* __restrict__ clip_coef, float* __restrict__ norms) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= num_groups) return;
  if (!groups[g].clips) {
    clip_coef[g] = 1.f;
    return;
  }
  const double norm = sqrt(group_total(tensors, chunks, partial, n, g));
  norms[g] = static_cast<float>(norm);
  clip_coef[g] = static_cast<float>(fmin(1.0, groups[g].max_grad_norm / (norm + 1e-6)));
}

__global__ void norms_kernel(const AdamTensor* __restrict__ tensors, const AdamChunk* __restrict__ chunks,
                             const double* __restrict__ partial, int64_t n,
                             const AdamGroup* __restrict__ groups, int64_t num_groups,
                             float* __restrict__ norms) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= num_groups || groups[g].clips) return;
  norms[g] = static_cast<float>(sqrt(group_total(tensors, chunks, partial, n, g)));
}

template <typename P, typename M, typename V>
__device__ double update_chunk(const AdamTensor& t, int64_t begin, int64_t end, float clip) {
  P* __restrict__ p = static_cast<P*>(t.param);
  const P* __restrict__ gp = static_cast<const P*>(t.grad);
  M* __restrict__ m = static_cast<M*>(t.exp_avg);
  V* __restrict__ v = static_cast<V*>(t.exp_avg_sq);
  const float w_minus_1 = t.lerp_w - 1.f;
  double acc = 0.0;
  for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) {
    float pv = to_f32(p[k]);
    float gv = to_f32(gp[k]);
    float mv = to_f32(m[k]);
    float vv = to_f32(v[k]);
    acc = fma(static_cast<double>(gv), static_cast<double>(gv), acc);
    pv = __fmul_rn(pv, t.decay);                   // param.mul_(1 - lr * wd)
    gv = __fmul_rn(gv, clip);                      // clipped grad
    const float diff = __fsub_rn(gv, mv);          // exp_avg.lerp_(grad, 1 - beta1)
    mv = t.lerp_small ? fmaf(t.lerp_w, diff, mv) : fmaf(w_minus_1, diff, gv);
    vv = __fmul_rn(vv, t.beta2);                   // exp_avg_sq.mul_(beta2)
    vv = fmaf(__fmul_rn(t.one_minus_beta2, gv), gv, vv);  // .addcmul_(grad, grad, 1 - beta2)
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vv), t.bc2_sqrt), t.eps);
    pv = __fadd_rn(pv, __fdiv_rn(__fmul_rn(t.neg_step_size, mv), denom));  // addcdiv_
    p[k] = from_f32<P>(pv);
    m[k] = from_f32<M>(mv);
    v[k] = from_f32<V>(vv);
  }
  return acc;
}

template <typename P>
__device__ double update_chunk_p(const AdamTensor& t, int64_t begin, int64_t end, float clip) {
  if (t.exp_avg_f32) {
    return t.exp_avg_sq_f32 ? update_chunk<P, float, float>(t, begin, end, clip)
                            : update_chunk<P, float, P>(t, begin, end, clip);
  }
  return t.exp_avg_sq_f32 ? update_chunk<P, P, float>(t, begin, end, clip)
                          : update_chunk<P, P, P>(t, begin, end, clip);
}

__global__ void __launch_bounds__(kThreads)
update_kernel(const AdamTensor* __restrict__ tensors, const AdamChunk* __restrict__ chunks,
              const float* __restrict__ clip_coef, double* __restrict__ partial) {
  __shared__ double red[kThreads];
  const AdamChunk ck = chunks[blockIdx.x];
  const AdamTensor& t = tensors[ck.tensor];
  const float clip = clip_coef[t.group];
  double acc = 0.0;
  switch (static_cast<DType>(t.param_dtype)) {
    case DType::kFloat32: acc = update_chunk_p<float>(t, ck.begin, ck.end, clip); break;
    case DType::kBFloat16: acc = update_chunk_p<__nv_bfloat16>(t, ck.begin, ck.end, clip); break;
    case DType::kFloat16: acc = update_chunk_p<__half>(t, ck.begin, ck.end, clip); break;
  }
  const double total = block_sum(acc, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

}  // namespace

cudaError_t adamw_multi_tensor(const AdamTensor* tensors, const AdamChunk* chunks, int64_t num_chunks,
                               const AdamChunk* clip_chunks, int64_t num_clip_chunks,
                               const AdamGroup* groups, int64_t num_groups, AdamWorkspace workspace,
                               float* norms, cudaStream_t stream) {
  if (num_groups == 0) return cudaSuccess;
  if (num_chunks > INT32_MAX || num_clip_chunks > INT32_MAX) return cudaErrorInvalidConfiguration;
  cudaError_t err = cudaMemsetAsync(norms, 0, static_cast<size_t>(num_groups) * sizeof(float), stream);
  if (err != cudaSuccess) return err;
  const unsigned group_blocks = static_cast<unsigned>(detail::ceil_div(num_groups, 128));
  if (num_clip_chunks > 0) {
    sumsq_kernel<<<static_cast<unsigned>(num_clip_chunks), kThreads, 0, stream>>>(tensors, clip_chunks,
                                                                                    workspace.clip_partial);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  clip_coef_kernel<<<group_blocks, 128, 0, stream>>>(tensors, clip_chunks, workspace.clip_partial,
                                                     num_clip_chunks, groups, num_groups, workspace.clip_coef,
                                                     norms);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  if (num_chunks == 0) return cudaSuccess;
  update_kernel<<<static_cast<unsigned>(num_chunks), kThreads, 0, stream>>>(tensors, chunks, workspace.clip_coef,
                                                                           workspace.update_partial);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  norms_kernel<<<group_blocks, 128, 0, stream>>>(tensors, chunks, workspace.update_partial, num_chunks, groups,
                                                 num_groups, norms);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mint
