// The row passes of the CPU LoRA ops (csrc/cpu/lora.cpp) on the register-blocked kernels of lora_tiles.h.
//
// A plan groups the rows of every segment by adapter slot (SlotRows); its rows are cut into RowBlocks of up
// to 16 consecutive rows of one slot, the unit of parallel work. DotRows (rows @ W^T: h, grad_h) and
// AxpyRows (base + rows @ W: y + h B, grad_h A) run one block (and a column range) at a time, so an op can
// run one of them over all blocks, or both back to back on each block while its rows are in cache (the
// fused lora_apply passes). WeightGrads computes dA / dB per slot. Every output element is written by one
// call with a fixed order of operations: results do not depend on the thread count or on other rows.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "lora_amx.h"
#include "lora_tiles.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

namespace mint::lora_passes {

using at::Tensor;

// The rows of one slot: merged non-empty [begin, end) ranges in segment order.
struct SlotRows {
  int64_t slot;
  int64_t rank;
  int64_t count = 0;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  Tensor index;  // int64 row indices when there is more than one range
};

// A block of consecutive rows of one slot (inside one of its ranges).
struct RowBlock {
  const SlotRows* sr;
  int64_t row, count;
};

constexpr int64_t kBlockRows = 16;

inline std::vector<RowBlock> row_blocks(const std::vector<SlotRows>& plan) {
  std::vector<RowBlock> blocks;
  for (const SlotRows& sr : plan) {
    for (const auto& [b, e] : sr.ranges) {
      for (int64_t r = b; r < e; r += kBlockRows) blocks.push_back({&sr, r, std::min(kBlockRows, e - r)});
    }
  }
  return blocks;
}

// Work items that keep every thread busy.
inline int64_t items_wanted() { return 4 * at::get_num_threads(); }

// True when every block can be one work item (whole rows) and still keep every thread busy.
inline bool whole_rows_suffice(const std::vector<RowBlock>& blocks) {
  return static_cast<int64_t>(blocks.size()) >= items_wanted();
}

// Columns per work item of a pass over `cols` output columns: whole rows (few, sequential streams per
// thread) unless there are too few row blocks to keep every thread busy.
inline int64_t column_chunk(const std::vector<RowBlock>& blocks, int64_t cols) {
  const int64_t have = std::max<int64_t>(1, static_cast<int64_t>(blocks.size()));
  const int64_t splits = whole_rows_suffice(blocks) ? 1 : (items_wanted() + have - 1) / have;
  const int64_t quantum = 4 * lora_tiles::vector_width();
  return std::max(quantum, (cols / splits + quantum - 1) / quantum * quantum);
}

// Runs fn(block, c0, c1) for every row block x chunk of `cols` columns (chunks of col_chunk), split over
// the threads. `fmas` is the work per output element, which sets how many items one task takes.
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
inline Tensor unit_inner(const Tensor& t) { return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous(); }

template <typename Fn>
void dispatch_float(at::ScalarType st, const Fn& fn) {
  switch (st) {
    case at::kFloat: return fn(float{});
    case at::kBFloat16: return fn(c10::BFloat16{});
    case at::kHalf: return fn(c10::Half{});
    default: TORCH_CHECK(false, "mint LoRA: unsupported dtype ", st);
  }
}

inline float slot_alpha(const float* alpha, const SlotRows& sr) { return alpha == nullptr ? 1.0f : alpha[sr.slot]; }

// The bit patterns of bf16 (or any 16-bit) elements, as the AMX kernels take them.
template <typename T>
const uint16_t* bits16(const T* p) {
  return reinterpret_cast<const uint16_t*>(p);
}

// Whether a bf16 pass over pool rank R (the weights' second dimension) runs on the AMX kernels: decided per
// call from shapes, never per row.
inline bool amx_for_rank(int64_t R) { return R <= lora_amx::kMaxCols && lora_amx::available(); }

// One thread's packed weights of one slot (bf16 bits), refilled when the thread moves to another slot or
// another pass. A thread's blocks are mostly one slot's, so each slot is packed about once per thread, into
// a buffer the pool's persistent threads keep across calls (no fresh pages per call, and the packed weights
// stay in that core's cache).
class SlotPack {
 public:
  // A fresh owner id for a pass: packs of earlier passes are never reused.
  static uint64_t new_owner() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }
  // The pack of (owner, slot): fill(dst) writes elems elements unless this thread holds it already.
  template <typename Fill>
  const uint16_t* get(uint64_t owner, int64_t slot, int64_t elems, const Fill& fill) {
    if (owner != owner_ || slot != slot_) {
      if (static_cast<int64_t>(buf_.size()) < elems) buf_.resize(elems);
      fill(buf_.data());
      owner_ = owner;
      slot_ = slot;
    }
    return buf_.data();
  }

