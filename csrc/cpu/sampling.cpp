// mint::sample on CPU: per-row temperature / top-k / top-p sampling with counter-based randomness.
//
// Every row is independent (batch invariance): its token depends only on its logits, its parameters
// and one Philox draw keyed by (seed, subsequence, offset).
//
// The vocabulary is ranked by one total order, "ahead": higher logit first, lower index on ties.
// Top-k keeps the first k tokens of that order, top-p the shortest prefix of the top-k set whose
// mass reaches p, so the kept set is always a prefix of the order and is described by its last
// token. The draw then walks the kept tokens in index order (inverse CDF), which keeps the result
// independent of how the prefix was found.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <mint/philox.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <vector>

namespace mint {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct RowParams {
  float temperature;
  int64_t top_k;
  float top_p;
  uint64_t seed;
  uint64_t subsequence;
  uint64_t offset;
};

struct RowResult {
  int64_t token;
  float logprob;
};

// The ranking order: true when token a comes before token b.
struct Ahead {
  const float* logits;
  bool operator()(int64_t a, int64_t b) const {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  }
};

// Samples one row; owns scratch buffers reused across the rows of one thread.
class RowSampler {
 public:
  RowResult operator()(const float* logits, int64_t vocab, const RowParams& p) {
    float max_logit = -kInf;
    int64_t argmax = -1;
    bool non_finite = false;
    for (int64_t j = 0; j < vocab; ++j) {
      const float x = logits[j];
      non_finite |= std::isnan(x) || x == kInf;
      if (x > max_logit) {
        max_logit = x;
        argmax = j;
      }
    }
    if (non_finite || argmax < 0) return {-1, kNaN};  // NaN / +inf present, or every logit -inf

    if (p.temperature == 0.f) return {argmax, greedy_logprob(logits, vocab, max_logit)};

    // Weights exp((l - max) / T) in [0, 1]; the maximum has weight 1, -inf logits weight 0.
    const double inv_t = 1.0 / static_cast<double>(p.temperature);
    weights_.resize(vocab);
    double total = 0.0;
    for (int64_t j = 0; j < vocab; ++j) {
      weights_[j] = std::exp(static_cast<float>((static_cast<double>(logits[j]) - max_logit) * inv_t));
      total += weights_[j];
    }

    const int64_t k = (p.top_k <= 0 || p.top_k >= vocab) ? vocab : p.top_k;
    const bool use_p = p.top_p < 1.f;
    const Ahead ahead{logits};
    int64_t last_kept = -1;  // -1: every token is kept
    if (k < vocab || use_p) {
      order_.resize(vocab);
      std::iota(order_.begin(), order_.end(), int64_t{0});
      if (k < vocab) {
        std::nth_element(order_.begin(), order_.begin() + (k - 1), order_.end(), ahead);
        last_kept = order_[k - 1];
      }
      if (use_p) last_kept = nucleus_last(logits, k, p.top_p);
    }

    auto kept = [&](int64_t j) { return last_kept < 0 || j == last_kept || ahead(j, last_kept); };
    double mass = total;
    if (last_kept >= 0) {
      mass = 0.0;
      for (int64_t j = 0; j < vocab; ++j) {
        if (kept(j)) mass += weights_[j];
      }
    }
    const PhiloxBlock bits = philox_block(p.seed, p.subsequence, p.offset);
    const double target = uniform53(bits.x[0], bits.x[1]) * mass;
    double cum = 0.0;
    int64_t token = argmax;
    for (int64_t j = 0; j < vocab; ++j) {
      if (weights_[j] > 0.f && kept(j)) {
        cum += weights_[j];
        token = j;
        if (cum > target) break;
      }
    }
    const double z = (static_cast<double>(logits[token]) - max_logit) * inv_t;
    return {token, static_cast<float>(z - std::log(mass))};
  }

 private:
  // log_softmax(logits)[argmax] at temperature 1, over the whole row.
  static float greedy_logprob(const float* logits, int64_t vocab, float max_logit) {
    double sum = 0.0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(logits[j] - max_logit);
    return static_cast<float>(-std::log(sum));
  }

  // The last token of the shortest prefix of the ranking of order_[0, n) (the top-k set, in any
  // order) whose weight reaches top_p of the set's weight. Quickselect on mass: split the range
  // at its median, keep the half that holds the boundary, so the cost is O(n) expected.
  int64_t nucleus_last(const float* logits, int64_t n, float top_p) {
    const Ahead ahead{logits};
    auto lo = order_.begin();
    auto hi = order_.begin() + n;
    double total = 0.0;
    for (auto it = lo; it != hi; ++it) total += weights_[*it];
    double need = static_cast<double>(top_p) * total;  // mass still to collect from [lo, hi)
    constexpr int64_t kSortBelow = 32;
    while (hi - lo > kSortBelow) {
      const auto mid = lo + (hi - lo) / 2;
      std::nth_element(lo, mid, hi, ahead);
      double upper = 0.0;  // [lo, mid] is the head of the range's ranking
      for (auto it = lo; it <= mid; ++it) upper += weights_[*it];
      if (upper >= need) {
        hi = mid + 1;
      } else {
        need -= upper;
        lo = mid + 1;
      }
    }
    std::sort(lo, hi, ahead);
    double cum = 0.0;
    for (auto it = lo; it != hi; ++it) {
      cum += weights_[*it];
      if (cum >= need) return *it;
    }
    return *(hi - 1);  // rounding left the sum just short of the goal: keep the rest of the set
  }

