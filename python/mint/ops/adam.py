"""Fused AdamW op (placeholder until the CPU kernel lands)."""


def fused_adamw(*args, **kwargs):
    raise NotImplementedError("mint.ops.adam is not implemented yet")
