// Fused top-k / top-p sampling, torch-free (contract: mint/sampling_cuda.h).
//
// One block of 512 threads per row, a fixed number of passes over the row (no sort, no scratch in
// global memory):
//   1. max / argmax (lowest index on ties) and the invalid-row test (NaN, +inf, all -inf);
//   2. greedy rows: log_softmax at temperature 1 of the argmax, then done;
//   3. top-k: 4 radix passes (8 bits each) over the order-preserving keys find the k-th key; the tie
//      at the boundary is resolved by index (k - #greater)-th equal key in index order;
//   4. top-p: the same 4 radix passes, histogramming fixed-point weights exp((l - max) / T) of the
//      top-k set instead of counts, find the key where the mass from the top reaches p; ties at that
//      key are all the same weight, so the number of them needed is one integer division;
//   5. the draw: kept mass per contiguous chunk of the row, a serial scan over the 512 chunk sums,
//      and one thread walks the chunk where the cumulative mass crosses u * mass, in index order.
// All reductions are in a fixed order or in integers, so equal inputs give equal outputs.
#include <mint/philox.h>
#include <mint/sampling_cuda.h>

#include <cfloat>

#include "elem.cuh"

namespace mint {
namespace cuda {
namespace {

using detail::to_f32;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kNoIndex = INT64_MAX;

// Order-preserving key of a non-NaN float: a > b  <=>  key(a) > key(b); -0 and +0 share a key.
__device__ __forceinline__ uint32_t order_key(float x) {
  const uint32_t u = __float_as_uint(x == 0.f ? 0.f : x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

struct Shared {
  float fval[kThreads];
  int64_t ival[kThreads];
  double dval[kThreads];
  unsigned long long hist[256];
  int warp_count[kWarps];
  // results broadcast to the block
  float max_logit;
  int64_t argmax;
  int bad;
  uint32_t digit;
  unsigned long long remaining;
  int64_t found;
  unsigned long long total;
  int64_t token;
};

template <typename T>
struct Row {
  const T* p;
  int64_t stride;
  __device__ __forceinline__ float operator()(int64_t j) const { return to_f32(p[j * stride]); }
};

// Deterministic block sum (fixed tree); every thread gets the result.
__device__ double block_sum(double v, Shared& sh) {
  const int tid = static_cast<int>(threadIdx.x);
  sh.dval[tid] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) sh.dval[tid] += sh.dval[tid + s];
    __syncthreads();
  }
  const double r = sh.dval[0];
  __syncthreads();
  return r;
}

// Thread 0 walks the 256-bucket histogram from the top: the first digit where the running total
// reaches `remaining`; stores the digit and what is still needed inside that bucket.
__device__ void pick_digit(Shared& sh) {
  if (threadIdx.x == 0) {
    unsigned long long cum = 0;
    uint32_t chosen = 0;
    unsigned long long rem = 1;
    for (int d = 255; d >= 0; --d) {
      if (cum + sh.hist[d] >= sh.remaining) {
        chosen = static_cast<uint32_t>(d);
        rem = sh.remaining - cum;
        break;
      }
      cum += sh.hist[d];
      chosen = static_cast<uint32_t>(d);  // not reached (rounding): ends at the lowest bucket
      rem = sh.hist[d] > 0 ? sh.hist[d] : 1;
    }
    sh.digit = chosen;
    sh.remaining = rem;
  }
  __syncthreads();
}

// Index of the n-th (1-based) j in index order with key(j) == key and j <= limit and in_set(j).
template <typename T, typename InSet>
__device__ int64_t nth_equal(const Row<T>& row, int64_t vocab, uint32_t key, int64_t limit, long long n,
                             const InSet& in_set, Shared& sh) {
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  if (tid == 0) sh.found = -1;
  __syncthreads();
  long long running = 0;
  for (int64_t base = 0; base < vocab && base <= limit; base += kThreads) {
    const int64_t j = base + tid;
    bool flag = false;
    if (j < vocab && j <= limit) {
      const float x = row(j);
      flag = order_key(x) == key && in_set(j, x);
    }
    const unsigned ballot = __ballot_sync(0xFFFFFFFFu, flag);
    if (lane == 0) sh.warp_count[warp] = __popc(ballot);
    __syncthreads();
    long long before = 0, total = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) before += sh.warp_count[w];
      total += sh.warp_count[w];
    }
    const long long pos = running + before + __popc(ballot & ((1u << lane) - 1u)) + 1;
    if (flag && pos == n) sh.found = j;
    running += total;
    __syncthreads();
    if (sh.found >= 0) break;
  }
  const int64_t r = sh.found;
  __syncthreads();
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
sample_kernel(const T* __restrict__ logits, int64_t vocab, int64_t row_stride, int64_t col_stride,
              SampleRowParams params, int64_t* __restrict__ tokens, float* __restrict__ logprobs) {
  __shared__ Shared sh;
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t b = blockIdx.x;
  const Row<T> row{logits + b * row_stride, col_stride};

  // 1. max, argmax, invalid row
  {
    float best = -INFINITY;
    int64_t best_i = kNoIndex;
    int bad = 0;
    for (int64_t j = tid; j < vocab; j += kThreads) {
      const float x = row(j);
      bad |= (isnan(x) || x == INFINITY) ? 1 : 0;
      if (x > best) {
        best = x;
        best_i = j;
      }
    }
    sh.fval[tid] = best;
    sh.ival[tid] = best_i;
    if (tid == 0) sh.bad = 0;
    __syncthreads();
    if (bad) atomicOr(&sh.bad, 1);
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (tid < s) {
        const float o = sh.fval[tid + s];
        const int64_t oi = sh.ival[tid + s];
        if (o > sh.fval[tid] || (o == sh.fval[tid] && oi < sh.ival[tid])) {
          sh.fval[tid] = o;
          sh.ival[tid] = oi;
        }
      }
      __syncthreads();
    }
    if (tid == 0) {
      sh.max_logit = sh.fval[0];
      sh.argmax = sh.ival[0];
    }
    __syncthreads();
  }
  const float max_logit = sh.max_logit;
  const int64_t argmax = sh.argmax;
  if (sh.bad || argmax == kNoIndex) {
    if (tid == 0) {
      tokens[b] = -1;
      logprobs[b] = __int_as_float(0x7FC00000);
    }
    return;
  }

