// CPU kernels of the multi-adapter segmented LoRA ops (schemas and layouts: csrc/ops.cpp).
//
// Work is grouped by adapter slot: the rows of every segment that uses slot n are handled by one
// GEMM (a view when they form one contiguous range, a gathered copy otherwise). Each slot's
// weights are converted to the compute dtype once per call, only slots that occur are touched, and every
// per-slot reduction (dA, dB) is a single GEMM over that slot's rows in segment order, so two
// identical calls give identical bits. GEMMs write straight into the output (a row range, a
// column slice or a pool slot) with the scale as alpha; outputs the plan covers completely are not
// zero-filled, and gradient pools are zeroed only in the (slot, row) gaps no segment writes.
// Products accumulate in fp32 and round once. On CPUs with bf16 dot-product instructions (AVX512-BF16,
// AMX) the bf16 slots with enough rows run ATen's bf16 GEMMs, which accumulate in fp32 and beat converting
// first; elsewhere (AVX2, where ATen's bf16 GEMM is ~20x slower), for small slots and for fp16 the inputs
// go through fp32 copies.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <cpuinfo.h>

#include "lora_tiles.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace mint {
namespace {

using at::Tensor;

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

// The rows of one slot: merged non-empty [begin, end) ranges in segment order.
struct SlotRows {
  int64_t slot;
  int64_t rank;
  int64_t count = 0;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  Tensor index;  // int64 row indices when there is more than one range
};

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

// Runs fn(slot rows) for every slot of the plan. Slots write disjoint rows of the row outputs and
// disjoint slots of the gradient pools, so when the work splits evenly they run in parallel: the
// slots are packed into one bin per thread (largest first, each into the lightest bin, by rows), and
// each bin runs its GEMMs single-threaded inside the parallel region (one fork for the whole call
// instead of one per small GEMM). A plan dominated by one slot runs here, with BLAS's own threads.
// Which way a plan runs depends only on the plan and the thread count, so repeats are bit-identical.
// The worker threads get the caller's thread-local state (below-autograd dispatch, grad mode).
template <typename Fn>
void for_each_slot(const std::vector<SlotRows>& plan, const Fn& fn) {
  const int64_t n = static_cast<int64_t>(plan.size());
  const int64_t threads = at::get_num_threads();
  int64_t total = 0, largest = 0;
  for (const SlotRows& sr : plan) {
    total += sr.count;
    largest = std::max(largest, sr.count);
  }
  // Parallel only when no slot holds much more than a thread's even share of the rows.
  if (n < 2 || threads < 2 || at::in_parallel_region() || 2 * largest * threads > 3 * total) {
    for (const SlotRows& sr : plan) fn(sr);
    return;
  }
  const int64_t bins = std::min(threads, n);
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return plan[a].count > plan[b].count; });
  std::vector<std::vector<int64_t>> bin(bins);
  std::vector<int64_t> load(bins, 0);
  for (const int64_t i : order) {
    const int64_t k = std::min_element(load.begin(), load.end()) - load.begin();
    bin[k].push_back(i);
    load[k] += plan[i].count;
  }
  const at::ThreadLocalState state;
  at::parallel_for(0, bins, 1, [&](int64_t begin, int64_t end) {
    at::ThreadLocalStateGuard guard(state);
    for (int64_t k = begin; k < end; ++k) {
      for (const int64_t i : bin[k]) fn(plan[i]);
    }
  });
}

bool cpu_has_bf16_dot() {
  static const bool has = cpuinfo_initialize() &&
                          (cpuinfo_has_x86_avx512bf16() || cpuinfo_has_x86_amx_bf16());
  return has;
}

// The dtype the GEMMs of one slot run in (see the top of the file). A bf16 GEMM call costs ~20 us of
// setup in oneDNN, more than converting a handful of rows, so slots with few rows take the fp32 path.
constexpr int64_t kMinBf16GemmRows = 32;
at::ScalarType compute_type(at::ScalarType st, const SlotRows& sr) {
  return st == at::kBFloat16 && sr.count >= kMinBf16GemmRows && cpu_has_bf16_dot() ? at::kBFloat16
                                                                                     : at::kFloat;
}

