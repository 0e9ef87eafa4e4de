"""LoRA adapter configuration."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from mint.types._base import RequestModel

__all__ = ["MAX_LORA_RANK", "LoraConfig"]

MAX_LORA_RANK = 64
"""Largest LoRA rank mint supports."""


class LoraConfig(RequestModel):
    """Which layers get a LoRA adapter, and its rank.

    Example::

        types.LoraConfig(rank=16, train_unembed=False)
    """

    rank: int = Field(default=32, ge=1, le=MAX_LORA_RANK)
    """Rank of the low-rank matrices, 1..64."""

    seed: Optional[int] = None
    """Seed of the adapter initialisation; None picks one."""

    train_unembed: bool = True
    """Add a LoRA to the unembedding (LM head) layer."""

    train_mlp: bool = True
    """Add LoRAs to the MLP layers."""

    train_attn: bool = True
    """Add LoRAs to the attention projections."""

    @model_validator(mode="after")
    def _something_to_train(self) -> "LoraConfig":
        if not (self.train_unembed or self.train_mlp or self.train_attn):
            raise ValueError("at least one of train_unembed, train_mlp, train_attn must be True")
        return self