  const float temperature = params.temperature[b];
  if (temperature == 0.f) {  // 2. greedy
    double s = 0.0;
    for (int64_t j = tid; j < vocab; j += kThreads) {
      s += static_cast<double>(static_cast<float>(exp(static_cast<double>(row(j) - max_logit))));
    }
    s = block_sum(s, sh);
    if (tid == 0) {
      tokens[b] = argmax;
      logprobs[b] = static_cast<float>(-log(s));
    }
    return;
  }

  const double inv_t = 1.0 / static_cast<double>(temperature);
  // exp of the float z as the CPU's std::exp(float) gives it: a double exp rounded once to float is the
  // correctly rounded result (bar double-rounding ties), which CUDA's expf (up to 2 ulp) is not.
  auto weight = [&](float x) {
    const float z = static_cast<float>((static_cast<double>(x) - max_logit) * inv_t);
    return static_cast<float>(exp(static_cast<double>(z)));
  };
  const int64_t top_k = params.top_k[b];
  const int64_t k = (top_k <= 0 || top_k >= vocab) ? vocab : top_k;
  const bool use_p = params.top_p[b] < 1.f;

  // Kept set: key > kkey, or key == kkey and index <= kidx. (0, kNoIndex) keeps every token.
  uint32_t kkey = 0;
  int64_t kidx = kNoIndex;
  auto in_top_k = [&](int64_t j, float x) {
    const uint32_t key = order_key(x);
    return key > kkey || (key == kkey && j <= kidx);
  };