 private:
  uint64_t owner_ = 0;
  int64_t slot_ = -1;
  std::vector<uint16_t> buf_;
};

inline thread_local SlotPack dot_pack, axpy_pack;

// out[rows, :R] = alpha[slot] * rows @ W[slot, :rank]^T, zeros in columns [rank, R) (alpha null: 1).
// rows: [T, k] of T, w: [N, R', k] pool, out: [T, R] contiguous. bf16 with R' <= 64 runs on AMX tiles where
// the CPU has them (weights packed per thread and slot); the choice depends only on the call's shapes, so
// every row of a call takes the same path.
template <typename T>
class DotRows {
 public:
  DotRows(const Tensor& rows, const Tensor& w, Tensor& out, const float* alpha)
      : xr_(unit_inner(rows)), wp_(unit_inner(w)), out_(out), alpha_(alpha), k_(xr_.size(1)), R_(out.size(1)) {
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      amx_ = amx_for_rank(wp_.size(1));
    }
  }
  int64_t fmas_per_row() const { return k_ * R_; }
  void operator()(const RowBlock& blk) const {
    const SlotRows& sr = *blk.sr;
    const T* xp = xr_.const_data_ptr<T>() + blk.row * xr_.stride(0);
    const T* wp = wp_.const_data_ptr<T>() + sr.slot * wp_.stride(0);
    T* op = out_.data_ptr<T>() + blk.row * R_;
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      if (amx_) {
        const auto fill = [&](uint16_t* dst) { lora_amx::pack_dot(bits16(wp), wp_.stride(1), sr.rank, k_, dst); };
        const uint16_t* packed = dot_pack.get(owner_, sr.slot, lora_amx::packed_dot_elems(sr.rank, k_), fill);
        lora_amx::dot_rows(bits16(xp), xr_.stride(0), packed, blk.count, sr.rank, k_, slot_alpha(alpha_, sr),
                           reinterpret_cast<uint16_t*>(op), R_, R_);
        return;
      }
    }
    lora_tiles::dot_rows<T>(xp, xr_.stride(0), wp, wp_.stride(1), blk.count, sr.rank, k_, slot_alpha(alpha_, sr), op,
                            R_, R_);
  }

 private:
  Tensor xr_, wp_, out_;
  const float* alpha_;
  int64_t k_, R_;
  bool amx_ = false;
  uint64_t owner_ = SlotPack::new_owner();
};

// dst[rows] = base[rows] + alpha[slot] * h[rows, :rank] @ W[slot, :rank] (base undefined: no base term).
// h: [T, R'], w: [N, R', cols] pool, dst: [T, cols] with unit inner stride (may be base). bf16 runs on AMX
// tiles where the CPU has them (R' <= 64), else on builds with bf16 pair dot instructions on rank pairs;
// either way on weights packed per thread and slot.
template <typename T>
class AxpyRows {
 public:
  AxpyRows(const Tensor& base, const Tensor& h, const Tensor& w, Tensor& dst, const float* alpha)
      : br_(base.defined() ? (base.is_same(dst) ? base : unit_inner(base)) : base),
        hr_(unit_inner(h)),
        wp_(unit_inner(w)),
        dst_(dst),
        alpha_(alpha),
        cols_(dst.size(1)),
        R_(h.size(1)) {
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      amx_ = amx_for_rank(wp_.size(1));
      pairs_ = !amx_ && lora_tiles::packed_pairs_elems(1, 1) > 0;
    }
  }
  int64_t fmas_per_col() const { return R_; }
  // Bytes of one slot's weights per output column (all R' rank rows).
  int64_t weight_bytes_per_col() const { return wp_.size(1) * static_cast<int64_t>(sizeof(T)); }
  void operator()(const RowBlock& blk, int64_t c0, int64_t c1) const {
    const SlotRows& sr = *blk.sr;
    const T* bp = br_.defined() ? br_.const_data_ptr<T>() + blk.row * br_.stride(0) : nullptr;
    const int64_t ldb = br_.defined() ? br_.stride(0) : 0;
    const T* hp = hr_.const_data_ptr<T>() + blk.row * hr_.stride(0);
    const T* wp = wp_.const_data_ptr<T>() + sr.slot * wp_.stride(0);
    T* dp = dst_.data_ptr<T>() + blk.row * dst_.stride(0);
    const float alpha = slot_alpha(alpha_, sr);
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      if (amx_) {
        const auto fill = [&](uint16_t* d) { lora_amx::pack_axpy(bits16(wp), wp_.stride(1), sr.rank, cols_, d); };
        const uint16_t* packed = axpy_pack.get(owner_, sr.slot, lora_amx::packed_axpy_elems(sr.rank, cols_), fill);
        lora_amx::axpy_rows(bits16(bp), ldb, bits16(hp), hr_.stride(0), packed, blk.count, sr.rank, cols_, c0, c1,
                            alpha, reinterpret_cast<uint16_t*>(dp), dst_.stride(0));
        return;
      }
      if (pairs_) {
        const auto fill = [&](uint16_t* d) {
          lora_tiles::pack_pairs(wp, wp_.stride(1), sr.rank, cols_, reinterpret_cast<c10::BFloat16*>(d));
        };
        const auto* packed = reinterpret_cast<const c10::BFloat16*>(
            axpy_pack.get(owner_, sr.slot, lora_tiles::packed_pairs_elems(sr.rank, cols_), fill));
        lora_tiles::axpy_rows_pairs(bp, ldb, hp, hr_.stride(0), packed, blk.count, sr.rank, cols_, c0, c1, alpha, dp,
                                    dst_.stride(0));
        return;
      }
    }
    lora_tiles::axpy_rows<T>(bp, ldb, hp, hr_.stride(0), wp, wp_.stride(1), blk.count, sr.rank, c0, c1, alpha, dp,
                             dst_.stride(0));
  }

 private:

  Tensor br_, hr_, wp_, dst_;
  const float* alpha_;
  int64_t cols_, R_;
  bool amx_ = false, pairs_ = false;
  uint64_t owner_ = SlotPack::new_owner();
};

