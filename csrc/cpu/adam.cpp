// Fused multi-group AdamW on CPU: mint::adamw_ (schema in csrc/ops.cpp).
//
// One call updates P parameter tensors that belong to G groups (e.g. one group per LoRA adapter), each
// group with its own (lr, beta1, beta2, eps, weight_decay, max_grad_norm). The arithmetic follows
// torch.optim.AdamW(foreach=False) operation by operation, in fp32 with the scalar factors computed in
// double and rounded to float once, exactly as torch passes them to its CPU kernels.
//
// All tensors with a gradient are laid end to end and cut into chunks of kChunk elements; a chunk may
// hold the tail of one tensor and the heads of the next ones. at::parallel_for runs over those chunks, so
// many small tensors and a few huge ones both spread over every core. Gradient norms are summed per
// piece (a chunk's part of one tensor) with a fixed lane order (fp32 blocks of 64 vectors added in
// double, see BlockedSquareSum), then reduced serially in
// piece order: the result does not depend on the number of threads.

// The update is elementwise, so its results do not depend on the vector width.
#include "vec_capability.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "../common/adam_checks.h"
#include "vec_opaque.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace mint {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kVec = Vec::size();
constexpr int64_t kStep = 2 * kVec;       // elements per inner iteration (one Vectorized<bf16/half>)
constexpr int64_t kChunk = int64_t{1} << 15;  // elements per parallel task
// Elements ahead of the update that each stream is prefetched: the loop is bound by the divider (a sqrt and
// two divisions per vector), which keeps the out-of-order window from reaching far enough ahead to keep
// memory busy; prefetching 1 KB (fp32) ahead took 16 x 4M fp32 from 41-43 ms to 38-39 ms on 2 cores.
constexpr int64_t kAhead = 256;
constexpr int kHyper = 6;                 // lr, beta1, beta2, eps, weight_decay, max_grad_norm

// Loads / stores kStep elements (or the first n < kStep) of T as two float vectors.
template <typename T>
struct Io {
  C10_ALWAYS_INLINE static void load(const T* ptr, int64_t n, Vec& a, Vec& b) {
    auto raw = n == kStep ? at::vec::Vectorized<T>::loadu(ptr)
                          : at::vec::Vectorized<T>::loadu(ptr, static_cast<int16_t>(n));
    std::tie(a, b) = at::vec::convert_to_float<T>(raw);
  }
  C10_ALWAYS_INLINE static void store(T* ptr, int64_t n, const Vec& a, const Vec& b) {
    auto raw = at::vec::convert_from_float<T>(a, b);
    if (n == kStep) {
      raw.store(ptr);
    } else {
      raw.store(ptr, static_cast<int>(n));
    }
  }
};

template <>
struct Io<float> {
  C10_ALWAYS_INLINE static void load(const float* ptr, int64_t n, Vec& a, Vec& b) {
    if (n == kStep) {
      a = Vec::loadu(ptr);
      b = Vec::loadu(ptr + kVec);
      return;
    }
    a = Vec::loadu(ptr, std::min(n, kVec));
    b = n > kVec ? Vec::loadu(ptr + kVec, n - kVec) : Vec(0.f);
  }
  C10_ALWAYS_INLINE static void store(float* ptr, int64_t n, const Vec& a, const Vec& b) {
    if (n == kStep) {
      a.store(ptr);
      b.store(ptr + kVec);
      return;
    }
    a.store(ptr, std::min(n, kVec));
    if (n > kVec) b.store(ptr + kVec, n - kVec);
  }
};

// Double accumulators, one per lane, of fp32 lane values (BlockedSquareSum's block sums); lanes past a
// tail hold zero. The order of the additions is fixed, so the result does not depend on threads or on
// alignment.
struct SquareSum {
#if defined(CPU_CAPABILITY_AVX512)
  __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
  C10_ALWAYS_INLINE void add_values(const Vec& a, const Vec& b) {
    const __m512 x = a, y = b;
    acc[0] = _mm512_add_pd(acc[0], _mm512_cvtps_pd(_mm512_castps512_ps256(x)));
    acc[1] = _mm512_add_pd(acc[1], _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)));
    acc[2] = _mm512_add_pd(acc[2], _mm512_cvtps_pd(_mm512_castps512_ps256(y)));
    acc[3] = _mm512_add_pd(acc[3], _mm512_cvtps_pd(_mm512_extractf32x8_ps(y, 1)));
  }
  double total() const {
    alignas(64) double lanes[32];
    for (int k = 0; k < 4; ++k) _mm512_store_pd(lanes + 8 * k, acc[k]);
    double s = 0.0;
    for (const double x : lanes) s += x;
    return s;
  }
