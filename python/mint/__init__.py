"""mint: multi-adapter LoRA post-training with a Tinker-compatible API and fused kernels.

    import mint
    service = mint.ServiceClient()
    trainer = service.create_lora_training_client(base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
"""

from mint._loader import load_extension

load_extension()

from mint import ops, types  # noqa: E402
from mint.types import (  # noqa: E402,F401  (top-level names, as the Tinker SDK exports them)
    AdamParams,
    Datum,
    EncodedTextChunk,
    ForwardBackwardOutput,
    LoraConfig,
    ModelInput,
    SampledSequence,
    SampleResponse,
    SamplingParams,
    TensorData,
)
from mint.errors import *  # noqa: E402,F401,F403
from mint.errors import __all__ as _error_names  # noqa: E402

__version__ = "0.1.0"

from mint.client import APIFuture, RestClient, SamplingClient, ServiceClient, TrainingClient  # noqa: E402

__all__ = [
    "APIFuture",
    "AdamParams",
    "Datum",
    "EncodedTextChunk",
    "ForwardBackwardOutput",
    "LoraConfig",
    "ModelInput",
    "RestClient",
    "SampleResponse",
    "SampledSequence",
    "SamplingClient",
    "SamplingParams",
    "ServiceClient",
    "TensorData",
    "TrainingClient",
    "ops",
    "types",
    *_error_names,
]