  std::vector<float> weights_;
  std::vector<int64_t> order_;
};

void check_row_param(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t batch) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == batch, name, " must be 1-D [B] with B = ", batch,
              " (rows of logits), got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU like logits, got ", t.device());
}

struct RowInputs {
  at::TensorAccessor<float, 1> temperature;
  at::TensorAccessor<int64_t, 1> top_k;
  at::TensorAccessor<float, 1> top_p;
  at::TensorAccessor<int64_t, 1> seed;
  at::TensorAccessor<int64_t, 1> subsequence;
  at::TensorAccessor<int64_t, 1> offset;
};

// A row as contiguous fp32: the logits themselves when they already are, else a copy in `buf`.
template <typename T>
const float* row_as_float(const T* src, int64_t vocab, int64_t stride, std::vector<float>& buf) {
  if constexpr (std::is_same_v<T, float>) {
    if (stride == 1) return src;
  }
  buf.resize(vocab);
  for (int64_t j = 0; j < vocab; ++j) buf[j] = static_cast<float>(src[j * stride]);
  return buf.data();
}

template <typename T>
void sample_rows(const T* base, const at::Tensor& logits, const RowInputs& in, int64_t* tokens,
                 float* logprobs) {
  const int64_t batch = logits.size(0);
  const int64_t vocab = logits.size(1);
  const int64_t row_stride = logits.stride(0);
  const int64_t col_stride = logits.stride(1);
  const int64_t grain = std::max<int64_t>(1, 32768 / vocab);
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    RowSampler sampler;
    std::vector<float> buf;
    for (int64_t b = begin; b < end; ++b) {
      const float* row = row_as_float(base + b * row_stride, vocab, col_stride, buf);
      const RowParams params{in.temperature[b],
                             in.top_k[b],
                             in.top_p[b],
                             static_cast<uint64_t>(in.seed[b]),
                             static_cast<uint64_t>(in.subsequence[b]),
                             static_cast<uint64_t>(in.offset[b])};
      const RowResult r = sampler(row, vocab, params);
      tokens[b] = r.token;
      logprobs[b] = r.logprob;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> sample_cpu(const at::Tensor& logits, const at::Tensor& temperature,
                                              const at::Tensor& top_k, const at::Tensor& top_p,
                                              const at::Tensor& seed, const at::Tensor& subsequence,
                                              const at::Tensor& offset) {
  TORCH_CHECK(logits.dim() == 2, "logits must be 2-D [B, V], got shape ", logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "logits must be float32, bfloat16 or float16, got ", dtype);
  const int64_t batch = logits.size(0);
  const int64_t vocab = logits.size(1);
  TORCH_CHECK(vocab >= 1, "logits must have a vocabulary of at least 1 token (V >= 1), got shape ",
              logits.sizes());
  check_row_param(temperature, "temperature", at::kFloat, batch);
  check_row_param(top_k, "top_k", at::kLong, batch);
  check_row_param(top_p, "top_p", at::kFloat, batch);
  check_row_param(seed, "seed", at::kLong, batch);
  check_row_param(subsequence, "subsequence", at::kLong, batch);
  check_row_param(offset, "offset", at::kLong, batch);

  const RowInputs in{temperature.accessor<float, 1>(), top_k.accessor<int64_t, 1>(),
                     top_p.accessor<float, 1>(),       seed.accessor<int64_t, 1>(),
                     subsequence.accessor<int64_t, 1>(), offset.accessor<int64_t, 1>()};
  for (int64_t b = 0; b < batch; ++b) {
    const float t = in.temperature[b];
    TORCH_CHECK(std::isfinite(t) && t >= 0.f, "temperature must be finite and >= 0, got temperature[",
                b, "] = ", t);
    TORCH_CHECK(in.top_p[b] > 0.f, "top_p must be > 0 (>= 1 disables the filter), got top_p[", b,
                "] = ", in.top_p[b]);
  }

  auto tokens = at::empty({batch}, logits.options().dtype(at::kLong));
  auto logprobs = at::empty({batch}, logits.options().dtype(at::kFloat));
  int64_t* tokens_p = tokens.data_ptr<int64_t>();
  float* logprobs_p = logprobs.data_ptr<float>();

  switch (dtype) {
    case at::kFloat:
      sample_rows(logits.const_data_ptr<float>(), logits, in, tokens_p, logprobs_p);
      break;
    case at::kBFloat16:
      sample_rows(logits.const_data_ptr<at::BFloat16>(), logits, in, tokens_p, logprobs_p);
      break;
    default:
      sample_rows(logits.const_data_ptr<at::Half>(), logits, in, tokens_p, logprobs_p);
      break;
  }
  return {tokens, logprobs};
}

}  // namespace
}  // namespace mint

TORCH_LIBRARY_IMPL(mint, CPU, m) { m.impl("sample", &mint::sample_cpu); }