#elif defined(CPU_CAPABILITY_AVX2)
  __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  C10_ALWAYS_INLINE void add_values(const Vec& a, const Vec& b) {
    const __m256 x = a, y = b;
    acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
    acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    acc[2] = _mm256_add_pd(acc[2], _mm256_cvtps_pd(_mm256_castps256_ps128(y)));
    acc[3] = _mm256_add_pd(acc[3], _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)));
  }
  double total() const {
    alignas(32) double lanes[16];
    for (int k = 0; k < 4; ++k) _mm256_store_pd(lanes + 4 * k, acc[k]);
    double s = 0.0;
    for (const double x : lanes) s += x;
    return s;
  }
#else
  double acc[kStep] = {};
  void add_values(const Vec& a, const Vec& b) {
    alignas(64) float buf[kStep];
    a.store(buf);
    b.store(buf + kVec);
    for (int64_t k = 0; k < kStep; ++k) acc[k] += static_cast<double>(buf[k]);
  }
  double total() const {
    double s = 0.0;
    for (const double x : acc) s += x;
    return s;
  }
#endif
};

// Squares summed in fp32 lanes for kFlush iterations at a time, each block's lane sums then added in
// double: a block's rounding error stays near 1e-7 relative (64 terms a lane) while the update loop pays
// one fp32 fma per vector instead of four conversions and four double fmas (8% of a one-thread step).
struct BlockedSquareSum {
  static constexpr int kFlush = 64;
  Vec s0{0.f}, s1{0.f};
  int count = 0;
  SquareSum acc;
  C10_ALWAYS_INLINE void add(const Vec& a, const Vec& b) {
    s0 = at::vec::fmadd(a, a, s0);
    s1 = at::vec::fmadd(b, b, s1);
    if (++count == kFlush) flush();
  }
  C10_ALWAYS_INLINE void flush() {
    acc.add_values(s0, s1);
    s0 = Vec(0.f);
    s1 = Vec(0.f);
    count = 0;
  }
  double total() {
    flush();
    return acc.total();
  }
};

template <typename T>
double sum_squares(const T* g, int64_t n) {
  BlockedSquareSum acc;
  Vec a, b;
  for (int64_t j = 0; j < n; j += kStep) {
    Io<T>::load(g + j, std::min(kStep, n - j), a, b);
    acc.add(a, b);
  }
  return acc.total();
}

// Per-parameter scalars, rounded to float the way torch hands Python scalars to its fp32 kernels.
struct Factors {
  float decay;          // 1 - lr * weight_decay
  float clip;           // min(1, max_grad_norm / (norm + 1e-6)), or 1
  float lerp_w;         // 1 - beta1 (exp_avg.lerp_(grad, 1 - beta1))
  bool lerp_small;      // |lerp_w| < 0.5 selects torch's lerp formula
  float beta2;
  float one_minus_beta2;
  float bc2_sqrt;       // sqrt(1 - beta2^t)
  float eps;
  float neg_step_size;  // -lr / (1 - beta1^t)
};

// Prefetches the cache lines of kStep elements at ptr into L1.
template <typename T>
C10_ALWAYS_INLINE void prefetch_step(const T* ptr) {
  const char* c = reinterpret_cast<const char*>(ptr);
  for (int64_t b = 0; b < kStep * static_cast<int64_t>(sizeof(T)); b += 64) __builtin_prefetch(c + b, 0, 3);
}

