// CUDA binding of mint::sample (schema: csrc/ops.cpp; CPU semantics and checks mirrored from
// csrc/cpu/sampling.cpp; kernel: csrc/cuda/kernels/sampling.cu).
//
// The per-row parameters may be on the CPU or on the device of logits. They are validated on the host
// (temperature finite and >= 0, top_p > 0), so parameters on the device are read back once per call
// (a synchronisation); CPU parameters are copied to the device asynchronously.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <mint/sampling_cuda.h>

#include <cmath>
#include <tuple>

#include "binding.h"

namespace mint {
namespace {

void check_row_param(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t batch,
                     const at::Device& device) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == batch, name, " must be 1-D [B] with B = ", batch,
              " (rows of logits), got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu() || t.device() == device, name, " must be on ", device,
              " like logits, or on the CPU, got ", t.device());
}

// The parameter as a contiguous tensor on `device`.
at::Tensor on_device(const at::Tensor& t, const at::Device& device) {
  if (t.device() == device) return t.contiguous();
  at::Tensor host = t.contiguous();
  at::Tensor pinned = at::empty(host.sizes(), host.options().pinned_memory(true));
  pinned.copy_(host);
  at::Tensor dev = at::empty(host.sizes(), host.options().device(device));
  dev.copy_(pinned, /*non_blocking=*/true);
  return dev;
}

std::tuple<at::Tensor, at::Tensor> sample_cuda(const at::Tensor& logits, const at::Tensor& temperature,
                                               const at::Tensor& top_k, const at::Tensor& top_p,
                                               const at::Tensor& seed, const at::Tensor& subsequence,
                                               const at::Tensor& offset) {
  TORCH_CHECK(logits.dim() == 2, "logits must be 2-D [B, V], got shape ", logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "logits must be float32, bfloat16 or float16, got ", dtype);
  TORCH_CHECK(logits.is_cuda(), "logits must be a CUDA tensor, got ", logits.device());
  const int64_t batch = logits.size(0);
  const int64_t vocab = logits.size(1);
  TORCH_CHECK(vocab >= 1, "logits must have a vocabulary of at least 1 token (V >= 1), got shape ",
              logits.sizes());
  const at::Device device = logits.device();
  check_row_param(temperature, "temperature", at::kFloat, batch, device);
  check_row_param(top_k, "top_k", at::kLong, batch, device);
  check_row_param(top_p, "top_p", at::kFloat, batch, device);
  check_row_param(seed, "seed", at::kLong, batch, device);
  check_row_param(subsequence, "subsequence", at::kLong, batch, device);
  check_row_param(offset, "offset", at::kLong, batch, device);
  TORCH_CHECK(batch <= INT32_MAX, "logits has too many rows for one launch (B = ", batch, ")");
  const c10::cuda::CUDAGuard guard(device);

  {
    const at::Tensor t_host = cuda_binding::to_host(temperature), p_host = cuda_binding::to_host(top_p);
    const float* t = t_host.data_ptr<float>();
    const float* p = p_host.data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b) {
      TORCH_CHECK(std::isfinite(t[b]) && t[b] >= 0.f, "temperature must be finite and >= 0, got temperature[", b,
                  "] = ", t[b]);
      TORCH_CHECK(p[b] > 0.f, "top_p must be > 0 (>= 1 disables the filter), got top_p[", b, "] = ", p[b]);
    }
  }

  auto tokens = at::empty({batch}, logits.options().dtype(at::kLong));
  auto logprobs = at::empty({batch}, logits.options().dtype(at::kFloat));
  if (batch == 0) return {tokens, logprobs};

  const at::Tensor t_d = on_device(temperature, device), k_d = on_device(top_k, device),
                   p_d = on_device(top_p, device), s_d = on_device(seed, device),
                   q_d = on_device(subsequence, device), o_d = on_device(offset, device);
  const cuda::SampleRowParams params{t_d.const_data_ptr<float>(),   k_d.const_data_ptr<int64_t>(),
                                     p_d.const_data_ptr<float>(),   s_d.const_data_ptr<int64_t>(),
                                     q_d.const_data_ptr<int64_t>(), o_d.const_data_ptr<int64_t>()};
  cuda_binding::check_launch(
      cuda::sample_rows(cuda_binding::to_kernel_dtype(dtype), logits.const_data_ptr(), batch, vocab, logits.stride(0),
                        logits.stride(1), params, tokens.data_ptr<int64_t>(), logprobs.data_ptr<float>(),
                        cuda_binding::current_stream()),
      "mint.sample");
  return {tokens, logprobs};
}

}  // namespace
}  // namespace mint

TORCH_LIBRARY_IMPL(mint, CUDA, m) { m.impl("sample", &mint::sample_cuda); }
