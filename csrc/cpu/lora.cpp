// CPU kernels of the multi-adapter segmented LoRA ops (schemas and layouts: csrc/ops.cpp).
//
// Each call validates its arguments, groups the segment rows by adapter slot (make_plan) and runs the row
// passes of lora_passes.h on the register-blocked kernels of lora_tiles.h: row blocks of one slot read x / y
// where they lie (any row stride, no gathers, bf16 / fp16 widened in registers), accumulate in fp32 and
// round once; only slots that occur are touched. Per-slot reductions (dA, dB) run over that slot's rows
// in segment order, so identical calls give identical bits at any thread count. Outputs the plan covers
// completely are not zero-filled, and gradient pools are zeroed only in the (slot, row) gaps no segment
// writes. The fused lora_apply_forward / _backward run both halves of lora_apply on each row block.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "fresh_output.h"
#include "lora_passes.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace mint {
namespace {

using at::Tensor;
using lora_passes::AxpyRows;
using lora_passes::DotRows;
using lora_passes::RowBlock;
using lora_passes::SlotRows;
using lora_passes::WeightGrad;
using lora_passes::dispatch_float;
using lora_passes::row_blocks;

std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (d) s += ", ";
    s += std::to_string(t.size(d));
  }
  return s + "]";
}

void check_float(const char* op, const Tensor& t, const char* name, int64_t dim, const char* layout) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D ", layout, ", got shape ",
              shape_str(t));
  auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf, op, ": ", name,
              " must be float32, bfloat16 or float16, got ", st);
}

void check_same_dtype(const char* op, const Tensor& t, const char* name, const Tensor& ref,
                      const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the dtype of ",
              ref_name, " (", ref.scalar_type(), "), got ", t.scalar_type());
}

void check_device(const char* op, const Tensor& t, const char* name, const Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref.device(),
              " like the other inputs, got ", t.device());
}

void check_index(const char* op, const Tensor& t, const char* name, int64_t size, const char* what) {
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong, op, ": ", name,
              " must be a 1-D int64 tensor, got ", t.scalar_type(), " of shape ", shape_str(t));
  TORCH_CHECK(size < 0 || t.size(0) == size, op, ": ", name, " must have ", size, " elements (",
              what, "), got ", t.size(0));
}

// Validates the index tensors and groups segment rows by slot (only slots with rank > 0 and rows).
std::vector<SlotRows> make_plan(const char* op, int64_t T, int64_t N, int64_t R,
                                const Tensor& seg_indptr, const Tensor& seg_adapter,
                                const Tensor& lora_ranks, const Tensor& ref) {
  check_index(op, seg_indptr, "seg_indptr", -1, "");
  TORCH_CHECK(seg_indptr.size(0) >= 1, op, ": seg_indptr must have S + 1 >= 1 elements, got 0");
  const int64_t S = seg_indptr.size(0) - 1;
  check_index(op, seg_adapter, "seg_adapter", S, "S = seg_indptr.size(0) - 1");
  check_index(op, lora_ranks, "lora_ranks", N, "N = pool size");
  check_device(op, seg_indptr, "seg_indptr", ref);
  check_device(op, seg_adapter, "seg_adapter", ref);
  check_device(op, lora_ranks, "lora_ranks", ref);

  const Tensor indptr_c = seg_indptr.contiguous(), adapter_c = seg_adapter.contiguous(),
               ranks_c = lora_ranks.contiguous();
  const int64_t* indptr = indptr_c.data_ptr<int64_t>();
  const int64_t* adapter = adapter_c.data_ptr<int64_t>();
  const int64_t* ranks = ranks_c.data_ptr<int64_t>();

  TORCH_CHECK(indptr[0] == 0, op, ": seg_indptr[0] must be 0, got ", indptr[0]);
  for (int64_t s = 0; s < S; ++s) {
    TORCH_CHECK(indptr[s + 1] >= indptr[s], op, ": seg_indptr must be non-decreasing, but seg_indptr[",
                s + 1, "] = ", indptr[s + 1], " < seg_indptr[", s, "] = ", indptr[s]);
    TORCH_CHECK(adapter[s] >= -1 && adapter[s] < N, op, ": seg_adapter[", s, "] = ", adapter[s],
                " is out of range [-1, ", N, ") (N = pool size)");
  }
  TORCH_CHECK(indptr[S] == T, op, ": seg_indptr[-1] must equal the number of tokens T = ", T,
              ", got ", indptr[S]);
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(ranks[n] >= 0 && ranks[n] <= R, op, ": lora_ranks[", n, "] = ", ranks[n],
                " is out of range [0, R = ", R, "]");
  }

  std::vector<SlotRows> plan;
  std::vector<int64_t> pos(N, -1);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = adapter[s], b = indptr[s], e = indptr[s + 1];
    if (n < 0 || e == b || ranks[n] == 0) continue;
    if (pos[n] < 0) {
      pos[n] = static_cast<int64_t>(plan.size());
      plan.push_back(SlotRows{n, ranks[n]});
    }
    SlotRows& sr = plan[pos[n]];
    if (!sr.ranges.empty() && sr.ranges.back().second == b) {
      sr.ranges.back().second = e;
    } else {
      sr.ranges.emplace_back(b, e);
    }
    sr.count += e - b;
  }
  for (SlotRows& sr : plan) {
    if (sr.ranges.size() == 1) continue;
    sr.index = at::empty({sr.count}, ref.options().dtype(at::kLong));
    int64_t* p = sr.index.data_ptr<int64_t>();
    for (const auto& [b, e] : sr.ranges) {
      for (int64_t t = b; t < e; ++t) *p++ = t;
    }
  }
  return plan;
}

