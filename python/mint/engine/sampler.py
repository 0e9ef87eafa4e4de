"""Autoregressive sampling with a KV cache, many requests (each with its own adapter) in one batch."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mint import ops, types
from mint.engine.kv_cache import SlabLayer, all_slab, slab_cache
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


def _left_pad(mask: torch.Tensor, length: int) -> torch.Tensor:
    """Pad a [B, L] mask on the left with zeros to [B, length]."""
    return F.pad(mask, (length - mask.shape[-1], 0))


@dataclass
class _Pending:
    """A request being decoded: its per-sample results and its prompt log-prob fields."""

    request: SampleRequest
    handle: Any
    sequences: list
    remaining: int
    prompt_fields: tuple = (None, None)


@dataclass
class _Row:
    """One live sequence: which request and sample it is, and what it has produced so far."""

    pending: _Pending
    sample: int
    budget: int
    stop: StopChecker
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


class DecodeBatch:
    """Continuous batching: sequences of many requests decode together; new requests join between steps.

    Each request is prefilled (left-padded among the requests admitted with it), its KV cache rows are copied
    to its samples and merged into the running cache (left-padded to a common length, the padding masked out,
    positions explicit). Row j of request r draws from (seed_r, subsequence=j, offset=tokens generated so far),
    so a request's tokens do not depend on when it joined or what else is in the batch.
    """

    def __init__(self, model: torch.nn.Module, context: LoraContext, tokenizer, max_context: int):
        self.model = model
        self.context = context
        self.tokenizer = tokenizer
        self.max_context = max_context
        self.kw = _cache_kwarg(model)
        self.cache = None
        self.mask: torch.Tensor | None = None  # [R, L] int64, 1 = real token
        self.logits: torch.Tensor | None = None  # [R, V] next-token logits of each live row
        self.rows: list[_Row] = []

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def slots_in_use(self) -> set[int]:
        return {row.pending.request.slot for row in self.rows}

    def can_merge(self) -> bool:
        """New requests can join a running batch only when every cache layer is a SlabLayer (full attention)."""
        return self.cache is None or all_slab(self.cache)

    def _forward(self, ids, mask, positions, slots, cache, logits_to_keep=1, decode=False):
        self.context.batch = LoraBatch(slots, decode=decode)
        try:
            return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                              logits_to_keep=logits_to_keep, **{self.kw: cache})
        finally:
            self.context.batch = None

    @torch.inference_mode()
    def admit(self, items: list[tuple[SampleRequest, Any]]) -> None:
        """Prefill ``items`` (request, handle) and add their samples to the batch."""
        requests = [r for r, _ in items]
        lengths = [len(r.prompt) for r in requests]
        width = max(lengths)
        ids = torch.zeros(len(requests), width, dtype=torch.int64)
        mask = torch.zeros(len(requests), width, dtype=torch.int64)
        for i, r in enumerate(requests):
            ids[i, width - lengths[i] :] = torch.tensor(r.prompt)
            mask[i, width - lengths[i] :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        want_prompt = any(r.wants_prompt_logprobs for r in requests)
        cache = slab_cache(self.model.config)
        # logits_to_keep=0 keeps every position (needed only for prompt log-probs).
        out = self._forward(ids, mask, positions, [r.slot for r in requests], cache, 0 if want_prompt else 1)
        pendings = []
        for i, (r, handle) in enumerate(items):
            fields = (None, None)
            if r.wants_prompt_logprobs:
                fields = prompt_logprob_fields(
                    out.logits[i, width - lengths[i] :], r.prompt, r.include_prompt_logprobs, r.topk_prompt_logprobs
                )
            pendings.append(_Pending(r, handle, [None] * r.num_samples, r.num_samples, fields))
        index = torch.tensor([i for i, r in enumerate(requests) for _ in range(r.num_samples)], dtype=torch.int64)
        logits = out.logits[:, -1, :].float().index_select(0, index)
        cache.batch_select_indices(index)
        mask = mask.index_select(0, index)
        rows = [
            _Row(p, j, min(p.request.params.max_tokens, self.max_context - len(p.request.prompt)),
                 StopChecker(p.request.params, self.tokenizer))
            for p in pendings
            for j in range(p.request.num_samples)
        ]
        if self.cache is None:
            self.cache, self.mask, self.logits = cache, mask, logits
        else:
            length = max(self.mask.shape[1], mask.shape[1])
            for old, new in zip(self.cache.layers, cache.layers):
                old.append_rows(new)
            self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(mask, length)])
            self.logits = torch.cat([self.logits, logits])
        self.rows += rows

    def fail_all(self, exc: BaseException) -> list[tuple[Any, BaseException]]:
        """Drop every live row; returns (handle, error) for each unfinished request."""
        handles = list({id(r.pending): r.pending.handle for r in self.rows}.values())
        self.rows, self.cache, self.mask, self.logits = [], None, None, None
        return [(h, exc) for h in handles]

    @torch.inference_mode()
    def step(self) -> list[tuple[Any, types.SampleResponse]]:
        """Sample one token for every live row, retire finished rows, and run the next decode forward.

        Returns (handle, SampleResponse) for every request whose samples have all finished.
        """
        rows = self.rows
        params = [r.pending.request.params for r in rows]
        next_tokens, next_logprobs = ops.sample(
            self.logits,
            torch.tensor([p.temperature for p in params], dtype=torch.float32),
            torch.tensor([p.top_k for p in params], dtype=torch.int64),
            torch.tensor([p.top_p for p in params], dtype=torch.float32),
            torch.tensor([r.pending.request.seed for r in rows], dtype=torch.int64),
            torch.tensor([r.sample for r in rows], dtype=torch.int64),
            torch.tensor([len(r.tokens) for r in rows], dtype=torch.int64),
        )
        if bool((next_tokens < 0).any()):
            raise InternalServerError("the model produced NaN or infinite logits; sampling stopped")
        keep, done = [], []
        for j, row in enumerate(rows):
            row.tokens.append(int(next_tokens[j]))
            row.logprobs.append(float(next_logprobs[j]))
            reason = "stop" if row.stop(row.tokens) else ("length" if len(row.tokens) >= row.budget else None)
            if reason is None:
                keep.append(j)
                continue
            pending = row.pending
            pending.sequences[row.sample] = types.SampledSequence(
                stop_reason=reason, tokens=row.tokens, logprobs=row.logprobs
            )
            pending.remaining -= 1
            if pending.remaining == 0:
                done.append((pending.handle, types.SampleResponse(
                    sequences=pending.sequences, prompt_logprobs=pending.prompt_fields[0],
                    topk_prompt_logprobs=pending.prompt_fields[1],
                )))
        if not keep:
            self.rows, self.cache, self.mask, self.logits = [], None, None, None
            return done
        if len(keep) < len(rows):
            sel = torch.tensor(keep, dtype=torch.int64)
            self.mask = self.mask.index_select(0, sel)
            next_tokens = next_tokens.index_select(0, sel)
            self.rows = [rows[j] for j in keep]
            # columns that are padding for every remaining row are dropped (only with a mergeable cache)
            first = int(self.mask.any(0).to(torch.int8).argmax()) if all_slab(self.cache) else 0
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                if isinstance(layer, SlabLayer):
                    layer.select(sel, first)
                else:
                    layer.batch_select_indices(sel)
        self.mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=torch.int64)], dim=1)
        positions = torch.tensor([len(r.pending.request.prompt) + len(r.tokens) - 1 for r in self.rows])[:, None]
        out = self._forward(next_tokens[:, None], self.mask, positions,
                            [r.pending.request.slot for r in self.rows], self.cache, decode=True)
        self.logits = out.logits[:, -1, :].float()
        return done


def generate(
    model: torch.nn.Module,
    context: LoraContext,
    tokenizer,
    requests: list[SampleRequest],
    max_context: int,
) -> list[types.SampleResponse]:
    """Sample every request in one batch and wait for all; returns one SampleResponse per request, in order."""
    batch = DecodeBatch(model, context, tokenizer, max_context)
    batch.admit([(r, i) for i, r in enumerate(requests)])
    results: list[types.SampleResponse | None] = [None] * len(requests)
    while batch.num_rows:
        for i, response in batch.step():
            results[i] = response
    return results
