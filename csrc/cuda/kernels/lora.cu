// Segmented multi-adapter LoRA kernels (SGMV style), torch-free. See mint/lora_cuda.h for the contracts.
//
// Three building blocks cover the forward and backward of shrink and expand:
//   rows_times_wt  out[t, r] = s * x[t, :] . w[slot, r, :]   (shrink; dh of expand's backward)
//   rows_times_w   out[t, :] = base[t, :] + s * h[t, :rank] @ w[slot, :rank, :]   (expand; dx)
//   slot_reduce    dw[slot] = s * left[rows]^T @ right[rows]   (dA, dB)
// Every sum is accumulated in fp32 in a fixed order, so two identical calls give identical bits; the
// reductions over tokens run in one block per (slot, column tile, rank tile) without atomics.
//
// Work lists come from the host: a tile is <= 16 rows of one segment (one adapter), so decode batches
// (one token per segment) and long training segments run through the same kernels with no idle
// tiles; no hidden size is special-cased (any K, C; partial tiles are masked).
#include <mint/lora_cuda.h>

#include <mma.h>

#include <type_traits>

#include "elem.cuh"

namespace mint {
namespace cuda {
namespace {

using detail::from_f32;
using detail::to_f32;

constexpr int kRows = kLoraTileRows;  // token rows per tile
constexpr int kK = 64;                // reduction chunk of rows_times_wt
constexpr int kR = 64;                // rank chunk
constexpr int kWtThreads = 256;       // rows_times_wt: 16 rows x 16 column groups
constexpr int kCols = 128;            // columns per block of rows_times_w / slot_reduce
constexpr int kRedR = 16;             // rank rows per block of slot_reduce
constexpr int kRedT = 32;             // token rows staged per step of slot_reduce
constexpr int kDecodeRows = 4;        // tiles of at most this many rows take the decode path

// Decode path of rows_times_wt (tiles of <= kDecodeRows rows, memory bound): a warp per rank row,
// lanes stride over K, the x rows come from L1; the warp sums with a fixed xor-shuffle tree
// (deterministic). Used by the FMA and the tensor-core kernels alike.
template <typename T>
__device__ void decode_rows_times_wt(const T* __restrict__ in, int64_t ld_in, int64_t K, const T* __restrict__ wbase,
                                     int64_t w_row, T* __restrict__ out, int64_t ld_out, const LoraTile& tile,
                                     int r0, int nr) {
  const int nrows = static_cast<int>(tile.row_end - tile.row_begin);
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  const T* xrow = in + tile.row_begin * ld_in;
  for (int rr = warp; rr < nr; rr += kWtThreads / 32) {
    const T* wr = wbase + static_cast<int64_t>(rr) * w_row;
    float dacc[kDecodeRows];
#pragma unroll
    for (int q = 0; q < kDecodeRows; ++q) dacc[q] = 0.f;
#pragma unroll 4
    for (int64_t k = lane; k < K; k += 32) {
      const float wv = to_f32(wr[k]);
#pragma unroll
      for (int q = 0; q < kDecodeRows; ++q) {
        if (q < nrows) dacc[q] = fmaf(to_f32(xrow[q * ld_in + k]), wv, dacc[q]);
      }
    }
#pragma unroll
    for (int q = 0; q < kDecodeRows; ++q) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) dacc[q] += __shfl_xor_sync(0xFFFFFFFFu, dacc[q], off);
    }
    if (lane == 0) {
#pragma unroll
      for (int q = 0; q < kDecodeRows; ++q) {
        if (q < nrows) out[(tile.row_begin + q) * ld_out + r0 + rr] = from_f32<T>(dacc[q] * tile.scale);
      }
    }
  }
}

// One block per (tile, chunk of 64 ranks). Stages x[tile rows, k0:k0+64] and w[slot, r0:r0+64, k0:k0+64]
// in shared memory (fp32); thread (row i, lane j) owns outputs r0 + j + 16 * q, q = 0..3.
template <typename T>
__global__ void __launch_bounds__(kWtThreads)
rows_times_wt_kernel(const T* __restrict__ in, int64_t ld_in, int64_t K, const T* __restrict__ w,
                     int64_t w_slot, int64_t w_row, T* __restrict__ out, int64_t ld_out,
                     const LoraTile* __restrict__ tiles) {
  __shared__ float xs[kRows][kK + 1];
  __shared__ float ws[kR][kK + 1];
  const LoraTile tile = tiles[blockIdx.x];
  const int r0 = static_cast<int>(blockIdx.y) * kR;
  if (r0 >= tile.rank) return;  // uniform over the block
  const int nrows = static_cast<int>(tile.row_end - tile.row_begin);
  const int nr = min(kR, tile.rank - r0);
  const int tid = static_cast<int>(threadIdx.x);
  const int i = tid / 16, j = tid % 16;
  const T* wbase = w + static_cast<int64_t>(tile.slot) * w_slot + static_cast<int64_t>(r0) * w_row;
  if (nrows <= kDecodeRows) {
    decode_rows_times_wt(in, ld_in, K, wbase, w_row, out, ld_out, tile, r0, nr);
    return;  // uniform over the block
  }
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t k0 = 0; k0 < K; k0 += kK) {
    const int nk = static_cast<int>((K - k0 < kK ? K - k0 : int64_t{kK}));
    for (int e = tid; e < kRows * kK; e += kWtThreads) {
      const int rr = e / kK, kk = e % kK;
      xs[rr][kk] = (rr < nrows && kk < nk) ? to_f32(in[(tile.row_begin + rr) * ld_in + k0 + kk]) : 0.f;
    }
    for (int e = tid; e < kR * kK; e += kWtThreads) {
      const int rr = e / kK, kk = e % kK;
      ws[rr][kk] = (rr < nr && kk < nk) ? to_f32(wbase[rr * w_row + k0 + kk]) : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kK; ++kk) {
      const float xv = xs[i][kk];
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[q] = fmaf(xv, ws[j + 16 * q][kk], acc[q]);
    }
    __syncthreads();
  }
  if (i >= nrows) return;
  T* orow = out + (tile.row_begin + i) * ld_out + r0;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int r = j + 16 * q;
    if (r < nr) orow[r] = from_f32<T>(acc[q] * tile.scale);
  }
}