std::vector<float> read_scales(const char* op, const Tensor& lora_scales, int64_t N, const Tensor& ref) {
  TORCH_CHECK(lora_scales.dim() == 1 && lora_scales.scalar_type() == at::kFloat, op,
              ": lora_scales must be a 1-D float32 tensor, got ", lora_scales.scalar_type(),
              " of shape ", shape_str(lora_scales));
  TORCH_CHECK(lora_scales.size(0) == N, op, ": lora_scales must have N = ", N,
              " elements (pool size), got ", lora_scales.size(0));
  check_device(op, lora_scales, "lora_scales", ref);
  const Tensor c = lora_scales.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + N);
}

// Shape and dtype checks shared by lora_expand, lora_expand_ and lora_expand_backward.
// `y` is y or grad_y: [T, out].
// y (or grad_y / grad_out) [T, out] and the lora_b pool [N, R, out] of an expand.
void check_out_and_b(const char* op, const char* y_name, const Tensor& y, const Tensor& lora_b) {
  check_float(op, y, y_name, 2, "[T, out]");
  check_float(op, lora_b, "lora_b", 3, "[N, R, out]");
  check_same_dtype(op, lora_b, "lora_b", y, y_name);
  check_device(op, lora_b, "lora_b", y);
  TORCH_CHECK(lora_b.size(2) == y.size(1), op, ": lora_b must be [N, R, out] with out = ", y.size(1),
              " (", y_name, ".size(1)), got shape ", shape_str(lora_b));
}

void check_expand_args(const char* op, const char* y_name, const Tensor& y, const Tensor& h,
                       const Tensor& lora_b) {
  check_out_and_b(op, y_name, y, lora_b);
  check_float(op, h, "h", 2, "[T, R]");
  check_same_dtype(op, h, "h", y, y_name);
  check_device(op, h, "h", y);
  TORCH_CHECK(h.size(0) == y.size(0), op, ": h must have T = ", y.size(0), " rows like ", y_name,
              ", got shape ", shape_str(h));
  TORCH_CHECK(h.size(1) == lora_b.size(1), op, ": h must have R = ", lora_b.size(1),
              " columns (lora_b.size(1)), got shape ", shape_str(h));
}

void check_shrink_args(const char* op, const Tensor& x, const Tensor& lora_a) {
  check_float(op, x, "x", 2, "[T, in]");
  check_float(op, lora_a, "lora_a", 3, "[N, R, in]");
  check_same_dtype(op, lora_a, "lora_a", x, "x");
  check_device(op, lora_a, "lora_a", x);
  TORCH_CHECK(lora_a.size(2) == x.size(1), op, ": lora_a must be [N, R, in] with in = ", x.size(1),
              " (x.size(1)), got shape ", shape_str(lora_a));
}

// True when the plan writes every row of a [T, ...] output (and, with full_rank, every column of a
// [T, R] one), so that output needs no zero fill.
bool covers_rows(const std::vector<SlotRows>& plan, int64_t T, int64_t R, bool full_rank) {
  int64_t rows = 0;
  for (const SlotRows& sr : plan) {
    if (full_rank && sr.rank != R) return false;
    rows += sr.count;
  }
  return rows == T;
}

