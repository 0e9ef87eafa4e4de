// Torch-free declarations shared by mint's CUDA kernels (csrc/cuda/kernels/*.cu) and their tensor-facing
// bindings (csrc/cuda/*.cpp). Only the CUDA runtime API appears here, so nvcc compiles the kernels on a
// machine whose torch is a CPU build.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace mint {
namespace cuda {

// Element type of a floating tensor handed to a kernel.
enum class DType : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

}  // namespace cuda
}  // namespace mint
