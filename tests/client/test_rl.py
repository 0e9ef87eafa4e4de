"""RL surface end to end on a tiny model: policy-gradient losses and custom losses against a plain-PyTorch
LoRA reference, compute_logprobs, prompt logprobs, and sample logprobs vs compute_logprobs."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

import mint
from mint import types
from tests.adapter_access import engine_grads, engine_weights, randomise_adapter
from tests.reference_lora import ReferenceLora

SCALE = 32.0 / 4  # the engine's LoRA scale (alpha 32) at rank 4


def pg_data(n: int, seed: int, vocab: int = 250) -> list[types.Datum]:
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        tokens = [rng.randrange(3, vocab) for _ in range(rng.randrange(6, 15))]
        n_in = len(tokens) - 1
        prompt = rng.randrange(1, n_in)
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={
                    "target_tokens": tokens[1:],
                    # Sampler logprobs near typical values of a random model over 259 tokens (about -5.6).
                    "logprobs": [0.0] * prompt + [-5.6 + rng.uniform(-0.3, 0.3) for _ in range(n_in - prompt)],
                    "advantages": [0.0] * prompt + [rng.uniform(-1, 1) for _ in range(n_in - prompt)],
                },
            )
        )
    return data


def reference_pg_loss(name: str, lp: torch.Tensor, slp: torch.Tensor, adv: torch.Tensor, cfg: dict) -> torch.Tensor:
    """One datum's loss, written straight from the definitions (unpadded tensors)."""
    ratio = torch.exp(lp - slp)
    if name == "importance_sampling":
        return -(ratio * adv).sum()
    if name == "ppo":
        return -torch.minimum(ratio * adv, torch.clamp(ratio, cfg["lo"], cfg["hi"]) * adv).sum()
    if name == "cispo":
        return -(torch.clamp(ratio, cfg["lo"], cfg["hi"]).detach() * lp * adv).sum()
    if name == "dro":
        return -(lp * adv - 0.5 * cfg["beta"] * (lp - slp) ** 2).sum()
    raise AssertionError(name)


def make_trainer(tiny_llama, seed: int = 3):
    client = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=4, seed=seed)
    randomise_adapter(client, seed=11)
    return client


@pytest.fixture
def trainer(tiny_llama):
    client = make_trainer(tiny_llama)
    yield client
    client._engine.submit(client._engine.release_training_adapter, client.model_id).result()


def assert_grads_close(grads, ref_grads):
    assert set(grads) == set(ref_grads)
    for name, g in grads.items():
        scale = float(ref_grads[name].abs().max())
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5 * scale + 1e-8, msg=name)


@pytest.mark.parametrize(
    "name, config, ref_cfg",
    [
        ("importance_sampling", None, {}),
        ("ppo", None, {"lo": 0.8, "hi": 1.2}),
        ("ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.05}, {"lo": 0.9, "hi": 1.05}),
        ("cispo", {"clip_low_threshold": 0.7, "clip_high_threshold": 1.1}, {"lo": 0.7, "hi": 1.1}),
        ("dro", {"beta": 0.2}, {"beta": 0.2}),
    ],
)
def test_pg_losses_match_reference(trainer, tiny_llama, name, config, ref_cfg):
    data = pg_data(3, seed=hash(name) % 1000)
    out = trainer.forward_backward(data, name, config).result()
    ref = ReferenceLora(tiny_llama, engine_weights(trainer), scale=SCALE)
    total = torch.zeros(())
    for i, d in enumerate(data):
        inputs = d.loss_fn_inputs
        lp = ref.target_logprobs(d.model_input.to_ints(), inputs["target_tokens"].to_torch().tolist())
        torch.testing.assert_close(out.loss_fn_outputs[i]["logprobs"].to_torch(), lp.detach(), rtol=1e-5, atol=1e-5)
        total = total + reference_pg_loss(
            name, lp, inputs["logprobs"].to_torch().float(), inputs["advantages"].to_torch().float(), ref_cfg
        )
    assert out.metrics["loss:sum"] == pytest.approx(float(total.detach()), rel=1e-5, abs=1e-5)
    assert_grads_close(engine_grads(trainer), ref.grads(total))


def test_pg_loss_errors_name_datum_and_key_and_keep_grads(trainer):
    trainer.forward_backward(pg_data(2, seed=1), "importance_sampling").result()
    before = engine_grads(trainer)
    bad = pg_data(3, seed=2)
    bad[2].loss_fn_inputs.pop("logprobs")
    with pytest.raises(mint.BadRequestError, match=r"data\[2\]\.loss_fn_inputs\.logprobs"):
        trainer.forward_backward(bad, "ppo").result()
    with pytest.raises(mint.BadRequestError, match="loss_fn_config.beta"):
        trainer.forward_backward(pg_data(1, seed=3), "dro").result()
    with pytest.raises(mint.BadRequestError, match="loss_fn_config.eps"):
        trainer.forward_backward(pg_data(1, seed=3), "ppo", {"eps": 0.2}).result()
    after = engine_grads(trainer)
    for name in before:
        assert torch.equal(before[name], after[name]), name


def ce_data(n: int, seed: int) -> list[types.Datum]:
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        tokens = [rng.randrange(3, 250) for _ in range(rng.randrange(5, 14))]
        weights = [rng.choice([0.0, 0.5, 1.0]) for _ in range(len(tokens) - 1)]
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
            )
        )
    return data