// Runs a DotRows pass over every block.
template <typename T>
void run_dot(const DotRows<T>& dot, const std::vector<RowBlock>& blocks) {
  for_each_tile(blocks, 1, 1, dot.fmas_per_row(), [&](const RowBlock& blk, int64_t, int64_t) { dot(blk); });
}

// A slot's weights larger than this are not reused from L2 from one row block to the next.
constexpr int64_t kSlotWeightsInL2 = int64_t{512} << 10;
// Rows of one slot that share a column chunk of its weights in slot_major_axpy.
constexpr int64_t kGroupBlocks = 16;

// Runs fn(block, c0, c1) for groups of up to kGroupBlocks consecutive blocks of one slot x column chunks
// of ~128 KB of weights: each work item walks its group's rows over one chunk, so a slot's weights are
// read from memory once per group rather than once per block.
template <typename Fn>
void slot_major_tiles(const std::vector<RowBlock>& blocks, int64_t cols, int64_t chunk_bytes_per_col,
                      int64_t fmas, const Fn& fn) {
  std::vector<std::pair<int64_t, int64_t>> groups;  // [begin, end) into blocks
  for (int64_t b = 0; b < static_cast<int64_t>(blocks.size());) {
    int64_t e = b + 1;
    while (e < static_cast<int64_t>(blocks.size()) && e - b < kGroupBlocks && blocks[e].sr == blocks[b].sr) ++e;
    groups.emplace_back(b, e);
    b = e;
  }
  const int64_t quantum = 4 * lora_tiles::vector_width();
  const int64_t fit = (int64_t{128} << 10) / std::max<int64_t>(1, chunk_bytes_per_col);
  const int64_t col_chunk = std::max(quantum, fit / quantum * quantum);
  const int64_t chunks = (cols + col_chunk - 1) / col_chunk;
  const int64_t items = static_cast<int64_t>(groups.size()) * chunks;
  const int64_t item_fmas = std::max<int64_t>(1, kGroupBlocks * kBlockRows * std::min(cols, col_chunk) * fmas);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 17) / item_fmas);
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const auto [g0, g1] = groups[it / chunks];
      const int64_t c0 = (it % chunks) * col_chunk;
      for (int64_t b = g0; b < g1; ++b) fn(blocks[b], c0, std::min(cols, c0 + col_chunk));
    }
  });
}

// Runs an AxpyRows pass over every block and column chunk of cols: row-block items (whole rows while there
// are enough of them), or, when a slot's weights overflow L2, slot_major_tiles.
template <typename T>
void run_axpy(const AxpyRows<T>& axpy, const std::vector<RowBlock>& blocks, int64_t cols) {
  if (axpy.weight_bytes_per_col() * cols > kSlotWeightsInL2) {
    slot_major_tiles(blocks, cols, axpy.weight_bytes_per_col(), axpy.fmas_per_col(), axpy);
    return;
  }
  for_each_tile(blocks, cols, column_chunk(blocks, cols), axpy.fmas_per_col(), axpy);
}

