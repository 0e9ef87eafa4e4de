// CUDA bindings of the segmented multi-adapter LoRA ops (schemas: csrc/ops.cpp; CPU semantics and the
// argument checks mirrored here: csrc/cpu/lora.cpp; kernels: csrc/cuda/kernels/lora.cu).
//
// The index tensors (seg_indptr, seg_adapter, lora_ranks, lora_scales) may be on the CPU or on the
// device of x. They are validated on the host (a device copy is read back, which synchronises with
// the stream; pass them on the CPU to avoid that) and turned into small work tables that are copied
// to the device asynchronously.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <torch/library.h>

#include <mint/lora_cuda.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "binding.h"

namespace mint {
namespace {

using at::Tensor;
using cuda_binding::check_launch;
using cuda_binding::shape_str;
using cuda::LoraPart;
using cuda::LoraRange;
using cuda::LoraSlotWork;
using cuda::LoraTile;

void check_float(const char* op, const Tensor& t, const char* name, int64_t dim, const char* layout) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D ", layout, ", got shape ", shape_str(t));
  auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf, op, ": ", name,
              " must be float32, bfloat16 or float16, got ", st);
}

void check_same_dtype(const char* op, const Tensor& t, const char* name, const Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the dtype of ", ref_name, " (",
              ref.scalar_type(), "), got ", t.scalar_type());
}

void check_device(const char* op, const Tensor& t, const char* name, const Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref.device(),
              " like the other inputs, got ", t.device());
}

void check_index(const char* op, const Tensor& t, const char* name, int64_t size, const char* what) {
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong, op, ": ", name, " must be a 1-D int64 tensor, got ",
              t.scalar_type(), " of shape ", shape_str(t));
  TORCH_CHECK(size < 0 || t.size(0) == size, op, ": ", name, " must have ", size, " elements (", what, "), got ",
              t.size(0));
}

// The validated segments as device work tables.
struct Plan {
  std::vector<LoraTile> tiles;      // per-row work, segment order
  std::vector<LoraSlotWork> slots;  // per-slot reductions, first-use order
  std::vector<LoraRange> ranges;
  std::vector<LoraPart> parts;      // the slots' rows cut into pieces of <= kLoraPartRows
  int32_t max_rank = 0;
  Tensor tiles_dev, slots_dev, ranges_dev, parts_dev;
};

