"""Multi-adapter LoRA ops (placeholder until the CPU kernels land)."""


def _missing(*args, **kwargs):
    raise NotImplementedError("mint.ops.lora is not implemented yet")


lora_shrink = lora_expand = lora_apply = segments_from_adapter_ids = _missing