// The slot's rows of `t` (dim 0) in the compute dtype: a view or cast of a view for one range, else
// a gather.
Tensor rows_in_compute(const Tensor& t, const SlotRows& sr) {
  const at::ScalarType ct = compute_type(t.scalar_type(), sr);
  if (sr.ranges.size() == 1) {
    return t.narrow(0, sr.ranges[0].first, sr.count).to(ct);
  }
  return t.index_select(0, sr.index).to(ct);
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
void check_expand_args(const char* op, const char* y_name, const Tensor& y, const Tensor& h,
                       const Tensor& lora_b) {
  check_float(op, y, y_name, 2, "[T, out]");
  check_float(op, h, "h", 2, "[T, R]");
  check_float(op, lora_b, "lora_b", 3, "[N, R, out]");
  check_same_dtype(op, h, "h", y, y_name);
  check_same_dtype(op, lora_b, "lora_b", y, y_name);
  check_device(op, h, "h", y);
  check_device(op, lora_b, "lora_b", y);
  TORCH_CHECK(h.size(0) == y.size(0), op, ": h must have T = ", y.size(0), " rows like ", y_name,
              ", got shape ", shape_str(h));
  TORCH_CHECK(lora_b.size(2) == y.size(1), op, ": lora_b must be [N, R, out] with out = ", y.size(1),
              " (", y_name, ".size(1)), got shape ", shape_str(lora_b));
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

// dst = alpha * m1 @ m2 (m1, m2 in the compute dtype; dst a view of an output of any dtype, any
// BLAS-able strides). A dst of the compute dtype is written by the GEMM itself (scale folded into
// alpha, no temporary, no extra pass); fp16 goes through one fp32 temporary and is rounded once.
void mm_store(const Tensor& dst, const Tensor& m1, const Tensor& m2, double alpha) {
  Tensor target = dst.scalar_type() == m1.scalar_type() ? dst : at::empty(dst.sizes(), m1.options());
  if (alpha == 1.0) {
    at::mm_out(target, m1, m2);
  } else {
    target.addmm_(m1, m2, /*beta=*/0.0, alpha);  // beta = 0: target's old contents are ignored
  }
  if (!target.is_same(dst)) dst.copy_(target);
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
  return full ? at::empty(sizes, options) : at::zeros(sizes, options);
}

// A contiguous [N, R, k] gradient pool whose (slot, row) pairs outside the plan's slots and ranks
// are zero; the rest is left for the caller to write. Zeroes each maximal gap with one fill.
Tensor grad_pool(const Tensor& like, const std::vector<SlotRows>& plan) {
  const int64_t N = like.size(0), R = like.size(1);
  Tensor g = at::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
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

// A block of consecutive rows of one slot (inside one of its ranges): the unit of work of the row kernels.
struct RowBlock {
  const SlotRows* sr;
  int64_t row, count;
};

constexpr int64_t kBlockRows = 16;

std::vector<RowBlock> row_blocks(const std::vector<SlotRows>& plan) {
  std::vector<RowBlock> blocks;
  for (const SlotRows& sr : plan) {
    for (const auto& [b, e] : sr.ranges) {
      for (int64_t r = b; r < e; r += kBlockRows) blocks.push_back({&sr, r, std::min(kBlockRows, e - r)});
    }
  }
  return blocks;
}

// Runs fn(block, c0, c1) for every row block x chunk of `cols` columns (chunks of col_chunk), split over
// the threads; every output element belongs to one call, so results do not depend on the thread count.
// `fmas` is the work per output element, which sets how many items one task takes.
template <typename Fn>
void for_each_tile(const std::vector<RowBlock>& blocks, int64_t cols, int64_t col_chunk, int64_t fmas,
                   const Fn& fn) {
  const int64_t chunks = std::max<int64_t>(1, (cols + col_chunk - 1) / col_chunk);
  const int64_t items = static_cast<int64_t>(blocks.size()) * chunks;
  const int64_t item_fmas = std::max<int64_t>(1, kBlockRows * std::min(cols, col_chunk) * fmas);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 17) / item_fmas);  // ~128K FMAs per task
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t c0 = (it % chunks) * col_chunk;
      fn(blocks[it / chunks], c0, std::min(cols, c0 + col_chunk));
    }
  });
}

// t itself when its last dimension has unit stride (what the row kernels read), else a contiguous copy.
Tensor unit_inner(const Tensor& t) { return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous(); }

template <typename Fn>
void dispatch_float(at::ScalarType st, const Fn& fn) {
  switch (st) {
    case at::kFloat: return fn(float{});
    case at::kBFloat16: return fn(c10::BFloat16{});
    case at::kHalf: return fn(c10::Half{});
    default: TORCH_CHECK(false, "mint LoRA: unsupported dtype ", st);
  }
}