// Validates the index tensors exactly as the CPU op does and builds the work tables. `scales` is
// empty for the ops without lora_scales (factor 1).
Plan make_plan(const char* op, int64_t T, int64_t N, int64_t R, const Tensor& seg_indptr, const Tensor& seg_adapter,
               const Tensor& lora_ranks, const std::vector<float>& scales, const Tensor& ref, bool with_slots) {
  check_index(op, seg_indptr, "seg_indptr", -1, "");
  TORCH_CHECK(seg_indptr.size(0) >= 1, op, ": seg_indptr must have S + 1 >= 1 elements, got 0");
  const int64_t S = seg_indptr.size(0) - 1;
  check_index(op, seg_adapter, "seg_adapter", S, "S = seg_indptr.size(0) - 1");
  check_index(op, lora_ranks, "lora_ranks", N, "N = pool size");
  cuda_binding::check_cpu_or(op, seg_indptr, "seg_indptr", ref.device());
  cuda_binding::check_cpu_or(op, seg_adapter, "seg_adapter", ref.device());
  cuda_binding::check_cpu_or(op, lora_ranks, "lora_ranks", ref.device());

  const Tensor indptr_c = cuda_binding::to_host(seg_indptr), adapter_c = cuda_binding::to_host(seg_adapter),
               ranks_c = cuda_binding::to_host(lora_ranks);
  const int64_t* indptr = indptr_c.data_ptr<int64_t>();
  const int64_t* adapter = adapter_c.data_ptr<int64_t>();
  const int64_t* ranks = ranks_c.data_ptr<int64_t>();

  TORCH_CHECK(indptr[0] == 0, op, ": seg_indptr[0] must be 0, got ", indptr[0]);
  for (int64_t s = 0; s < S; ++s) {
    TORCH_CHECK(indptr[s + 1] >= indptr[s], op, ": seg_indptr must be non-decreasing, but seg_indptr[", s + 1,
                "] = ", indptr[s + 1], " < seg_indptr[", s, "] = ", indptr[s]);
    TORCH_CHECK(adapter[s] >= -1 && adapter[s] < N, op, ": seg_adapter[", s, "] = ", adapter[s],
                " is out of range [-1, ", N, ") (N = pool size)");
  }
  TORCH_CHECK(indptr[S] == T, op, ": seg_indptr[-1] must equal the number of tokens T = ", T, ", got ", indptr[S]);
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(ranks[n] >= 0 && ranks[n] <= R, op, ": lora_ranks[", n, "] = ", ranks[n],
                " is out of range [0, R = ", R, "]");
  }

  Plan plan;
  std::vector<std::vector<LoraRange>> slot_ranges;
  std::vector<int64_t> pos(N, -1);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = adapter[s], b = indptr[s], e = indptr[s + 1];
    if (n < 0 || e == b || ranks[n] == 0) continue;
    const float scale = scales.empty() ? 1.f : scales[n];
    const int32_t rank = static_cast<int32_t>(ranks[n]);
    plan.max_rank = std::max(plan.max_rank, rank);
    for (int64_t t = b; t < e; t += cuda::kLoraTileRows) {
      plan.tiles.push_back(LoraTile{t, std::min(e, t + cuda::kLoraTileRows), static_cast<int32_t>(n), rank, scale, 0});
    }
    if (!with_slots) continue;
    if (pos[n] < 0) {
      pos[n] = static_cast<int64_t>(plan.slots.size());
      plan.slots.push_back(LoraSlotWork{0, 0, static_cast<int32_t>(n), rank, scale, 0});
      slot_ranges.emplace_back();
    }
    auto& rs = slot_ranges[pos[n]];
    if (!rs.empty() && rs.back().row_end == b) {
      rs.back().row_end = e;
    } else {
      rs.push_back(LoraRange{b, e});
    }
  }
  for (size_t k = 0; k < plan.slots.size(); ++k) {
    plan.slots[k].part_begin = static_cast<int64_t>(plan.parts.size());
    LoraPart cur{static_cast<int64_t>(k), 0, 0, 0};
    for (const LoraRange& rg : slot_ranges[k]) {
      const int64_t g = static_cast<int64_t>(plan.ranges.size());
      plan.ranges.push_back(rg);
      for (int64_t t = rg.row_begin; t < rg.row_end;) {
        if (cur.count == 0) {
          cur.range = g;
          cur.row = t;
        }
        const int64_t take = std::min(rg.row_end - t, cuda::kLoraPartRows - cur.count);
        cur.count += take;
        t += take;
        if (cur.count == cuda::kLoraPartRows) {
          plan.parts.push_back(cur);
          cur.count = 0;
        }
      }
    }
    if (cur.count > 0) plan.parts.push_back(cur);
    plan.slots[k].part_end = static_cast<int64_t>(plan.parts.size());
  }
  plan.tiles_dev = cuda_binding::upload(plan.tiles, ref.device());
  if (with_slots) {
    plan.slots_dev = cuda_binding::upload(plan.slots, ref.device());
    plan.ranges_dev = cuda_binding::upload(plan.ranges, ref.device());
    plan.parts_dev = cuda_binding::upload(plan.parts, ref.device());
  }
  return plan;
}

const LoraTile* tiles_ptr(const Plan& p) { return reinterpret_cast<const LoraTile*>(p.tiles_dev.const_data_ptr()); }

// dw[slot] = scale * left[slot rows]^T @ right[slot rows] for every slot of the plan (two deterministic
// phases through an fp32 workspace of parts x max_rank x C).
void slot_reduce(const char* op, cuda::DType dtype, const Tensor& left, const Tensor& right, Tensor& dw,
                 const Plan& plan, cudaStream_t stream) {
  const int64_t C = right.size(1);
  if (plan.parts.empty() || C == 0) return;
  Tensor partial = at::empty({static_cast<int64_t>(plan.parts.size()) * plan.max_rank * C},
                             left.options().dtype(at::kFloat));
  check_launch(cuda::lora_slot_reduce(dtype, left.const_data_ptr(), left.stride(0), right.const_data_ptr(),
                                      right.stride(0), C, dw.data_ptr(), dw.stride(0), dw.stride(1),
                                      reinterpret_cast<const LoraSlotWork*>(plan.slots_dev.const_data_ptr()),
                                      static_cast<int64_t>(plan.slots.size()),
                                      reinterpret_cast<const LoraPart*>(plan.parts_dev.const_data_ptr()),
                                      static_cast<int64_t>(plan.parts.size()),
                                      reinterpret_cast<const LoraRange*>(plan.ranges_dev.const_data_ptr()),
                                      plan.max_rank, partial.data_ptr<float>(), stream),
               op);
}

