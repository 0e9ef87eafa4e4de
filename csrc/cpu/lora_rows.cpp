// CPU kernel of mint::lora_rows_: the fused LoRA delta for decode-sized batches, one adapter slot per row.
//
//   y[t] += scale[n] * (x[t] @ A[n, :r]^T) @ B[n, :r]      n = row_slot[t], r = lora_ranks[n]
//
// Each row is computed on its own, in a fixed order that depends only on the layer's sizes (a
// vectorised dot product per rank row for the shrink, then a rank-ordered sum per output column for
// the expand), never on the other rows: the result of a row is the same bits whatever batch it is in.
// No GEMM calls: for a few dozen rows the per-call cost of BLAS (and of waking its thread pool, one
// region per slot and direction) is larger than the work, so rows run in one parallel_for, split only
// when a chunk has enough work to pay for a thread.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

#include <vector>

namespace mint {
namespace {

using at::Tensor;

// Plain loops written for the compiler's auto-vectoriser (-O3 -march=native): no reduction is
// reassociated behind our back, so every order below is fixed by the sizes alone.
constexpr int64_t kLanes = 16;

// sum_i a[i] * b[i]: kLanes partial sums (lane l takes i = l mod kLanes), summed in lane order, then
// the tail.
inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) part[l] += a[i + l] * b[i + l];
  }
  float s = 0.0f;
  for (int64_t l = 0; l < kLanes; ++l) s += part[l];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[j] += scale * sum_k h[k] * b[k * out + j], k in [0, r) in that order for every j (acc: out floats).
inline void expand_row(float* __restrict y, const float* __restrict h, const float* __restrict b, int64_t r,
                       int64_t out, float scale, float* __restrict acc) {
  for (int64_t j = 0; j < out; ++j) acc[j] = h[0] * b[j];
  for (int64_t k = 1; k < r; ++k) {
    const float hk = h[k];
    const float* __restrict bk = b + k * out;
    for (int64_t j = 0; j < out; ++j) acc[j] += hk * bk[j];
  }
  for (int64_t j = 0; j < out; ++j) y[j] += scale * acc[j];
}

std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