// out[rows, :R] for every block: alpha(slot) * rows @ W[slot, :rank]^T, zeros in columns [rank, R).
// rows: [T, k], w: [N, R', k] pool, out: [T, R] contiguous.
template <typename Alpha>
void dot_blocks(const Tensor& rows, const Tensor& w, const std::vector<RowBlock>& blocks, Tensor& out,
                const Alpha& alpha) {
  const Tensor xr = unit_inner(rows), wp = unit_inner(w);
  const int64_t k = xr.size(1), R = out.size(1);
  dispatch_float(xr.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = xr.data_ptr<T>();
    const T* wptr = wp.data_ptr<T>();
    T* op = out.data_ptr<T>();
    for_each_tile(blocks, 1, 1, k * R, [&](const RowBlock& blk, int64_t, int64_t) {
      const SlotRows& sr = *blk.sr;
      lora_tiles::dot_rows<T>(xp + blk.row * xr.stride(0), xr.stride(0), wptr + sr.slot * wp.stride(0),
                              wp.stride(1), blk.count, sr.rank, k, alpha(sr), op + blk.row * R, R, R);
    });
  });
}

// dst[rows] = base[rows] + alpha(slot) * h[rows, :rank] @ W[slot, :rank] for every block (base undefined:
// no base term). h: [T, R'], w: [N, R', cols] pool, dst: [T, cols] with unit inner stride (may be base).
template <typename Alpha>
void axpy_blocks(const Tensor& base, const Tensor& h, const Tensor& w, const std::vector<RowBlock>& blocks,
                 Tensor& dst, const Alpha& alpha) {
  const Tensor hr = unit_inner(h), wp = unit_inner(w);
  const Tensor br = base.defined() ? (base.is_same(dst) ? base : unit_inner(base)) : base;
  const int64_t cols = dst.size(1);
  // Whole rows stream best (few, sequential streams per thread); columns are split only when there are too
  // few row blocks to keep every thread busy.
  const int64_t blocks_needed = 4 * at::get_num_threads(), n_blocks = static_cast<int64_t>(blocks.size());
  const int64_t splits = n_blocks >= blocks_needed ? 1 : (blocks_needed + n_blocks - 1) / std::max<int64_t>(1, n_blocks);
  const int64_t quantum = 4 * lora_tiles::vector_width();
  const int64_t chunk = std::max(quantum, (cols / splits + quantum - 1) / quantum * quantum);
  if (dst.scalar_type() == at::kBFloat16 && lora_tiles::packed_pairs_elems(1, 1) > 0) {
    // bf16 pair dot instructions: each used slot's weights packed into rank pairs once per call (a slot's
    // blocks are adjacent, so `slots` lists each slot once)
    std::vector<const SlotRows*> slots;
    for (const RowBlock& blk : blocks) {
      if (slots.empty() || slots.back() != blk.sr) slots.push_back(blk.sr);
    }
    std::vector<int64_t> offset(w.size(0), -1);
    int64_t total = 0;
    for (const SlotRows* sr : slots) {
      offset[sr->slot] = total;
      total += lora_tiles::packed_pairs_elems(sr->rank, cols);
    }
    Tensor packed = at::empty({total}, dst.options());
    using BF = c10::BFloat16;
    BF* pk = packed.data_ptr<BF>();
    const BF* wptr = wp.data_ptr<BF>();
    at::parallel_for(0, static_cast<int64_t>(slots.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const SlotRows& sr = *slots[i];
        lora_tiles::pack_pairs(wptr + sr.slot * wp.stride(0), wp.stride(1), sr.rank, cols, pk + offset[sr.slot]);
      }
    });
    const BF* bp = br.defined() ? br.data_ptr<BF>() : nullptr;
    const int64_t ldb = br.defined() ? br.stride(0) : 0;
    const BF* hp = hr.data_ptr<BF>();
    BF* dp = dst.data_ptr<BF>();
    for_each_tile(blocks, cols, chunk, h.size(1), [&](const RowBlock& blk, int64_t c0, int64_t c1) {
      const SlotRows& sr = *blk.sr;
      lora_tiles::axpy_rows_pairs(bp == nullptr ? nullptr : bp + blk.row * ldb, ldb, hp + blk.row * hr.stride(0),
                                  hr.stride(0), pk + offset[sr.slot], blk.count, sr.rank, cols, c0, c1, alpha(sr),
                                  dp + blk.row * dst.stride(0), dst.stride(0));
    });
    return;
  }
  dispatch_float(dst.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* bp = br.defined() ? br.data_ptr<T>() : nullptr;
    const int64_t ldb = br.defined() ? br.stride(0) : 0;
    const T* hp = hr.data_ptr<T>();
    const T* wptr = wp.data_ptr<T>();
    T* dp = dst.data_ptr<T>();
    for_each_tile(blocks, cols, chunk, h.size(1), [&](const RowBlock& blk, int64_t c0, int64_t c1) {
      const SlotRows& sr = *blk.sr;
      lora_tiles::axpy_rows<T>(bp == nullptr ? nullptr : bp + blk.row * ldb, ldb, hp + blk.row * hr.stride(0),
                               hr.stride(0), wptr + sr.slot * wp.stride(0), wp.stride(1), blk.count, sr.rank,
                               c0, c1, alpha(sr), dp + blk.row * dst.stride(0), dst.stride(0));
    });
  });
}

