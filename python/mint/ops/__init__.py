"""Typed wrappers over torch.ops.mint: multi-adapter LoRA, fused AdamW and fused sampling.

Importing this package registers the fake (meta) kernels and the autograd formulas of every op.
"""

from mint._loader import load_extension

load_extension()

from mint.ops.adam import FusedAdamW, fused_adamw  # noqa: E402
from mint.ops.lora import (  # noqa: E402
    lora_apply,
    lora_apply_,
    lora_apply_by_token,
    lora_expand,
    lora_expand_,
    lora_rows_,
    lora_shrink,
    segments_from_adapter_ids,
)
from mint.ops.sampling import sample  # noqa: E402

__all__ = [
    "FusedAdamW",
    "fused_adamw",
    "lora_apply",
    "lora_apply_",
    "lora_apply_by_token",
    "lora_expand",
    "lora_expand_",
    "lora_rows_",
    "lora_shrink",
    "sample",
    "segments_from_adapter_ids",
]