// One block per (tile, 128 columns); thread = column, 16 row accumulators. h[tile rows, :rank] is staged
// in shared memory 64 ranks at a time; w rows are read coalesced along the columns.
template <typename T>
__global__ void __launch_bounds__(kCols)
rows_times_w_kernel(const T* __restrict__ in, int64_t ld_in, const T* __restrict__ w, int64_t w_slot,
                    int64_t w_row, int64_t C, const T* base, int64_t ld_base, T* out, int64_t ld_out,
                    const LoraTile* __restrict__ tiles) {
  __shared__ float hs[kRows][kR];
  const LoraTile tile = tiles[blockIdx.x];
  const int nrows = static_cast<int>(tile.row_end - tile.row_begin);
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kCols + tid;
  const bool active = c < C;
  const T* wbase = w + static_cast<int64_t>(tile.slot) * w_slot;
  float acc[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) acc[i] = 0.f;
  for (int r0 = 0; r0 < tile.rank; r0 += kR) {
    const int nr = min(kR, tile.rank - r0);
    for (int e = tid; e < kRows * kR; e += kCols) {
      const int rr = e / kR, kk = e % kR;
      hs[rr][kk] = (rr < nrows && kk < nr) ? to_f32(in[(tile.row_begin + rr) * ld_in + r0 + kk]) : 0.f;
    }
    __syncthreads();
    if (active) {
      for (int r = 0; r < nr; ++r) {
        const float wv = to_f32(wbase[static_cast<int64_t>(r0 + r) * w_row + c]);
#pragma unroll
        for (int i = 0; i < kRows; ++i) acc[i] = fmaf(hs[i][r], wv, acc[i]);
      }
    }
    __syncthreads();
  }
  if (!active) return;
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    if (i < nrows) {
      const int64_t t = tile.row_begin + i;
      const float b = base != nullptr ? to_f32(base[t * ld_base + c]) : 0.f;
      out[t * ld_out + c] = from_f32<T>(b + tile.scale * acc[i]);
    }
  }
}