// DotRows then AxpyRows on each block, the second reading the first's output rows (h, grad_h) while they
// are in cache: one pass instead of two when there are enough blocks for whole-row items and the slot's
// expand weights stay in L2, else the two passes one after the other.
template <typename T>
void run_dot_then_axpy(const DotRows<T>& dot, const AxpyRows<T>& axpy, const std::vector<RowBlock>& blocks,
                       int64_t cols) {
  if (!whole_rows_suffice(blocks) || axpy.weight_bytes_per_col() * cols > kSlotWeightsInL2) {
    run_dot(dot, blocks);
    run_axpy(axpy, blocks, cols);
    return;
  }
  for_each_tile(blocks, 1, 1, dot.fmas_per_row() + cols * axpy.fmas_per_col(),
                [&](const RowBlock& blk, int64_t, int64_t) {
                  dot(blk);
                  axpy(blk, 0, cols);
                });
}

// dst[j, t] = alpha * src[row_t, j] for j < rank, over the slot's rows t in order (dst: [rank, >= count] of D:
// float, or T itself with alpha 1; row stride ld). Tiles of 64 tokens over the threads, each written one
// dst row segment at a time while its src rows sit in L1 (a token at a time, dst's column writes 2-4 KB
// apart thrashed one L1 set: 0.8 ms for h and grad_h of 2048 tokens at rank 64).
template <typename T, typename D>
void transpose_slot_rows(const Tensor& src, const SlotRows& sr, float alpha, D* dst, int64_t ld) {
  constexpr int64_t kTile = 64;
  const T* sp = src.const_data_ptr<T>();
  const int64_t rs = src.stride(0), cs = src.stride(1);
  const bool one = sr.ranges.size() == 1;
  const int64_t first = sr.ranges.empty() ? 0 : sr.ranges[0].first;
  const int64_t* index = one ? nullptr : sr.index.const_data_ptr<int64_t>();
  const int64_t tiles = (sr.count + kTile - 1) / kTile;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, kTile * sr.rank));
  at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) {
    const T* rows[kTile];
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t tb = tile * kTile, n = std::min(kTile, sr.count - tb);
      for (int64_t t = 0; t < n; ++t) rows[t] = sp + (one ? first + tb + t : index[tb + t]) * rs;
      for (int64_t j = 0; j < sr.rank; ++j) {
        D* d = dst + j * ld + tb;
        for (int64_t t = 0; t < n; ++t) {
          if constexpr (std::is_same_v<D, float>) {
            d[t] = alpha * static_cast<float>(rows[t][j * cs]);
          } else {
            d[t] = rows[t][j * cs];
          }
        }
      }
    }
  });
}

// One weight gradient: grad[slot, :rank] = alpha[slot] * coef[rows, :rank]^T @ src[rows] for every slot of
// the plan (dB: coef h, src grad_y; dA: coef grad_h, src x). grad: a contiguous [N, R', cols] pool whose
// other rows the caller zeroes.
struct WeightGrad {
  Tensor coef, src, grad;
  const float* alpha;
};