template <typename P, typename M, typename V>
void update_piece(P* p, const P* g, M* m, V* v, int64_t n, const Factors& f, double* sumsq) {
  const Vec decay(f.decay), clip(f.clip), w(f.lerp_w), w_minus_1(f.lerp_w - 1.f);
  const Vec beta2(f.beta2), omb2(f.one_minus_beta2), bc2_sqrt(f.bc2_sqrt), eps(f.eps);
  const Vec neg_step(f.neg_step_size);
  BlockedSquareSum acc;
  Vec p0, p1, g0, g1, m0, m1, v0, v1;
  auto step = [&](Vec& pv, Vec gv, Vec& mv, Vec& vv) {
    // opaque(): torch rounds these products on their own, so they must not be contracted into later fmas
    pv = opaque(pv * decay);
    gv = opaque(gv * clip);
    // torch's vectorised lerp: weight < 0.5 ? m + w*(g-m) : g + (w-1)*(g-m), each one fma
    const Vec diff = gv - mv;
    mv = f.lerp_small ? at::vec::fmadd(w, diff, mv) : at::vec::fmadd(w_minus_1, diff, gv);
    vv = opaque(vv * beta2);                 // exp_avg_sq.mul_(beta2)
    vv = at::vec::fmadd(omb2 * gv, gv, vv);   // .addcmul_(grad, grad, value=1 - beta2), fused as torch's
                                              // compiled kernel is
    // sqrt is correctly rounded here; torch's CPU sqrt (MKL VML_HA) may differ from it by 1 ulp
    const Vec denom = vv.sqrt() / bc2_sqrt + eps;
    pv = pv + neg_step * mv / denom;  // param.addcdiv_(exp_avg, denom, value=-step_size)
  };
  for (int64_t j = 0; j < n; j += kStep) {
    const int64_t len = std::min(kStep, n - j);
    if (j + kAhead < n) {
      prefetch_step(p + j + kAhead);
      prefetch_step(g + j + kAhead);
      prefetch_step(m + j + kAhead);
      prefetch_step(v + j + kAhead);
    }
    Io<P>::load(p + j, len, p0, p1);
    Io<P>::load(g + j, len, g0, g1);
    Io<M>::load(m + j, len, m0, m1);
    Io<V>::load(v + j, len, v0, v1);
    if (sumsq != nullptr) acc.add(g0, g1);
    step(p0, g0, m0, v0);
    step(p1, g1, m1, v1);
    Io<P>::store(p + j, len, p0, p1);
    Io<M>::store(m + j, len, m0, m1);
    Io<V>::store(v + j, len, v0, v1);
  }
  if (sumsq != nullptr) *sumsq = acc.total();
}

template <typename Fn>
void dispatch_param(at::ScalarType t, Fn&& fn) {
  switch (t) {
    case at::kFloat: fn(float{}); break;
    case at::kBFloat16: fn(c10::BFloat16{}); break;
    case at::kHalf: fn(c10::Half{}); break;
    default: TORCH_INTERNAL_ASSERT(false, "mint.adamw_: unexpected dtype ", t);
  }
}

// A moment tensor is float32 or the parameter's own dtype P.
template <typename P, typename Fn>
void dispatch_moment(bool is_f32, Fn&& fn) {
  if (is_f32) {
    fn(float{});
  } else {
    fn(P{});
  }
}

struct Piece {
  int64_t param;
  int64_t begin;
  int64_t end;
};

// The listed tensors laid end to end, cut into chunks of kChunk elements; chunk c is
// pieces[chunk_start[c] .. chunk_start[c + 1]).
struct Work {
  std::vector<Piece> pieces;
  std::vector<int64_t> chunk_start{0};
};

Work split_into_chunks(const std::vector<int64_t>& order, const std::vector<int64_t>& numel) {
  Work w;
  int64_t room = kChunk;
  for (const int64_t i : order) {
    for (int64_t off = 0; off < numel[i];) {
      const int64_t take = std::min(room, numel[i] - off);
      w.pieces.push_back({i, off, off + take});
      off += take;
      room -= take;
      if (room == 0) {
        w.chunk_start.push_back(static_cast<int64_t>(w.pieces.size()));
        room = kChunk;
      }
    }
  }
  if (w.chunk_start.back() != static_cast<int64_t>(w.pieces.size())) {
    w.chunk_start.push_back(static_cast<int64_t>(w.pieces.size()));
  }
  return w;
}

