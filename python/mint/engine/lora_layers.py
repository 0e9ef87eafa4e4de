"""Multi-adapter LoRA layers: a frozen nn.Linear plus slices of an adapter pool, applied with mint ops."""

from __future__ import annotations

import torch
from torch import nn

from mint import ops

ATTN = "attn"
MLP = "mlp"
UNEMBED = "unembed"


class LoraBatch:
    """Which adapter slot each row of the current forward pass uses (-1 = the bare base model).

    Layers see activations [B, L, features]; the segments over the B*L flattened tokens depend on L (the
    unembedding may see fewer positions than the attention layers), so they are built per L and cached.

    ``decode=True`` marks a one-token-per-row decode step: float32 CPU layers then apply each row's adapter
    with the per-row kernel ``mint::lora_rows_`` (no GEMM per slot; a row's result does not depend on the
    other rows), using ``slot_tensor`` (int64 [B], built once per forward).
    """

    def __init__(self, row_slots: list[int], decode: bool = False):
        self.row_slots = [int(s) for s in row_slots]
        self._segments: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.active = any(s >= 0 for s in self.row_slots)
        self.decode = decode
        self.slot_tensor = torch.tensor(self.row_slots, dtype=torch.int64) if decode else None

    def segments(self, row_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(seg_indptr int64 [S+1], seg_adapter int64 [S]) for rows of ``row_len`` tokens; equal neighbours merge."""
        cached = self._segments.get(row_len)
        if cached is None:
            indptr, adapters = [0], []
            for slot in self.row_slots:
                if adapters and adapters[-1] == slot:
                    indptr[-1] += row_len
                else:
                    adapters.append(slot)
                    indptr.append(indptr[-1] + row_len)
            cached = (torch.tensor(indptr, dtype=torch.int64), torch.tensor(adapters, dtype=torch.int64))
            self._segments[row_len] = cached
        return cached


class LoraContext:
    """Shared, mutable holder of the current LoraBatch, read by every MultiLoraLinear of a model."""

    def __init__(self):
        self.batch: LoraBatch | None = None


class MultiLoraLinear(nn.Module):
    """``y = base(x) + scale[n] * (x @ A[n][:r]^T) @ B[n][:r]`` for the adapter slot n of each token.

    lora_a: [N, R, in], lora_b: [N, R, out] (rank-major), ranks: int64 [N], scales: float32 [N].
    Slots with rank 0 leave this layer unchanged (e.g. an adapter that does not train attention).
    """

    def __init__(self, base: nn.Linear, kind: str, context: LoraContext, capacity: int, max_rank: int):
        super().__init__()
        self.base = base
        self.kind = kind
        self.context = context
        self.in_features = base.in_features
        self.out_features = base.out_features
        dtype = base.weight.dtype
        self.lora_a = torch.zeros(capacity, max_rank, self.in_features, dtype=dtype)
        self.lora_b = torch.zeros(capacity, max_rank, self.out_features, dtype=dtype)
        self.ranks = torch.zeros(capacity, dtype=torch.int64)
        self.scales = torch.zeros(capacity, dtype=torch.float32)

    def resize(self, capacity: int, max_rank: int) -> None:
        """Reshape the pool to ``capacity`` slots of ``max_rank`` rows, keeping the weights that still fit."""
        n, r = min(capacity, self.lora_a.shape[0]), min(max_rank, self.lora_a.shape[1])
        a = self.lora_a.new_zeros(capacity, max_rank, self.in_features)
        b = self.lora_b.new_zeros(capacity, max_rank, self.out_features)
        a[:n, :r] = self.lora_a[:n, :r]
        b[:n, :r] = self.lora_b[:n, :r]
        ranks = self.ranks.new_zeros(capacity)
        scales = self.scales.new_zeros(capacity)
        ranks[:n] = self.ranks[:n].clamp(max=max_rank)
        scales[:n] = self.scales[:n]
        self.lora_a, self.lora_b, self.ranks, self.scales = a, b, ranks, scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        batch = self.context.batch
        if batch is None or not batch.active:
            return y
        rows = len(batch.row_slots)
        if x.dim() != 3 or x.shape[0] != rows:
            raise RuntimeError(f"LoRA layer got activations {tuple(x.shape)} for a batch of {rows} rows")
        if (batch.decode and x.shape[1] == 1 and x.device.type == "cpu" and x.dtype == torch.float32
                and y.dtype == torch.float32 and not torch.is_grad_enabled()):
            # rows whose slot has rank 0 in this layer are skipped by the kernel
            ops.lora_rows_(y.view(rows, self.out_features), x.reshape(rows, self.in_features), self.lora_a,
                           self.lora_b, batch.slot_tensor, self.ranks, self.scales)
            return y
        if not self.has_adapters:
            return y
        seg_indptr, seg_adapter = batch.segments(x.shape[1])
        # y is the base layer's fresh output and nothing else reads it: add the delta in place
        apply = ops.lora_apply_ if y.is_contiguous() else ops.lora_apply
        return apply(y, x, self.lora_a, self.lora_b, seg_indptr, seg_adapter, self.ranks, self.scales)

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (some transformers helpers read ``lm_head.weight``)."""
        return self.base.weight

    @property
    def has_adapters(self) -> bool:
        return bool(self.ranks.any())

    def extra_repr(self) -> str:
        return f"kind={self.kind}, in={self.in_features}, out={self.out_features}, pool={tuple(self.lora_a.shape[:2])}"


def _kind_of(name: str) -> str | None:
    parts = name.split(".")
    if any(p in ("self_attn", "attention", "attn") for p in parts):
        return ATTN
    if any(p in ("mlp", "feed_forward", "ffn") for p in parts):
        return MLP
    return None


def inject_lora(model: nn.Module, context: LoraContext, capacity: int, max_rank: int) -> dict[str, MultiLoraLinear]:
    """Replace the attention / MLP projections and the unembedding of ``model`` with MultiLoraLinear.

    Returns the LoRA layers by module name, in a fixed order (the model's module order).
    """
    targets: list[tuple[str, str]] = []
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if module is output:
            targets.append((name, UNEMBED))
            continue
        kind = _kind_of(name)
        if kind is not None:
            targets.append((name, kind))
    layers: dict[str, MultiLoraLinear] = {}
    for name, kind in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MultiLoraLinear(getattr(parent, child), kind, context, capacity, max_rank)
        setattr(parent, child, layer)
        layers[name] = layer
    return layers