// Runs every job's reduction over the slot's rows (in segment order; a slot with several ranges reads a
// gathered copy) in one parallel pass over (job, slot, column chunk) items: a chunk of src stays in cache
// while the slot's rank rows stream over it. Coefficients are fp32 with alpha folded in, or, for bf16 on
// CPUs with AMX or builds with pair dot instructions, bf16 token pairs with alpha applied once at the end.
inline void run_weight_grads(const std::vector<WeightGrad>& jobs, const std::vector<SlotRows>& plan) {
  constexpr int64_t kCopySpan = int64_t{8} << 20;  // src rows spanning this many bytes are read from a copy
  struct Prepared {
    Tensor coef, rows;
    bool amx;
  };
  struct Item {
    int64_t job, slot_index, c0, c1;
  };
  const int64_t chunk = 4 * lora_tiles::vector_width();
  std::vector<std::vector<Prepared>> prepared(jobs.size());
  std::vector<Item> items;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const WeightGrad& job = jobs[j];
    const int64_t cols = job.src.size(1);
    const bool bf16 = job.src.scalar_type() == at::kBFloat16;
    const bool amx = bf16 && amx_for_rank(job.grad.size(1));
    const bool pairs = amx || (bf16 && lora_tiles::packed_pairs_elems(1, 1) > 0);  // bf16 coefficients
    for (size_t i = 0; i < plan.size(); ++i) {
      const SlotRows& sr = plan[i];
      const bool one = sr.ranges.size() == 1;
      const int64_t width = amx ? (sr.count + 31) / 32 * 32 : sr.count;  // AMX: whole 32-token chunks
      Tensor coef = amx ? at::zeros({sr.rank, width}, job.coef.options().dtype(at::kBFloat16))
                        : at::empty({sr.rank, width}, job.coef.options().dtype(pairs ? at::kBFloat16 : at::kFloat));
      dispatch_float(job.coef.scalar_type(), [&](auto tag) {
        using T = decltype(tag);
        if (pairs) {
          transpose_slot_rows<T>(job.coef, sr, 1.0f, coef.data_ptr<T>(), width);
        } else {
          transpose_slot_rows<T>(job.coef, sr, slot_alpha(job.alpha, sr), coef.data_ptr<float>(), width);
        }
      });
      const Tensor s = one ? job.src.narrow(0, sr.ranges[0].first, sr.count) : job.src.index_select(0, sr.index);
      prepared[j].push_back({coef, unit_inner(s), amx});
      for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
        items.push_back({static_cast<int64_t>(j), static_cast<int64_t>(i), c0, std::min(cols, c0 + chunk)});
      }
    }
  }
  int64_t total_fmas = 0;
  for (const Item& item : items) total_fmas += plan[item.slot_index].rank * plan[item.slot_index].count * (item.c1 - item.c0);
  const int64_t n_items = static_cast<int64_t>(items.size());
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 17) * n_items / std::max<int64_t>(1, total_fmas));
  at::parallel_for(0, n_items, grain, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<c10::BFloat16> packed;  // kept across calls: no fresh pages per call
    for (int64_t it = begin; it < end; ++it) {
      const Item& item = items[it];
      const WeightGrad& job = jobs[item.job];
      const Prepared& p = prepared[item.job][item.slot_index];
      const SlotRows& sr = plan[item.slot_index];
      const int64_t cols = job.src.size(1), R = job.grad.size(1), width = item.c1 - item.c0;
      using BF = c10::BFloat16;
      if (p.amx) {
        packed.resize(lora_amx::packed_axpy_elems(sr.count, width));
        auto* pk = reinterpret_cast<uint16_t*>(packed.data());
        lora_amx::pack_axpy(bits16(p.rows.const_data_ptr<BF>() + item.c0), p.rows.stride(0), sr.count, width, pk);
        lora_amx::outer_rows(bits16(p.coef.const_data_ptr<BF>()), p.coef.stride(0), pk, sr.rank, sr.count, width,
                             slot_alpha(job.alpha, sr),
                             reinterpret_cast<uint16_t*>(job.grad.data_ptr<BF>() + sr.slot * R * cols + item.c0), cols);
        continue;
      }
      if (p.coef.scalar_type() == at::kBFloat16) {
        packed.resize(lora_tiles::packed_pairs_elems(sr.count, width));
        lora_tiles::pack_pairs(p.rows.const_data_ptr<BF>() + item.c0, p.rows.stride(0), sr.count, width, packed.data());
        lora_tiles::axpy_rows_pairs(nullptr, 0, p.coef.const_data_ptr<BF>(), sr.count, packed.data(), sr.rank,
                                    sr.count, width, 0, width, slot_alpha(job.alpha, sr),
                                    job.grad.data_ptr<BF>() + sr.slot * R * cols + item.c0, cols);
        continue;
      }
      dispatch_float(job.src.scalar_type(), [&](auto tag) {
        using T = decltype(tag);
        const T* src = p.rows.const_data_ptr<T>() + item.c0;
        int64_t lds = p.rows.stride(0);
        if (lds > width && sr.count * lds * static_cast<int64_t>(sizeof(T)) >= kCopySpan) {
          // Every rank-row group streams all of the slot's tokens: when their rows span more memory than the
          // TLB covers (grad_y of a wide layer over many tokens) that is a TLB miss per token per group, so
          // the item's columns are copied contiguous once. Same arithmetic, so the same results.
          static thread_local std::vector<T> rows;
          rows.resize(static_cast<size_t>(sr.count * width));
          for (int64_t t = 0; t < sr.count; ++t) {
            std::copy(src + t * lds, src + t * lds + width, rows.data() + t * width);
          }
          src = rows.data();
          lds = width;
        }
        lora_tiles::axpy_rows_f32<T>(nullptr, 0, p.coef.const_data_ptr<float>(), sr.count, src, lds, sr.rank,
                                     sr.count, 0, width, job.grad.data_ptr<T>() + sr.slot * R * cols + item.c0, cols);
      });
    }
  });
}

}  // namespace mint::lora_passes