std::vector<float> read_scales(const char* op, const Tensor& lora_scales, int64_t N, const Tensor& ref) {
  TORCH_CHECK(lora_scales.dim() == 1 && lora_scales.scalar_type() == at::kFloat, op,
              ": lora_scales must be a 1-D float32 tensor, got ", lora_scales.scalar_type(), " of shape ",
              shape_str(lora_scales));
  TORCH_CHECK(lora_scales.size(0) == N, op, ": lora_scales must have N = ", N, " elements (pool size), got ",
              lora_scales.size(0));
  cuda_binding::check_cpu_or(op, lora_scales, "lora_scales", ref.device());
  const Tensor c = cuda_binding::to_host(lora_scales);
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + N);
}

void check_expand_args(const char* op, const char* y_name, const Tensor& y, const Tensor& h, const Tensor& lora_b) {
  check_float(op, y, y_name, 2, "[T, out]");
  check_float(op, h, "h", 2, "[T, R]");
  check_float(op, lora_b, "lora_b", 3, "[N, R, out]");
  check_same_dtype(op, h, "h", y, y_name);
  check_same_dtype(op, lora_b, "lora_b", y, y_name);
  TORCH_CHECK(y.is_cuda(), op, ": ", y_name, " must be a CUDA tensor, got ", y.device());
  check_device(op, h, "h", y);
  check_device(op, lora_b, "lora_b", y);
  TORCH_CHECK(h.size(0) == y.size(0), op, ": h must have T = ", y.size(0), " rows like ", y_name, ", got shape ",
              shape_str(h));
  TORCH_CHECK(lora_b.size(2) == y.size(1), op, ": lora_b must be [N, R, out] with out = ", y.size(1), " (", y_name,
              ".size(1)), got shape ", shape_str(lora_b));
  TORCH_CHECK(h.size(1) == lora_b.size(1), op, ": h must have R = ", lora_b.size(1),
              " columns (lora_b.size(1)), got shape ", shape_str(h));
}

void check_shrink_args(const char* op, const Tensor& x, const Tensor& lora_a) {
  check_float(op, x, "x", 2, "[T, in]");
  check_float(op, lora_a, "lora_a", 3, "[N, R, in]");
  check_same_dtype(op, lora_a, "lora_a", x, "x");
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor, got ", x.device());
  check_device(op, lora_a, "lora_a", x);
  TORCH_CHECK(lora_a.size(2) == x.size(1), op, ": lora_a must be [N, R, in] with in = ", x.size(1),
              " (x.size(1)), got shape ", shape_str(lora_a));
}