def test_custom_cross_entropy_gives_cross_entropy_grads(tiny_llama):
    data = ce_data(3, seed=5)
    builtin, custom = make_trainer(tiny_llama), make_trainer(tiny_llama)
    expected = builtin.forward_backward(data, "cross_entropy").result()
    seen = {}

    def loss_fn(batch, logprobs):
        seen["shapes"] = [tuple(lp.shape) for lp in logprobs]
        seen["grad"] = all(lp.requires_grad for lp in logprobs)
        loss = sum(-(lp * d.loss_fn_inputs["weights"].to_torch()).sum() for d, lp in zip(batch, logprobs))
        return loss, {"tokens": float(sum(lp.numel() for lp in logprobs))}

    out = custom.forward_backward_custom(data, loss_fn).result()
    assert seen["shapes"] == [(d.model_input.length,) for d in data] and seen["grad"]
    assert out.metrics["loss:sum"] == pytest.approx(expected.metrics["loss:sum"], rel=1e-6)
    assert out.metrics["tokens"] == sum(d.model_input.length for d in data)
    for a, b in zip(out.loss_fn_outputs, expected.loss_fn_outputs):
        torch.testing.assert_close(a["logprobs"].to_torch(), b["logprobs"].to_torch())
    assert_grads_close(engine_grads(custom), engine_grads(builtin))


def test_custom_nonlinear_loss_matches_reference(trainer, tiny_llama):
    data = ce_data(2, seed=6)

    def loss_fn(batch, logprobs):  # something no built-in loss computes: a squared, cross-datum term
        return (torch.cat(logprobs).exp().sum() - 1.0) ** 2 + logprobs[0].mean() * logprobs[1].max(), {}

    out = trainer.forward_backward_custom(data, loss_fn).result()
    ref = ReferenceLora(tiny_llama, engine_weights(trainer), scale=SCALE)
    lps = [ref.target_logprobs(d.model_input.to_ints(), d.loss_fn_inputs["target_tokens"].to_torch().tolist()) for d in data]
    ref_loss = loss_fn(data, lps)[0]
    assert out.metrics["loss:sum"] == pytest.approx(float(ref_loss.detach()), rel=1e-5)
    assert_grads_close(engine_grads(trainer), ref.grads(ref_loss))


def test_custom_loss_errors_leave_grads_untouched(trainer):
    trainer.forward_backward(ce_data(2, seed=7)).result()
    before = engine_grads(trainer)

    def raises(batch, logprobs):
        raise ValueError("user bug")

    with pytest.raises(ValueError, match="user bug"):
        trainer.forward_backward_custom(ce_data(2, seed=8), raises).result()
    bad_returns = [
        lambda b, lp: lp[0].sum(),  # not a tuple
        lambda b, lp: (torch.tensor(1.0), {}),  # does not depend on the logprobs
        lambda b, lp: (lp[0], {}),  # not a scalar (datum 0 has several tokens)
        lambda b, lp: (lp[0].sum(), {"m": "x"}),  # metric not a number
        lambda b, lp: (lp[0].sum() * float("inf"), {}),  # not finite
    ]
    for fn in bad_returns:
        with pytest.raises(mint.BadRequestError, match="loss_fn"):
            trainer.forward_backward_custom(ce_data(2, seed=8), fn).result()
    with pytest.raises(mint.BadRequestError, match="loss_fn"):
        trainer.forward_backward_custom(ce_data(1, seed=8), "cross_entropy").result()
    missing = ce_data(2, seed=9)
    missing[1].loss_fn_inputs.pop("target_tokens")
    with pytest.raises(mint.BadRequestError, match=r"data\[1\]\.loss_fn_inputs\.target_tokens"):
        trainer.forward_backward_custom(missing, lambda b, lp: (lp[0].sum(), {})).result()
    after = engine_grads(trainer)
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_custom_async(trainer):
    async def run():
        fut = await trainer.forward_backward_custom_async(ce_data(1, seed=1), lambda b, lp: (-lp[0].sum(), {}))
        return await fut

    assert "loss:sum" in asyncio.run(run()).metrics


@pytest.fixture
def tuned_sampler(trainer):
    """A sampler over the randomised adapter, and a reference with the same weights."""
    return trainer.save_weights_and_get_sampling_client("rl-test"), engine_weights(trainer)


