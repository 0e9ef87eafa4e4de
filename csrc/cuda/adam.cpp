// CUDA binding of mint::adamw_ (schema: csrc/ops.cpp; CPU semantics and checks mirrored from
// csrc/cpu/adam.cpp; kernel: csrc/cuda/kernels/adam.cu).
//
// params, grads and moments live on one CUDA device; steps, group_ids and hyperparams may be on the
// CPU or on that device (device copies are read back, which synchronises). Everything is validated
// before anything is written; the steps are advanced on the host and written back after the launch.
// The returned norms are on the device of hyperparams, as the fake kernel says.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/adam_checks.h"

#include <mint/adam_cuda.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "binding.h"

namespace mint {
namespace {

constexpr int kHyper = 6;

bool is_supported_float(at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf; }

void check_moment(const at::Tensor& s, const at::Tensor& p, const char* name, int64_t i) {
  TORCH_CHECK(s.defined(), "mint.adamw_: ", name, "[", i, "] is undefined");
  TORCH_CHECK(s.device() == p.device(), "mint.adamw_: ", name, "[", i, "] must be on ", p.device(),
              " like params[", i, "], got ", s.device());
  TORCH_CHECK(s.layout() == at::kStrided, "mint.adamw_: ", name, "[", i, "] must be a dense tensor");
  TORCH_CHECK(s.sizes() == p.sizes(), "mint.adamw_: ", name, "[", i, "] must have the shape of params[", i, "] ",
              p.sizes(), ", got ", s.sizes());
  TORCH_CHECK(s.scalar_type() == at::kFloat || s.scalar_type() == p.scalar_type(), "mint.adamw_: ", name, "[", i,
              "] must be float32 or the dtype of params[", i, "] (", p.scalar_type(), "), got ", s.scalar_type());
  TORCH_CHECK(s.is_contiguous(), "mint.adamw_: ", name, "[", i, "] must be contiguous");
}

at::Tensor adamw_cuda(at::TensorList params, const c10::List<std::optional<at::Tensor>>& grads,
                      at::TensorList exp_avgs, at::TensorList exp_avg_sqs, const at::Tensor& steps,
                      const at::Tensor& group_ids, const at::Tensor& hyperparams) {
  const int64_t P = static_cast<int64_t>(params.size());
  TORCH_CHECK(static_cast<int64_t>(grads.size()) == P, "mint.adamw_: grads has ", grads.size(),
              " entries but params has ", P);
  TORCH_CHECK(static_cast<int64_t>(exp_avgs.size()) == P, "mint.adamw_: exp_avgs has ", exp_avgs.size(),
              " entries but params has ", P);
  TORCH_CHECK(static_cast<int64_t>(exp_avg_sqs.size()) == P, "mint.adamw_: exp_avg_sqs has ", exp_avg_sqs.size(),
              " entries but params has ", P);

  // The kernel's device: the params' (or, for an empty list, that of the first CUDA metadata tensor).
  at::Device device = P > 0 ? params[0].device()
                      : steps.is_cuda()     ? steps.device()
                      : group_ids.is_cuda() ? group_ids.device()
                                            : hyperparams.device();
  TORCH_CHECK(device.is_cuda(), "mint.adamw_: params[0] must be a CUDA tensor, got ", device);
  const c10::cuda::CUDAGuard guard(device);

  auto meta_ok = [&](const at::Tensor& t) { return t.device().is_cpu() || t.device() == device; };
  TORCH_CHECK(meta_ok(steps) && steps.scalar_type() == at::kLong && steps.dim() == 1 && steps.size(0) == P &&
                  steps.is_contiguous(),
              "mint.adamw_: steps must be a contiguous int64 tensor of shape [", P, "] on the CPU or ", device,
              ", got ", steps.scalar_type(), " ", steps.sizes(), " on ", steps.device(),
              steps.is_contiguous() ? "" : " (not contiguous)");
  TORCH_CHECK(meta_ok(group_ids) && group_ids.scalar_type() == at::kLong && group_ids.dim() == 1 &&
                  group_ids.size(0) == P,
              "mint.adamw_: group_ids must be an int64 tensor of shape [", P, "] on the CPU or ", device, ", got ",
              group_ids.scalar_type(), " ", group_ids.sizes(), " on ", group_ids.device());
  TORCH_CHECK(meta_ok(hyperparams) && hyperparams.scalar_type() == at::kDouble && hyperparams.dim() == 2 &&
                  hyperparams.size(1) == kHyper,
              "mint.adamw_: hyperparams must be a float64 tensor of shape [G, 6] = (lr, beta1, beta2, eps, "
              "weight_decay, max_grad_norm) on the CPU or ",
              device, ", got ", hyperparams.scalar_type(), " ", hyperparams.sizes(), " on ", hyperparams.device());

  const int64_t G = hyperparams.size(0);
  const at::Tensor hp_t = cuda_binding::to_host(hyperparams);
  const double* hp = hp_t.data_ptr<double>();
  for (int64_t g = 0; g < G; ++g) {
    const double* h = hp + g * kHyper;
    for (int k = 0; k < kHyper; ++k) {
      TORCH_CHECK(std::isfinite(h[k]), "mint.adamw_: hyperparams[", g, "] must be finite, got column ", k, " = ",
                  h[k]);
    }
    TORCH_CHECK(h[0] >= 0.0, "mint.adamw_: hyperparams[", g, "] lr must be >= 0, got ", h[0]);
    TORCH_CHECK(h[1] >= 0.0 && h[1] < 1.0, "mint.adamw_: hyperparams[", g, "] beta1 must be in [0, 1), got ", h[1]);
    TORCH_CHECK(h[2] >= 0.0 && h[2] < 1.0, "mint.adamw_: hyperparams[", g, "] beta2 must be in [0, 1), got ", h[2]);
    TORCH_CHECK(h[3] > 0.0, "mint.adamw_: hyperparams[", g, "] eps must be > 0, got ", h[3]);
    TORCH_CHECK(h[4] >= 0.0, "mint.adamw_: hyperparams[", g, "] weight_decay must be >= 0, got ", h[4]);
  }
  const at::Tensor gid_t = cuda_binding::to_host(group_ids);
  const int64_t* gid = gid_t.data_ptr<int64_t>();
  at::Tensor step_t = cuda_binding::to_host(steps).clone();  // advanced here, written back at the end
  int64_t* step = step_t.data_ptr<int64_t>();

  std::vector<at::Tensor> grad(P);
  for (int64_t i = 0; i < P; ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.defined(), "mint.adamw_: params[", i, "] is undefined");
    TORCH_CHECK(p.device() == device, "mint.adamw_: params[", i, "] must be on ", device, ", got ", p.device());
    TORCH_CHECK(p.layout() == at::kStrided, "mint.adamw_: params[", i, "] must be a dense tensor");
    TORCH_CHECK(is_supported_float(p.scalar_type()), "mint.adamw_: params[", i,
                "] must be float32, bfloat16 or float16, got ", p.scalar_type());
    TORCH_CHECK(p.is_contiguous(), "mint.adamw_: params[", i, "] must be contiguous");
    check_moment(exp_avgs[i], p, "exp_avgs", i);
    check_moment(exp_avg_sqs[i], p, "exp_avg_sqs", i);
    TORCH_CHECK(gid[i] >= 0 && gid[i] < G, "mint.adamw_: group_ids[", i, "] = ", gid[i], " is out of range for ", G,
                " hyperparams rows");
    TORCH_CHECK(step[i] >= 0, "mint.adamw_: steps[", i, "] must be >= 0, got ", step[i]);
    const std::optional<at::Tensor> gi = grads[i];
    if (gi.has_value() && gi->defined()) {
      const at::Tensor& gr = *gi;
      TORCH_CHECK(gr.device() == device, "mint.adamw_: grads[", i, "] must be on ", device, ", got ", gr.device());
      TORCH_CHECK(gr.layout() == at::kStrided, "mint.adamw_: grads[", i, "] must be a dense tensor");
      TORCH_CHECK(gr.scalar_type() == p.scalar_type(), "mint.adamw_: grads[", i, "] must have the dtype of params[",
                  i, "] (", p.scalar_type(), "), got ", gr.scalar_type());
      TORCH_CHECK(gr.sizes() == p.sizes(), "mint.adamw_: grads[", i, "] must have the shape of params[", i, "] ",
                  p.sizes(), ", got ", gr.sizes());
      grad[i] = gr.contiguous();
    }
  }
  check_no_overlap(params, exp_avgs, exp_avg_sqs);