template <typename Fn>
void run_chunks(const Work& w, const Fn& fn) {
  const int64_t chunks = static_cast<int64_t>(w.chunk_start.size()) - 1;
  auto body = [&](int64_t c0, int64_t c1) {
    for (int64_t k = w.chunk_start[c0]; k < w.chunk_start[c1]; ++k) fn(k, w.pieces[k]);
  };
  if (chunks == 1) {
    body(0, 1);
  } else if (chunks > 1) {
    at::parallel_for(0, chunks, 1, body);
  }
}

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

void check_moment(const at::Tensor& s, const at::Tensor& p, const char* name, int64_t i) {
  TORCH_CHECK(s.defined(), "mint.adamw_: ", name, "[", i, "] is undefined");
  TORCH_CHECK(s.device().is_cpu(), "mint.adamw_: ", name, "[", i, "] must be on CPU, got ", s.device());
  TORCH_CHECK(s.layout() == at::kStrided, "mint.adamw_: ", name, "[", i, "] must be a dense tensor");
  TORCH_CHECK(s.sizes() == p.sizes(), "mint.adamw_: ", name, "[", i, "] must have the shape of params[", i,
              "] ", p.sizes(), ", got ", s.sizes());
  TORCH_CHECK(s.scalar_type() == at::kFloat || s.scalar_type() == p.scalar_type(), "mint.adamw_: ", name,
              "[", i, "] must be float32 or the dtype of params[", i, "] (", p.scalar_type(), "), got ",
              s.scalar_type());
  TORCH_CHECK(s.is_contiguous(), "mint.adamw_: ", name, "[", i, "] must be contiguous");
}

