"""Packed forward / forward_backward passes: no padding, and the unembedding backward only where it matters.

The padded pass (``Engine._forward_backward_many``'s fallback) runs a [B, max_len] batch, so every base GEMM
also multiplies the padding, and it differentiates the unembedding (vocab x hidden, about a fifth of a small
model's FLOPs) and the log-softmax at every position, even where the loss has no gradient (SFT prompts with
weight 0). Here instead:

- every datum's tokens sit back to back in ONE row [1, T] (T = the number of real tokens), with per-datum
  position ids; attention runs per datum (ATen's causal CPU flash-attention kernel over each datum's span,
  back-to-back spans of one length in one batched call, registered with transformers as the attention
  implementation ``mint_varlen`` while the pass runs), so no token attends across datums and no work is
  spent on padding;
- the LoRA segments are token ranges of that row (each datum's tokens use its adapter's slot);
- with ``backward``, the pool tensors are swapped for compact copies holding only the slots in the batch
  (gradients are [n_present, R, features] instead of pool-sized), restored afterwards;
- the unembedding is run with gradients only at positions whose loss gradient can be non-zero (cross_entropy:
  weight != 0; importance_sampling / ppo / cispo: advantage != 0; other losses: every position) and under
  no_grad elsewhere: every position's logprob is still returned, and the value and the gradients equal the
  padded pass's (the skipped positions contribute exactly zero gradient there);
- target logprobs come from one fused op (logsumexp + gather forward, softmax-minus-one-hot backward) instead
  of a [T, V] log-softmax plus a dense scatter; when no adapter of the pass has LoRA on the unembedding, the
  frozen unembedding runs a chunk of rows at a time inside that op, so no [T, V] logits are kept at all.

Only used for plain decoder-only LMs whose logits are ``lm_head(final hidden state)`` (see :func:`supports`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from mint import types
from mint.engine.lora_layers import LoraBatch, MultiLoraLinear

VARLEN_ATTENTION = "mint_varlen"
# Model types whose causal-LM forward is exactly lm_head(decoder(...).last_hidden_state), with full causal
# attention over position ids (no soft-capping, scaling or sliding windows).
_PLAIN_LMS = frozenset({"llama", "qwen2", "qwen3"})
# Loss input whose zero entries make the loss gradient exactly zero at that position (see losses.py).
_GRAD_KEYS = {"cross_entropy": "weights", "importance_sampling": "advantages", "ppo": "advantages",
              "cispo": "advantages"}


def supports(model: torch.nn.Module) -> bool:
    """Whether ``model`` can run packed passes (a plain full-attention Llama / Qwen2 / Qwen3 causal LM)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in _PLAIN_LMS:
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if getattr(config, "use_sliding_window", False) or any(
        t != "full_attention" for t in (getattr(config, "layer_types", None) or [])
    ):
        return False
    if getattr(config, "final_logit_softcapping", None) or not getattr(config, "is_causal", True):
        return False
    return isinstance(model.get_output_embeddings(), MultiLoraLinear) and model.base_model is not model


# ---- attention over packed rows -------------------------------------------------------------------


