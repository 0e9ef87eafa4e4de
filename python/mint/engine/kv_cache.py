"""A KV cache layer with spare capacity: decode steps write in place instead of concatenating.

transformers' ``DynamicLayer`` grows by ``torch.cat`` at every step, copying the whole cache of every layer
once per generated token. ``SlabLayer`` keeps keys and values in buffers ``[B, H, capacity, D]`` and exposes
the first ``length`` positions as views; a step writes one column, and the buffers grow geometrically when
full. Rows leaving or joining a decode batch (continuous batching) rebuild the buffers once.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

_HEADROOM = 64  # positions allocated beyond what is needed when a buffer is (re)built


def _capacity(needed: int) -> int:
    """Room for ``needed`` positions plus headroom, rounded up to a multiple of the headroom."""
    return -(-(needed + _HEADROOM) // _HEADROOM) * _HEADROOM


class SlabLayer(DynamicLayer):
    """One attention layer's cache: ``keys`` / ``values`` are views ``[B, H, length, D]`` of larger buffers.

    Behaves as a ``DynamicLayer`` for the model (``update`` returns all cached positions); positions past
    ``length`` are never read.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.length = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def _set(self, k: torch.Tensor, v: torch.Tensor, length: int) -> None:
        self._k, self._v, self.length = k, v, length
        self.keys = k[:, :, :length]
        self.values = v[:, :, :length]
        self.is_initialized = True

    def _alloc(self, like: torch.Tensor, rows: int, capacity: int) -> torch.Tensor:
        return like.new_empty((rows, like.shape[1], capacity, like.shape[3]))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append ``key_states`` / ``value_states`` [B, H, n, D]; returns all cached keys and values."""
        n = key_states.shape[-2]
        if self._k is None:
            self.device = key_states.device
            cap = _capacity(n)
            self._set(self._alloc(key_states, key_states.shape[0], cap),
                      self._alloc(value_states, value_states.shape[0], cap), 0)
        elif self.length + n > self._k.shape[2]:
            cap = _capacity(max(2 * self._k.shape[2], self.length + n))
            k, v = self._alloc(self._k, self._k.shape[0], cap), self._alloc(self._v, self._v.shape[0], cap)
            k[:, :, : self.length] = self.keys
            v[:, :, : self.length] = self.values
            self._set(k, v, self.length)
        self._k[:, :, self.length : self.length + n] = key_states
        self._v[:, :, self.length : self.length + n] = value_states
        self._set(self._k, self._v, self.length + n)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def capacity(self) -> int:
        """Positions the buffers hold before the next growth (0 before the first update)."""
        return 0 if self._k is None else self._k.shape[2]

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if tokens_to_remove and self._k is not None:
            self._set(self._k, self._v, max(0, self.length + tokens_to_remove))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._k is not None:
            self._set(self._k.repeat_interleave(repeats, dim=0), self._v.repeat_interleave(repeats, dim=0),
                      self.length)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.select(indices, 0)

    def select(self, indices: torch.Tensor, first: int) -> None:
        """Keep the rows ``indices`` (int64 [R']) and drop the first ``first`` positions of every row."""
        if self._k is None:
            return
        length = self.length - first
        cap = _capacity(length)
        k, v = self._alloc(self._k, len(indices), cap), self._alloc(self._v, len(indices), cap)
        k[:, :, :length] = self.keys.index_select(0, indices)[:, :, first:]
        v[:, :, :length] = self.values.index_select(0, indices)[:, :, first:]
        self._set(k, v, length)

    def append_rows(self, other: "SlabLayer") -> None:
        """Add ``other``'s rows after this layer's, both right-aligned to the longer length (left padding
        is zero-filled; the caller masks it)."""
        length = max(self.length, other.length)
        cap = _capacity(length)
        rows = self._k.shape[0] + other._k.shape[0]
        k, v = self._alloc(self._k, rows, cap), self._alloc(self._v, rows, cap)
        start = 0
        for layer in (self, other):
            end = start + layer._k.shape[0]
            pad = length - layer.length
            k[start:end, :, :pad] = 0
            v[start:end, :, :pad] = 0
            k[start:end, :, pad:length] = layer.keys
            v[start:end, :, pad:length] = layer.values
            start = end
        self._set(k, v, length)


def slab_cache(config) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose full-attention layers are ``SlabLayer`` (others unchanged)."""
    cache = DynamicCache(config=config)
    cache.layers = [SlabLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def all_slab(cache: DynamicCache) -> bool:
    """True when every layer of ``cache`` is a ``SlabLayer`` (rows of two such caches can be merged)."""
    return all(isinstance(layer, SlabLayer) for layer in cache.layers)
