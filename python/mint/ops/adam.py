"""Fused multi-group AdamW: one ``mint::adamw_`` call updates many tensors, each group with its own
hyper-parameters (e.g. one group per LoRA adapter).

The update is ``torch.optim.AdamW`` (decoupled weight decay) computed in fp32, with an optional
per-group clip of the gradients by their global L2 norm (``torch.nn.utils.clip_grad_norm_``
semantics, applied on the fly: the gradient tensors are not modified).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

# Columns of the ``hyperparams`` tensor, one row per group.
HYPERPARAM_COLUMNS = ("lr", "beta1", "beta2", "eps", "weight_decay", "max_grad_norm")


@torch.library.register_fake("mint::adamw_")
def _adamw_fake(params, grads, exp_avgs, exp_avg_sqs, steps, group_ids, hyperparams):
    return hyperparams.new_empty((hyperparams.shape[0],), dtype=torch.float32)


def fused_adamw(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    steps: torch.Tensor,
    group_ids: torch.Tensor,
    hyperparams: torch.Tensor,
) -> torch.Tensor:
    """One AdamW step over P tensors in G groups, in place; returns each group's gradient norm.

    Args:
        params: P contiguous tensors, float32 / bfloat16 / float16, any shape (0-dim and empty included);
            updated in place.
        grads: P entries, each None (the tensor is skipped: parameter, moments and step untouched) or a
            tensor of the parameter's shape and dtype. Not modified, even when clipped.
        exp_avgs, exp_avg_sqs: P contiguous tensors of the parameter's shape, float32 or the
            parameter's dtype; updated in place.
        steps: int64 [P], per-parameter step counters; each one with a grad is incremented before use.
        group_ids: int64 [P], values in [0, G).
        hyperparams: float64 [G, 6], rows (lr, beta1, beta2, eps, weight_decay, max_grad_norm);
            max_grad_norm > 0 clips the group's gradients to that global L2 norm, 0 disables clipping.

    Returns:
        float32 [G]: each group's global L2 gradient norm before clipping (0 for a group without grads).

    Raises:
        RuntimeError: naming the offending argument and index when an input is malformed; nothing is
            modified in that case.
    """
    with torch.no_grad():
        return torch.ops.mint.adamw_(
            list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), steps, group_ids, hyperparams
        )


class FusedAdamW(torch.optim.Optimizer):
    """AdamW whose param groups are all updated by a single ``mint::adamw_`` call per step.

    Defaults follow MinT's AdamParams (lr 1e-4, betas (0.9, 0.95), eps 1e-12, no weight decay, no
    clipping). Each param group may set its own lr, betas, eps, weight_decay and max_grad_norm
    (clip of that group's gradients by their global L2 norm; 0 disables it). State per parameter is
    torch's AdamW layout (``step`` float32 0-dim, ``exp_avg``, ``exp_avg_sq``), so state dicts move
    between this class and ``torch.optim.AdamW``. ``moment_dtype`` (e.g. torch.float32 for bf16
    parameters) keeps the moments in that dtype instead of the parameter's. ``master_weights=True`` keeps
    an fp32 master copy (state ``master``) of every bf16 / fp16 parameter: the fused update runs on the
    master with the gradient in fp32 and fp32 moments, and the parameter receives the rounded result, so
    updates smaller than the parameter dtype's resolution are not lost.

    After each ``step()``, ``last_grad_norms`` holds float32 [num_groups]: each group's gradient norm
    before clipping.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-12,
        weight_decay: float = 0.0,
        max_grad_norm: float = 0.0,
        *,
        moment_dtype: torch.dtype | None = None,
        master_weights: bool = False,
    ):
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid betas: {betas}")
        if not eps > 0.0:
            raise ValueError(f"Invalid eps: {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        if moment_dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"Invalid moment_dtype: {moment_dtype}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            moment_dtype=moment_dtype,
            master_weights=bool(master_weights),
        )
        super().__init__(params, defaults)
        self.last_grad_norms: torch.Tensor | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        # groups loaded from a torch.optim.AdamW state dict lack mint's own keys
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("max_grad_norm", 0.0)
            group.setdefault("moment_dtype", None)
            group.setdefault("master_weights", False)

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss (or None)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads, exp_avgs, exp_avg_sqs, steps, group_ids, rows = [], [], [], [], [], [], []
        masters: list[tuple[torch.Tensor, torch.Tensor]] = []
        for gi, group in enumerate(self.param_groups):
            beta1, beta2 = group["betas"]
            rows.append(
                [float(group["lr"]), float(beta1), float(beta2), float(group["eps"]),
                 float(group["weight_decay"]), float(group["max_grad_norm"])]
            )
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("FusedAdamW does not support sparse gradients")
                state = self.state[p]
                use_master = group["master_weights"] and p.dtype != torch.float32
                if not state:
                    dtype = torch.float32 if use_master else (group["moment_dtype"] or p.dtype)
                    zeros = dict(dtype=dtype, memory_format=torch.contiguous_format)
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, **zeros)
                    state["exp_avg_sq"] = torch.zeros_like(p, **zeros)
                if use_master:
                    if "master" not in state:
                        state["master"] = p.detach().to(torch.float32, memory_format=torch.contiguous_format)
                    masters.append((p, state["master"]))
                    params.append(state["master"])
                    grads.append(p.grad.to(torch.float32))
                else:
                    params.append(p)
                    grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
                group_ids.append(gi)
        device = params[0].device if params else torch.device("cpu")
        step_counts = (
            torch.stack(steps).to(device=device, dtype=torch.int64)
            if steps
            else torch.zeros(0, dtype=torch.int64, device=device)
        )
        self.last_grad_norms = fused_adamw(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            step_counts,
            torch.tensor(group_ids, dtype=torch.int64, device=device),
            torch.tensor(rows, dtype=torch.float64, device=device),
        )
        if steps:
            torch._foreach_copy_(steps, list(step_counts.to(steps[0]).unbind(0)))
        for p, master in masters:
            p.copy_(master)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict (this class's or torch AdamW's), keeping float32 moments float32.

        The base class casts every floating state tensor to its parameter's dtype; moments saved in
        float32 next to bf16/fp16 parameters are restored from the saved tensors instead.
        """
        saved = state_dict["state"]
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params):
            for key in ("exp_avg", "exp_avg_sq", "master"):
                value = saved.get(saved_id, {}).get(key)
                keep_f32 = isinstance(value, torch.Tensor) and value.dtype == torch.float32
                if keep_f32 and p.dtype != torch.float32:
                    self.state[p][key] = value.to(device=p.device, copy=True).contiguous()


__all__ = ["HYPERPARAM_COLUMNS", "FusedAdamW", "fused_adamw"]