def _span_groups(spans: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Runs of back-to-back spans of one length: (start, count, length) each, covering ``spans`` in order."""
    groups: list[tuple[int, int, int]] = []
    for s, e in spans:
        if groups:
            start, count, length = groups[-1]
            if e - s == length and s == start + count * length:
                groups[-1] = (start, count + 1, length)
                continue
        groups.append((s, 1, e - s))
    return groups


def _group_view(t: torch.Tensor, start: int, count: int, length: int) -> torch.Tensor:
    """Tokens [start, start + count * length) of t [1, H, T, D] as ``count`` sequences: a view [count, H, length, D]."""
    return t[0, :, start : start + count * length].unflatten(1, (count, length)).transpose(0, 1)


class _SpanAttention(torch.autograd.Function):
    """Causal attention within each span of one packed row, on ATen's CPU flash-attention kernels.

    query [1, H, T, D], key / value [1, Hkv, T, D] (Hkv divides H) -> [1, T, H, D]. Back-to-back spans of one
    length run as one batched kernel call on views; the gradients of each input are written once, span by span
    (autograd through slices would zero-fill and add a full-size buffer per span and input).
    """

    @staticmethod
    def forward(ctx, query, key, value, spans, scale):
        groups = _span_groups(spans)
        T, H, D = query.shape[2], query.shape[1], query.shape[3]
        out = query.new_empty(1, T, H, D)
        saved = []
        for start, count, length in groups:
            q, k, v = (_group_view(t, start, count, length) for t in (query, key, value))
            o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)
            out[0, start : start + count * length].view(count, length, H, D).copy_(o.transpose(1, 2))
            saved += [o, lse]
        ctx.groups, ctx.scale = groups, scale
        ctx.save_for_backward(query, key, value, *saved)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, *saved = ctx.saved_tensors
        grads = [torch.empty_like(t.transpose(1, 2)).transpose(1, 2) for t in (query, key, value)]
        grad_heads = grad_out.transpose(1, 2)  # [1, H, T, D]
        for i, (start, count, length) in enumerate(ctx.groups):
            q, k, v, g = (_group_view(t, start, count, length) for t in (query, key, value, grad_heads))
            parts = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                g, q, k, v, saved[2 * i], saved[2 * i + 1], 0.0, True, scale=ctx.scale)
            for dst, part in zip(grads, parts):
                _group_view(dst, start, count, length).copy_(part)
        return grads[0], grads[1], grads[2], None, None


def _varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Causal attention within each datum's span of a packed row: query [1, H, T, D], key/value [1, Hkv, T, D]
    -> ([1, T, H, D], None). The spans come in the ``mint_spans`` keyword (a list of (start, end))."""
    spans = kwargs.pop("mint_spans", None)
    if spans is None or query.shape[0] != 1:
        raise RuntimeError("mint_varlen attention needs one packed row and its mint_spans")
    if dropout == 0.0 and query.device.type == "cpu" and query.shape[1] % key.shape[1] == 0:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return _SpanAttention.apply(query, key, value, spans, scale), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    outs = [
        sdpa_attention_forward(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, dropout=dropout,
                               scaling=scaling, is_causal=True)[0]
        for s, e in spans
    ]
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), None


_registered = False


