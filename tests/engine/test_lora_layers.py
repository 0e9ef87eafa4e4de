"""MultiLoraLinear and the adapter pool against plain PyTorch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mint.engine.adapter_pool import AdapterPool, AdapterSpec
from mint.engine.lora_layers import ATTN, MLP, LoraBatch, LoraContext, MultiLoraLinear


def test_lora_batch_segments_merge_neighbours():
    batch = LoraBatch([2, 2, -1, 0, 0, 2])
    indptr, adapters = batch.segments(3)
    assert indptr.tolist() == [0, 6, 9, 15, 18]
    assert adapters.tolist() == [2, -1, 0, 2]
    assert batch.active and not LoraBatch([-1, -1]).active


def _layers():
    torch.manual_seed(0)
    ctx = LoraContext()
    layers = {
        "model.layers.0.self_attn.q_proj": MultiLoraLinear(nn.Linear(12, 10, bias=False), ATTN, ctx, 2, 4),
        "model.layers.0.mlp.up_proj": MultiLoraLinear(nn.Linear(12, 7, bias=False), MLP, ctx, 2, 4),
    }
    return ctx, layers


def test_layer_matches_plain_lora_per_row():
    ctx, layers = _layers()
    pool = AdapterPool(layers, capacity=2, max_rank=4)
    a = pool.allocate(AdapterSpec(rank=3, kinds=frozenset({ATTN, MLP})))
    b = pool.allocate(AdapterSpec(rank=2, kinds=frozenset({MLP})))
    for slot in (a, b):
        for _, view in pool.parameters(slot):
            view.normal_()
    x = torch.randn(3, 5, 12)
    ctx.batch = LoraBatch([b, -1, a])
    for name, layer in layers.items():
        y = layer(x)
        base = layer.base(x)
        expected = base.clone()
        for row, slot in enumerate([b, -1, a]):
            if slot < 0 or layer.ranks[slot] == 0:
                continue
            r = int(layer.ranks[slot])
            expected[row] += float(layer.scales[slot]) * (x[row] @ layer.lora_a[slot, :r].T) @ layer.lora_b[slot, :r]
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5, msg=name)
    assert torch.equal(layers["model.layers.0.self_attn.q_proj"](x)[0], layers["model.layers.0.self_attn.q_proj"].base(x)[0])


def test_pool_grows_and_keeps_weights():
    _, layers = _layers()
    pool = AdapterPool(layers, capacity=1, max_rank=2)
    first = pool.allocate(AdapterSpec(rank=2, kinds=frozenset({ATTN, MLP})))
    pool.initialise(first, seed=0)
    for _, view in pool.parameters(first):
        view.add_(1.0)
    saved = pool.export(first)
    second = pool.allocate(AdapterSpec(rank=4, kinds=frozenset({MLP})))  # needs a new slot and a larger rank
    assert pool.capacity >= 2 and pool.max_rank == 4 and second != first
    for name, tensor in pool.export(first).items():
        assert torch.equal(tensor, saved[name]), name
    assert [n for n, _ in pool.parameters(second)] == ["model.layers.0.mlp.up_proj.lora_a", "model.layers.0.mlp.up_proj.lora_b"]
    pool.free(first)
    assert first not in pool and int(layers["model.layers.0.mlp.up_proj"].ranks[first]) == 0


def test_initialise_is_seeded_and_b_starts_at_zero():
    _, layers = _layers()
    pool = AdapterPool(layers, capacity=2, max_rank=4)
    spec = AdapterSpec(rank=4, kinds=frozenset({ATTN, MLP}))
    s1, s2 = pool.allocate(spec), pool.allocate(spec)
    pool.initialise(s1, seed=7)
    pool.initialise(s2, seed=7)
    w1, w2 = pool.export(s1), pool.export(s2)
    for name in w1:
        assert torch.equal(w1[name], w2[name])
        if name.endswith("lora_b"):
            assert not w1[name].any()
        else:
            assert w1[name].abs().max() <= 1 / 12**0.5


def test_load_rejects_mismatched_tensors():
    _, layers = _layers()
    pool = AdapterPool(layers, capacity=2, max_rank=4)
    slot = pool.allocate(AdapterSpec(rank=2, kinds=frozenset({MLP})))
    good = pool.export(slot)
    with pytest.raises(ValueError, match="missing"):
        pool.load(slot, {})
    bad = dict(good)
    bad["model.layers.0.mlp.up_proj.lora_a"] = torch.zeros(3, 12)
    with pytest.raises(ValueError, match="shape"):
        pool.load(slot, bad)


def test_decode_rows_match_the_segmented_path_and_training_keeps_it():
    """LoraBatch(decode=True) (per-row kernel, one token per row) gives the segmented ops' result; under
    autograd the layer uses the differentiable ops instead."""
    ctx, layers = _layers()
    pool = AdapterPool(layers, capacity=2, max_rank=4)
    a = pool.allocate(AdapterSpec(rank=3, kinds=frozenset({ATTN, MLP})))
    b = pool.allocate(AdapterSpec(rank=2, kinds=frozenset({MLP})))
    for slot in (a, b):
        for _, view in pool.parameters(slot):
            view.normal_()
    slots = [b, -1, a, a, b, -1, a]
    x = torch.randn(len(slots), 1, 12)
    for layer in layers.values():
        ctx.batch = LoraBatch(slots)
        with torch.no_grad():
            expected = layer(x)
        ctx.batch = LoraBatch(slots, decode=True)
        with torch.no_grad(), torch.profiler.profile() as prof:
            got = layer(x)
        assert any(e.name == "mint::lora_rows_" for e in prof.events())  # the per-row kernel did run
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        xg = x.clone().requires_grad_()
        out = layer(xg)  # grad mode: differentiable path
        out.sum().backward()
        torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-5)
        assert xg.grad is not None
    ctx.batch = None
