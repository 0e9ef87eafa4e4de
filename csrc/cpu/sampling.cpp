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
//
// No sort of the vocabulary; a row costs a few vectorised passes (sampling_simd.h):
//   top-k (k < V):    one pass: the row max (NaN / +inf test) and a running top-k filter: indices
//                     whose logit beats the current k-th best go to a buffer of 4k; a full buffer
//                     is cut back to its top k (nth_element) and the k-th logit becomes the new bar.
//                     Top-p, the normalisation and the draw then work on the <= k survivors only.
//   no top-k:         max pass; weights pass (w = exp(z), per-64-token block sums, and for top-p a
//                     1024-bucket histogram of mass over z); for top-p a pass collecting the tokens
//                     of the bucket where the mass from the top reaches p (ranked by quickselect)
//                     and a pass of kept mass per block; the draw scans the block sums and walks
//                     one block.
//   temperature 0:    max pass, first index of the max, one exp-sum pass.
// Rows run in parallel (at::parallel_for over rows); with fewer rows than threads the top-k filter
// of each row is split over the vocabulary instead.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <mint/philox.h>

#include "sampling_simd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <vector>

namespace mint {
namespace {

using namespace sampling;
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

// A token of a reduced set: index, logit, weight.
struct Cand {
  int64_t j;
  float l;
  float w;
};

// The ranking order: true when a comes before b.
inline bool ahead(const Cand& a, const Cand& b) { return a.l > b.l || (a.l == b.l && a.j < b.j); }

// The last token of the shortest prefix of the ranking of c (any order) whose weight reaches need.
// Quickselect on mass: split the range at its median, keep the half that holds the boundary, so the
// cost is O(n) expected. Reorders c.
Cand nucleus_last(std::vector<Cand>& c, double need) {
  auto lo = c.begin();
  auto hi = c.end();
  constexpr int64_t kSortBelow = 32;
  while (hi - lo > kSortBelow) {
    const auto mid = lo + (hi - lo) / 2;
    std::nth_element(lo, mid, hi, ahead);
    double upper = 0.0;  // [lo, mid] is the head of the range's ranking
    for (auto it = lo; it <= mid; ++it) upper += it->w;
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
    cum += it->w;
    if (cum >= need) return *it;
  }
  return *(hi - 1);  // rounding left the sum just short of the goal: keep the rest of the set
}

// The max of x[begin, end) (NaN if it holds a NaN) and, in idx (absolute indices, any order), its
// top-k set (-inf logits left out). Running filter: an index enters the buffer when its logit beats
// the bar (the k-th best logit among the indices seen so far; an equal logit comes later in index
// order, so it ranks behind); a full buffer (4k) is cut back to its top k.
float filter_top_k(const float* x, int64_t begin, int64_t end, int64_t k, std::vector<int64_t>& idx) {
  const int64_t cap = std::max<int64_t>(4 * k, 1024);
  idx.clear();
  idx.reserve(cap);
  float bar = -kInf;
  auto shrink = [&]() {
    auto before = [x](int64_t a, int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
    std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), before);
    idx.resize(k);
    bar = x[idx[k - 1]];
  };
  auto offer = [&](int64_t j) {
    if (x[j] > bar) {
      idx.push_back(j);
      if (static_cast<int64_t>(idx.size()) == cap) shrink();
    }
  };
  int64_t j = begin;
  bool nan = false;
  float best = -kInf;
#ifdef MINT_SAMPLING_AVX2
  __m256 m0 = _mm256_set1_ps(-kInf), m1 = m0;
  __m256 bad = _mm256_setzero_ps();
  __m256 vbar = _mm256_set1_ps(bar);
  for (; j + 2 * kLanes <= end; j += 2 * kLanes) {
    const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + kLanes);
    m0 = _mm256_max_ps(m0, a);
    m1 = _mm256_max_ps(m1, b);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    unsigned hits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, vbar, _CMP_GT_OQ))) |
                    (static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(b, vbar, _CMP_GT_OQ))) << 8);
    if (hits) {
      while (hits) {
        offer(j + __builtin_ctz(hits));
        hits &= hits - 1;
      }
      vbar = _mm256_set1_ps(bar);
    }
  }
  best = hmax8(_mm256_max_ps(m0, m1));
  nan = _mm256_movemask_ps(bad) != 0;
