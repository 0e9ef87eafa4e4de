// The one place where every mint:: operator schema is declared.
//
// Layout conventions shared by all LoRA ops (also in python/mint/ops/lora.py):
//   x            [T, in]        fp32 / bf16 / fp16, any strides
//   lora_a       [N, R, in]     adapter pool, slot n uses rows [0, lora_ranks[n])
//   lora_b       [N, R, out]    stored rank-major (B^T), same dtype as x
//   h            [T, R]         dtype of x; columns >= rank and rows of "no adapter" segments are 0
//   seg_indptr   [S+1] int64    non-decreasing, seg_indptr[0] == 0, seg_indptr[S] == T
//   seg_adapter  [S]   int64    slot per segment, -1 = no adapter
//   lora_ranks   [N]   int64    0..R
//   lora_scales  [N]   float32  per-slot scaling (alpha / rank)
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(mint, m) {
  // ---- multi-adapter LoRA (segmented, SGMV style) ----
  m.def("lora_shrink(Tensor x, Tensor lora_a, Tensor seg_indptr, Tensor seg_adapter, "
        "Tensor lora_ranks) -> Tensor");
  m.def("lora_expand(Tensor y, Tensor h, Tensor lora_b, Tensor seg_indptr, Tensor seg_adapter, "
        "Tensor lora_ranks, Tensor lora_scales) -> Tensor");
  m.def("lora_expand_(Tensor(a!) y, Tensor h, Tensor lora_b, Tensor seg_indptr, "
        "Tensor seg_adapter, Tensor lora_ranks, Tensor lora_scales) -> ()");
  m.def("lora_expand_backward(Tensor grad_y, Tensor h, Tensor lora_b, Tensor seg_indptr, "
        "Tensor seg_adapter, Tensor lora_ranks, Tensor lora_scales) -> (Tensor grad_h, Tensor grad_lora_b)");
  m.def("lora_shrink_backward(Tensor grad_h, Tensor x, Tensor lora_a, Tensor seg_indptr, "
        "Tensor seg_adapter, Tensor lora_ranks) -> (Tensor grad_x, Tensor grad_lora_a)");
  // lora_expand(y, lora_shrink(x)) and its backward as single passes over row blocks (CPU; elsewhere
  // python/mint/ops/lora.py composes the ops above). h is returned for the backward; the backward
  // returns (grad_x, grad_lora_a, grad_lora_b) with the gradient pools zero outside the used slots / ranks.
  m.def("lora_apply_forward(Tensor y, Tensor x, Tensor lora_a, Tensor lora_b, Tensor seg_indptr, "
        "Tensor seg_adapter, Tensor lora_ranks, Tensor lora_scales) -> (Tensor out, Tensor h)");
  m.def("lora_apply_forward_(Tensor(a!) y, Tensor x, Tensor lora_a, Tensor lora_b, Tensor seg_indptr, "
        "Tensor seg_adapter, Tensor lora_ranks, Tensor lora_scales) -> Tensor h");
  m.def("lora_apply_backward(Tensor grad_out, Tensor x, Tensor h, Tensor lora_a, Tensor lora_b, "
        "Tensor seg_indptr, Tensor seg_adapter, Tensor lora_ranks, Tensor lora_scales) -> "
        "(Tensor grad_x, Tensor grad_lora_a, Tensor grad_lora_b)");
  // y + scale * (x @ A^T) @ B per segment as one differentiable op (C++ autograd: grads for y, x, lora_a,
  // lora_b). y [..., out] and x [..., in] share their leading dims (T tokens in all); any device. The
  // in-place form adds into y (contiguous, not a leaf that requires grad) and stays differentiable.
  m.def("lora_apply(Tensor y, Tensor x, Tensor lora_a, Tensor lora_b, Tensor seg_indptr, "
        "Tensor seg_adapter, Tensor lora_ranks, Tensor lora_scales) -> Tensor");
  m.def("lora_apply_(Tensor(a!) y, Tensor x, Tensor lora_a, Tensor lora_b, Tensor seg_indptr, "
        "Tensor seg_adapter, Tensor lora_ranks, Tensor lora_scales) -> Tensor(a!)");
  // decode-sized batches: y[t] += scale[n] * (x[t] @ A[n,:r]^T) @ B[n,:r], n = row_slot[t] (-1 = none);
  // each row computed on its own (batch invariant), in place, not differentiable; CPU, float32
  m.def("lora_rows_(Tensor(a!) y, Tensor x, Tensor lora_a, Tensor lora_b, Tensor row_slot, "
        "Tensor lora_ranks, Tensor lora_scales) -> ()");

  // ---- fused multi-group AdamW ----
  // hyperparams: float64 [G, 6] = (lr, beta1, beta2, eps, weight_decay, max_grad_norm; 0 = no clip)
  // group_ids:   int64 [P], steps: int64 [P] (advanced only where the grad is present)
  // returns float32 [G]: each group's global grad norm before clipping
  m.def("adamw_(Tensor(a!)[] params, Tensor?[] grads, Tensor(b!)[] exp_avgs, "
        "Tensor(c!)[] exp_avg_sqs, Tensor(d!) steps, Tensor group_ids, Tensor hyperparams) -> Tensor");

  // ---- fused top-k / top-p sampling ----
  // logits [B, V]; temperature f32 [B]; top_k i64 [B]; top_p f32 [B];
  // seed, subsequence (sample index), offset (position) i64 [B]
  // returns (tokens i64 [B], logprobs f32 [B]); an invalid row gives token -1 and logprob NaN
  m.def("sample(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor seed, "
        "Tensor subsequence, Tensor offset) -> (Tensor tokens, Tensor logprobs)");
}

// Makes mint._C importable as a Python extension module; importing it runs the registrations above.
static struct PyModuleDef mint_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&mint_c_module); }
