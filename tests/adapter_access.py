"""Test helpers that read or set a training client's adapter inside the engine (through its worker)."""

from __future__ import annotations

import torch


def engine_weights(trainer) -> dict[str, torch.Tensor]:
    """A copy of the client's adapter weights, keyed ``<module>.lora_a`` / ``<module>.lora_b``."""
    engine = trainer._engine
    slot = engine.adapter(trainer.model_id).slot
    return engine.submit(engine.pool.export, slot).result()


def engine_grads(trainer) -> dict[str, torch.Tensor]:
    """A copy of the client's accumulated gradients, keyed like :func:`engine_weights`."""
    state = trainer._engine.adapter(trainer.model_id).optimizer
    return {n: g.clone() for n, g in zip(state.names, state.grads)}


def randomise_adapter(trainer, seed: int, std: float = 0.05) -> None:
    """Give every LoRA tensor of the client random values (B starts at zero, so gradients reach A)."""
    engine = trainer._engine
    slot = engine.adapter(trainer.model_id).slot

    def randomise():
        gen = torch.Generator().manual_seed(seed)
        for _, view in engine.pool.parameters(slot):
            view.copy_(torch.randn(view.shape, generator=gen) * std)

    engine.submit(randomise).result()
