"""SamplingClient on a tiny random model: greedy against a cache-free reference, stops, seeds, KV cache."""

from __future__ import annotations

import asyncio

import pytest
import torch

import mint
from mint import types
from tests.reference_lora import ReferenceLora

PROMPT = [1, 40, 41, 42, 43, 44]


@pytest.fixture(scope="module")
def service():
    return mint.ServiceClient()


@pytest.fixture(scope="module")
def base_sampler(service, tiny_llama):
    return service.create_sampling_client(base_model=tiny_llama)


def test_greedy_matches_cache_free_reference(base_sampler, tiny_llama):
    out = base_sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=12, temperature=0.0)).result()
    ref = ReferenceLora(tiny_llama, {}, scale=1.0).greedy(PROMPT, 12)
    assert out.sequences[0].tokens == ref
    assert out.sequences[0].stop_reason == "length"
    assert len(out.sequences[0].logprobs) == 12


def test_temperature_zero_gives_identical_samples(base_sampler):
    out = base_sampler.sample(PROMPT, 3, types.SamplingParams(max_tokens=8, temperature=0.0)).result()
    assert len(out.sequences) == 3
    assert out.sequences[0].tokens == out.sequences[1].tokens == out.sequences[2].tokens


def test_seed_reproducible_and_samples_distinct(base_sampler):
    params = types.SamplingParams(max_tokens=10, temperature=1.5, seed=1234)
    a = base_sampler.sample(PROMPT, 4, params).result()
    b = base_sampler.sample(PROMPT, 4, params).result()
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]
    assert len({tuple(s.tokens) for s in a.sequences}) > 1


def test_stop_token_ids_stop_strings_and_stop_ids(base_sampler, tiny_llama):
    greedy = base_sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=12, temperature=0.0)).result()
    tokens = greedy.sequences[0].tokens
    stop_at = tokens[4]
    first = tokens.index(stop_at)
    for params in (
        types.SamplingParams(max_tokens=12, temperature=0.0, stop_token_ids=[stop_at]),
        types.SamplingParams(max_tokens=12, temperature=0.0, stop=[stop_at]),
        types.SamplingParams(max_tokens=12, temperature=0.0, stop=[stop_at], stop_token_ids=[stop_at]),
    ):
        seq = base_sampler.sample(PROMPT, 1, params).result().sequences[0]
        assert seq.tokens == tokens[: first + 1]
        assert seq.stop_reason == "stop"
    tok = base_sampler.get_tokenizer()
    text = tok.decode(tokens[:6])
    stop_string = tok.decode(tokens[3:6])
    seq = base_sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=12, temperature=0.0, stop=[stop_string])).result()
    seq = seq.sequences[0]
    assert seq.stop_reason == "stop"
    assert stop_string in tok.decode(seq.tokens) and len(seq.tokens) <= 6
    assert text.startswith(tok.decode(seq.tokens))


def test_prompt_is_not_recomputed(base_sampler):
    """With a KV cache the first layer sees the prompt once, then one token per live row per step."""
    engine = base_sampler._engine
    seen = []
    layer = engine.model.model.layers[0]
    handle = layer.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0] * inp[0].shape[1]))
    try:
        base_sampler.sample(PROMPT, 3, types.SamplingParams(max_tokens=5, temperature=1.0, seed=1)).result()
    finally:
        handle.remove()
    assert seen == [len(PROMPT)] + [3] * 4


def test_sampling_params_required_and_validated(base_sampler):
    with pytest.raises(mint.BadRequestError, match="sampling_params"):
        base_sampler.sample(PROMPT, 1, None).result()
    with pytest.raises(mint.BadRequestError, match="max_tokens"):
        base_sampler.sample(PROMPT, 1, {"temperature": 1.0}).result()
    with pytest.raises(mint.BadRequestError, match="prompt"):
        base_sampler.sample([1, 2, 100_000], 1, types.SamplingParams(max_tokens=2)).result()
    with pytest.raises(mint.BadRequestError, match="num_samples"):
        base_sampler.sample(PROMPT, 0, types.SamplingParams(max_tokens=2)).result()