#endif
  for (; j < end; ++j) {
    nan |= std::isnan(x[j]);
    best = std::max(best, x[j]);
    offer(j);
  }
  if (static_cast<int64_t>(idx.size()) > k) shrink();
  return nan ? kNaN : best;
}

// Samples one row; owns scratch buffers reused across the rows of one thread.
class RowSampler {
 public:
  RowResult operator()(const float* logits, int64_t vocab, const RowParams& p) {
    const int64_t k = (p.top_k <= 0 || p.top_k >= vocab) ? vocab : p.top_k;
    if (p.temperature != 0.f && k < vocab) return top_k_row(logits, vocab, k, p);

    const float max_logit = row_max(logits, vocab);
    if (!std::isfinite(max_logit)) return {-1, kNaN};  // NaN / +inf present, or every logit -inf
    weights_.resize(vocab);
    blocks_.resize((vocab + kBlock - 1) / kBlock);
    if (p.temperature == 0.f) {
      const int64_t argmax = first_index_of(logits, vocab, max_logit);
      const double sum = weights_pass(logits, vocab, max_logit, 1.0, weights_.data(), blocks_.data(), nullptr);
      return {argmax, static_cast<float>(-std::log(sum))};
    }

    const double inv_t = 1.0 / static_cast<double>(p.temperature);
    const bool use_p = p.top_p < 1.f;
    double* hist = nullptr;
    if (use_p) {
      hist_.assign(kBuckets, 0.0);
      hist = hist_.data();
    }
    const double total = weights_pass(logits, vocab, max_logit, inv_t, weights_.data(), blocks_.data(), hist);
    double mass = total;
    float thr = -kInf;  // kept: l > thr, or l == thr and j <= last
    int64_t last = vocab;
    if (use_p) {
      // The bucket where the mass from the top reaches p, then the boundary token inside it.
      const double need = static_cast<double>(p.top_p) * total;
      double above = 0.0;  // mass of the buckets before `bucket`
      int bucket = -1, last_full = -1;
      for (int b = 0; b < kBuckets; ++b) {
        if (hist_[b] <= 0.0) continue;
        if (above + hist_[b] >= need) {
          bucket = b;
          break;
        }
        above += hist_[b];
        last_full = b;
      }
      if (bucket < 0) {  // rounding left the buckets' sum just short of need: the last one holds the edge
        bucket = last_full;
        above -= hist_[last_full];
      }
      idx_.clear();
      collect_bucket(logits, vocab, max_logit, inv_t, bucket, idx_);
      cands_.clear();
      for (const int64_t j : idx_) cands_.push_back({j, logits[j], weights_[j]});
      const Cand edge = nucleus_last(cands_, need - above);
      thr = edge.l;
      last = edge.j;
      mass = kept_block_sums(logits, weights_.data(), vocab, thr, last, blocks_.data());
    }

    const PhiloxBlock bits = philox_block(p.seed, p.subsequence, p.offset);
    const double target = uniform53(bits.x[0], bits.x[1]) * mass;
    const int64_t token = walk(logits, vocab, thr, last, target);
    const double z = (static_cast<double>(logits[token]) - max_logit) * inv_t;
    return {token, static_cast<float>(z - std::log(mass))};
  }

 private:
  // Inverse CDF over the kept tokens in index order: the block where the running sum of block sums
  // passes target, then the token inside it; rounding that leaves the sum short gives the last kept
  // token of positive weight.
  int64_t walk(const float* logits, int64_t vocab, float thr, int64_t last, double target) const {
    auto kept = [&](int64_t j) {
      const float l = logits[j];
      return weights_[j] > 0.f && (l > thr || (l == thr && j <= last));
    };
    double cum = 0.0;
    int64_t last_block = -1;  // the last block of positive mass passed over
    const int64_t nblocks = static_cast<int64_t>(blocks_.size());
    for (int64_t b = 0; b < nblocks; ++b) {
      if (blocks_[b] <= 0.0) continue;
      if (cum + blocks_[b] > target) {
        int64_t found = -1;
        for (int64_t j = b * kBlock, end = std::min(j + kBlock, vocab); j < end; ++j) {
          if (kept(j)) {
            cum += weights_[j];
            found = j;
            if (cum > target) return j;
          }
        }
        if (found >= 0) return found;
      }
      cum += blocks_[b];
      last_block = b;
    }
    for (int64_t j = std::min(vocab, (last_block + 1) * kBlock) - 1; j >= 0; --j) {
      if (kept(j)) return j;
    }
    return first_index_of(logits, vocab, row_max(logits, vocab));  // unreachable: the max is kept
  }

