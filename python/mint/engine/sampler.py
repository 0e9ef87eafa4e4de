"""Autoregressive sampling with a KV cache, one adapter slot per request, through the mint sampling op."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from mint import ops, types
from mint.engine.lora_layers import LoraBatch, LoraContext
from mint.errors import InternalServerError


class StopChecker:
    """Decides whether a sequence has hit a stop token or produced a stop string."""

    def __init__(self, params: types.SamplingParams, tokenizer):
        self.stop_tokens = set(params.stop_tokens())
        self.stop_strings = [s for s in params.stop_strings() if s]
        self.tokenizer = tokenizer
        self.window = max((len(s) for s in self.stop_strings), default=0) + 1

    def __call__(self, tokens: list[int]) -> bool:
        if tokens[-1] in self.stop_tokens:
            return True
        if self.stop_strings:
            tail = self.tokenizer.decode(tokens[-self.window :], skip_special_tokens=False)
            return any(s in tail for s in self.stop_strings)
        return False


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    context: LoraContext,
    tokenizer,
    slot: int,
    prompt: list[int],
    num_samples: int,
    params: types.SamplingParams,
    seed: int,
    max_context: int,
) -> list[types.SampledSequence]:
    """Sample ``num_samples`` continuations of ``prompt`` with adapter ``slot`` (-1 = base model).

    The prompt is prefilled once; its KV cache is shared by copying it to ``num_samples`` rows. Row i draws its
    randomness from (seed, subsequence=i, offset=step), so a request's tokens do not depend on its batch.
    Finished rows leave the batch. Returns one SampledSequence per sample, in order.
    """
    cache = DynamicCache(config=model.config)
    context.batch = LoraBatch([slot])
    try:
        out = model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float().expand(num_samples, -1)
        if num_samples > 1:
            cache.batch_repeat_interleave(num_samples)
        budget = min(params.max_tokens, max_context - len(prompt))
        stop = StopChecker(params, tokenizer)
        tokens: list[list[int]] = [[] for _ in range(num_samples)]
        logprobs: list[list[float]] = [[] for _ in range(num_samples)]
        reasons = ["length"] * num_samples
        alive = list(range(num_samples))
        temperature = torch.full((num_samples,), float(params.temperature))
        top_k = torch.full((num_samples,), int(params.top_k), dtype=torch.int64)
        top_p = torch.full((num_samples,), float(params.top_p))
        seeds = torch.full((num_samples,), seed, dtype=torch.int64)
        for step in range(budget):
            rows = torch.tensor(alive, dtype=torch.int64)
            n = len(alive)
            next_tokens, next_logprobs = ops.sample(
                logits, temperature[:n], top_k[:n], top_p[:n], seeds[:n], rows, torch.full((n,), step, dtype=torch.int64)
            )
            if bool((next_tokens < 0).any()):
                raise InternalServerError("the model produced NaN or all -inf logits; sampling stopped")
            keep = []
            for j, row in enumerate(alive):
                tokens[row].append(int(next_tokens[j]))
                logprobs[row].append(float(next_logprobs[j]))
                if stop(tokens[row]):
                    reasons[row] = "stop"
                else:
                    keep.append(j)
            if not keep or step + 1 == budget:
                break
            if len(keep) < n:
                cache.batch_select_indices(torch.tensor(keep, dtype=torch.int64))
                alive = [alive[j] for j in keep]
                next_tokens = next_tokens[keep]
            context.batch = LoraBatch([slot] * len(alive))
            out = model(input_ids=next_tokens[:, None], past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :].float()
    finally:
        context.batch = None
    return [
        types.SampledSequence(stop_reason=reasons[i], tokens=tokens[i], logprobs=logprobs[i]) for i in range(num_samples)
    ]
