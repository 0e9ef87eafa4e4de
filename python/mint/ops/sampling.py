"""Fused sampling op (placeholder until the CPU kernel lands)."""


def sample(*args, **kwargs):
    raise NotImplementedError("mint.ops.sampling is not implemented yet")