// Tensor cores for bf16 / fp16 row products unless MINT_LORA_TENSOR_CORES=0 (read per call, so tests can
// compare both kernels in one process).
bool use_tensor_cores() {
  const char* v = std::getenv("MINT_LORA_TENSOR_CORES");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// A view with unit column stride (the kernels take a leading dimension per matrix), else a copy.
Tensor unit_inner(const Tensor& t) { return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous(); }

// Leading dimension of a 2-D matrix with unit column stride (any value works for a single column).
int64_t ld(const Tensor& t) { return t.stride(0); }

Tensor lora_shrink_cuda(const Tensor& x_in, const Tensor& lora_a_in, const Tensor& seg_indptr,
                        const Tensor& seg_adapter, const Tensor& lora_ranks) {
  const char* op = "mint.lora_shrink";
  check_shrink_args(op, x_in, lora_a_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t T = x_in.size(0), K = x_in.size(1), N = lora_a_in.size(0), R = lora_a_in.size(1);
  const Plan plan = make_plan(op, T, N, R, seg_indptr, seg_adapter, lora_ranks, {}, x_in, false);
  Tensor h = at::zeros({T, R}, x_in.options());
  if (plan.tiles.empty()) return h;
  const Tensor x = unit_inner(x_in), a = unit_inner(lora_a_in);
  check_launch(cuda::lora_rows_times_wt(cuda_binding::to_kernel_dtype(x.scalar_type()), x.const_data_ptr(), ld(x), K,
                                        a.const_data_ptr(), a.stride(0), a.stride(1), h.data_ptr(), R,
                                        tiles_ptr(plan), static_cast<int64_t>(plan.tiles.size()), plan.max_rank,
                                        use_tensor_cores(), cuda_binding::current_stream()),
               op);
  return h;
}

// dst[rows] += scale * h[rows, :rank] @ B[slot, :rank] for every tile; dst has unit column stride.
void expand_into(const char* op, Tensor& dst, const Tensor& h_in, const Tensor& b_in, const Plan& plan) {
  if (plan.tiles.empty() || dst.size(1) == 0) return;
  const Tensor h = unit_inner(h_in), b = unit_inner(b_in);
  check_launch(cuda::lora_rows_times_w(cuda_binding::to_kernel_dtype(dst.scalar_type()), h.const_data_ptr(), ld(h),
                                       b.const_data_ptr(), b.stride(0), b.stride(1), dst.size(1), dst.const_data_ptr(),
                                       ld(dst), dst.data_ptr(), ld(dst), tiles_ptr(plan),
                                       static_cast<int64_t>(plan.tiles.size()), use_tensor_cores(),
                                       cuda_binding::current_stream()),
               op);
}

Tensor lora_expand_cuda(const Tensor& y, const Tensor& h, const Tensor& lora_b, const Tensor& seg_indptr,
                        const Tensor& seg_adapter, const Tensor& lora_ranks, const Tensor& lora_scales) {
  const char* op = "mint.lora_expand";
  check_expand_args(op, "y", y, h, lora_b);
  const c10::cuda::CUDAGuard guard(y.device());
  const int64_t N = lora_b.size(0);
  const auto scales = read_scales(op, lora_scales, N, y);
  const Plan plan = make_plan(op, y.size(0), N, lora_b.size(1), seg_indptr, seg_adapter, lora_ranks, scales, y, false);
  Tensor out = y.clone(at::MemoryFormat::Contiguous);
  expand_into(op, out, h, lora_b, plan);
  return out;
}

void lora_expand_inplace_cuda(const Tensor& y, const Tensor& h, const Tensor& lora_b, const Tensor& seg_indptr,
                              const Tensor& seg_adapter, const Tensor& lora_ranks, const Tensor& lora_scales) {
  const char* op = "mint.lora_expand_";
  check_expand_args(op, "y", y, h, lora_b);
  at::assert_no_internal_overlap(y);
  const c10::cuda::CUDAGuard guard(y.device());
  const int64_t N = lora_b.size(0);
  const auto scales = read_scales(op, lora_scales, N, y);
  const Plan plan = make_plan(op, y.size(0), N, lora_b.size(1), seg_indptr, seg_adapter, lora_ranks, scales, y, false);
  if (y.size(1) <= 1 || y.stride(1) == 1) {
    Tensor dst = y;
    expand_into(op, dst, h, lora_b, plan);
  } else {
    Tensor tmp = y.contiguous();
    expand_into(op, tmp, h, lora_b, plan);
    y.copy_(tmp);
  }
}

std::tuple<Tensor, Tensor> lora_expand_backward_cuda(const Tensor& grad_y_in, const Tensor& h_in,
                                                     const Tensor& lora_b_in, const Tensor& seg_indptr,
                                                     const Tensor& seg_adapter, const Tensor& lora_ranks,
                                                     const Tensor& lora_scales) {
  const char* op = "mint.lora_expand_backward";
  check_expand_args(op, "grad_y", grad_y_in, h_in, lora_b_in);
  const c10::cuda::CUDAGuard guard(grad_y_in.device());
  const int64_t T = grad_y_in.size(0), out = grad_y_in.size(1), N = lora_b_in.size(0), R = lora_b_in.size(1);
  const auto scales = read_scales(op, lora_scales, N, grad_y_in);
  const Plan plan = make_plan(op, T, N, R, seg_indptr, seg_adapter, lora_ranks, scales, grad_y_in, true);
  Tensor grad_h = at::zeros(h_in.sizes(), h_in.options());
  Tensor grad_b = at::zeros(lora_b_in.sizes(), lora_b_in.options());
  if (plan.tiles.empty()) return {grad_h, grad_b};
  const Tensor gy = unit_inner(grad_y_in), h = unit_inner(h_in), b = unit_inner(lora_b_in);
  const auto dtype = cuda_binding::to_kernel_dtype(gy.scalar_type());
  const cudaStream_t stream = cuda_binding::current_stream();
  // grad_h[t, r] = scale * grad_y[t] . B[slot, r]
  check_launch(cuda::lora_rows_times_wt(dtype, gy.const_data_ptr(), ld(gy), out, b.const_data_ptr(), b.stride(0),
                                        b.stride(1), grad_h.data_ptr(), R, tiles_ptr(plan),
                                        static_cast<int64_t>(plan.tiles.size()), plan.max_rank, use_tensor_cores(), stream),
               op);
  // grad_B[slot] = scale * h[rows, :rank]^T @ grad_y[rows]
  slot_reduce(op, dtype, h, gy, grad_b, plan, stream);
  return {grad_h, grad_b};
}

std::tuple<Tensor, Tensor> lora_shrink_backward_cuda(const Tensor& grad_h_in, const Tensor& x_in,
                                                     const Tensor& lora_a_in, const Tensor& seg_indptr,
                                                     const Tensor& seg_adapter, const Tensor& lora_ranks) {
  const char* op = "mint.lora_shrink_backward";
  check_shrink_args(op, x_in, lora_a_in);
  check_float(op, grad_h_in, "grad_h", 2, "[T, R]");
  check_same_dtype(op, grad_h_in, "grad_h", x_in, "x");
  check_device(op, grad_h_in, "grad_h", x_in);
  const int64_t T = x_in.size(0), K = x_in.size(1), N = lora_a_in.size(0), R = lora_a_in.size(1);
  TORCH_CHECK(grad_h_in.size(0) == T && grad_h_in.size(1) == R, op, ": grad_h must be [T, R] = [", T, ", ", R,
              "], got shape ", shape_str(grad_h_in));
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Plan plan = make_plan(op, T, N, R, seg_indptr, seg_adapter, lora_ranks, {}, x_in, true);
  Tensor grad_x = at::zeros(x_in.sizes(), x_in.options());
  Tensor grad_a = at::zeros(lora_a_in.sizes(), lora_a_in.options());
  if (plan.tiles.empty()) return {grad_x, grad_a};
  const Tensor gh = unit_inner(grad_h_in), x = unit_inner(x_in), a = unit_inner(lora_a_in);
  const auto dtype = cuda_binding::to_kernel_dtype(x.scalar_type());
  const cudaStream_t stream = cuda_binding::current_stream();
  // grad_x[t] = grad_h[t, :rank] @ A[slot, :rank]
  check_launch(cuda::lora_rows_times_w(dtype, gh.const_data_ptr(), ld(gh), a.const_data_ptr(), a.stride(0),
                                       a.stride(1), K, nullptr, 0, grad_x.data_ptr(), K, tiles_ptr(plan),
                                       static_cast<int64_t>(plan.tiles.size()), use_tensor_cores(), stream),
               op);
  // grad_A[slot] = grad_h[rows, :rank]^T @ x[rows]
  slot_reduce(op, dtype, gh, x, grad_a, plan, stream);
  return {grad_x, grad_a};
}

}  // namespace

TORCH_LIBRARY_IMPL(mint, CUDA, m) {
  m.impl("lora_shrink", &lora_shrink_cuda);
  m.impl("lora_expand", &lora_expand_cuda);
  m.impl("lora_expand_", &lora_expand_inplace_cuda);
  m.impl("lora_expand_backward", &lora_expand_backward_cuda);
  m.impl("lora_shrink_backward", &lora_shrink_backward_cuda);
}

}  // namespace mint