// ---- tensor-core variants (bf16 / fp16 in, fp32 accumulation; WMMA 16x16x16) ----
// Operands are staged in shared memory (zero-padded, so any K, C, rank and any leading dimension
// work and every WMMA pointer is 32-byte aligned), products accumulate in fp32 fragments, and the
// fragments are summed in a fixed order: results are deterministic like the FMA kernels'.
constexpr int kTcLd = 72;     // bf16/fp16 row stride of the staged [*, 64] tiles (multiple of 8)
constexpr int kTcCLd = 68;    // fp32 row stride of the staged 16 x 64 result (multiple of 4)
constexpr int kTcWLd = kCols + 8;    // staged [64, 128] weight tile of the expand
constexpr int kTcOLd = kCols + 4;    // staged 16 x 128 fp32 result of the expand

// rows_times_wt with tensor cores: 8 warps; warp w owns ranks (w % 4) * 16 .. +16 and the k-steps
// kk = (w / 4) * 16 + 32 * j of each staged 64-wide chunk; the two halves are added at the end.
template <typename T>
__global__ void __launch_bounds__(kWtThreads)
rows_times_wt_tc_kernel(const T* __restrict__ in, int64_t ld_in, int64_t K, const T* __restrict__ w,
                        int64_t w_slot, int64_t w_row, T* __restrict__ out, int64_t ld_out,
                        const LoraTile* __restrict__ tiles) {
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) T xs[kRows][kTcLd];
  __shared__ __align__(32) T ws[kR][kTcLd];
  __shared__ __align__(32) float cs[2][kRows][kTcCLd];
  const LoraTile tile = tiles[blockIdx.x];
  const int r0 = static_cast<int>(blockIdx.y) * kR;
  if (r0 >= tile.rank) return;  // uniform over the block
  const int nrows = static_cast<int>(tile.row_end - tile.row_begin);
  const int nr = min(kR, tile.rank - r0);
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, col = warp % 4, half = warp / 4;
  const T* wbase = w + static_cast<int64_t>(tile.slot) * w_slot + static_cast<int64_t>(r0) * w_row;
  if (nrows <= kDecodeRows) {
    decode_rows_times_wt(in, ld_in, K, wbase, w_row, out, ld_out, tile, r0, nr);
    return;  // uniform over the block
  }
  const T zero = from_f32<T>(0.f);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.f);
  for (int64_t k0 = 0; k0 < K; k0 += kK) {
    const int nk = static_cast<int>((K - k0 < kK ? K - k0 : int64_t{kK}));
    for (int e = tid; e < kRows * kK; e += kWtThreads) {
      const int rr = e / kK, kk = e % kK;
      xs[rr][kk] = (rr < nrows && kk < nk) ? in[(tile.row_begin + rr) * ld_in + k0 + kk] : zero;
    }
    for (int e = tid; e < kR * kK; e += kWtThreads) {
      const int rr = e / kK, kk = e % kK;
      ws[rr][kk] = (rr < nr && kk < nk) ? wbase[rr * w_row + k0 + kk] : zero;
    }
    __syncthreads();
    if (col * 16 < nr) {  // warp-uniform
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int kk = half * 16 + 32 * j;
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;  // b(k, r) = ws[r][k]
        wmma::load_matrix_sync(a, &xs[0][kk], kTcLd);
        wmma::load_matrix_sync(b, &ws[col * 16][kk], kTcLd);
        wmma::mma_sync(acc, a, b, acc);
      }
    }
    __syncthreads();
  }
  wmma::store_matrix_sync(&cs[half][0][col * 16], acc, kTcCLd, wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kRows * kR; e += kWtThreads) {
    const int i = e / kR, r = e % kR;
    if (i < nrows && r < nr) {
      out[(tile.row_begin + i) * ld_out + r0 + r] = from_f32<T>((cs[0][i][r] + cs[1][i][r]) * tile.scale);
    }
  }
}

