"""Per-adapter gradient accumulators and Adam state, stepped with one fused mint AdamW call."""

from __future__ import annotations

import torch

from mint import ops, types


class AdapterOptimizerState:
    """Gradient accumulators, Adam moments and per-tensor steps for one training adapter.

    Tensors follow the order of ``AdapterPool.parameters(slot)``; moments are fp32.
    """

    def __init__(self, params: list[tuple[str, torch.Tensor]]):
        self.names = [name for name, _ in params]
        self.grads = [torch.zeros_like(p) for _, p in params]
        self.exp_avg = [torch.zeros(p.shape, dtype=torch.float32) for _, p in params]
        self.exp_avg_sq = [torch.zeros(p.shape, dtype=torch.float32) for _, p in params]
        self.steps = torch.zeros(len(params), dtype=torch.int64)
        self.has_grads = False

    def accumulate(self, grads: list[torch.Tensor]) -> None:
        """Add a backward pass's gradients (same order and shapes) to the accumulators."""
        for acc, g in zip(self.grads, grads):
            acc.add_(g)
        self.has_grads = True

    def zero_grad(self) -> None:
        for g in self.grads:
            g.zero_()
        self.has_grads = False

    def reset_moments(self) -> None:
        for t in (*self.exp_avg, *self.exp_avg_sq):
            t.zero_()
        self.steps.zero_()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Copies of everything an exact resume needs: ``exp_avg/<name>`` and ``exp_avg_sq/<name>`` (fp32,
        the parameter's shape) and ``steps`` (int64 [n_params], Adam's per-tensor step counts).
        Accumulated, not yet applied gradients are not part of the state."""
        out = {"steps": self.steps.clone()}
        for name, m, v in zip(self.names, self.exp_avg, self.exp_avg_sq):
            out[f"exp_avg/{name}"] = m.clone()
            out[f"exp_avg_sq/{name}"] = v.clone()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_tensors` output; all keys, shapes and dtypes are checked before anything is
        changed (ValueError naming the first mismatch). Accumulated gradients are zeroed."""
        expected = {"steps": (tuple(self.steps.shape), torch.int64)}
        for name, m in zip(self.names, self.exp_avg):
            expected[f"exp_avg/{name}"] = (tuple(m.shape), torch.float32)
            expected[f"exp_avg_sq/{name}"] = (tuple(m.shape), torch.float32)
        if set(tensors) != set(expected):
            missing = sorted(set(expected) - set(tensors))[:3]
            extra = sorted(set(tensors) - set(expected))[:3]
            raise ValueError(f"optimizer state does not match this adapter (missing {missing}, unexpected {extra})")
        for key, (shape, dtype) in expected.items():
            t = tensors[key]
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise ValueError(
                    f"optimizer tensor {key} is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}"
                )
        self.steps.copy_(tensors["steps"])
        for name, m, v in zip(self.names, self.exp_avg, self.exp_avg_sq):
            m.copy_(tensors[f"exp_avg/{name}"])
            v.copy_(tensors[f"exp_avg_sq/{name}"])
        self.zero_grad()


def adam_hyperparams(params: types.AdamParams) -> list[float]:
    """One row of the mint::adamw_ hyperparameter table."""
    return [
        params.learning_rate,
        params.beta1,
        params.beta2,
        params.eps,
        params.weight_decay,
        params.grad_clip_norm,
    ]


def fused_step(
    groups: list[tuple[list[torch.Tensor], AdapterOptimizerState, types.AdamParams]],
) -> list[float]:
    """Step several adapters at once: one mint::adamw_ call, one hyperparameter group per adapter.

    Returns each adapter's gradient norm before clipping. Gradients are zeroed afterwards.
    """
    params, grads, m, v, group_ids, steps, table = [], [], [], [], [], [], []
    for gid, (views, state, adam) in enumerate(groups):
        params += views
        grads += state.grads
        m += state.exp_avg
        v += state.exp_avg_sq
        group_ids += [gid] * len(views)
        steps.append(state.steps)
        table.append(adam_hyperparams(adam))
    all_steps = torch.cat(steps) if steps else torch.zeros(0, dtype=torch.int64)
    norms = ops.fused_adamw(
        params,
        grads,
        m,
        v,
        all_steps,
        torch.tensor(group_ids, dtype=torch.int64),
        torch.tensor(table, dtype=torch.float64).reshape(-1, 6),
    )
    offset = 0
    for _, state, _ in groups:
        n = state.steps.numel()
        state.steps.copy_(all_steps[offset : offset + n])
        offset += n
        state.zero_grad()
    return [float(x) for x in norms]