  // top_k < V: one pass over the row, then work on the <= k survivors.
  RowResult top_k_row(const float* logits, int64_t vocab, int64_t k, const RowParams& p) {
    const float max_logit = top_k_scan(logits, vocab, k);
    if (!std::isfinite(max_logit)) return {-1, kNaN};
    const double inv_t = 1.0 / static_cast<double>(p.temperature);
    cands_.clear();
    for (const int64_t j : idx_) {
      const float l = logits[j];
      cands_.push_back({j, l, weight_of_z(z_of(l, max_logit, inv_t))});
    }
    if (p.top_p < 1.f) {
      double total = 0.0;
      for (const Cand& c : cands_) total += c.w;
      const Cand edge = nucleus_last(cands_, static_cast<double>(p.top_p) * total);
      cands_.erase(std::remove_if(cands_.begin(), cands_.end(),
                                  [&](const Cand& c) { return ahead(edge, c); }),
                   cands_.end());
    }
    std::sort(cands_.begin(), cands_.end(), [](const Cand& a, const Cand& b) { return a.j < b.j; });
    double mass = 0.0;
    for (const Cand& c : cands_) mass += c.w;
    const PhiloxBlock bits = philox_block(p.seed, p.subsequence, p.offset);
    const double target = uniform53(bits.x[0], bits.x[1]) * mass;
    double cum = 0.0;
    int64_t token = -1;
    for (const Cand& c : cands_) {
      if (c.w > 0.f) {
        cum += c.w;
        token = c.j;
        if (cum > target) break;
      }
    }
    const double z = (static_cast<double>(logits[token]) - max_logit) * inv_t;
    return {token, static_cast<float>(z - std::log(mass))};
  }

  // The row max (NaN if the row holds a NaN) and, in idx_, the top-k set of the row in ascending
  // index order (-inf logits left out). With split_vocab the vocabulary is cut into one part per
  // thread, each part filtered to its own top k in parallel, and the parts' survivors cut to the top
  // k of the row: the set is the same exact top k (one total order), so the result does not depend
  // on the split.
  float top_k_scan(const float* x, int64_t n, int64_t k) {
    const int64_t threads = at::get_num_threads();
    if (!split_vocab || threads < 2 || n < 2 * kSplitMin) {
      const float best = filter_top_k(x, 0, n, k, idx_);
      std::sort(idx_.begin(), idx_.end());
      return best;
    }
    const int64_t parts = std::min(threads, n / kSplitMin);
    const int64_t step = ((n + parts - 1) / parts + 15) / 16 * 16;
    std::vector<std::vector<int64_t>> found(parts);
    std::vector<float> best(parts, -kInf);
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        const int64_t lo = std::min(n, q * step), hi = std::min(n, lo + step);
        best[q] = filter_top_k(x, lo, hi, k, found[q]);
      }
    });
    idx_.clear();
    float row_best = -kInf;
    bool nan = false;
    for (int64_t q = 0; q < parts; ++q) {
      nan |= std::isnan(best[q]);
      row_best = std::max(row_best, best[q]);
      idx_.insert(idx_.end(), found[q].begin(), found[q].end());
    }
    if (static_cast<int64_t>(idx_.size()) > k) {
      auto before = [x](int64_t a, int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
      std::nth_element(idx_.begin(), idx_.begin() + (k - 1), idx_.end(), before);
      idx_.resize(k);
    }
    std::sort(idx_.begin(), idx_.end());
    return nan ? kNaN : row_best;
  }

 public:
  bool split_vocab = false;  // parallelise inside the row (set when there are fewer rows than threads)
  static constexpr int64_t kSplitMin = 16384;  // least tokens per part of a split row

 private:
  std::vector<float> weights_;
  std::vector<double> blocks_;
  std::vector<double> hist_;
  std::vector<int64_t> idx_;
  std::vector<Cand> cands_;
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
  // Fewer rows than threads: rows one after another, the top-k filter split over the vocabulary.
  const bool split = batch < at::get_num_threads() && vocab >= 2 * RowSampler::kSplitMin;
  const int64_t grain = split ? batch : std::max<int64_t>(1, 32768 / vocab);
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    RowSampler sampler;
    sampler.split_vocab = split;
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