// rows_times_w with tensor cores: 4 warps, warp w owns columns w * 32 .. +32 (two fragments); the rank
// is staged 64 at a time, zero-padded to a multiple of 16.
template <typename T>
__global__ void __launch_bounds__(kCols)
rows_times_w_tc_kernel(const T* __restrict__ in, int64_t ld_in, const T* __restrict__ w, int64_t w_slot,
                       int64_t w_row, int64_t C, const T* base, int64_t ld_base, T* out, int64_t ld_out,
                       const LoraTile* __restrict__ tiles) {
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) T hs[kRows][kTcLd];
  __shared__ __align__(32) T wsh[kR][kTcWLd];
  __shared__ __align__(32) float cs[kRows][kTcOLd];
  const LoraTile tile = tiles[blockIdx.x];
  const int nrows = static_cast<int>(tile.row_end - tile.row_begin);
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kCols;
  const int nc = static_cast<int>(C - c0 < kCols ? C - c0 : int64_t{kCols});
  const T* wbase = w + static_cast<int64_t>(tile.slot) * w_slot;
  const T zero = from_f32<T>(0.f);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
  for (int r0 = 0; r0 < tile.rank; r0 += kR) {
    const int nr = min(kR, tile.rank - r0);
    for (int e = tid; e < kRows * kR; e += kCols) {
      const int rr = e / kR, kk = e % kR;
      hs[rr][kk] = (rr < nrows && kk < nr) ? in[(tile.row_begin + rr) * ld_in + r0 + kk] : zero;
    }
    for (int e = tid; e < kR * kCols; e += kCols) {
      const int rr = e / kCols, cc = e % kCols;
      wsh[rr][cc] = (rr < nr && cc < nc) ? wbase[static_cast<int64_t>(r0 + rr) * w_row + c0 + cc] : zero;
    }
    __syncthreads();
    for (int kk = 0; kk < nr; kk += 16) {  // block-uniform
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::load_matrix_sync(a, &hs[0][kk], kTcLd);
#pragma unroll
      for (int f = 0; f < 2; ++f) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;  // b(r, c) = wsh[r][c]
        wmma::load_matrix_sync(b, &wsh[kk][warp * 32 + f * 16], kTcWLd);
        wmma::mma_sync(acc[f], a, b, acc[f]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int f = 0; f < 2; ++f) {
    wmma::store_matrix_sync(&cs[0][warp * 32 + f * 16], acc[f], kTcOLd, wmma::mem_row_major);
  }
  __syncthreads();
  for (int e = tid; e < kRows * kCols; e += kCols) {
    const int i = e / kCols, cc = e % kCols;
    if (i < nrows && cc < nc) {
      const int64_t t = tile.row_begin + i, c = c0 + cc;
      const float bv = base != nullptr ? to_f32(base[t * ld_base + c]) : 0.f;
      out[t * ld_out + c] = from_f32<T>(bv + tile.scale * cs[i][cc]);
    }
  }
}

// Phase 1 of the per-slot reductions: one block per (part, 128 columns, 16 ranks); thread = column,
// 16 rank accumulators. A part is up to kLoraPartRows consecutive rows of one slot's row sequence
// (which may span several ranges); its fp32 sums go to partial[part, r, c].
template <typename T>
__global__ void __launch_bounds__(kCols)
slot_partial_kernel(const T* __restrict__ left, int64_t ld_left, const T* __restrict__ right,
                    int64_t ld_right, int64_t C, const LoraSlotWork* __restrict__ work,
                    const LoraPart* __restrict__ parts, const LoraRange* __restrict__ ranges,
                    int32_t max_rank, float* __restrict__ partial) {
  __shared__ float ls[kRedT][kRedR];
  const LoraPart part = parts[blockIdx.x];
  const LoraSlotWork sw = work[part.work];
  const int r0 = static_cast<int>(blockIdx.z) * kRedR;
  if (r0 >= sw.rank) return;  // uniform over the block
  const int nr = min(kRedR, sw.rank - r0);
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kCols + tid;
  const bool active = c < C;
  float acc[kRedR];
#pragma unroll
  for (int q = 0; q < kRedR; ++q) acc[q] = 0.f;
  int64_t g = part.range;
  int64_t t0 = part.row;
  int64_t left_rows = part.count;
  while (left_rows > 0) {
    const int64_t range_end = ranges[g].row_end;
    const int64_t avail = range_end - t0 < left_rows ? range_end - t0 : left_rows;
    const int nt = static_cast<int>(avail < kRedT ? avail : int64_t{kRedT});
    for (int e = tid; e < kRedT * kRedR; e += kCols) {
      const int tt = e / kRedR, q = e % kRedR;
      ls[tt][q] = (tt < nt && q < nr) ? to_f32(left[(t0 + tt) * ld_left + r0 + q]) : 0.f;
    }
    __syncthreads();
    if (active) {
      for (int tt = 0; tt < nt; ++tt) {
        const float rv = to_f32(right[(t0 + tt) * ld_right + c]);
#pragma unroll
        for (int q = 0; q < kRedR; ++q) acc[q] = fmaf(ls[tt][q], rv, acc[q]);
      }
    }
    __syncthreads();
    t0 += nt;
    left_rows -= nt;
    if (t0 == range_end && left_rows > 0) {
      ++g;
      t0 = ranges[g].row_begin;
    }
  }
  if (!active) return;
  float* dst = partial + (static_cast<int64_t>(blockIdx.x) * max_rank + r0) * C + c;
#pragma unroll
  for (int q = 0; q < kRedR; ++q) {
    if (q < nr) dst[static_cast<int64_t>(q) * C] = acc[q];
  }
}

// Phase 2: one block per (slot, 128 columns, 16 ranks) sums the slot's parts in part order (fixed, so
// the result is bit-reproducible) and writes dw[slot, r, c] = scale * sum.
template <typename T>
__global__ void __launch_bounds__(kCols)
slot_finish_kernel(int64_t C, T* __restrict__ dw, int64_t dw_slot, int64_t dw_row,
                   const LoraSlotWork* __restrict__ work, int32_t max_rank, const float* __restrict__ partial) {
  const LoraSlotWork sw = work[blockIdx.x];
  const int r0 = static_cast<int>(blockIdx.z) * kRedR;
  if (r0 >= sw.rank) return;
  const int nr = min(kRedR, sw.rank - r0);
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kCols + threadIdx.x;
  if (c >= C) return;
  T* dst = dw + static_cast<int64_t>(sw.slot) * dw_slot + static_cast<int64_t>(r0) * dw_row + c;
  for (int q = 0; q < nr; ++q) {
    float s = 0.f;
    for (int64_t p = sw.part_begin; p < sw.part_end; ++p) {
      s += partial[(p * max_rank + r0 + q) * C + c];
    }
    dst[static_cast<int64_t>(q) * dw_row] = from_f32<T>(s * sw.scale);
  }
}

constexpr int64_t kMaxGridY = 65535;

}  // namespace