  // Tables: per-tensor scalars (rounded to float as the CPU kernel rounds them), chunks, groups.
  std::vector<cuda::AdamGroup> groups(G);
  for (int64_t g = 0; g < G; ++g) {
    groups[g].max_grad_norm = hp[g * kHyper + 5];
    groups[g].clips = hp[g * kHyper + 5] > 0.0 ? 1 : 0;
    groups[g].pad = 0;
  }
  std::vector<cuda::AdamTensor> tensors;
  std::vector<cuda::AdamChunk> chunks, clip_chunks;
  for (int64_t i = 0; i < P; ++i) {
    if (!grad[i].defined()) continue;
    ++step[i];
    const double* h = hp + gid[i] * kHyper;
    const double lr = h[0], beta1 = h[1], beta2 = h[2], eps = h[3], wd = h[4];
    const double t = static_cast<double>(step[i]);
    const at::Tensor& p = params[i];
    cuda::AdamTensor e{};
    e.param = p.data_ptr();
    e.grad = grad[i].const_data_ptr();
    e.exp_avg = exp_avgs[i].data_ptr();
    e.exp_avg_sq = exp_avg_sqs[i].data_ptr();
    e.numel = p.numel();
    e.group = static_cast<int32_t>(gid[i]);
    e.param_dtype = static_cast<int32_t>(cuda_binding::to_kernel_dtype(p.scalar_type()));
    e.exp_avg_f32 = exp_avgs[i].scalar_type() == at::kFloat ? 1 : 0;
    e.exp_avg_sq_f32 = exp_avg_sqs[i].scalar_type() == at::kFloat ? 1 : 0;
    e.decay = static_cast<float>(1.0 - lr * wd);
    e.lerp_w = static_cast<float>(1.0 - beta1);
    e.lerp_small = std::abs(e.lerp_w) < 0.5f ? 1 : 0;
    e.beta2 = static_cast<float>(beta2);
    e.one_minus_beta2 = static_cast<float>(1.0 - beta2);
    e.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, t)));
    e.eps = static_cast<float>(eps);
    e.neg_step_size = static_cast<float>(-(lr / (1.0 - std::pow(beta1, t))));
    const int64_t idx = static_cast<int64_t>(tensors.size());
    tensors.push_back(e);
    for (int64_t b = 0; b < e.numel; b += cuda::kAdamChunk) {
      const cuda::AdamChunk c{idx, b, std::min(e.numel, b + cuda::kAdamChunk)};
      chunks.push_back(c);
      if (groups[e.group].clips) clip_chunks.push_back(c);
    }
  }

  at::Tensor norms = at::zeros({G}, at::TensorOptions().dtype(at::kFloat).device(device));
  if (!chunks.empty()) {
    const cudaStream_t stream = cuda_binding::current_stream();
    const at::Tensor tensors_d = cuda_binding::upload(tensors, device);
    const at::Tensor chunks_d = cuda_binding::upload(chunks, device);
    const at::Tensor clip_d = cuda_binding::upload(clip_chunks, device);
    const at::Tensor groups_d = cuda_binding::upload(groups, device);
    const int64_t nd = static_cast<int64_t>(clip_chunks.size() + chunks.size());
    at::Tensor dwork = at::empty({std::max<int64_t>(nd, 1)}, at::TensorOptions().dtype(at::kDouble).device(device));
    at::Tensor fwork = at::empty({std::max<int64_t>(G, 1)}, at::TensorOptions().dtype(at::kFloat).device(device));
    cuda::AdamWorkspace ws{dwork.data_ptr<double>(), dwork.data_ptr<double>() + clip_chunks.size(),
                           fwork.data_ptr<float>()};
    cuda_binding::check_launch(
        cuda::adamw_multi_tensor(reinterpret_cast<const cuda::AdamTensor*>(tensors_d.const_data_ptr()),
                                 reinterpret_cast<const cuda::AdamChunk*>(chunks_d.const_data_ptr()),
                                 static_cast<int64_t>(chunks.size()),
                                 reinterpret_cast<const cuda::AdamChunk*>(clip_d.const_data_ptr()),
                                 static_cast<int64_t>(clip_chunks.size()),
                                 reinterpret_cast<const cuda::AdamGroup*>(groups_d.const_data_ptr()), G, ws,
                                 norms.data_ptr<float>(), stream),
        "mint.adamw_");
  }
  const_cast<at::Tensor&>(steps).copy_(step_t);  // the schema marks steps as written (d!)
  return norms.to(hyperparams.device());
}

}  // namespace

TORCH_LIBRARY_IMPL(mint, CUDA, m) { m.impl("adamw_", &adamw_cuda); }

}  // namespace mint