// grad[slot, :rank] = alpha(slot) * coef[rows, :rank]^T @ src[rows] for every slot of the plan, the
// reduction over the slot's rows in segment order (a slot with several ranges reads a gathered copy).
// coef: [T, R'] (h or grad_h), src: [T, cols] (grad_y or x), grad: a contiguous [N, R', cols] pool whose
// other rows grad_pool zeroes. Items are (slot, 4-vector column chunk): a chunk of src stays in cache
// while every rank row of the slot streams over it.
template <typename Alpha>
void weight_grads(const Tensor& coef, const Tensor& src, const std::vector<SlotRows>& plan, Tensor& grad,
                  const Alpha& alpha) {
  const int64_t n_slots = static_cast<int64_t>(plan.size()), cols = src.size(1), R = grad.size(1);
  if (n_slots == 0 || cols == 0) return;
  const bool pairs = src.scalar_type() == at::kBFloat16 && lora_tiles::packed_pairs_elems(1, 1) > 0;
  std::vector<Tensor> coefs(n_slots), rows(n_slots);
  for (int64_t i = 0; i < n_slots; ++i) {
    const SlotRows& sr = plan[i];
    const bool one = sr.ranges.size() == 1;
    const Tensor c = one ? coef.narrow(0, sr.ranges[0].first, sr.count) : coef.index_select(0, sr.index);
    // fp32 coefficients with the scale folded in; bf16 pairs take coef^T as it is (alpha applied at the end)
    coefs[i] = at::empty({sr.rank, sr.count}, coef.options().dtype(pairs ? at::kBFloat16 : at::kFloat));
    coefs[i].copy_(c.narrow(1, 0, sr.rank).t());
    if (!pairs && alpha(sr) != 1.0f) coefs[i].mul_(alpha(sr));
    rows[i] = unit_inner(one ? src.narrow(0, sr.ranges[0].first, sr.count) : src.index_select(0, sr.index));
  }
  const int64_t chunk = 4 * lora_tiles::vector_width();
  const int64_t chunks = (cols + chunk - 1) / chunk;
  if (pairs) {
    // each item packs its column chunk of the slot's rows into token pairs, then every rank row streams over it
    using BF = c10::BFloat16;
    BF* gp = grad.data_ptr<BF>();
    at::parallel_for(0, n_slots * chunks, 1, [&](int64_t begin, int64_t end) {
      std::vector<BF> packed;
      for (int64_t it = begin; it < end; ++it) {
        const int64_t i = it / chunks, c0 = (it % chunks) * chunk, width = std::min(cols, c0 + chunk) - c0;
        const SlotRows& sr = plan[i];
        packed.resize(lora_tiles::packed_pairs_elems(sr.count, width));
        lora_tiles::pack_pairs(rows[i].data_ptr<BF>() + c0, rows[i].stride(0), sr.count, width, packed.data());
        lora_tiles::axpy_rows_pairs(nullptr, 0, coefs[i].data_ptr<BF>(), sr.count, packed.data(), sr.rank, sr.count,
                                    width, 0, width, alpha(sr), gp + sr.slot * R * cols + c0, cols);
      }
    });
    return;
  }
  dispatch_float(src.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    T* gp = grad.data_ptr<T>();
    at::parallel_for(0, n_slots * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t it = begin; it < end; ++it) {
        const int64_t i = it / chunks, c0 = (it % chunks) * chunk;
        const SlotRows& sr = plan[i];
        lora_tiles::axpy_rows_f32<T>(nullptr, 0, coefs[i].data_ptr<float>(), sr.count, rows[i].data_ptr<T>(),
                                     rows[i].stride(0), sr.rank, sr.count, c0, std::min(cols, c0 + chunk),
                                     gp + sr.slot * R * cols, cols);
      }
    });
  });
}

