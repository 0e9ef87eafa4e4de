"""Learner log-prob passes beyond the built-in losses: custom losses and prompt log-probs.

Both run on the engine's worker thread (the Engine methods that call them are queued there).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Callable

import torch

from mint import types
from mint.engine.batching import as_datums, check_tokens, pack
from mint.engine.lora_layers import LoraBatch
from mint.engine.losses import LossSpec
from mint.errors import BadRequestError

if TYPE_CHECKING:
    from mint.engine.engine import Engine

CustomLossFn = Callable[[list[types.Datum], list[torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]

# A custom loss needs the targets; every other loss_fn_inputs key is handed to the user's function as given.
CUSTOM_SPEC = LossSpec(fn=None, required={"target_tokens": "int64"}, optional={}, config_keys={})


def target_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """log softmax(logits)[target] at every position: float32 [B, L] from int64 [B, L] inputs and targets."""
    device = next(model.parameters()).device
    out = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False)
    logits = out.logits.float()
    picked = logits.gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _check_result(result: object) -> tuple[torch.Tensor, dict[str, float]]:
    """The user's (loss, metrics), checked: loss a scalar float tensor with grad, metrics str -> number."""
    if not isinstance(result, tuple) or len(result) != 2:
        raise BadRequestError("must return a tuple (loss, metrics)", field="loss_fn")
    loss, metrics = result
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        raise BadRequestError("must return a scalar floating-point tensor as the loss", field="loss_fn")
    if not loss.requires_grad:
        raise BadRequestError("returned a loss that does not depend on the logprobs it was given", field="loss_fn")
    if metrics is None:
        metrics = {}
    if not isinstance(metrics, dict):
        raise BadRequestError("must return a dict of metrics (str -> float)", field="loss_fn")
    clean = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise BadRequestError(f"metric {key!r} must map a str to a number", field="loss_fn")
        clean[key] = float(value)
    return loss.reshape(()), clean


def forward_backward_custom(engine: "Engine", run_id: str, data: object, loss_fn: CustomLossFn) -> types.ForwardBackwardOutput:
    """Forward ``data`` with gradients, call ``loss_fn(data, logprobs)``, backpropagate its loss exactly.

    ``logprobs[i]`` is datum i's float32 [N_i] tensor of learner log-probs of its target tokens, part of the
    autograd graph. The gradients of the returned loss are added to the adapter's accumulators only after
    everything succeeded; an error (in validation or in ``loss_fn``) leaves them untouched.
    """
    adapter = engine.adapter(run_id)
    if not callable(loss_fn):
        raise BadRequestError("must be a callable (data, logprobs) -> (loss, metrics)", field="loss_fn")
    datums = as_datums(data)
    batch = pack(datums, CUSTOM_SPEC, engine.vocab_size, engine.max_context, extra_keys=True)
    tensors = [t for layer in engine.layers.values() if layer.kind in adapter.spec.kinds for t in (layer.lora_a, layer.lora_b)]
    for t in tensors:
        t.requires_grad_(True)
    engine.context.batch = LoraBatch([adapter.slot] * len(batch.lengths))
    try:
        with torch.enable_grad():
            logprobs = target_logprobs(engine.model, batch.input_ids, batch.attention_mask, batch.inputs["target_tokens"])
            per_datum = [logprobs[i, :n] for i, n in enumerate(batch.lengths)]
            loss, metrics = _check_result(loss_fn(datums, per_datum))
            if not math.isfinite(float(loss.detach())):
                raise BadRequestError(f"returned a non-finite loss ({float(loss.detach())})", field="loss_fn")
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    finally:
        engine.context.batch = None
        for t in tensors:
            t.requires_grad_(False)
            t.grad = None  # in case loss_fn called .backward() itself
    rank, slot = adapter.spec.rank, adapter.slot
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors)]
    adapter.optimizer.accumulate([g[slot, :rank] for g in grads])
    lp = logprobs.detach().cpu()
    outputs = [{"logprobs": types.TensorData.from_torch(lp[i, :n].contiguous())} for i, n in enumerate(batch.lengths)]
    metrics.setdefault("loss:sum", float(loss.detach()))
    return types.ForwardBackwardOutput(loss_fn_output_type="custom", loss_fn_outputs=outputs, metrics=metrics)


@torch.no_grad()
def compute_logprobs(engine: "Engine", slot: int, prompt: types.ModelInput) -> list[float | None]:
    """``[None, log p(t1 | t0), log p(t2 | t0 t1), ...]`` for the tokens of ``prompt`` under adapter ``slot``
    (-1 = base model), from log_softmax(logits) at temperature 1 with no filters."""
    tokens = prompt.to_ints()
    check_tokens(tokens, engine.vocab_size, engine.max_context, "prompt")
    ids = torch.tensor([tokens], dtype=torch.int64)
    targets = torch.tensor([tokens[1:] + [0]], dtype=torch.int64)
    engine.context.batch = LoraBatch([slot])
    try:
        lp = target_logprobs(engine.model, ids, torch.ones_like(ids), targets)[0, :-1]
    finally:
        engine.context.batch = None
    return [None] + lp.cpu().tolist()
