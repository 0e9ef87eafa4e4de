"""The adapter pool: every resident LoRA adapter of one base model, one slot each, across all LoRA layers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mint.engine.lora_layers import MultiLoraLinear

LORA_ALPHA = 32.0


@dataclass
class AdapterSpec:
    """What an adapter trains: its rank, scaling and the layer kinds (attn / mlp / unembed) it covers."""

    rank: int
    kinds: frozenset[str]
    alpha: float = LORA_ALPHA

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_metadata(self) -> dict[str, str]:
        return {"rank": str(self.rank), "alpha": repr(self.alpha), "kinds": ",".join(sorted(self.kinds))}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "AdapterSpec":
        kinds = frozenset(k for k in meta.get("kinds", "").split(",") if k)
        return cls(rank=int(meta["rank"]), kinds=kinds, alpha=float(meta.get("alpha", LORA_ALPHA)))


@dataclass
class _Slot:
    spec: AdapterSpec
    names: list[str] = field(default_factory=list)


class AdapterPool:
    """Allocates slots in the pool tensors of every MultiLoraLinear and moves adapter weights in and out.

    Slot ``n`` of a layer uses rows ``[0, rank)`` of ``lora_a[n]`` ([R, in]) and ``lora_b[n]`` ([R, out]);
    a layer whose kind the adapter does not train has rank 0 for that slot.
    """

    def __init__(self, layers: dict[str, MultiLoraLinear], capacity: int = 4, max_rank: int = 8):
        self.layers = layers
        self.capacity = capacity
        self.max_rank = max_rank
        self._slots: dict[int, _Slot] = {}
        for layer in layers.values():
            layer.resize(capacity, max_rank)

    def __contains__(self, slot: int) -> bool:
        return slot in self._slots

    @property
    def num_resident(self) -> int:
        return len(self._slots)

    def spec(self, slot: int) -> AdapterSpec:
        return self._slots[slot].spec

    def _ensure_room(self, rank: int) -> None:
        capacity = self.capacity * 2 if len(self._slots) >= self.capacity else self.capacity
        max_rank = max(self.max_rank, rank)
        if (capacity, max_rank) != (self.capacity, self.max_rank):
            for layer in self.layers.values():
                layer.resize(capacity, max_rank)
            self.capacity, self.max_rank = capacity, max_rank

    def allocate(self, spec: AdapterSpec) -> int:
        """Reserve a slot for an adapter described by ``spec`` (weights zero until initialised or loaded)."""
        self._ensure_room(spec.rank)
        slot = next(i for i in range(self.capacity) if i not in self._slots)
        names = [n for n, layer in self.layers.items() if layer.kind in spec.kinds]
        self._slots[slot] = _Slot(spec=spec, names=names)
        for name, layer in self.layers.items():
            enabled = layer.kind in spec.kinds
            layer.lora_a[slot].zero_()
            layer.lora_b[slot].zero_()
            layer.ranks[slot] = spec.rank if enabled else 0
            layer.scales[slot] = spec.scale if enabled else 0.0
        return slot

    def free(self, slot: int) -> None:
        """Release a slot; its layers stop applying it."""
        if self._slots.pop(slot, None) is None:
            return
        for layer in self.layers.values():
            layer.ranks[slot] = 0
            layer.scales[slot] = 0.0
            layer.lora_a[slot].zero_()
            layer.lora_b[slot].zero_()

    def initialise(self, slot: int, seed: int | None) -> None:
        """LoRA's usual start: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0, so the adapter starts as the identity."""
        gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        rank = self._slots[slot].spec.rank
        for name in self._slots[slot].names:
            layer = self.layers[name]
            bound = 1.0 / math.sqrt(layer.in_features)
            a = torch.rand(rank, layer.in_features, generator=gen, dtype=torch.float32) * (2 * bound) - bound
            layer.lora_a[slot, :rank] = a.to(layer.lora_a.dtype)
            layer.lora_b[slot].zero_()

    def parameters(self, slot: int) -> list[tuple[str, torch.Tensor]]:
        """The trainable views of a slot, in a fixed order: (``<layer>.lora_a`` [r, in], ``<layer>.lora_b`` [r, out])."""
        rank = self._slots[slot].spec.rank
        out = []
        for name in self._slots[slot].names:
            layer = self.layers[name]
            out.append((f"{name}.lora_a", layer.lora_a[slot, :rank]))
            out.append((f"{name}.lora_b", layer.lora_b[slot, :rank]))
        return out

    def export(self, slot: int) -> dict[str, torch.Tensor]:
        """A copy of the slot's weights, keyed as in :meth:`parameters`."""
        return {name: t.detach().clone().contiguous() for name, t in self.parameters(slot)}

    def load(self, slot: int, tensors: dict[str, torch.Tensor]) -> None:
        """Overwrite the slot's weights with ``tensors`` (keys and shapes as in :meth:`parameters`)."""
        params = self.parameters(slot)
        expected = {name for name, _ in params}
        if set(tensors) != expected:
            missing = sorted(expected - set(tensors))[:3]
            extra = sorted(set(tensors) - expected)[:3]
            raise ValueError(f"adapter tensors do not match this model (missing {missing}, unexpected {extra})")
        for name, view in params:
            src = tensors[name]
            if tuple(src.shape) != tuple(view.shape):
                raise ValueError(f"adapter tensor {name} has shape {tuple(src.shape)}, expected {tuple(view.shape)}")
        for name, view in params:
            view.copy_(tensors[name])
