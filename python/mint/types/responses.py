"""Service responses: server capabilities, model info, and save/load results."""

from __future__ import annotations

from typing import List, Literal, Optional

from typing_extensions import TypeAlias

from mint.types._base import ResponseModel

__all__ = [
    "GetInfoResponse",
    "GetServerCapabilitiesResponse",
    "LoadWeightsResponse",
    "ModelData",
    "ModelID",
    "SaveWeightsForSamplerResponse",
    "SaveWeightsResponse",
    "SupportedModel",
]

ModelID: TypeAlias = str
"""Identifier of a model (a training client's adapter) on the service."""


class SupportedModel(ResponseModel):
    """A base model the service can train and sample."""

    model_name: Optional[str] = None
    """Its name, e.g. "HuggingFaceTB/SmolLM2-135M-Instruct"."""


class GetServerCapabilitiesResponse(ResponseModel):
    """What the service offers."""

    supported_models: List[SupportedModel]
    """Base models available for training and sampling."""


class ModelData(ResponseModel):
    """Architecture and naming metadata of a model."""

    arch: Optional[str] = None
    """Architecture identifier, e.g. "LlamaForCausalLM"."""

    model_name: Optional[str] = None
    """The base model's name."""

    tokenizer_id: Optional[str] = None
    """Identifier of the tokenizer (loadable with ``transformers.AutoTokenizer``)."""


class GetInfoResponse(ResponseModel):
    """Information about a training client's model."""

    type: Optional[Literal["get_info"]] = None
    """Response kind discriminator."""

    model_data: ModelData
    """Architecture and naming metadata."""

    model_id: ModelID
    """Identifier of the model on the service."""

    is_lora: Optional[bool] = None
    """Whether the model is a LoRA adapter."""

    lora_rank: Optional[int] = None
    """LoRA rank, if a LoRA adapter."""

    model_name: Optional[str] = None
    """The base model's name."""


class SaveWeightsForSamplerResponse(ResponseModel):
    """Result of ``save_weights_for_sampler``."""

    path: str
    """``mint://`` path of the saved sampler weights."""

    type: Optional[Literal["save_weights_for_sampler"]] = None
    """Response kind discriminator."""


class SaveWeightsResponse(ResponseModel):
    """Result of ``save_state`` (weights and optimizer state)."""

    path: str
    """``mint://`` path of the saved training checkpoint."""

    type: Optional[Literal["save_weights"]] = None
    """Response kind discriminator."""


class LoadWeightsResponse(ResponseModel):
    """Result of ``load_state`` / ``load_state_with_optimizer``."""

    path: Optional[str] = None
    """``mint://`` path that was loaded."""

    type: Optional[Literal["load_weights"]] = None
    """Response kind discriminator."""
