// mint::lora_apply and mint::lora_apply_ (schemas in csrc/ops.cpp): the whole LoRA delta y + s (x A^T) B as
// one autograd node, in C++.
//
// The forward runs mint::lora_apply_forward(_) on CPU (shrink then expand on each row block) and
// lora_shrink + lora_expand(_) elsewhere, and keeps h; the backward runs mint::lora_apply_backward on CPU
// and lora_expand_backward + lora_shrink_backward elsewhere. A Python autograd.Function around the same ops
// cost 20-40 us more per forward + backward (a T=16 call took 70 us instead of 48). Device-independent:
// the backend kernels below are registered for CPU and CUDA and call the per-device ops.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

namespace mint {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using CT = const Tensor&;

template <typename Sig>
c10::TypedOperatorHandle<Sig> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// The segment tables and scales, passed through unchanged.
struct Index {
  Tensor indptr, adapter, ranks, scales;
};

// The arguments both entry points (autograd and the backend kernels) check before any work.
void check_args(bool in_place, const Tensor& y, const Tensor& x) {
  const char* op = in_place ? "mint.lora_apply_" : "mint.lora_apply";
  TORCH_CHECK(y.dim() >= 1 && x.dim() >= 1 && y.sizes().slice(0, y.dim() - 1) == x.sizes().slice(0, x.dim() - 1),
              op, ": y ", y.sizes(), " and x ", x.sizes(), " must share their leading dims");
  TORCH_CHECK(!in_place || y.is_contiguous(), op, ": y must be contiguous, got strides ", y.strides());
}

Tensor rows_of(const Tensor& t) { return t.dim() == 2 ? t : t.reshape({-1, t.size(-1)}); }

// (y2 + delta, h) for y2 [T, out], x2 [T, in]; with in_place the delta goes into y2 itself.
std::tuple<Tensor, Tensor> forward_2d(const Tensor& y2, const Tensor& x2, const Tensor& a, const Tensor& b,
                                      const Index& i, bool in_place) {
  if (x2.is_cpu()) {
    if (in_place) {
      static const auto fwd_ = handle<Tensor(CT, CT, CT, CT, CT, CT, CT, CT)>("mint::lora_apply_forward_");
      return {y2, fwd_.call(y2, x2, a, b, i.indptr, i.adapter, i.ranks, i.scales)};
    }
    static const auto fwd =
        handle<std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT)>("mint::lora_apply_forward");
    return fwd.call(y2, x2, a, b, i.indptr, i.adapter, i.ranks, i.scales);
  }
  static const auto shrink = handle<Tensor(CT, CT, CT, CT, CT)>("mint::lora_shrink");
  const Tensor h = shrink.call(x2, a, i.indptr, i.adapter, i.ranks);
  if (in_place) {
    static const auto expand_ = handle<void(CT, CT, CT, CT, CT, CT, CT)>("mint::lora_expand_");
    expand_.call(y2, h, b, i.indptr, i.adapter, i.ranks, i.scales);
    return {y2, h};
  }
  static const auto expand = handle<Tensor(CT, CT, CT, CT, CT, CT, CT)>("mint::lora_expand");
  return {expand.call(y2, h, b, i.indptr, i.adapter, i.ranks, i.scales), h};
}

// (grad_x [T, in], grad_lora_a, grad_lora_b) for grad_out [T, out]; undefined where not needed.
std::tuple<Tensor, Tensor, Tensor> backward_2d(const Tensor& g2, const Tensor& x2, const Tensor& h, const Tensor& a,
                                               const Tensor& b, const Index& i, bool need_x_or_a) {
  if (x2.is_cpu() && need_x_or_a) {  // the whole backward in two passes
    static const auto bwd = handle<std::tuple<Tensor, Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT, CT)>(
        "mint::lora_apply_backward");
    return bwd.call(g2, x2, h, a, b, i.indptr, i.adapter, i.ranks, i.scales);
  }
  static const auto expand_bwd =
      handle<std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT)>("mint::lora_expand_backward");
  const auto [grad_h, grad_b] = expand_bwd.call(g2, h, b, i.indptr, i.adapter, i.ranks, i.scales);
  if (!need_x_or_a) return {Tensor(), Tensor(), grad_b};
  static const auto shrink_bwd =
      handle<std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT)>("mint::lora_shrink_backward");
  const auto [grad_x, grad_a] = shrink_bwd.call(grad_h, x2, a, i.indptr, i.adapter, i.ranks);
  return {grad_x, grad_a, grad_b};
}