@contextlib.contextmanager
def varlen_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model``'s attention as ``mint_varlen`` inside the block (then restore the previous implementation).

    transformers builds no mask for an implementation it has no mask function for, so none is built here.
    """
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(VARLEN_ATTENTION, _varlen_attention)
        _registered = True
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = VARLEN_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous


# ---- LoRA segments and compact pools --------------------------------------------------------------


class PackedLoraBatch(LoraBatch):
    """LoRA segments of a packed row: explicit token ranges (seg_indptr [S+1], seg_adapter [S], int64).

    MultiLoraLinear sees activations [1, T, features] (one row); :meth:`segments` returns the current token
    table, which :meth:`use` switches (the unembedding runs on subsets of the row's positions).
    """

    def __init__(self, seg_indptr: torch.Tensor, seg_adapter: torch.Tensor):
        super().__init__([0])
        self.active = bool((seg_adapter >= 0).any())
        self._table = (seg_indptr, seg_adapter)

    def use(self, table: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Make ``table`` (seg_indptr, seg_adapter) the segments of the next layer calls."""
        self._table = table

    def segments(self, row_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        indptr, adapter = self._table
        if int(indptr[-1]) != row_len:
            raise RuntimeError(f"LoRA segments cover {int(indptr[-1])} tokens, the layer got {row_len}")
        return self._table


def token_segments(token_slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run-length segments of int64 [T] per-token slots: (seg_indptr int64 [S+1], seg_adapter int64 [S])."""
    adapters, counts = torch.unique_consecutive(token_slots, return_counts=True)
    indptr = torch.zeros(adapters.numel() + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    return indptr, adapters


@contextlib.contextmanager
def compact_pool(layers: dict[str, MultiLoraLinear], slots: list[int], trained_kinds: set[str]) -> Iterator[list]:
    """Swap every layer's pool for copies of ``slots`` only (slot ``slots[i]`` becomes index i), inside the block.

    Yields the new lora_a / lora_b leaves of the layers whose kind is in ``trained_kinds`` (requiring grad),
    in layer order, a then b. The original pool tensors are put back on exit, untouched.
    """
    index = torch.tensor(slots, dtype=torch.int64)
    saved, leaves = [], []
    try:
        for layer in layers.values():
            saved.append((layer, layer.lora_a, layer.lora_b, layer.ranks, layer.scales))
            a, b = layer.lora_a.index_select(0, index), layer.lora_b.index_select(0, index)
            if layer.kind in trained_kinds:
                leaves += [a.requires_grad_(True), b.requires_grad_(True)]
            layer.lora_a, layer.lora_b = a, b
            layer.ranks, layer.scales = layer.ranks.index_select(0, index), layer.scales.index_select(0, index)
        yield leaves
    finally:
        for layer, a, b, ranks, scales in saved:
            layer.lora_a, layer.lora_b, layer.ranks, layer.scales = a, b, ranks, scales


# ---- fused target logprobs ------------------------------------------------------------------------


def _logprob_grad_(shifted: torch.Tensor, targets: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """d lp_t / d logits, times ``grad`` [K], written into ``shifted`` = logits - logsumexp (float32 [K, V]):
    grad * (onehot(target) - softmax(logits))."""
    shifted.exp_().mul_(-grad[:, None])
    return shifted.scatter_add_(-1, targets[:, None], grad[:, None])


class _TargetLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(logits, lse, targets)
        return logits.gather(-1, targets[:, None])[:, 0] - lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, lse, targets = ctx.saved_tensors
        return _logprob_grad_(torch.sub(logits, lse[:, None]), targets, grad), None


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row: float32 [K] from logits [K, V] (cast to float32) and int64 [K]."""
    logits = logits.float()
    if logits.requires_grad:
        return _TargetLogprob.apply(logits, targets)
    return logits.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)


# ---- the pass --------------------------------------------------------------------------------------


def _grad_positions(loss_fn: str, batch) -> torch.Tensor:
    """bool [n_real_tokens] in datum order: where the loss gradient w.r.t. the logprob can be non-zero."""
    key = _GRAD_KEYS.get(loss_fn)
    values = batch.inputs.get(key) if key is not None else None
    if values is None:
        return torch.ones(int(batch.mask.sum()), dtype=torch.bool)
    return values[batch.mask] != 0


# Rows of one logits chunk: about 24 MiB of fp32, under glibc's largest mmap threshold, so each chunk is
# served from the heap and reused instead of mapped (and page-faulted) afresh.
_CHUNK_ELEMENTS = 6 << 20


def _chunk_rows(weight: torch.Tensor) -> int:
    return max(1, _CHUNK_ELEMENTS // weight.shape[0])


def _chunked_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    """(log softmax(hidden @ weight^T)[target], logsumexp) per row, both float32 [K], a chunk of rows at a time."""
    rows = _chunk_rows(weight)
    out = torch.empty(hidden.shape[0], dtype=torch.float32)
    lse = torch.empty(hidden.shape[0], dtype=torch.float32)
    for s in range(0, hidden.shape[0], rows):
        logits = (hidden[s : s + rows] @ weight.T).float()
        torch.logsumexp(logits, dim=-1, out=lse[s : s + rows])
        out[s : s + rows] = logits.gather(-1, targets[s : s + rows, None])[:, 0] - lse[s : s + rows]
    return out, lse


class _ChunkedUnembedLogprob(torch.autograd.Function):
    """log softmax(hidden @ weight^T)[target] per row, a chunk of rows at a time: [K, H], [V, H] (frozen), [K]
    -> float32 [K]. No [K, V] logits are kept: forward saves each row's logsumexp, backward recomputes each
    chunk's logits and returns only the gradient of ``hidden``."""

    @staticmethod
    def forward(ctx, hidden, weight, targets):
        out, lse = _chunked_logprobs(hidden, weight, targets)
        ctx.save_for_backward(hidden, weight, targets, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, targets, lse = ctx.saved_tensors
        rows = _chunk_rows(weight)
        grad_hidden = torch.empty_like(hidden)
        for s in range(0, hidden.shape[0], rows):
            shifted = (hidden[s : s + rows] @ weight.T).float().sub_(lse[s : s + rows, None])
            d = _logprob_grad_(shifted, targets[s : s + rows], grad[s : s + rows])
            torch.mm(d.to(weight.dtype), weight, out=grad_hidden[s : s + rows])
        return grad_hidden, None, None


def _unembed_logprobs(lm_head: MultiLoraLinear, lora: PackedLoraBatch, hidden: torch.Tensor,
                      positions: torch.Tensor, token_slots: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Target logprobs float32 [K] at ``positions`` of ``hidden`` [T, H], each position with its own adapter.

    When no adapter of these positions has LoRA on the unembedding (and it has no bias), the frozen weight is
    applied a chunk of rows at a time (:class:`_ChunkedUnembedLogprob`); otherwise through the LoRA layer."""
    slots = torch.unique(token_slots[positions])
    weight = lm_head.base.weight
    if (lm_head.base.bias is None and not weight.requires_grad and hidden.device.type == "cpu"
            and not bool(lm_head.ranks.index_select(0, slots).any())):
        rows = hidden[positions]
        if rows.requires_grad:
            return _ChunkedUnembedLogprob.apply(rows, weight, targets)
        return _chunked_logprobs(rows, weight, targets)[0]
    lora.use(token_segments(token_slots[positions]))
    return target_logprobs(lm_head(hidden[positions][None])[0], targets)


def forward_backward_many(engine, prepared: list[tuple], backward: bool) -> list[types.ForwardBackwardOutput]:
    """One packed pass over the datums of several requests (see the module docstring).

    ``prepared``: (adapter, loss_fn, spec, config, PackedBatch) per request, as Engine._prepare_forward_backward
    builds them. Returns one ForwardBackwardOutput per request; with ``backward`` each adapter's gradients are
    added to its accumulators, only after the whole pass succeeded.
    """
    model, layers = engine.model, engine.layers
    adapters = list({id(p[0]): p[0] for p in prepared}.values())
    slots = sorted({a.slot for a in adapters})
    compact = {s: i for i, s in enumerate(slots)} if backward else {s: s for s in slots}
    pieces, positions, token_slot, spans, grad_mask, targets = [], [], [], [], [], []
    start = 0
    for adapter, loss_fn, _, _, batch in prepared:
        for i, n in enumerate(batch.lengths):
            pieces.append(batch.input_ids[i, :n])
            positions.append(torch.arange(n))
            token_slot.append(torch.full((n,), compact[adapter.slot], dtype=torch.int64))
            targets.append(batch.inputs["target_tokens"][i, :n])
            spans.append((start, start + n))
            start += n
        grad_mask.append(_grad_positions(loss_fn, batch))
    total = start
    input_ids = torch.cat(pieces)[None]
    position_ids = torch.cat(positions)[None]
    token_slots = torch.cat(token_slot)
    targets = torch.cat(targets)
    grad_mask = torch.cat(grad_mask) if backward else torch.zeros(total, dtype=torch.bool)
    grad_pos = grad_mask.nonzero()[:, 0]
    free_pos = (~grad_mask).nonzero()[:, 0]
    kinds = set().union(*(a.spec.kinds for a in adapters)) if backward else set()
    lm_head = model.get_output_embeddings()
    lora = PackedLoraBatch(*token_segments(token_slots))

    pool = compact_pool(layers, slots, kinds) if backward else contextlib.nullcontext([])
    engine.context.batch = lora
    try:
        with pool as leaves, varlen_attention(model), (torch.enable_grad() if backward else torch.no_grad()):
            lora.use(token_segments(token_slots))
            hidden = model.base_model(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                                      mint_spans=spans).last_hidden_state[0]
            with torch.no_grad():
                lp_free = _unembed_logprobs(lm_head, lora, hidden.detach(), free_pos, token_slots,
                                            targets[free_pos]) if free_pos.numel() else hidden.new_zeros(0)
            lp = torch.zeros(total, dtype=torch.float32).index_put((free_pos,), lp_free)
            if grad_pos.numel():
                lp_grad = _unembed_logprobs(lm_head, lora, hidden, grad_pos, token_slots, targets[grad_pos])
                lp = lp.index_put((grad_pos,), lp_grad)
            losses, extras, logprobs = [], [], []
            offset = 0
            for _, _, spec, config, batch in prepared:
                n = int(batch.mask.sum())
                part = torch.zeros(batch.mask.shape, dtype=torch.float32).masked_scatter(batch.mask,
                                                                                         lp[offset : offset + n])
                offset += n
                loss, extra = spec.fn(part, batch.inputs, batch.mask, config)
                losses.append(loss)
                extras.append(extra)
                logprobs.append(part.detach())
            grads = []
            if backward:
                total_loss = torch.stack(losses).sum()
                if leaves and total_loss.requires_grad:
                    grads = torch.autograd.grad(total_loss, leaves, allow_unused=True)
                grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads or [None] * len(leaves), leaves)]
    finally:
        engine.context.batch = None
    if backward:
        by_layer = {}
        trained = [layer for layer in layers.values() if layer.kind in kinds]
        for j, layer in enumerate(trained):
            by_layer[id(layer)] = (grads[2 * j], grads[2 * j + 1])
        for adapter in adapters:
            rank, index = adapter.spec.rank, compact[adapter.slot]
            own = []
            for layer in layers.values():
                if layer.kind in adapter.spec.kinds:
                    ga, gb = by_layer[id(layer)]
                    own += [ga[index, :rank], gb[index, :rank]]
            adapter.optimizer.accumulate(own)
    results = []
    for (_, loss_fn, _, _, batch), loss, extra, lp_part in zip(prepared, losses, extras, logprobs):
        outputs = [
            {"logprobs": types.TensorData.from_torch(lp_part[i, :n].contiguous())} for i, n in enumerate(batch.lengths)
        ]
        metrics = {"loss:sum": float(loss.detach()), **{k: float(v) for k, v in extra.items()}}
        results.append(types.ForwardBackwardOutput(loss_fn_output_type=loss_fn, loss_fn_outputs=outputs,
                                                   metrics=metrics))
    return results