cudaError_t lora_rows_times_wt(DType dtype, const void* in, int64_t ld_in, int64_t K, const void* w,
                               int64_t w_slot, int64_t w_row, void* out, int64_t ld_out,
                               const LoraTile* tiles, int64_t num_tiles, int32_t max_rank, bool tensor_cores,
                               cudaStream_t stream) {
  if (num_tiles == 0 || max_rank <= 0) return cudaSuccess;
  if (num_tiles > INT32_MAX || detail::ceil_div(max_rank, kR) > kMaxGridY) return cudaErrorInvalidConfiguration;
  return detail::dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(detail::ceil_div(max_rank, kR)));
    const T* x = static_cast<const T*>(in);
    const T* wt = static_cast<const T*>(w);
    T* o = static_cast<T*>(out);
    if constexpr (!std::is_same_v<T, float>) {
      if (tensor_cores) {
        rows_times_wt_tc_kernel<T><<<grid, kWtThreads, 0, stream>>>(x, ld_in, K, wt, w_slot, w_row, o, ld_out, tiles);
        return cudaGetLastError();
      }
    }
    rows_times_wt_kernel<T><<<grid, kWtThreads, 0, stream>>>(x, ld_in, K, wt, w_slot, w_row, o, ld_out, tiles);
    return cudaGetLastError();
  });
}