void lora_rows_inplace_cpu(const Tensor& y, const Tensor& x, const Tensor& lora_a, const Tensor& lora_b,
                           const Tensor& row_slot, const Tensor& lora_ranks, const Tensor& lora_scales) {
  const char* op = "mint.lora_rows_";
  TORCH_CHECK(x.dim() == 2, op, ": x must be 2-D [T, in], got shape ", shape_str(x));
  TORCH_CHECK(y.dim() == 2, op, ": y must be 2-D [T, out], got shape ", shape_str(y));
  TORCH_CHECK(lora_a.dim() == 3, op, ": lora_a must be 3-D [N, R, in], got shape ", shape_str(lora_a));
  TORCH_CHECK(lora_b.dim() == 3, op, ": lora_b must be 3-D [N, R, out], got shape ", shape_str(lora_b));
  for (const Tensor* t : {&y, &x, &lora_a, &lora_b}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, op, ": y, x, lora_a and lora_b must be float32, got ",
                t->scalar_type());
  }
  const int64_t T = x.size(0), in = x.size(1), N = lora_a.size(0), R = lora_a.size(1), out = y.size(1);
  TORCH_CHECK(y.size(0) == T, op, ": y must have T = ", T, " rows like x, got shape ", shape_str(y));
  TORCH_CHECK(lora_a.size(2) == in, op, ": lora_a must be [N, R, in] with in = ", in, ", got shape ",
              shape_str(lora_a));
  TORCH_CHECK(lora_b.size(0) == N && lora_b.size(1) == R && lora_b.size(2) == out, op,
              ": lora_b must be [N, R, out] = [", N, ", ", R, ", ", out, "], got shape ", shape_str(lora_b));
  TORCH_CHECK(row_slot.dim() == 1 && row_slot.scalar_type() == at::kLong && row_slot.size(0) == T, op,
              ": row_slot must be a 1-D int64 tensor of T = ", T, " elements, got ", row_slot.scalar_type(),
              " of shape ", shape_str(row_slot));
  TORCH_CHECK(lora_ranks.dim() == 1 && lora_ranks.scalar_type() == at::kLong && lora_ranks.size(0) == N, op,
              ": lora_ranks must be a 1-D int64 tensor of N = ", N, " elements, got ", lora_ranks.scalar_type(),
              " of shape ", shape_str(lora_ranks));
  TORCH_CHECK(lora_scales.dim() == 1 && lora_scales.scalar_type() == at::kFloat && lora_scales.size(0) == N,
              op, ": lora_scales must be a 1-D float32 tensor of N = ", N, " elements, got ",
              lora_scales.scalar_type(), " of shape ", shape_str(lora_scales));
  for (const Tensor* t : {&x, &lora_a, &lora_b, &row_slot, &lora_ranks, &lora_scales}) {
    TORCH_CHECK(t->device() == y.device(), op, ": all inputs must be on ", y.device(), ", got ", t->device());
  }
  TORCH_CHECK(y.stride(1) == 1 || out <= 1, op, ": y must have unit stride in its last dimension");
  at::assert_no_internal_overlap(y);

  const Tensor slots_c = row_slot.contiguous(), ranks_c = lora_ranks.contiguous(),
               scales_c = lora_scales.contiguous();
  const int64_t* slots = slots_c.data_ptr<int64_t>();
  const int64_t* ranks = ranks_c.data_ptr<int64_t>();
  const float* scales = scales_c.data_ptr<float>();
  int64_t max_rank = 0;
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(ranks[n] >= 0 && ranks[n] <= R, op, ": lora_ranks[", n, "] = ", ranks[n],
                " is out of range [0, R = ", R, "]");
  }
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(slots[t] >= -1 && slots[t] < N, op, ": row_slot[", t, "] = ", slots[t],
                " is out of range [-1, ", N, ") (N = pool size)");
    if (slots[t] >= 0) max_rank = std::max(max_rank, ranks[slots[t]]);
  }
  if (max_rank == 0 || T == 0) return;

  const Tensor xc = x.stride(1) == 1 ? x : x.contiguous();
  const Tensor ac = lora_a.contiguous(), bc = lora_b.contiguous();
  const float* xp = xc.data_ptr<float>();
  const float* ap = ac.data_ptr<float>();
  const float* bp = bc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t x_row = xc.stride(0), y_row = y.stride(0);

  // Split rows across threads only when each chunk has a few million multiply-adds to do (about 100 us):
  // decode batches of the attention / MLP projections run on the calling thread, without waking the pool.
  const int64_t per_row = max_rank * (in + out);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(per_row, 1));
  at::parallel_for(0, T, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> h(max_rank), acc(out);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = slots[t];
      if (n < 0) continue;
      const int64_t r = ranks[n];
      if (r == 0) continue;
      const float* a = ap + n * R * in;
      for (int64_t k = 0; k < r; ++k) h[k] = dot(xp + t * x_row, a + k * in, in);
      expand_row(yp + t * y_row, h.data(), bp + n * R * out, r, out, scales[n], acc.data());
    }
  });
}

// Not differentiable: refuses inputs that require grad and bumps y's version counter.
void lora_rows_inplace_autograd(c10::DispatchKeySet ks, const Tensor& y, const Tensor& x, const Tensor& lora_a,
                                const Tensor& lora_b, const Tensor& row_slot, const Tensor& lora_ranks,
                                const Tensor& lora_scales) {
  TORCH_CHECK(!(at::GradMode::is_enabled() &&
                (y.requires_grad() || x.requires_grad() || lora_a.requires_grad() || lora_b.requires_grad())),
              "mint.lora_rows_ is not differentiable, but y, x, lora_a or lora_b requires grad; use "
              "lora_apply for training, or call it under torch.no_grad()");
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto opd = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("mint::lora_rows_", "")
                                .typed<void(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                            const Tensor&, const Tensor&, const Tensor&)>();
    opd.redispatch(ks & c10::after_ADInplaceOrView_keyset, y, x, lora_a, lora_b, row_slot, lora_ranks,
                   lora_scales);
  }
  torch::autograd::increment_version(y);
}

}  // namespace

TORCH_LIBRARY_IMPL(mint, CPU, m) { m.impl("lora_rows_", &lora_rows_inplace_cpu); }

TORCH_LIBRARY_IMPL(mint, Autograd, m) { m.impl("lora_rows_", &lora_rows_inplace_autograd); }

}  // namespace mint
