"""TrainingClient on a tiny random model, checked against a plain-PyTorch LoRA reference."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

import mint
from mint import types
from tests.adapter_access import engine_grads, engine_weights, randomise_adapter
from tests.reference_lora import ReferenceLora


def make_data(n: int, seed: int, vocab: int = 250, length: tuple[int, int] = (5, 17)) -> list[types.Datum]:
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        tokens = [rng.randrange(3, vocab) for _ in range(rng.randrange(*length))]
        weights = [0.0] * 2 + [rng.choice([0.5, 1.0]) for _ in range(len(tokens) - 3)]
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
            )
        )
    return data


@pytest.fixture
def trainer(tiny_llama):
    client = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=4, seed=3)
    engine = client._engine
    randomise_adapter(client, seed=11)
    yield client
    engine.submit(engine.release_training_adapter, client.model_id).result()


def test_forward_backward_matches_reference(trainer, tiny_llama):
    data = make_data(3, seed=0)
    out = trainer.forward_backward(data, "cross_entropy").result()
    ref = ReferenceLora(tiny_llama, engine_weights(trainer), scale=32.0 / 4)
    ref_loss = ref.cross_entropy(data)
    assert out.metrics["loss:sum"] == pytest.approx(float(ref_loss.detach()), rel=1e-5, abs=1e-5)
    for i, d in enumerate(data):
        lp = out.loss_fn_outputs[i]["logprobs"].to_torch()
        ref_lp = ref.target_logprobs(d.model_input.to_ints(), d.loss_fn_inputs["target_tokens"].to_torch().tolist())
        assert lp.shape == ref_lp.shape
        torch.testing.assert_close(lp, ref_lp.detach(), rtol=1e-5, atol=1e-5)
    ref_grads = ref.grads(ref_loss)
    grads = engine_grads(trainer)
    assert set(grads) == set(ref_grads)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5 * float(ref_grads[name].abs().max()), msg=name)


def test_two_halves_equal_whole_batch(tiny_llama):
    service = mint.ServiceClient()
    data = make_data(4, seed=1)
    a = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=5)
    b = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=5)
    la = a.forward_backward(data[:2]).result().metrics["loss:sum"]
    la += a.forward_backward(data[2:]).result().metrics["loss:sum"]
    lb = b.forward_backward(data).result().metrics["loss:sum"]
    assert la == pytest.approx(lb, rel=1e-5)
    for (n, ga), gb in zip(engine_grads(a).items(), engine_grads(b).values()):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5 * float(gb.abs().max()), msg=n)
    a.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    b.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    for (n, wa), wb in zip(engine_weights(a).items(), engine_weights(b).values()):
        torch.testing.assert_close(wa, wb, rtol=1e-5, atol=1e-6, msg=n)


def test_bad_datum_names_index_and_key_and_keeps_grads(trainer):
    trainer.forward_backward(make_data(2, seed=2)).result()
    before = engine_grads(trainer)
    bad = make_data(3, seed=3)
    bad[1] = types.Datum(
        model_input=types.ModelInput.from_ints([5, 6, 7, 8]),
        loss_fn_inputs={"target_tokens": [6, 7, 8], "weights": [1.0, 1.0, 1.0]},
    )
    with pytest.raises(mint.BadRequestError) as err:
        trainer.forward_backward(bad).result()
    assert "data[1]" in str(err.value) and "target_tokens" in str(err.value)
    after = engine_grads(trainer)
    for name in before:
        assert torch.equal(before[name], after[name]), name


@pytest.mark.parametrize(
    "tokens, targets, field",
    [
        ([5, 6, 10_000], [6, 7, 8], "data[0].model_input"),
        ([5, 6, 7], [6, 7, -1], "data[0].loss_fn_inputs.target_tokens"),
        (list(range(3, 3 + 600)), list(range(4, 4 + 600)), "data[0].model_input"),
    ],
)
def test_bad_tokens_are_rejected(trainer, tokens, targets, field):
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": targets, "weights": [1.0] * len(targets)},
    )
    with pytest.raises(mint.BadRequestError) as err:
        trainer.forward_backward([datum]).result()
    assert field in str(err.value)


def test_unknown_loss_and_bad_adam_params(trainer):
    with pytest.raises(mint.BadRequestError, match="loss_fn"):
        trainer.forward_backward(make_data(1, seed=0), "nonsense").result()
    with pytest.raises(mint.BadRequestError, match="learning_rate"):
        trainer.optim_step({"learning_rate": -1.0}).result()


def test_rank_out_of_range_fails_before_any_work(tiny_llama):
    service = mint.ServiceClient()
    for rank in (0, 65):
        with pytest.raises(mint.BadRequestError, match="rank"):
            service.create_lora_training_client(base_model=tiny_llama, rank=rank)


def test_unknown_base_model():
    with pytest.raises(mint.BadRequestError, match="base_model"):
        mint.ServiceClient().create_lora_training_client(base_model="no-such-org/no-such-model-xyz")


def test_training_reduces_loss(tiny_llama):
    trainer = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=8, seed=0)
    data = make_data(4, seed=7)
    losses = []
    for _ in range(15):
        losses.append(trainer.forward_backward(data).result().metrics["loss:sum"])
        trainer.optim_step(types.AdamParams(learning_rate=5e-3)).result()
    assert losses[-1] < 0.7 * losses[0]


def test_async_twins(trainer):
    async def run():
        fut = await trainer.forward_backward_async(make_data(2, seed=4))
        out = await fut
        step = await (await trainer.optim_step_async(types.AdamParams()))
        return out, step

    out, step = asyncio.run(run())
    assert "loss:sum" in out.metrics
    assert step is not None


def test_only_selected_layer_kinds_train(tiny_llama):
    trainer = mint.ServiceClient().create_lora_training_client(
        base_model=tiny_llama, rank=2, train_attn=False, train_unembed=False
    )
    names = list(engine_weights(trainer))
    assert names and all(".mlp." in n for n in names)


def test_get_info_and_tokenizer(trainer, tiny_llama):
    info = trainer.get_info()
    assert info.model_id == trainer.model_id
    assert trainer.get_tokenizer().decode(trainer.get_tokenizer().encode("abc")) == "abc"


def test_profiler_shows_mint_ops(trainer):
    from torch.profiler import ProfilerActivity, profile

    config = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    sampler = trainer.save_weights_and_get_sampling_client("profiled")
    with profile(activities=[ProfilerActivity.CPU], experimental_config=config) as prof:
        trainer.forward_backward(make_data(2, seed=5)).result()
        trainer.optim_step(types.AdamParams()).result()
        sampler.sample(types.ModelInput.from_ints([5, 6, 7]), 2, types.SamplingParams(max_tokens=3)).result()
    names = {e.name for e in prof.events()}
    # on CPU the LoRA layers run the fused passes (shrink + expand forward, one backward op)
    for op in ("mint::lora_apply_forward_", "mint::lora_apply_backward", "mint::adamw_", "mint::sample"):
        assert op in names, op