PROMPT = [1, 40, 41, 42, 43, 44, 45]


def test_compute_logprobs_matches_plain_forward(tuned_sampler, tiny_llama):
    sampler, weights = tuned_sampler
    got = sampler.compute_logprobs(types.ModelInput.from_ints(PROMPT)).result()
    ref = ReferenceLora(tiny_llama, weights, scale=SCALE).target_logprobs(PROMPT[:-1], PROMPT[1:])
    assert got[0] is None and len(got) == len(PROMPT)
    torch.testing.assert_close(torch.tensor(got[1:]), ref.detach(), rtol=1e-5, atol=1e-5)
    base = mint.ServiceClient().create_sampling_client(base_model=tiny_llama)
    base_ref = ReferenceLora(tiny_llama, {}, scale=1.0).target_logprobs(PROMPT[:-1], PROMPT[1:])
    torch.testing.assert_close(torch.tensor(base.compute_logprobs(PROMPT).result()[1:]), base_ref, rtol=1e-5, atol=1e-5)
    assert asyncio.run(sampler.compute_logprobs_async(PROMPT)) == got
    assert sampler.compute_logprobs([7]).result() == [None]
    with pytest.raises(mint.BadRequestError, match="prompt"):
        sampler.compute_logprobs([5, 100_000]).result()


def test_prompt_logprobs_and_topk(tuned_sampler, tiny_llama):
    sampler, weights = tuned_sampler
    params = types.SamplingParams(max_tokens=3, temperature=0.7, top_k=5)
    # Two prompts of different lengths in one batch: the shorter one is left-padded.
    short = PROMPT[:4]
    f1 = sampler.sample(PROMPT, 2, params, include_prompt_logprobs=True, topk_prompt_logprobs=4)
    f2 = sampler.sample(short, 1, params, include_prompt_logprobs=True)
    f3 = sampler.sample(short, 1, params)
    r1, r2, r3 = f1.result(), f2.result(), f3.result()
    expected = sampler.compute_logprobs(PROMPT).result()
    assert r1.prompt_logprobs[0] is None
    torch.testing.assert_close(torch.tensor(r1.prompt_logprobs[1:]), torch.tensor(expected[1:]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        torch.tensor(r2.prompt_logprobs[1:]), torch.tensor(expected[1 : len(short)]), rtol=1e-4, atol=1e-4
    )
    assert r2.topk_prompt_logprobs is None and r3.prompt_logprobs is None and r3.topk_prompt_logprobs is None

    ref = ReferenceLora(tiny_llama, weights, scale=SCALE)
    full = torch.log_softmax(ref.model(input_ids=torch.tensor([PROMPT])).logits[0].float(), -1).detach()
    top = r1.topk_prompt_logprobs
    assert top[0] is None and len(top) == len(PROMPT)
    for pos in range(1, len(PROMPT)):
        values, ids = full[pos - 1].topk(4)
        assert [t for t, _ in top[pos]] == ids.tolist()
        torch.testing.assert_close(torch.tensor([v for _, v in top[pos]]), values, rtol=1e-4, atol=1e-4)


def test_bad_prompt_logprob_arguments(tuned_sampler):
    sampler, _ = tuned_sampler
    params = types.SamplingParams(max_tokens=2)
    for kwargs, field in (
        ({"topk_prompt_logprobs": -1}, "topk_prompt_logprobs"),
        ({"topk_prompt_logprobs": 10**6}, "topk_prompt_logprobs"),
        ({"include_prompt_logprobs": "yes"}, "include_prompt_logprobs"),
    ):
        with pytest.raises(mint.BadRequestError, match=field):
            sampler.sample(PROMPT, 1, params, **kwargs).result()


def test_sample_logprobs_agree_with_compute_logprobs(tuned_sampler):
    sampler, _ = tuned_sampler
    params = types.SamplingParams(max_tokens=10, temperature=1.0, seed=7)
    futures = [sampler.sample(PROMPT, 3, params), sampler.sample(PROMPT[:3], 2, params)]  # batched together
    for prompt, future in zip((PROMPT, PROMPT[:3]), futures):
        for seq in future.result().sequences:
            lps = sampler.compute_logprobs(prompt + seq.tokens).result()[len(prompt) :]
            assert len(lps) == len(seq.logprobs)
            torch.testing.assert_close(torch.tensor(seq.logprobs), torch.tensor(lps), rtol=0, atol=1e-3)
    # Greedy reports log_softmax(logits) of the chosen token too.
    greedy = sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=5, temperature=0.0)).result().sequences[0]
    lps = sampler.compute_logprobs(PROMPT + greedy.tokens).result()[len(PROMPT) :]
    torch.testing.assert_close(torch.tensor(greedy.logprobs), torch.tensor(lps), rtol=0, atol=1e-3)
