"""SlabLayer (KV cache with spare capacity) against plain concatenation, and DecodeBatch on top of it."""

from __future__ import annotations

import torch

from mint.engine.kv_cache import SlabLayer


def kv(rows, length, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 3, length, 4, generator=gen), torch.randn(rows, 3, length, 4, generator=gen)


def test_update_writes_in_place_and_grows_like_concatenation():
    layer = SlabLayer()
    k0, v0 = kv(2, 5, 0)
    keys, values = layer.update(k0, v0)
    assert torch.equal(keys, k0) and torch.equal(values, v0)
    cap = layer.capacity()
    assert cap >= 5 + 32
    ref_k, ref_v = k0, v0
    buffer = layer._k
    grown = False
    for step in range(cap + 10):  # past the first capacity: the buffers grow once
        k, v = kv(2, 1, step + 1)
        keys, values = layer.update(k, v)
        ref_k, ref_v = torch.cat([ref_k, k], dim=2), torch.cat([ref_v, v], dim=2)
        if layer._k is not buffer:
            grown = True
            buffer = layer._k
        assert keys.data_ptr() == buffer.data_ptr()  # a view of the buffer, not a copy
    assert grown and layer.capacity() > cap
    assert torch.equal(keys, ref_k) and torch.equal(values, ref_v)
    assert layer.get_seq_length() == ref_k.shape[2] == layer.keys.shape[2]


def test_select_rows_and_drop_leading_columns():
    layer = SlabLayer()
    k, v = kv(4, 9, 3)
    layer.update(k, v)
    layer.select(torch.tensor([3, 1]), 2)
    assert torch.equal(layer.keys, k[[3, 1], :, 2:]) and torch.equal(layer.values, v[[3, 1], :, 2:])
    k1, v1 = kv(2, 1, 4)
    keys, _ = layer.update(k1, v1)  # still writable after the rebuild
    assert torch.equal(keys, torch.cat([k[[3, 1], :, 2:], k1], dim=2))


def test_append_rows_right_aligns_with_zero_left_padding():
    short, long = SlabLayer(), SlabLayer()
    ks, vs = kv(2, 3, 5)
    kl, vl = kv(1, 7, 6)
    short.update(ks, vs)
    long.update(kl, vl)
    short.append_rows(long)
    assert short.keys.shape == (3, 3, 7, 4)
    assert torch.equal(short.keys[:2, :, :4], torch.zeros(2, 3, 4, 4))  # padding is zero, never garbage
    assert torch.equal(short.values[:2, :, :4], torch.zeros(2, 3, 4, 4))
    assert torch.equal(short.keys[:2, :, 4:], ks) and torch.equal(short.values[:2, :, 4:], vs)
    assert torch.equal(short.keys[2:], kl) and torch.equal(short.values[2:], vl)
    # and the other way round: the joining rows are the shorter ones
    long2, short2 = SlabLayer(), SlabLayer()
    long2.update(kl, vl)
    short2.update(ks, vs)
    long2.append_rows(short2)
    assert torch.equal(long2.keys[0], kl[0]) and torch.equal(long2.keys[1:, :, 4:], ks)
    assert torch.equal(long2.keys[1:, :, :4], torch.zeros(2, 3, 4, 4))


def test_decode_batch_rows_leave_and_join_against_cache_free_reference(tiny_llama):
    """Greedy rows of very different prompt lengths, one adapter and the base model, leaving and joining
    mid-batch while the cache grows past its capacity, give the tokens of a cache-free reference."""
    import random

    import mint
    from mint import types
    from mint.engine.sampler import DecodeBatch, SampleRequest
    from tests.adapter_access import engine_weights, randomise_adapter
    from tests.reference_lora import ReferenceLora

    service = mint.ServiceClient()
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=7)
    randomise_adapter(trainer, seed=11, std=0.2)
    sampler = trainer.save_weights_and_get_sampling_client("kv-cache")
    engine = trainer._engine
    rng = random.Random(0)

    def request(slot, length, tokens):
        prompt = [1] + [rng.randrange(3, 250) for _ in range(length - 1)]
        return SampleRequest(slot, prompt, 1, types.SamplingParams(max_tokens=tokens, temperature=0.0), seed=0)

    first = [request(sampler._slot, 70, 4), request(-1, 5, 150)]  # the long prompt leaves first
    later = [request(sampler._slot, 40, 20), request(-1, 2, 30), request(sampler._slot, 9, 12)]

    def run():
        batch = DecodeBatch(engine.model, engine.context, engine.tokenizer, engine.max_context)
        batch.admit([(r, i) for i, r in enumerate(first)])
        capacities = {batch.cache.layers[0].capacity()}
        results = {}
        while batch.num_rows:
            for i, response in batch.step():
                results[i] = response
                if i == 0:  # the first request just left: the others join the running batch
                    batch.admit([(r, 2 + j) for j, r in enumerate(later)])
            if batch.cache is not None:
                capacities.add(batch.cache.layers[0].capacity())
        return results, capacities

    results, capacities = engine.submit(run).result()
    assert len(capacities) > 1  # the buffers were rebuilt / grown on the way
    tuned = ReferenceLora(tiny_llama, engine_weights(trainer), scale=32.0 / 4)
    base = ReferenceLora(tiny_llama, {}, scale=1.0)
    for i, r in enumerate(first + later):
        ref = (tuned if r.slot >= 0 else base).greedy(r.prompt, r.params.max_tokens)
        assert results[i].sequences[0].tokens == ref, i
