"""Loss functions over per-token target log-probs, as the Tinker SDK defines them (summed, not averaged).

Each loss gets ``logprobs`` [B, L] float32 (the learner's log-prob of each target token, with grad), the
padded ``inputs`` (name -> [B, L] tensors), a ``mask`` [B, L] bool (True on real tokens) and the ``config``
dict, and returns the scalar loss plus extra metrics. Padding positions contribute nothing to the value or
the gradient.

The policy-gradient losses take the sampler's per-token ``logprobs`` and ``advantages`` A, with
ratio = exp(learner logprob - sampler logprob):

- ``importance_sampling``: -(ratio * A).sum()
- ``ppo``:   -min(ratio * A, clip(ratio, low, high) * A).sum()
- ``cispo``: -(stopgrad(clip(ratio, low, high)) * learner_logprob * A).sum()
- ``dro``:   -(learner_logprob * A - 0.5 * beta * (learner_logprob - sampler_logprob) ** 2).sum()

with low / high = ``clip_low_threshold`` / ``clip_high_threshold`` (defaults 0.8 / 1.2) and ``beta`` required.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import math
import numbers

import torch

from mint.errors import BadRequestError


@dataclass(frozen=True)
class LossSpec:
    """What a loss needs: required and optional per-token inputs (name -> "int64" | "float32")."""

    fn: Callable[[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, dict[str, float]], tuple[torch.Tensor, dict]]
    required: dict[str, str]
    optional: dict[str, str]
    config_keys: dict[str, float | None]
    """Config keys and their defaults; None marks a key the caller must give."""


def cross_entropy(logprobs, inputs, mask, config):
    """sum over tokens of -logprob(target) * weight (weight defaults to 1)."""
    weights = inputs.get("weights")
    if weights is None:
        weights = mask.to(logprobs.dtype)
    loss = -(logprobs * weights * mask).sum()
    return loss, {}


def _ratio(logprobs, inputs, mask):
    """exp(learner - sampler) on real tokens, exactly 1 on padding (so nothing overflows there)."""
    diff = torch.where(mask, logprobs - inputs["logprobs"], torch.zeros_like(logprobs))
    return torch.exp(diff)


def importance_sampling(logprobs, inputs, mask, config):
    """-(ratio * A).sum() over real tokens."""
    adv = inputs["advantages"] * mask
    loss = -(_ratio(logprobs, inputs, mask) * adv).sum()
    return loss, {}


def ppo(logprobs, inputs, mask, config):
    """-min(ratio * A, clip(ratio, low, high) * A).sum() over real tokens."""
    adv = inputs["advantages"] * mask
    ratio = _ratio(logprobs, inputs, mask)
    clipped = ratio.clamp(config["clip_low_threshold"], config["clip_high_threshold"])
    loss = -torch.minimum(ratio * adv, clipped * adv).sum()
    return loss, {}


def cispo(logprobs, inputs, mask, config):
    """-(stopgrad(clip(ratio, low, high)) * logprob * A).sum() over real tokens."""
    adv = inputs["advantages"] * mask
    weight = _ratio(logprobs, inputs, mask).detach().clamp(config["clip_low_threshold"], config["clip_high_threshold"])
    loss = -(weight * logprobs * adv).sum()
    return loss, {}


def dro(logprobs, inputs, mask, config):
    """-(logprob * A - 0.5 * beta * (logprob - sampler_logprob)^2).sum() over real tokens."""
    adv = inputs["advantages"] * mask
    diff = torch.where(mask, logprobs - inputs["logprobs"], torch.zeros_like(logprobs))
    loss = -(logprobs * adv - 0.5 * config["beta"] * diff.square()).sum()
    return loss, {}


_PG_INPUTS = {"target_tokens": "int64", "logprobs": "float32", "advantages": "float32"}
_CLIP = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}

LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(
        fn=cross_entropy,
        required={"target_tokens": "int64"},
        optional={"weights": "float32"},
        config_keys={},
    ),
    "importance_sampling": LossSpec(fn=importance_sampling, required=_PG_INPUTS, optional={}, config_keys={}),
    "ppo": LossSpec(fn=ppo, required=_PG_INPUTS, optional={}, config_keys=_CLIP),
    "cispo": LossSpec(fn=cispo, required=_PG_INPUTS, optional={}, config_keys=_CLIP),
    "dro": LossSpec(fn=dro, required=_PG_INPUTS, optional={}, config_keys={"beta": None}),
}


def resolve(loss_fn: object, loss_fn_config: object) -> tuple[LossSpec, dict[str, float]]:
    """The spec of ``loss_fn`` and its full config (defaults filled in), checked.

    Raises BadRequestError naming ``loss_fn`` (unknown name) or ``loss_fn_config.<key>`` (unknown key,
    missing required key, non-numeric or non-finite value, clip_low_threshold > clip_high_threshold).
    """
    spec = LOSSES.get(loss_fn) if isinstance(loss_fn, str) else None
    if spec is None:
        raise BadRequestError(f"unknown loss {loss_fn!r}; choose one of {sorted(LOSSES)}", field="loss_fn")
    if loss_fn_config is not None and not isinstance(loss_fn_config, dict):
        raise BadRequestError("must be a dict of config values", field="loss_fn_config")
    config = dict(spec.config_keys)
    for key, value in (loss_fn_config or {}).items():
        if key not in spec.config_keys:
            raise BadRequestError(
                f"unknown key for {loss_fn}; it takes {sorted(spec.config_keys) or 'no config'}",
                field=f"loss_fn_config.{key}",
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise BadRequestError(f"must be a finite number, got {value!r}", field=f"loss_fn_config.{key}")
        config[key] = float(value)
    for key, value in config.items():
        if value is None:
            raise BadRequestError(f"is required by {loss_fn}", field=f"loss_fn_config.{key}")
    if "clip_low_threshold" in config and config["clip_low_threshold"] > config["clip_high_threshold"]:
        raise BadRequestError("must not exceed clip_high_threshold", field="loss_fn_config.clip_low_threshold")
    return spec, config


def get_loss(name: str) -> LossSpec:
    """The LossSpec registered under ``name``; KeyError if none."""
    return LOSSES[name]