class LoraApplyFunction : public torch::autograd::Function<LoraApplyFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& y, const Tensor& x, const Tensor& a, const Tensor& b,
                        const Tensor& indptr, const Tensor& adapter, const Tensor& ranks, const Tensor& scales,
                        bool in_place) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const Tensor x2 = rows_of(x);
    const Tensor y2 = in_place ? y.view({-1, y.size(-1)}) : rows_of(y);
    auto [out, h] = forward_2d(y2, x2, a, b, {indptr, adapter, ranks, scales}, in_place);
    ctx->save_for_backward({x2, h, a, b, indptr, adapter, ranks, scales});
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    if (in_place) {
      ctx->mark_dirty({y});
      return y;
    }
    return y.dim() == 2 ? out : out.view(y.sizes());
  }

  // Under create_graph the backward ops' autograd marks their outputs "not implemented", so a second
  // backward through them fails loudly rather than returning zeros.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const bool need_y = ctx->needs_input_grad(0), need_x = ctx->needs_input_grad(1),
               need_a = ctx->needs_input_grad(2), need_b = ctx->needs_input_grad(3);
    const Tensor& g = grads[0];
    Tensor grad_x, grad_a, grad_b;
    if (need_x || need_a || need_b) {
      std::tie(grad_x, grad_a, grad_b) =
          backward_2d(rows_of(g), s[0], s[1], s[2], s[3], {s[4], s[5], s[6], s[7]}, need_x || need_a);
      if (need_x) grad_x = grad_x.view(ctx->saved_data["x_sizes"].toIntVector());
    }
    return {need_y ? g : Tensor(), need_x ? grad_x : Tensor(), need_a ? grad_a : Tensor(), need_b ? grad_b : Tensor(),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor lora_apply_autograd(const Tensor& y, const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& indptr,
                           const Tensor& adapter, const Tensor& ranks, const Tensor& scales) {
  check_args(false, y, x);
  return LoraApplyFunction::apply(y, x, a, b, indptr, adapter, ranks, scales, false);
}

Tensor lora_apply_inplace_autograd(const Tensor& y, const Tensor& x, const Tensor& a, const Tensor& b,
                                   const Tensor& indptr, const Tensor& adapter, const Tensor& ranks,
                                   const Tensor& scales) {
  check_args(true, y, x);
  return LoraApplyFunction::apply(y, x, a, b, indptr, adapter, ranks, scales, true);
}

// Below autograd (no gradient wanted, or a tracing backend): the same forward, nothing saved.
Tensor lora_apply_kernel(const Tensor& y, const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& indptr,
                         const Tensor& adapter, const Tensor& ranks, const Tensor& scales) {
  check_args(false, y, x);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Tensor out = std::get<0>(forward_2d(rows_of(y), rows_of(x), a, b, {indptr, adapter, ranks, scales}, false));
  return y.dim() == 2 ? out : out.view(y.sizes());
}

Tensor lora_apply_inplace_kernel(const Tensor& y, const Tensor& x, const Tensor& a, const Tensor& b,
                                 const Tensor& indptr, const Tensor& adapter, const Tensor& ranks,
                                 const Tensor& scales) {
  check_args(true, y, x);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  forward_2d(y.view({-1, y.size(-1)}), rows_of(x), a, b, {indptr, adapter, ranks, scales}, true);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(mint, Autograd, m) {
  m.impl("lora_apply", &lora_apply_autograd);
  m.impl("lora_apply_", &lora_apply_inplace_autograd);
}

TORCH_LIBRARY_IMPL(mint, CPU, m) {
  m.impl("lora_apply", &lora_apply_kernel);
  m.impl("lora_apply_", &lora_apply_inplace_kernel);
}

TORCH_LIBRARY_IMPL(mint, CUDA, m) {
  m.impl("lora_apply", &lora_apply_kernel);
  m.impl("lora_apply_", &lora_apply_inplace_kernel);
}

}  // namespace mint
