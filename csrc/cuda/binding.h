// Helpers shared by the tensor-facing CUDA bindings (csrc/cuda/*.cpp): dtype mapping, launch error
// checks, host <-> device transfers of small work tables. Compiled only against a CUDA build of torch.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <mint/cuda_common.h>

#include <cstring>
#include <string>
#include <vector>

namespace mint {
namespace cuda_binding {

inline cuda::DType to_kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    case at::kHalf: return cuda::DType::kFloat16;
    default: TORCH_CHECK(false, "mint: unsupported dtype ", t, " (float32, bfloat16 or float16)");
  }
}

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

// A small host table copied to `device` on the current stream (pinned staging buffer, asynchronous;
// torch's host allocator keeps the staging buffer alive until the copy has run).
inline at::Tensor upload_bytes(const void* data, size_t bytes, const at::Device& device) {
  at::Tensor dev = at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions().dtype(at::kByte).device(device));
  if (bytes == 0) return dev;
  at::Tensor host = at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.data_ptr(), data, bytes);
  dev.copy_(host, /*non_blocking=*/true);
  return dev;
}

template <typename T>
at::Tensor upload(const std::vector<T>& v, const at::Device& device) {
  return upload_bytes(v.data(), v.size() * sizeof(T), device);
}

// A contiguous CPU copy (or view) of a small index / parameter tensor, which may live on the CPU or on
// the kernel's device; reading a device tensor synchronises with its stream.
inline at::Tensor to_host(const at::Tensor& t) { return t.device().is_cpu() ? t.contiguous() : t.to(at::kCPU).contiguous(); }

// `t` must be on the CPU or on `device`.
inline void check_cpu_or(const char* op, const at::Tensor& t, const char* name, const at::Device& device) {
  TORCH_CHECK(t.device().is_cpu() || t.device() == device, op, ": ", name, " must be on ", device,
              " (like the other inputs) or on the CPU, got ", t.device());
}

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (d) s += ", ";
    s += std::to_string(t.size(d));
  }
  return s + "]";
}

}  // namespace cuda_binding
}  // namespace mint
