"""The unmodified public Tinker SDK (``import tinker``, pinned 0.38.0) training and sampling through
``mint serve``: the SFT loop of the Tinker docs, checked against mint's in-process clients."""

from __future__ import annotations

import os

import pytest

tinker = pytest.importorskip("tinker")
from tinker import types  # noqa: E402

import mint  # noqa: E402
from mint import storage  # noqa: E402
from tests.server.running import ALICE  # noqa: E402

os.environ.setdefault("TINKER_TELEMETRY", "0")


def _datum(tokens: list[int]) -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


def test_sft_loop_trains_and_samples(server, tiny_llama):
    capabilities = tinker.RestClient(base_url=server.url, api_key=ALICE).get_server_capabilities().result()
    assert [m.model_name for m in capabilities.supported_models] == [tiny_llama]
    service = tinker.ServiceClient(base_url=server.url, api_key=ALICE)
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=8, seed=0).result()
    tokenizer = trainer.get_tokenizer()
    data = [_datum(tokenizer.encode(text)) for text in ("the cat sat on the mat", "mint serves tinker")]

    losses = []
    for _ in range(5):
        fwd_bwd = trainer.forward_backward(data, "cross_entropy")
        step = trainer.optim_step(types.AdamParams(learning_rate=1e-2))
        out = fwd_bwd.result()
        step.result()
        losses.append(out.metrics["loss:sum"])
        assert len(out.loss_fn_outputs) == 2
        assert out.loss_fn_outputs[1]["logprobs"].shape == [len(data[1].model_input.to_ints())]
    assert losses[-1] < 0.8 * losses[0] and losses == sorted(losses, reverse=True), losses

    sampler = trainer.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints(tokenizer.encode("the cat"))
    result = sampler.sample(prompt, num_samples=3, sampling_params=types.SamplingParams(max_tokens=6, seed=1)).result()
    assert len(result.sequences) == 3
    for seq in result.sequences:
        assert 1 <= len(seq.tokens) <= 6 and seq.stop_reason in ("stop", "length")
        assert len(seq.logprobs) == len(seq.tokens)
    assert len({s.sequence_id for s in result.sequences}) == 3
    service.close("success").result()


def test_results_match_in_process_mint(server, tiny_llama):
    """Same seed, same data: the server's forward log-probs and a greedy sample equal what mint's
    in-process clients compute (the HTTP + protobuf path changes nothing)."""
    tokens = list(range(40, 60))
    service = tinker.ServiceClient(base_url=server.url, api_key=ALICE)
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=7).result()
    remote = trainer.forward([_datum(tokens)], "cross_entropy").result()

    local = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=4, seed=7)
    ref = local.forward([mint.types.Datum(
        model_input=mint.types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )]).result()
    assert remote.metrics["loss:sum"] == pytest.approx(ref.metrics["loss:sum"], rel=1e-6)
    assert remote.loss_fn_outputs[0]["logprobs"].tolist() == pytest.approx(
        ref.loss_fn_outputs[0]["logprobs"].tolist(), abs=1e-6)

    trainer.forward_backward([_datum(tokens)], "cross_entropy").result()
    trainer.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    path = trainer.save_weights_for_sampler("greedy-check").result().path
    assert path.startswith("tinker://")
    sampler = service.create_sampling_client(model_path=path).result()
    params = types.SamplingParams(max_tokens=5, temperature=0.0)
    got = sampler.sample(types.ModelInput.from_ints(tokens[:4]), 1, params).result().sequences[0]

    with storage.acting_user("alice"):  # the checkpoint belongs to the key's owner
        local_sampler = mint.ServiceClient().create_sampling_client(model_path=path)
        want = local_sampler.sample(tokens[:4], 1, mint.types.SamplingParams(max_tokens=5, temperature=0.0)).result()
        want_lp = local_sampler.compute_logprobs(tokens[:8]).result()
        want_topk = local_sampler.sample(tokens[:6], 1, mint.types.SamplingParams(max_tokens=1),
                                         topk_prompt_logprobs=3).result().topk_prompt_logprobs
    assert got.tokens == want.sequences[0].tokens
    assert got.logprobs == pytest.approx(want.sequences[0].logprobs, abs=1e-5)
    got_lp = sampler.compute_logprobs(types.ModelInput.from_ints(tokens[:8])).result()
    assert got_lp[0] is None and got_lp[1:] == pytest.approx(want_lp[1:], abs=1e-5)
    topk = sampler.sample(types.ModelInput.from_ints(tokens[:6]), 1, types.SamplingParams(max_tokens=1),
                          topk_prompt_logprobs=3).result().topk_prompt_logprobs
    assert topk[0] is None and len(topk) == 6
    assert [[t for t, _ in row] for row in topk[1:]] == [[t for t, _ in row] for row in want_topk[1:]]
    service.close("success").result()
