"""The engine: base models, the adapter pool, LoRA layers, the train step, the sampler and the optimizer.

Clients talk to an :class:`~mint.engine.engine.Engine`; the engine talks to :mod:`mint.ops`.
"""