// A [T, k] output: uninitialised when the plan writes all of it, else zero-filled (one memset).
Tensor row_output(at::IntArrayRef sizes, const at::TensorOptions& options,
                  const std::vector<SlotRows>& plan, int64_t R, bool full_rank) {
  const bool full = covers_rows(plan, sizes[0], R, full_rank);
  return full ? cpu::empty_output(sizes, options) : cpu::zeros_output(sizes, options);
}

// A contiguous [N, R, k] gradient pool whose (slot, row) pairs outside the plan's slots and ranks
// are zero; the rest is left for the caller to write. Zeroes each maximal gap with one fill.
Tensor grad_pool(const Tensor& like, const std::vector<SlotRows>& plan) {
  const int64_t N = like.size(0), R = like.size(1);
  Tensor g = cpu::empty_output(like.sizes(), like.options());
  if (g.numel() == 0) return g;
  std::vector<int64_t> written(N, 0);
  for (const SlotRows& sr : plan) written[sr.slot] = sr.rank;
  Tensor flat = g.view({N * R, like.size(2)});
  int64_t gap_begin = -1;
  for (int64_t n = 0; n <= N; ++n) {
    const int64_t row = n * R;
    if (n < N && written[n] == 0) {  // the whole slot is a gap: extend or open one
      if (gap_begin < 0) gap_begin = row;
      continue;
    }
    if (gap_begin >= 0) {  // close the gap before slot n
      flat.narrow(0, gap_begin, row - gap_begin).zero_();
      gap_begin = -1;
    }
    if (n < N && written[n] < R) gap_begin = row + written[n];  // rows >= rank of a used slot
  }
  return g;
}

// Copies the rows of base that no slot of the plan writes into dst (an out-of-place expand's fresh output).
void copy_uncovered_rows(Tensor& dst, const Tensor& base, const std::vector<SlotRows>& plan) {
  std::vector<std::pair<int64_t, int64_t>> covered;
  for (const SlotRows& sr : plan) covered.insert(covered.end(), sr.ranges.begin(), sr.ranges.end());
  std::sort(covered.begin(), covered.end());
  covered.emplace_back(base.size(0), base.size(0));  // closes the last gap
  int64_t next = 0;
  for (const auto& [begin, end] : covered) {
    if (begin > next) dst.narrow(0, next, begin - next).copy_(base.narrow(0, next, begin - next));
    next = std::max(next, end);
  }
}

// The output of an expand into y: y itself in place (when its rows have unit column stride), else a fresh
// contiguous tensor whose uncovered rows are copied from y (the kernel writes the others once).
Tensor expand_output(const Tensor& y, const std::vector<SlotRows>& plan, bool in_place) {
  if (in_place && (y.size(1) <= 1 || y.stride(1) == 1)) return y;
  Tensor out = cpu::empty_output(y.sizes(), y.options());
  copy_uncovered_rows(out, y, plan);
  return out;
}

Tensor lora_shrink_cpu(const Tensor& x, const Tensor& lora_a, const Tensor& seg_indptr,
                       const Tensor& seg_adapter, const Tensor& lora_ranks) {
  const char* op = "mint.lora_shrink";
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ops stay off the tape
  check_shrink_args(op, x, lora_a);
  const int64_t T = x.size(0), N = lora_a.size(0), R = lora_a.size(1);
  const auto plan = make_plan(op, T, N, R, seg_indptr, seg_adapter, lora_ranks, x);

  Tensor h = row_output({T, R}, x.options(), plan, R, /*full_rank=*/false);  // columns >= rank: the kernel
  const auto blocks = row_blocks(plan);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T_ = decltype(tag);
    lora_passes::run_dot(DotRows<T_>(x, lora_a, h, nullptr), blocks);
  });
  return h;
}

// y + scale * h @ B into `out` (y itself or expand_output's fresh tensor).
void expand_into(Tensor& out, const Tensor& y, const Tensor& h, const Tensor& lora_b,
                 const std::vector<SlotRows>& plan, const std::vector<float>& scales) {
  const auto blocks = row_blocks(plan);
  dispatch_float(y.scalar_type(), [&](auto tag) {
    using T_ = decltype(tag);
    lora_passes::run_axpy(AxpyRows<T_>(y, h, lora_b, out, scales.data()), blocks, out.size(1));
  });
}