  // 3. top-k
  if (k < vocab) {
    uint32_t prefix = 0, mask = 0;
    if (tid == 0) sh.remaining = static_cast<unsigned long long>(k);
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int d = tid; d < 256; d += kThreads) sh.hist[d] = 0;
      __syncthreads();
      for (int64_t j = tid; j < vocab; j += kThreads) {
        const uint32_t key = order_key(row(j));
        if ((key & mask) == prefix) atomicAdd(&sh.hist[(key >> shift) & 255u], 1ull);
      }
      __syncthreads();
      pick_digit(sh);
      prefix |= sh.digit << shift;
      mask |= 255u << shift;
    }
    const long long need = static_cast<long long>(sh.remaining);
    __syncthreads();
    kkey = prefix;
    const int64_t idx = nth_equal(row, vocab, kkey, kNoIndex, need, [](int64_t, float) { return true; }, sh);
    kidx = idx >= 0 ? idx : kNoIndex;
  }

  // 4. top-p within the top-k set, in fixed-point mass (scale keeps the row total below 2^62)
  if (use_p) {
    const int bits = 64 - __clzll(static_cast<long long>(vocab));
    const double scale = ldexp(1.0, 62 - bits);
    auto qweight = [&](float x) {
      return static_cast<unsigned long long>(__double2ull_rn(static_cast<double>(weight(x)) * scale));
    };
    unsigned long long mine = 0;
    for (int64_t j = tid; j < vocab; j += kThreads) {
      const float x = row(j);
      if (in_top_k(j, x)) mine += qweight(x);
    }
    if (tid == 0) sh.total = 0;
    __syncthreads();
    atomicAdd(&sh.total, mine);
    __syncthreads();
    const unsigned long long total = sh.total;
    double need_d = ceil(static_cast<double>(params.top_p[b]) * static_cast<double>(total));
    unsigned long long need = need_d < 1.0 ? 1ull : static_cast<unsigned long long>(need_d);
    if (need > total) need = total;
    __syncthreads();
    if (tid == 0) sh.remaining = need;
    uint32_t prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int d = tid; d < 256; d += kThreads) sh.hist[d] = 0;
      __syncthreads();
      for (int64_t j = tid; j < vocab; j += kThreads) {
        const float x = row(j);
        const uint32_t key = order_key(x);
        if ((key & mask) == prefix && in_top_k(j, x)) {
          const unsigned long long q = qweight(x);
          if (q) atomicAdd(&sh.hist[(key >> shift) & 255u], q);
        }
      }
      __syncthreads();
      pick_digit(sh);
      prefix |= sh.digit << shift;
      mask |= 255u << shift;
    }
    const unsigned long long rem = sh.remaining;
    __syncthreads();
    const unsigned long long wq = qweight(key_value(prefix));
    long long count = wq > 0 ? static_cast<long long>((rem + wq - 1) / wq) : 1;
    if (count < 1) count = 1;
    const int64_t limit = prefix == kkey ? kidx : kNoIndex;
    int64_t idx = nth_equal(row, vocab, prefix, limit, count, in_top_k, sh);
    if (idx < 0) {  // fewer equal keys than asked for (rounding): keep them all
      idx = limit;
    }
    if (prefix > kkey || (prefix == kkey && idx <= kidx)) {
      kkey = prefix;
      kidx = idx;
    }
  }

  // 5. the draw over the kept tokens in index order
  const int64_t chunk = (vocab + kThreads - 1) / kThreads;
  const int64_t c0 = tid * chunk;
  const int64_t c1 = c0 + chunk < vocab ? c0 + chunk : vocab;
  double local = 0.0;
  int64_t last_pos = -1;
  for (int64_t j = c0; j < c1; ++j) {
    const float x = row(j);
    const float w = weight(x);
    if (w > 0.f && in_top_k(j, x)) {
      local += static_cast<double>(w);
      last_pos = j;
    }
  }
  sh.dval[tid] = local;
  sh.ival[tid] = last_pos;
  __syncthreads();
  if (tid == 0) {
    double mass = 0.0;
    int64_t last = argmax;
    for (int t = 0; t < kThreads; ++t) {
      mass += sh.dval[t];
      if (sh.ival[t] >= 0) last = sh.ival[t];
    }
    const PhiloxBlock bits = philox_block(static_cast<uint64_t>(params.seed[b]),
                                          static_cast<uint64_t>(params.subsequence[b]),
                                          static_cast<uint64_t>(params.offset[b]));
    const double target = uniform53(bits.x[0], bits.x[1]) * mass;
    double cum = 0.0;
    int chosen = -1;
    for (int t = 0; t < kThreads; ++t) {
      if (cum + sh.dval[t] > target && sh.ival[t] >= 0) {
        chosen = t;
        break;
      }
      cum += sh.dval[t];
    }
    int64_t token = last;
    if (chosen >= 0) {
      token = sh.ival[chosen];  // the chunk's last kept token unless the walk crosses earlier
      const int64_t j0 = chosen * chunk;
      const int64_t j1 = j0 + chunk < vocab ? j0 + chunk : vocab;
      for (int64_t j = j0; j < j1; ++j) {
        const float x = row(j);
        const float w = weight(x);
        if (w > 0.f && in_top_k(j, x)) {
          cum += static_cast<double>(w);
          if (cum > target) {
            token = j;
            break;
          }
        }
      }
    }
    const double z = (static_cast<double>(row(token)) - max_logit) * inv_t;
    tokens[b] = token;
    logprobs[b] = static_cast<float>(z - log(mass));
  }
}

}  // namespace

cudaError_t sample_rows(DType dtype, const void* logits, int64_t batch, int64_t vocab, int64_t row_stride,
                        int64_t col_stride, SampleRowParams params, int64_t* tokens, float* logprobs,
                        cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  if (batch > INT32_MAX || vocab < 1) return cudaErrorInvalidValue;
  return detail::dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    sample_kernel<T><<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(
        static_cast<const T*>(logits), vocab, row_stride, col_stride, params, tokens, logprobs);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace mint
