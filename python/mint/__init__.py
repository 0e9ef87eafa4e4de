"""mint: multi-adapter LoRA post-training with a Tinker-compatible API and fused kernels.

    import mint
    service = mint.ServiceClient()
    trainer = service.create_lora_training_client(base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
"""

from mint._loader import load_extension

load_extension()

from mint import ops, types  # noqa: E402
from mint.errors import *  # noqa: E402,F401,F403
from mint.errors import __all__ as _error_names  # noqa: E402

__version__ = "0.1.0"

try:  # the clients need the engine (transformers); the kernels do not
    from mint.client import SamplingClient, ServiceClient, TrainingClient  # noqa: F401
except ImportError as _exc:  # pragma: no cover - only while the client package is being built
    if "mint.client" not in str(_exc):
        raise

__all__ = ["ServiceClient", "TrainingClient", "SamplingClient", "ops", "types", *_error_names]