Tensor lora_expand_cpu(const Tensor& y, const Tensor& h, const Tensor& lora_b, const Tensor& seg_indptr,
                       const Tensor& seg_adapter, const Tensor& lora_ranks, const Tensor& lora_scales) {
  const char* op = "mint.lora_expand";
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ops stay off the tape
  check_expand_args(op, "y", y, h, lora_b);
  const int64_t N = lora_b.size(0);
  const auto plan = make_plan(op, y.size(0), N, lora_b.size(1), seg_indptr, seg_adapter, lora_ranks, y);
  const auto scales = read_scales(op, lora_scales, N, y);

  Tensor out = expand_output(y, plan, /*in_place=*/false);
  expand_into(out, y, h, lora_b, plan, scales);
  return out;
}

void lora_expand_inplace_cpu(const Tensor& y, const Tensor& h, const Tensor& lora_b,
                             const Tensor& seg_indptr, const Tensor& seg_adapter,
                             const Tensor& lora_ranks, const Tensor& lora_scales) {
  const char* op = "mint.lora_expand_";
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ops stay off the tape
  check_expand_args(op, "y", y, h, lora_b);
  at::assert_no_internal_overlap(y);
  const int64_t N = lora_b.size(0);
  const auto plan = make_plan(op, y.size(0), N, lora_b.size(1), seg_indptr, seg_adapter, lora_ranks, y);
  const auto scales = read_scales(op, lora_scales, N, y);

  Tensor out = expand_output(y, plan, /*in_place=*/true);
  expand_into(out, y, h, lora_b, plan, scales);
  if (!out.is_same(y)) y.copy_(out);  // y's columns are strided: the kernel wrote a contiguous copy
}

std::tuple<Tensor, Tensor> lora_expand_backward_cpu(const Tensor& grad_y, const Tensor& h,
                                                    const Tensor& lora_b, const Tensor& seg_indptr,
                                                    const Tensor& seg_adapter, const Tensor& lora_ranks,
                                                    const Tensor& lora_scales) {
  const char* op = "mint.lora_expand_backward";
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ops stay off the tape
  check_expand_args(op, "grad_y", grad_y, h, lora_b);
  const int64_t N = lora_b.size(0), R = lora_b.size(1);
  const auto plan = make_plan(op, grad_y.size(0), N, R, seg_indptr, seg_adapter, lora_ranks, grad_y);
  const auto scales = read_scales(op, lora_scales, N, grad_y);

  Tensor grad_h = row_output(h.sizes(), h.options().memory_format(at::MemoryFormat::Contiguous), plan, R,
                             /*full_rank=*/false);
  const auto blocks = row_blocks(plan);
  dispatch_float(grad_y.scalar_type(), [&](auto tag) {
    using T_ = decltype(tag);
    lora_passes::run_dot(DotRows<T_>(grad_y, lora_b, grad_h, scales.data()), blocks);
  });
  Tensor grad_b = grad_pool(lora_b, plan);
  lora_passes::run_weight_grads({WeightGrad{h, grad_y, grad_b, scales.data()}}, plan);
  return {grad_h, grad_b};
}

std::tuple<Tensor, Tensor> lora_shrink_backward_cpu(const Tensor& grad_h, const Tensor& x,
                                                    const Tensor& lora_a, const Tensor& seg_indptr,
                                                    const Tensor& seg_adapter, const Tensor& lora_ranks) {
  const char* op = "mint.lora_shrink_backward";
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ops stay off the tape
  check_shrink_args(op, x, lora_a);
  check_float(op, grad_h, "grad_h", 2, "[T, R]");
  check_same_dtype(op, grad_h, "grad_h", x, "x");
  check_device(op, grad_h, "grad_h", x);
  const int64_t T = x.size(0), N = lora_a.size(0), R = lora_a.size(1);
  TORCH_CHECK(grad_h.size(0) == T && grad_h.size(1) == R, op, ": grad_h must be [T, R] = [", T, ", ",
              R, "], got shape ", shape_str(grad_h));
  const auto plan = make_plan(op, T, N, R, seg_indptr, seg_adapter, lora_ranks, x);

  Tensor grad_x = row_output(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous), plan, R,
                             /*full_rank=*/false);
  const auto blocks = row_blocks(plan);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T_ = decltype(tag);
    lora_passes::run_axpy(AxpyRows<T_>(Tensor(), grad_h, lora_a, grad_x, nullptr), blocks, x.size(1));
  });
  Tensor grad_a = grad_pool(lora_a, plan);
  lora_passes::run_weight_grads({WeightGrad{grad_h, x, grad_a, nullptr}}, plan);
  return {grad_x, grad_a};
}