at::Tensor adamw_cpu(at::TensorList params, const c10::List<std::optional<at::Tensor>>& grads,
                     at::TensorList exp_avgs, at::TensorList exp_avg_sqs, const at::Tensor& steps,
                     const at::Tensor& group_ids, const at::Tensor& hyperparams) {
  const int64_t P = static_cast<int64_t>(params.size());
  TORCH_CHECK(static_cast<int64_t>(grads.size()) == P, "mint.adamw_: grads has ", grads.size(),
              " entries but params has ", P);
  TORCH_CHECK(static_cast<int64_t>(exp_avgs.size()) == P, "mint.adamw_: exp_avgs has ", exp_avgs.size(),
              " entries but params has ", P);
  TORCH_CHECK(static_cast<int64_t>(exp_avg_sqs.size()) == P, "mint.adamw_: exp_avg_sqs has ",
              exp_avg_sqs.size(), " entries but params has ", P);

  TORCH_CHECK(steps.device().is_cpu() && steps.scalar_type() == at::kLong && steps.dim() == 1 &&
                  steps.size(0) == P && steps.is_contiguous(),
              "mint.adamw_: steps must be a contiguous int64 CPU tensor of shape [", P, "], got ",
              steps.scalar_type(), " ", steps.sizes(), " on ", steps.device(),
              steps.is_contiguous() ? "" : " (not contiguous)");
  TORCH_CHECK(group_ids.device().is_cpu() && group_ids.scalar_type() == at::kLong && group_ids.dim() == 1 &&
                  group_ids.size(0) == P,
              "mint.adamw_: group_ids must be an int64 CPU tensor of shape [", P, "], got ",
              group_ids.scalar_type(), " ", group_ids.sizes(), " on ", group_ids.device());
  TORCH_CHECK(hyperparams.device().is_cpu() && hyperparams.scalar_type() == at::kDouble &&
                  hyperparams.dim() == 2 && hyperparams.size(1) == kHyper,
              "mint.adamw_: hyperparams must be a float64 CPU tensor of shape [G, 6] = (lr, beta1, beta2, "
              "eps, weight_decay, max_grad_norm), got ",
              hyperparams.scalar_type(), " ", hyperparams.sizes(), " on ", hyperparams.device());

  const int64_t G = hyperparams.size(0);
  const at::Tensor hp_t = hyperparams.contiguous();
  const double* hp = hp_t.data_ptr<double>();
  for (int64_t g = 0; g < G; ++g) {
    const double* h = hp + g * kHyper;
    for (int k = 0; k < kHyper; ++k) {
      TORCH_CHECK(std::isfinite(h[k]), "mint.adamw_: hyperparams[", g, "] must be finite, got column ", k,
                  " = ", h[k]);
    }
    TORCH_CHECK(h[0] >= 0.0, "mint.adamw_: hyperparams[", g, "] lr must be >= 0, got ", h[0]);
    TORCH_CHECK(h[1] >= 0.0 && h[1] < 1.0, "mint.adamw_: hyperparams[", g, "] beta1 must be in [0, 1), got ",
                h[1]);
    TORCH_CHECK(h[2] >= 0.0 && h[2] < 1.0, "mint.adamw_: hyperparams[", g, "] beta2 must be in [0, 1), got ",
                h[2]);
    TORCH_CHECK(h[3] > 0.0, "mint.adamw_: hyperparams[", g, "] eps must be > 0, got ", h[3]);
    TORCH_CHECK(h[4] >= 0.0, "mint.adamw_: hyperparams[", g, "] weight_decay must be >= 0, got ", h[4]);
  }

  const at::Tensor gid_t = group_ids.contiguous();
  const int64_t* gid = gid_t.data_ptr<int64_t>();
  int64_t* step = steps.data_ptr<int64_t>();

  // Validate everything before writing anything, so a bad call leaves every tensor as it was.
  std::vector<at::Tensor> grad(P);  // contiguous view (or copy) of each present grad
  std::vector<int64_t> numel(P);
  for (int64_t i = 0; i < P; ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.defined(), "mint.adamw_: params[", i, "] is undefined");
    TORCH_CHECK(p.device().is_cpu(), "mint.adamw_: params[", i, "] must be on CPU, got ", p.device());
    TORCH_CHECK(p.layout() == at::kStrided, "mint.adamw_: params[", i, "] must be a dense tensor");
    TORCH_CHECK(is_supported_float(p.scalar_type()), "mint.adamw_: params[", i,
                "] must be float32, bfloat16 or float16, got ", p.scalar_type());
    TORCH_CHECK(p.is_contiguous(), "mint.adamw_: params[", i, "] must be contiguous");
    check_moment(exp_avgs[i], p, "exp_avgs", i);
    check_moment(exp_avg_sqs[i], p, "exp_avg_sqs", i);
    TORCH_CHECK(gid[i] >= 0 && gid[i] < G, "mint.adamw_: group_ids[", i, "] = ", gid[i],
                " is out of range for ", G, " hyperparams rows");
    TORCH_CHECK(step[i] >= 0, "mint.adamw_: steps[", i, "] must be >= 0, got ", step[i]);
    const std::optional<at::Tensor> gi = grads[i];
    if (gi.has_value() && gi->defined()) {
      const at::Tensor& gr = *gi;
      TORCH_CHECK(gr.device().is_cpu(), "mint.adamw_: grads[", i, "] must be on CPU, got ", gr.device());
      TORCH_CHECK(gr.layout() == at::kStrided, "mint.adamw_: grads[", i, "] must be a dense tensor");
      TORCH_CHECK(gr.scalar_type() == p.scalar_type(), "mint.adamw_: grads[", i,
                  "] must have the dtype of params[", i, "] (", p.scalar_type(), "), got ", gr.scalar_type());
      TORCH_CHECK(gr.sizes() == p.sizes(), "mint.adamw_: grads[", i, "] must have the shape of params[", i,
                  "] ", p.sizes(), ", got ", gr.sizes());
      grad[i] = gr.contiguous();
    }
    numel[i] = p.numel();
  }

  check_no_overlap(params, exp_avgs, exp_avg_sqs);

  // Groups, per-parameter step counters and the parameters each phase visits.
  std::vector<char> clips(G, 0);
  for (int64_t g = 0; g < G; ++g) clips[g] = hp[g * kHyper + 5] > 0.0;
  std::vector<int64_t> present, clipped;
  for (int64_t i = 0; i < P; ++i) {
    if (!grad[i].defined()) continue;
    ++step[i];
    present.push_back(i);
    if (clips[gid[i]]) clipped.push_back(i);
  }

  // Phase 1: gradient norms of the groups that clip (the update needs them first).
  std::vector<double> group_sumsq(G, 0.0);
  {
    const Work w = split_into_chunks(clipped, numel);
    std::vector<double> partial(w.pieces.size(), 0.0);
    run_chunks(w, [&](int64_t k, const Piece& pc) {
      const at::Tensor& gr = grad[pc.param];
      dispatch_param(gr.scalar_type(), [&](auto tag) {
        using P = decltype(tag);
        partial[k] = sum_squares(gr.const_data_ptr<P>() + pc.begin, pc.end - pc.begin);
      });
    });
    for (size_t k = 0; k < w.pieces.size(); ++k) group_sumsq[gid[w.pieces[k].param]] += partial[k];
  }
  std::vector<float> clip_coef(G, 1.f);
  for (int64_t g = 0; g < G; ++g) {
    if (!clips[g]) continue;
    const double norm = std::sqrt(group_sumsq[g]);
    clip_coef[g] = static_cast<float>(std::min(1.0, hp[g * kHyper + 5] / (norm + 1e-6)));
  }

  std::vector<Factors> factors(P);
  for (const int64_t i : present) {
    const double* h = hp + gid[i] * kHyper;
    const double lr = h[0], beta1 = h[1], beta2 = h[2], eps = h[3], wd = h[4];
    const double t = static_cast<double>(step[i]);
    Factors& f = factors[i];
    f.decay = static_cast<float>(1.0 - lr * wd);
    f.clip = clip_coef[gid[i]];
    f.lerp_w = static_cast<float>(1.0 - beta1);
    f.lerp_small = std::abs(f.lerp_w) < 0.5f;
    f.beta2 = static_cast<float>(beta2);
    f.one_minus_beta2 = static_cast<float>(1.0 - beta2);
    f.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, t)));
    f.eps = static_cast<float>(eps);
    f.neg_step_size = static_cast<float>(-(lr / (1.0 - std::pow(beta1, t))));
  }

  // Phase 2: the update; groups that do not clip get their norm from this same pass.
  {
    const Work w = split_into_chunks(present, numel);
    std::vector<double> partial(w.pieces.size(), 0.0);
    run_chunks(w, [&](int64_t k, const Piece& pc) {
      const int64_t i = pc.param;
      const int64_t off = pc.begin, n = pc.end - pc.begin;
      double* sumsq = clips[gid[i]] ? nullptr : &partial[k];
      const at::Tensor& p = params[i];
      const at::Tensor& m = exp_avgs[i];
      const at::Tensor& v = exp_avg_sqs[i];
      dispatch_param(p.scalar_type(), [&](auto ptag) {
        using P = decltype(ptag);
        dispatch_moment<P>(m.scalar_type() == at::kFloat, [&](auto mtag) {
          using M = decltype(mtag);
          dispatch_moment<P>(v.scalar_type() == at::kFloat, [&](auto vtag) {
            using V = decltype(vtag);
            update_piece<P, M, V>(p.data_ptr<P>() + off, grad[i].const_data_ptr<P>() + off,
                                  m.data_ptr<M>() + off, v.data_ptr<V>() + off, n, factors[i], sumsq);
          });
        });
      });
    });
    for (size_t k = 0; k < w.pieces.size(); ++k) {
      const int64_t g = gid[w.pieces[k].param];
      if (!clips[g]) group_sumsq[g] += partial[k];
    }
  }

  at::Tensor norms = at::empty({G}, hyperparams.options().dtype(at::kFloat));
  float* out = norms.data_ptr<float>();
  for (int64_t g = 0; g < G; ++g) out[g] = static_cast<float>(std::sqrt(group_sumsq[g]));
  return norms;
}

}  // namespace

TORCH_LIBRARY_IMPL(mint, CPU, m) { m.impl("adamw_", &adamw_cpu); }

}  // namespace mint
