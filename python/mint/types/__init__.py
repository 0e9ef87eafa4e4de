"""The documented MinT types (``from mint import types``), compatible with the Tinker SDK's.

All are immutable pydantic v2 models: they validate on construction (a bad value raises
``pydantic.ValidationError`` naming the field) and round-trip through ``model_dump`` /
``model_validate`` and JSON. Request types (parameters, inputs) reject unknown fields; response
types ignore them.
"""

from mint.types.checkpoint import (
    Checkpoint,
    CheckpointsListResponse,
    CheckpointType,
    Cursor,
    ParsedCheckpointPath,
    ParsedCheckpointTinkerPath,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoResponse,
)
from mint.types.datum import Datum, ForwardBackwardOutput, LossFnInputs, LossFnOutput, LossFnType
from mint.types.lora import MAX_LORA_RANK, LoraConfig
from mint.types.model_input import EncodedTextChunk, ModelInput, ModelInputChunk
from mint.types.optim import AdamParams, OptimStepResponse
from mint.types.responses import (
    GetInfoResponse,
    GetServerCapabilitiesResponse,
    LoadWeightsResponse,
    ModelData,
    ModelID,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    SupportedModel,
)
from mint.types.sampling import SampledSequence, SampleResponse, SamplingParams, StopReason
from mint.types.tensor_data import TensorData, TensorDtype

__all__ = [
    "MAX_LORA_RANK",
    "AdamParams",
    "Checkpoint",
    "CheckpointType",
    "CheckpointsListResponse",
    "Cursor",
    "Datum",
    "EncodedTextChunk",
    "ForwardBackwardOutput",
    "GetInfoResponse",
    "GetServerCapabilitiesResponse",
    "LoadWeightsResponse",
    "LoraConfig",
    "LossFnInputs",
    "LossFnOutput",
    "LossFnType",
    "ModelData",
    "ModelID",
    "ModelInput",
    "ModelInputChunk",
    "OptimStepResponse",
    "ParsedCheckpointPath",
    "ParsedCheckpointTinkerPath",
    "SampleResponse",
    "SampledSequence",
    "SamplingParams",
    "SaveWeightsForSamplerResponse",
    "SaveWeightsResponse",
    "StopReason",
    "SupportedModel",
    "TensorData",
    "TensorDtype",
    "TrainingRun",
    "TrainingRunsResponse",
    "WeightsInfoResponse",
]