// Checks shared by the fused lora_apply ops: x [T, in], y (or grad_out) [T, out], the two pools.
void check_apply_args(const char* op, const char* y_name, const Tensor& y, const Tensor& x, const Tensor& lora_a,
                      const Tensor& lora_b) {
  check_shrink_args(op, x, lora_a);
  check_out_and_b(op, y_name, y, lora_b);
  check_same_dtype(op, y, y_name, x, "x");
  check_device(op, y, y_name, x);
  TORCH_CHECK(y.size(0) == x.size(0), op, ": ", y_name, " must have T = ", x.size(0), " rows like x, got shape ",
              shape_str(y));
  TORCH_CHECK(lora_b.size(0) == lora_a.size(0) && lora_b.size(1) == lora_a.size(1), op,
              ": lora_a and lora_b must share [N, R], got shapes ", shape_str(lora_a), " and ", shape_str(lora_b));
}

// shrink + expand in one pass over row blocks: returns (out, h) with out = y itself when in place.
std::tuple<Tensor, Tensor> apply_forward(const char* op, const Tensor& y, const Tensor& x, const Tensor& lora_a,
                                         const Tensor& lora_b, const Tensor& seg_indptr, const Tensor& seg_adapter,
                                         const Tensor& lora_ranks, const Tensor& lora_scales, bool in_place) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ops stay off the tape
  check_apply_args(op, "y", y, x, lora_a, lora_b);
  if (in_place) at::assert_no_internal_overlap(y);
  const int64_t T = x.size(0), N = lora_a.size(0), R = lora_a.size(1);
  const auto plan = make_plan(op, T, N, R, seg_indptr, seg_adapter, lora_ranks, x);
  const auto scales = read_scales(op, lora_scales, N, x);

  Tensor h = row_output({T, R}, x.options(), plan, R, /*full_rank=*/false);
  Tensor out = expand_output(y, plan, in_place);
  const auto blocks = row_blocks(plan);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T_ = decltype(tag);
    lora_passes::run_dot_then_axpy(DotRows<T_>(x, lora_a, h, nullptr),
                                   AxpyRows<T_>(y, h, lora_b, out, scales.data()), blocks, out.size(1));
  });
  if (in_place && !out.is_same(y)) y.copy_(out);
  return {in_place ? y : out, h};
}

std::tuple<Tensor, Tensor> lora_apply_forward_cpu(const Tensor& y, const Tensor& x, const Tensor& lora_a,
                                                  const Tensor& lora_b, const Tensor& seg_indptr,
                                                  const Tensor& seg_adapter, const Tensor& lora_ranks,
                                                  const Tensor& lora_scales) {
  return apply_forward("mint.lora_apply_forward", y, x, lora_a, lora_b, seg_indptr, seg_adapter, lora_ranks,
                       lora_scales, /*in_place=*/false);
}

Tensor lora_apply_forward_inplace_cpu(const Tensor& y, const Tensor& x, const Tensor& lora_a, const Tensor& lora_b,
                                      const Tensor& seg_indptr, const Tensor& seg_adapter, const Tensor& lora_ranks,
                                      const Tensor& lora_scales) {
  return std::get<1>(apply_forward("mint.lora_apply_forward_", y, x, lora_a, lora_b, seg_indptr, seg_adapter,
                                   lora_ranks, lora_scales, /*in_place=*/true));
}