cudaError_t lora_rows_times_w(DType dtype, const void* in, int64_t ld_in, const void* w, int64_t w_slot,
                              int64_t w_row, int64_t C, const void* base, int64_t ld_base, void* out,
                              int64_t ld_out, const LoraTile* tiles, int64_t num_tiles, bool tensor_cores,
                              cudaStream_t stream) {
  if (num_tiles == 0 || C == 0) return cudaSuccess;
  if (num_tiles > INT32_MAX || detail::ceil_div(C, kCols) > kMaxGridY) return cudaErrorInvalidConfiguration;
  return detail::dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(detail::ceil_div(C, kCols)));
    const T* h = static_cast<const T*>(in);
    const T* wt = static_cast<const T*>(w);
    const T* b = static_cast<const T*>(base);
    T* o = static_cast<T*>(out);
    if constexpr (!std::is_same_v<T, float>) {
      if (tensor_cores) {
        rows_times_w_tc_kernel<T><<<grid, kCols, 0, stream>>>(h, ld_in, wt, w_slot, w_row, C, b, ld_base, o, ld_out,
                                                             tiles);
        return cudaGetLastError();
      }
    }
    rows_times_w_kernel<T><<<grid, kCols, 0, stream>>>(h, ld_in, wt, w_slot, w_row, C, b, ld_base, o, ld_out, tiles);
    return cudaGetLastError();
  });
}

cudaError_t lora_slot_reduce(DType dtype, const void* left, int64_t ld_left, const void* right,
                             int64_t ld_right, int64_t C, void* dw, int64_t dw_slot, int64_t dw_row,
                             const LoraSlotWork* work, int64_t num_work, const LoraPart* parts, int64_t num_parts,
                             const LoraRange* ranges, int32_t max_rank, float* partial, cudaStream_t stream) {
  if (num_work == 0 || num_parts == 0 || C == 0 || max_rank <= 0) return cudaSuccess;
  if (num_work > INT32_MAX || num_parts > INT32_MAX || detail::ceil_div(C, kCols) > kMaxGridY ||
      detail::ceil_div(max_rank, kRedR) > kMaxGridY) {
    return cudaErrorInvalidConfiguration;
  }
  return detail::dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const unsigned gy = static_cast<unsigned>(detail::ceil_div(C, kCols));
    const unsigned gz = static_cast<unsigned>(detail::ceil_div(max_rank, kRedR));
    slot_partial_kernel<T><<<dim3(static_cast<unsigned>(num_parts), gy, gz), kCols, 0, stream>>>(
        static_cast<const T*>(left), ld_left, static_cast<const T*>(right), ld_right, C, work, parts, ranges,
        max_rank, partial);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    slot_finish_kernel<T><<<dim3(static_cast<unsigned>(num_work), gy, gz), kCols, 0, stream>>>(
        C, static_cast<T*>(dw), dw_slot, dw_row, work, max_rank, partial);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace mint