def test_trained_adapter_sampling_and_logprobs(service, tiny_llama):
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=0)
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(PROMPT + [50, 51, 52]),
        loss_fn_inputs={"target_tokens": PROMPT[1:] + [50, 51, 52, 53], "weights": [0.0] * 5 + [1.0] * 4},
    )
    for _ in range(30):
        trainer.forward_backward([datum]).result()
        trainer.optim_step(types.AdamParams(learning_rate=5e-3)).result()
    sampler = trainer.save_weights_and_get_sampling_client("memorised")
    assert sampler.model_path.startswith("mint://") and "/sampler_weights/memorised" in sampler.model_path
    out = sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=4, temperature=0.0)).result()
    assert out.sequences[0].tokens == [50, 51, 52, 53]
    # Sampled logprobs at temperature 1 (no filters) equal the training forward's logprobs of those tokens.
    seq = sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=6, temperature=1.0, seed=3)).result().sequences[0]
    full = PROMPT + seq.tokens
    fwd = trainer.forward(
        [types.Datum(model_input=types.ModelInput.from_ints(full[:-1]),
                     loss_fn_inputs={"target_tokens": full[1:]})]
    ).result()
    lp = fwd.loss_fn_outputs[0]["logprobs"].to_torch()[len(PROMPT) - 1 :]
    torch.testing.assert_close(torch.tensor(seq.logprobs), lp, rtol=1e-4, atol=1e-4)
    # A new client from the saved path gives the same greedy tokens.
    again = service.create_sampling_client(model_path=sampler.model_path)
    out2 = again.sample(PROMPT, 1, types.SamplingParams(max_tokens=4, temperature=0.0)).result()
    assert out2.sequences[0].tokens == [50, 51, 52, 53]


def test_sample_async(base_sampler):
    async def run():
        return await base_sampler.sample_async(PROMPT, 2, types.SamplingParams(max_tokens=3, seed=0))

    out = asyncio.run(run())
    assert len(out.sequences) == 2 and all(len(s.tokens) == 3 for s in out.sequences)


def test_bad_model_path(service):
    with pytest.raises(mint.BadRequestError, match="model_path"):
        service.create_sampling_client(model_path="mint://../etc/passwd")
    with pytest.raises(mint.NotFoundError):
        service.create_sampling_client(model_path="mint://nosuchrun/sampler_weights/x")


def test_requests_queued_together_are_batched_and_batch_invariant(service, base_sampler, tiny_llama):
    """Different prompt lengths and adapters decoded in one batch give what each gives alone."""
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=1)
    engine = trainer._engine
    slot = engine.adapter(trainer.model_id).slot
    engine.submit(lambda: [v.normal_(0, 0.2) for _, v in engine.pool.parameters(slot)]).result()
    tuned = trainer.save_weights_and_get_sampling_client("batched")
    prompts = [PROMPT, [1, 60, 61], PROMPT + [70, 71, 72, 73]]
    greedy = types.SamplingParams(max_tokens=6, temperature=0.0)
    seeded = types.SamplingParams(max_tokens=6, temperature=1.0, seed=99)
    cases = [(s, p, params) for s in (base_sampler, tuned) for p in prompts for params in (greedy, seeded)]
    alone = [s.sample(p, 2, params).result() for s, p, params in cases]
    gate = engine.submit(__import__("time").sleep, 0.5)  # hold the worker so the requests queue up together
    futures = [s.sample(p, 2, params) for s, p, params in cases]
    gate.result()
    together = [f.result() for f in futures]
    for a, b in zip(alone, together):
        assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]
        for sa, sb in zip(a.sequences, b.sequences):
            torch.testing.assert_close(torch.tensor(sa.logprobs), torch.tensor(sb.logprobs), rtol=1e-4, atol=1e-4)
    assert [s.tokens for s in alone[0].sequences] != [s.tokens for s in alone[len(cases) // 2].sequences]


def test_continuous_batching_new_request_joins_and_finishes_first(base_sampler):
    """A request submitted while a long one decodes joins the running batch and returns before it ends."""
    engine = base_sampler._engine
    layer = engine.model.model.layers[0]
    handle = layer.register_forward_hook(lambda m, i, o: __import__("time").sleep(0.01))
    long_params = types.SamplingParams(max_tokens=60, temperature=1.0, seed=5)
    short_params = types.SamplingParams(max_tokens=3, temperature=1.0, seed=6)
    try:
        long_alone = base_sampler.sample(PROMPT, 2, long_params).result()
        short_alone = base_sampler.sample([1, 70, 71], 1, short_params).result()
        long_f = base_sampler.sample(PROMPT, 2, long_params)
        import time

        time.sleep(0.2)  # the long request is decoding now
        short_f = base_sampler.sample([1, 70, 71], 1, short_params)
        short = short_f.result(timeout=30)
        assert not long_f.done()
        long = long_f.result(timeout=60)
    finally:
        handle.remove()
    assert [s.tokens for s in short.sequences] == [s.tokens for s in short_alone.sequences]
    assert [s.tokens for s in long.sequences] == [s.tokens for s in long_alone.sequences]


def test_released_sampler_keeps_running_requests(service, tiny_llama):
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=2, seed=3)
    sampler = trainer.save_weights_and_get_sampling_client("released")
    expected = sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=20, temperature=0.0)).result()
    future = sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=20, temperature=0.0))
    del sampler
    import gc

    gc.collect()
    assert future.result().sequences[0].tokens == expected.sequences[0].tokens