// dst[rows] = base[rows] + scale[n] * h[rows, :r] @ B[n, :r] for every slot's rows. In place when dst is
// base (other rows untouched); out of place (dst fresh and contiguous) the rows no slot writes are copied
// from base, and the kernel reads base's other rows once and writes dst once.
void expand_into(Tensor& dst, const Tensor& base, const Tensor& h, const Tensor& lora_b,
                 const std::vector<SlotRows>& plan, const std::vector<float>& scales) {
  if (!dst.is_same(base)) {
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
  axpy_blocks(base, h, lora_b, row_blocks(plan), dst, [&](const SlotRows& sr) { return scales[sr.slot]; });
}

Tensor lora_shrink_cpu(const Tensor& x, const Tensor& lora_a, const Tensor& seg_indptr,
                       const Tensor& seg_adapter, const Tensor& lora_ranks) {
  const char* op = "mint.lora_shrink";
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ops stay off the tape
  check_shrink_args(op, x, lora_a);
  const int64_t T = x.size(0), N = lora_a.size(0), R = lora_a.size(1);
  const auto plan = make_plan(op, T, N, R, seg_indptr, seg_adapter, lora_ranks, x);

  Tensor h = row_output({T, R}, x.options(), plan, R, /*full_rank=*/false);  // columns >= rank: the kernel
  dot_blocks(x, lora_a, row_blocks(plan), h, [](const SlotRows&) { return 1.0f; });
  return h;
}

Tensor lora_expand_cpu(const Tensor& y, const Tensor& h, const Tensor& lora_b, const Tensor& seg_indptr,
                       const Tensor& seg_adapter, const Tensor& lora_ranks, const Tensor& lora_scales) {
  const char* op = "mint.lora_expand";
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ops stay off the tape
  check_expand_args(op, "y", y, h, lora_b);
  const int64_t N = lora_b.size(0);
  const auto plan = make_plan(op, y.size(0), N, lora_b.size(1), seg_indptr, seg_adapter, lora_ranks, y);
  const auto scales = read_scales(op, lora_scales, N, y);

  Tensor out = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
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

  if (y.size(1) > 1 && y.stride(1) != 1) {  // the kernel writes rows with unit column stride
    Tensor out = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
    expand_into(out, y, h, lora_b, plan, scales);
    y.copy_(out);
    return;
  }
  Tensor dst = y;
  expand_into(dst, y, h, lora_b, plan, scales);
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
  dot_blocks(grad_y, lora_b, row_blocks(plan), grad_h, [&](const SlotRows& sr) { return scales[sr.slot]; });
  Tensor grad_b = grad_pool(lora_b, plan);
  weight_grads(h, grad_y, plan, grad_b, [&](const SlotRows& sr) { return scales[sr.slot]; });
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
  axpy_blocks(Tensor(), grad_h, lora_a, row_blocks(plan), grad_x, [](const SlotRows&) { return 1.0f; });
  Tensor grad_a = grad_pool(lora_a, plan);
  weight_grads(grad_h, x, plan, grad_a, [](const SlotRows&) { return 1.0f; });
  return {grad_x, grad_a};
}

}  // namespace

TORCH_LIBRARY_IMPL(mint, CPU, m) {
  m.impl("lora_shrink", &lora_shrink_cpu);
  m.impl("lora_expand", &lora_expand_cpu);
  m.impl("lora_expand_", &lora_expand_inplace_cpu);
  m.impl("lora_expand_backward", &lora_expand_backward_cpu);
  m.impl("lora_shrink_backward", &lora_shrink_backward_cpu);
}

// Autograd: lora_shrink and lora_expand get their formulas in python/mint/ops/lora.py. The two
// backward ops are not differentiable: backprop through them is an error rather than silently zero.
// lora_expand_ refuses inputs that require grad (use lora_expand in training) and bumps y's version
// counter, so autograd notices when a tensor it saved was overwritten. Device-independent.
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

}  // namespace

TORCH_LIBRARY_IMPL(mint, Autograd, m) {
  m.impl("lora_expand_", &lora_expand_inplace_autograd);
  m.impl("lora_expand_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("lora_shrink_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace mint
