"""Loss functions over per-token target log-probs, as the Tinker SDK defines them (summed, not averaged).

Each loss gets ``logprobs`` [B, L] (the learner's log-prob of each target token, with grad), the padded
``inputs`` (name -> [B, L] tensors), a ``mask`` [B, L] (True on real tokens) and the ``config`` dict, and
returns the scalar loss plus extra metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class LossSpec:
    """What a loss needs: required and optional per-token inputs (name -> "int64" | "float32")."""

    fn: Callable[[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, dict[str, float]], tuple[torch.Tensor, dict]]
    required: dict[str, str]
    optional: dict[str, str]
    config_keys: dict[str, float]


def cross_entropy(logprobs, inputs, mask, config):
    """sum over tokens of -logprob(target) * weight (weight defaults to 1)."""
    weights = inputs.get("weights")
    if weights is None:
        weights = mask.to(logprobs.dtype)
    loss = -(logprobs * weights * mask).sum()
    return loss, {}


LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(
        fn=cross_entropy,
        required={"target_tokens": "int64"},
        optional={"weights": "float32"},
        config_keys={},
    ),
}


def get_loss(name: str) -> LossSpec:
    """The LossSpec registered under ``name``; KeyError if none."""
    return LOSSES[name]
