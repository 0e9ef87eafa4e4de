"""Optimizer types: the Adam hyper-parameters of one ``optim_step`` and its response."""

from __future__ import annotations

from typing import Dict, Optional

from pydantic import Field

from mint.types._base import RequestModel, ResponseModel

__all__ = ["AdamParams", "OptimStepResponse"]


class AdamParams(RequestModel):
    """Hyper-parameters of one Adam(W) step, applied to every LoRA weight of the adapter.

    Weight decay is decoupled (AdamW): ``p -= lr * weight_decay * p`` besides the Adam update.
    ``grad_clip_norm > 0`` first rescales the adapter's gradients so their global L2 norm is at
    most ``grad_clip_norm``; ``0`` turns clipping off.

    Example::

        training_client.optim_step(types.AdamParams(learning_rate=1e-4)).result()
    """

    learning_rate: float = Field(default=1e-4, ge=0.0, allow_inf_nan=False)
    """Step size for parameter updates (>= 0)."""

    beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    """Exponential decay rate of the first moment estimates, in [0, 1)."""

    beta2: float = Field(default=0.95, ge=0.0, lt=1.0)
    """Exponential decay rate of the second moment estimates, in [0, 1)."""

    eps: float = Field(default=1e-12, gt=0.0, allow_inf_nan=False)
    """Small constant added to the denominator for numerical stability (> 0)."""

    weight_decay: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Decoupled (AdamW) weight decay coefficient (>= 0)."""

    grad_clip_norm: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Clip the global gradient norm to this value; 0 disables clipping."""


class OptimStepResponse(ResponseModel):
    """Result of ``optim_step``."""

    metrics: Optional[Dict[str, float]] = None
    """Optimizer metrics (e.g. ``grad_norm``), or None when there are none."""
