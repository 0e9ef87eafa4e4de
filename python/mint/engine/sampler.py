"""Autoregressive sampling with a KV cache, many requests (each with its own adapter) in one batch."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from mint import ops, types
from mint.engine.lora_layers import LoraBatch, LoraContext
from mint.errors import InternalServerError


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers >= 5.2x calls the KV cache argument ``cache``; older releases ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class SampleRequest:
    """One sample() call: ``num_samples`` continuations of ``prompt`` with adapter ``slot`` (-1 = base)."""

    slot: int
    prompt: list[int]
    num_samples: int
    params: types.SamplingParams
    seed: int
    include_prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0

    @property
    def wants_prompt_logprobs(self) -> bool:
        return self.include_prompt_logprobs or self.topk_prompt_logprobs > 0


def prompt_logprob_fields(
    logits: torch.Tensor, prompt: list[int], include: bool, topk: int
) -> tuple[list[float | None] | None, list[list[tuple[int, float]] | None] | None]:
    """Prompt log-probs from ``logits`` [len(prompt), V] (row i predicts prompt[i + 1]).

    Returns (prompt_logprobs, topk_prompt_logprobs): ``[None, log p(t1|t0), ...]`` under log_softmax(logits)
    (temperature 1, no filters) if ``include``, and per position the ``topk`` most likely
    ``(token_id, logprob)`` pairs (None for position 0) if ``topk > 0``; each field is None when not asked for.
    """
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)
    values = None
    if include:
        target = torch.tensor(prompt[1:], dtype=torch.int64, device=logp.device)
        values = [None] + logp.gather(-1, target[:, None])[:, 0].tolist()
    top = None
    if topk > 0:
        k = min(topk, logp.shape[-1])
        lp, ids = logp.topk(k, dim=-1)
        top = [None] + [list(zip(i, v)) for i, v in zip(ids.tolist(), lp.tolist())]
    return values, top


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
    requests: list[SampleRequest],
    max_context: int,
) -> list[types.SampleResponse]:
    """Sample every request in one batch; returns, per request, a SampleResponse with its ``num_samples``
    sequences in order (and its prompt log-probs if the request asked for them).

    Each distinct prompt is prefilled once (left-padded to a common length); its KV cache rows are copied to
    its samples. Row j of request r draws from (seed_r, subsequence=j, offset=step), so a request's tokens do
    not depend on the rest of the batch's randomness. Finished rows leave the batch.
    """
    from transformers import DynamicCache

    kw = _cache_kwarg(model)
    lengths = [len(r.prompt) for r in requests]
    width = max(lengths)
    ids = torch.zeros(len(requests), width, dtype=torch.int64)
    mask = torch.zeros(len(requests), width, dtype=torch.int64)
    for i, r in enumerate(requests):
        ids[i, width - lengths[i] :] = torch.tensor(r.prompt)
        mask[i, width - lengths[i] :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    # One row per sample: its request, sample index, adapter, parameters and stop rule.
    row_req = [i for i, r in enumerate(requests) for _ in range(r.num_samples)]
    row_sub = [j for r in requests for j in range(r.num_samples)]
    temperature = torch.tensor([requests[i].params.temperature for i in row_req], dtype=torch.float32)
    top_k = torch.tensor([requests[i].params.top_k for i in row_req], dtype=torch.int64)
    top_p = torch.tensor([requests[i].params.top_p for i in row_req], dtype=torch.float32)
    seeds = torch.tensor([requests[i].seed for i in row_req], dtype=torch.int64)
    subsequence = torch.tensor(row_sub, dtype=torch.int64)
    stops = [StopChecker(r.params, tokenizer) for r in requests]
    budgets = [min(r.params.max_tokens, max_context - len(r.prompt)) for r in requests]

    cache = DynamicCache(config=model.config)
    context.batch = LoraBatch([r.slot for r in requests])
    prompt_fields: list[tuple] = [(None, None)] * len(requests)
    want_prompt = any(r.wants_prompt_logprobs for r in requests)
    try:
        # logits_to_keep=0 keeps every position (needed only for prompt log-probs).
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=0 if want_prompt else 1, **{kw: cache})
        if want_prompt:
            for i, r in enumerate(requests):
                if r.wants_prompt_logprobs:
                    rows = out.logits[i, width - lengths[i] :]
                    prompt_fields[i] = prompt_logprob_fields(
                        rows, r.prompt, r.include_prompt_logprobs, r.topk_prompt_logprobs
                    )
        index = torch.tensor(row_req, dtype=torch.int64)
        logits = out.logits[:, -1, :].float().index_select(0, index)
        if len(row_req) != len(requests) or row_req != list(range(len(requests))):
            cache.batch_select_indices(index)
        mask = mask.index_select(0, index)
        alive = list(range(len(row_req)))
        tokens: list[list[int]] = [[] for _ in row_req]
        logprobs: list[list[float]] = [[] for _ in row_req]
        reasons = ["length"] * len(row_req)
        step = 0
        while alive:
            rows = torch.tensor(alive, dtype=torch.int64)
            next_tokens, next_logprobs = ops.sample(
                logits, temperature[rows], top_k[rows], top_p[rows], seeds[rows], subsequence[rows],
                torch.full((len(alive),), step, dtype=torch.int64),
            )
            if bool((next_tokens < 0).any()):
                raise InternalServerError("the model produced NaN or infinite logits; sampling stopped")
            keep = []
            for j, row in enumerate(alive):
                tokens[row].append(int(next_tokens[j]))
                logprobs[row].append(float(next_logprobs[j]))
                req = row_req[row]
                if stops[req](tokens[row]):
                    reasons[row] = "stop"
                elif len(tokens[row]) < budgets[req]:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):
                sel = torch.tensor(keep, dtype=torch.int64)
                cache.batch_select_indices(sel)
                mask = mask.index_select(0, sel)
                next_tokens = next_tokens.index_select(0, sel)
                alive = [alive[j] for j in keep]
            step += 1
            mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=torch.int64)], dim=1)
            pos = torch.tensor([lengths[row_req[row]] + step - 1 for row in alive], dtype=torch.int64)[:, None]
            context.batch = LoraBatch([requests[row_req[row]].slot for row in alive])
            out = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                        **{kw: cache})
            logits = out.logits[:, -1, :].float()
    finally:
        context.batch = None
    sequences: list[list[types.SampledSequence]] = [[] for _ in requests]
    for row, req in enumerate(row_req):
        sequences[req].append(types.SampledSequence(stop_reason=reasons[row], tokens=tokens[row], logprobs=logprobs[row]))
    return [
        types.SampleResponse(sequences=seqs, prompt_logprobs=fields[0], topk_prompt_logprobs=fields[1])
        for seqs, fields in zip(sequences, prompt_fields)
    ]