// Backward of lora_apply: grad_h and grad_x in one pass over row blocks, then dA and dB in one more.
std::tuple<Tensor, Tensor, Tensor> lora_apply_backward_cpu(const Tensor& grad_out, const Tensor& x, const Tensor& h,
                                                           const Tensor& lora_a, const Tensor& lora_b,
                                                           const Tensor& seg_indptr, const Tensor& seg_adapter,
                                                           const Tensor& lora_ranks, const Tensor& lora_scales) {
  const char* op = "mint.lora_apply_backward";
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ops stay off the tape
  check_apply_args(op, "grad_out", grad_out, x, lora_a, lora_b);
  check_float(op, h, "h", 2, "[T, R]");
  check_same_dtype(op, h, "h", x, "x");
  check_device(op, h, "h", x);
  const int64_t T = x.size(0), N = lora_a.size(0), R = lora_a.size(1);
  TORCH_CHECK(h.size(0) == T && h.size(1) == R, op, ": h must be [T, R] = [", T, ", ", R, "], got shape ",
              shape_str(h));
  const auto plan = make_plan(op, T, N, R, seg_indptr, seg_adapter, lora_ranks, x);
  const auto scales = read_scales(op, lora_scales, N, x);

  Tensor grad_h = row_output({T, R}, x.options(), plan, R, /*full_rank=*/false);
  Tensor grad_x = row_output(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous), plan, R,
                             /*full_rank=*/false);
  const auto blocks = row_blocks(plan);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T_ = decltype(tag);
    lora_passes::run_dot_then_axpy(DotRows<T_>(grad_out, lora_b, grad_h, scales.data()),
                                   AxpyRows<T_>(Tensor(), grad_h, lora_a, grad_x, nullptr), blocks,
                                   x.size(1));
  });
  Tensor grad_a = grad_pool(lora_a, plan), grad_b = grad_pool(lora_b, plan);
  lora_passes::run_weight_grads(
      {WeightGrad{h, grad_out, grad_b, scales.data()}, WeightGrad{grad_h, x, grad_a, nullptr}}, plan);
  return {grad_x, grad_a, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(mint, CPU, m) {
  m.impl("lora_shrink", &lora_shrink_cpu);
  m.impl("lora_expand", &lora_expand_cpu);
  m.impl("lora_expand_", &lora_expand_inplace_cpu);
  m.impl("lora_expand_backward", &lora_expand_backward_cpu);
  m.impl("lora_shrink_backward", &lora_shrink_backward_cpu);
  m.impl("lora_apply_forward", &lora_apply_forward_cpu);
  m.impl("lora_apply_forward_", &lora_apply_forward_inplace_cpu);
  m.impl("lora_apply_backward", &lora_apply_backward_cpu);
}

// Autograd: lora_shrink and lora_expand get their formulas in python/mint/ops/lora.py, and lora_apply's
// autograd node calls the fused ops. The backward and fused ops are not differentiable: backprop through
// them is an error rather than silently zero. lora_expand_ and lora_apply_forward_ refuse inputs that
// require grad and bump y's version counter, so autograd notices when a tensor it saved was overwritten.
// Device-independent.
namespace {

void lora_expand_inplace_autograd(c10::DispatchKeySet ks, const Tensor& y, const Tensor& h,
                                  const Tensor& lora_b, const Tensor& seg_indptr,
                                  const Tensor& seg_adapter, const Tensor& lora_ranks,
                                  const Tensor& lora_scales) {
  TORCH_CHECK(!(at::GradMode::is_enabled() &&
                (y.requires_grad() || h.requires_grad() || lora_b.requires_grad())),
              "mint.lora_expand_ is not differentiable, but y, h or lora_b requires grad; use "
              "lora_expand (out of place) for training, or call it under torch.no_grad()");
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mint::lora_expand_", "")
                               .typed<void(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                           const Tensor&, const Tensor&, const Tensor&)>();
    op.redispatch(ks & c10::after_ADInplaceOrView_keyset, y, h, lora_b, seg_indptr, seg_adapter,
                  lora_ranks, lora_scales);
  }
  torch::autograd::increment_version(y);
}

Tensor lora_apply_forward_inplace_autograd(c10::DispatchKeySet ks, const Tensor& y, const Tensor& x,
                                           const Tensor& lora_a, const Tensor& lora_b, const Tensor& seg_indptr,
                                           const Tensor& seg_adapter, const Tensor& lora_ranks,
                                           const Tensor& lora_scales) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && (y.requires_grad() || x.requires_grad() || lora_a.requires_grad() ||
                                                lora_b.requires_grad())),
              "mint.lora_apply_forward_ is not differentiable, but y, x, lora_a or lora_b requires grad; use "
              "mint.ops.lora_apply_ (its autograd wraps this op), or call it under torch.no_grad()");
  Tensor h;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mint::lora_apply_forward_", "")
                               .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                             const Tensor&, const Tensor&, const Tensor&, const Tensor&)>();
    h = op.redispatch(ks & c10::after_ADInplaceOrView_keyset, y, x, lora_a, lora_b, seg_indptr, seg_adapter,
                      lora_ranks, lora_scales);
  }
  torch::autograd::increment_version(y);
  return h;
}

}  // namespace

TORCH_LIBRARY_IMPL(mint, Autograd, m) {
  m.impl("lora_expand_", &lora_expand_inplace_autograd);
  m.impl("lora_apply_forward_", &lora_apply_forward_inplace_autograd);
  m.impl("lora_expand_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("lora_shrink_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("lora_apply_forward", torch::autograd::autogradNotImplementedFallback());
  m.impl("lora_apply_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace mint
