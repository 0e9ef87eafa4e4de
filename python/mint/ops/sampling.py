"""Fused top-k / top-p sampling (``torch.ops.mint.sample``): typed wrapper and fake kernel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch

RowArg = Union[int, float, Sequence, torch.Tensor]

_INT64_WRAP = 1 << 64
_INT64_MAX = (1 << 63) - 1


@torch.library.register_fake("mint::sample")
def _sample_fake(logits, temperature, top_k, top_p, seed, subsequence, offset):
    torch._check(logits.dim() == 2, lambda: f"logits must be 2-D [B, V], got shape {tuple(logits.shape)}")
    batch = logits.shape[0]
    tokens = logits.new_empty((batch,), dtype=torch.int64)
    logprobs = logits.new_empty((batch,), dtype=torch.float32)
    return tokens, logprobs


def _as_int64(value: int) -> int:
    """A Python int in [-2**63, 2**64) as the int64 with the same low 64 bits (seeds may be unsigned)."""
    return value - _INT64_WRAP if value > _INT64_MAX else value


def _per_row(value: RowArg, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A per-row argument as a [batch] tensor of `dtype`: scalars are broadcast, the rest converted.

    A tensor or list of the wrong length is passed on unchanged in shape so that the op's own check
    reports it with the argument's name.
    """
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            value = value.expand(batch)
        return value.to(device=device, dtype=dtype)
    if isinstance(value, (int, float)):
        if isinstance(value, int) and dtype == torch.int64:
            value = _as_int64(value)
        return torch.full((batch,), value, dtype=dtype, device=device)
    if dtype == torch.int64:
        value = [_as_int64(v) if isinstance(v, int) else v for v in value]
    return torch.tensor(value, dtype=dtype, device=device)


def sample(
    logits: torch.Tensor,
    temperature: RowArg = 1.0,
    top_k: RowArg = -1,
    top_p: RowArg = 1.0,
    seed: RowArg = 0,
    subsequence: RowArg = 0,
    offset: RowArg = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of `logits` with per-row temperature, top-k and top-p.

    Args:
        logits: [B, V] float32 / bfloat16 / float16, any strides; rows are read as float32.
        temperature: per-row float (>= 0, finite); 0 means greedy (argmax, lowest index on ties).
        top_k: per-row int; <= 0 or >= V disables the top-k filter.
        top_p: per-row float in (0, inf); >= 1 disables the top-p filter.
        seed: per-row int64 (a Python int up to 2**64 - 1 is taken modulo 2**64).
        subsequence: per-row int64, the sample's index within a request (num_samples > 1).
        offset: per-row int64, the position / decode step.

    Each per-row argument is a Python scalar (broadcast to all rows) or a tensor / list of length B.

    Distribution. For temperature T > 0 the kept set is the top_k tokens of highest logit (ties
    broken by lower index), then among those the smallest set of highest-probability tokens whose
    renormalised mass reaches top_p (at least one token). The token is drawn from softmax(logits / T)
    restricted to the kept set and renormalised; tokens with logit -inf have probability 0 and are
    never drawn. With T == 0 the token is the argmax.

    Returned log-prob. For T > 0: the log-probability of the drawn token under that same filtered,
    renormalised distribution, i.e. z[t] - logsumexp(z[kept]) with z = logits / T; it equals
    log_softmax(logits / T)[t] when no filter is active. For T == 0: log_softmax(logits)[t] at
    temperature 1, unfiltered.

    Invalid rows. A row containing NaN or +inf, or whose logits are all -inf, gives token -1 and
    log-prob NaN; the other rows are unaffected.

    Randomness. Each row uses one Philox4x32-10 draw keyed by key = seed and counter =
    (offset, subsequence), so a row's token depends only on its own logits and parameters, never
    on the rest of the batch; equal inputs give equal outputs, and different subsequences under one
    seed give independent draws.

    Returns:
        (tokens int64 [B], logprobs float32 [B]) on the device of `logits`.
    """
    if logits.dim() != 2:
        raise RuntimeError(f"logits must be 2-D [B, V], got shape {tuple(logits.shape)}")
    batch, device = logits.shape[0], logits.device
    return torch.ops.mint.sample(
        logits,
        _per_row(temperature, batch, torch.float32, device),
        _per_row(top_k, batch, torch.int64, device),
        _per_row(top_p, batch, torch.float32, device),
        _per_row(seed, batch, torch.int64, device),
        _per_row(subsequence, batch, torch.int64, device),
        _per_row(offset, batch, torch.int64, device),
    )


__all__ = ["sample"]
