"""Packed passes (engine/packed_pass.py) against an independent plain-PyTorch reference and the padded pass.

Datums of different lengths, prompts with weight 0 (whose unembedding gets no backward), several clients with
different ranks and layer kinds in one pass: losses, every position's logprob and the gradients must equal the
reference within 1e-5.
"""

from __future__ import annotations

import random
import time

import pytest
import torch

import mint
from mint import types
from mint.engine import packed_pass
from tests.adapter_access import engine_grads, engine_weights, randomise_adapter
from tests.reference_lora import ReferenceLora


def sft_data(seed: int, n: int = 3, all_zero: bool = False) -> list[types.Datum]:
    """SFT-like datums: a prompt with weight 0, then a completion with weight 1; lengths vary."""
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        prompt, completion = rng.randrange(2, 12), rng.randrange(1, 9)
        tokens = [rng.randrange(3, 250) for _ in range(prompt + completion + 1)]
        weights = [0.0] * prompt + [0.0 if all_zero else 1.0] * completion
        data.append(types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                                loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights}))
    return data


def reference_for(folder: str, trainer, rank: int) -> ReferenceLora:
    return ReferenceLora(folder, engine_weights(trainer), scale=32.0 / rank)


def submit_together(engine, calls):
    """Queue ``calls`` (thunks returning futures) behind a short sleep so that they run as one pass."""
    gate = engine.submit(time.sleep, 0.2)
    futures = [c() for c in calls]
    gate.result()
    return [f.result() for f in futures]


@pytest.mark.parametrize("model_fixture", ["tiny_llama", "tiny_qwen3"])
def test_packed_clients_match_reference(model_fixture, request):
    folder = request.getfixturevalue(model_fixture)
    service = mint.ServiceClient()
    configs = [dict(rank=4), dict(rank=8, train_unembed=False), dict(rank=2, train_mlp=False, train_unembed=False)]
    trainers = [service.create_lora_training_client(base_model=folder, seed=i, **c) for i, c in enumerate(configs)]
    engine = trainers[0]._engine
    assert engine.packed_passes
    for i, t in enumerate(trainers):
        randomise_adapter(t, seed=10 + i)
    data = [sft_data(1), sft_data(2, all_zero=True), sft_data(3, n=4)]
    outs = submit_together(engine, [lambda t=t, d=d: t.forward_backward(d) for t, d in zip(trainers, data)])
    assert engine.model.config._attn_implementation != packed_pass.VARLEN_ATTENTION  # restored after the pass
    for t, c, d, out in zip(trainers, configs, data, outs):
        ref = reference_for(folder, t, c["rank"])
        loss = ref.cross_entropy(d)
        assert out.metrics["loss:sum"] == pytest.approx(float(loss.detach()), rel=1e-5, abs=1e-5)
        for datum, o in zip(d, out.loss_fn_outputs):  # every position, weight 0 or not
            expected = ref.target_logprobs(datum.model_input.to_ints(),
                                           datum.loss_fn_inputs["target_tokens"].to_torch().tolist())
            torch.testing.assert_close(o["logprobs"].to_torch(), expected, rtol=1e-5, atol=1e-5)
        grads, expected = engine_grads(t), ref.grads(loss) if loss.requires_grad else {}
        for name, g in grads.items():
            want = expected.get(name)
            if want is None:  # every weight was 0: nothing depends on the adapter
                assert not g.any(), name
            else:
                torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-5, msg=name)


def test_forward_matches_reference(tiny_llama):
    service = mint.ServiceClient()
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=0)
    randomise_adapter(trainer, seed=3)
    data = sft_data(7, n=5)
    out = trainer.forward(data).result()
    ref = reference_for(tiny_llama, trainer, 4)
    for datum, o in zip(data, out.loss_fn_outputs):
        expected = ref.target_logprobs(datum.model_input.to_ints(),
                                       datum.loss_fn_inputs["target_tokens"].to_torch().tolist())
        torch.testing.assert_close(o["logprobs"].to_torch(), expected, rtol=1e-5, atol=1e-5)
    assert out.metrics["loss:sum"] == pytest.approx(float(ref.cross_entropy(data).detach()), rel=1e-5, abs=1e-5)
    assert not trainer._engine.adapter(trainer.model_id).optimizer.has_grads


def pg_data(seed: int, n: int = 3) -> list[types.Datum]:
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        length = rng.randrange(3, 15)
        tokens = [rng.randrange(3, 250) for _ in range(length + 1)]
        data.append(types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:],
                            "logprobs": [rng.uniform(-6.0, -4.0) for _ in range(length)],
                            "advantages": [rng.choice([0.0, 0.0, 1.5, -0.7]) for _ in range(length)]}))
    return data


@pytest.mark.parametrize("loss_fn,config", [("ppo", None), ("cispo", None), ("importance_sampling", None),
                                            ("dro", {"beta": 0.3}), ("cross_entropy", None)])
def test_packed_equals_padded_pass(tiny_llama, loss_fn, config):
    """The same requests through the packed and the padded pass: same loss, logprobs and gradients."""
    service = mint.ServiceClient()
    trainers = [service.create_lora_training_client(base_model=tiny_llama, rank=r, seed=i) for i, r in enumerate((4, 6))]
    engine = trainers[0]._engine
    for i, t in enumerate(trainers):
        randomise_adapter(t, seed=20 + i)
    data = [pg_data(5), pg_data(6, n=2)]
    if loss_fn == "cross_entropy":
        data = [sft_data(5), sft_data(6, n=2)]
    results = {}
    for packed in (True, False):
        engine.packed_passes = packed
        try:
            outs = submit_together(engine, [lambda t=t, d=d: t.forward_backward(d, loss_fn, config)
                                            for t, d in zip(trainers, data)])
        finally:
            engine.packed_passes = packed_pass.supports(engine.model)
        grads = [engine_grads(t) for t in trainers]
        for t in trainers:
            engine.submit(lambda t=t: engine.adapter(t.model_id).optimizer.zero_grad()).result()
        results[packed] = (outs, grads)
    (p_outs, p_grads), (d_outs, d_grads) = results[True], results[False]
    for po, do, pg, dg in zip(p_outs, d_outs, p_grads, d_grads):
        assert po.metrics["loss:sum"] == pytest.approx(do.metrics["loss:sum"], rel=1e-5, abs=1e-5)
        for a, b in zip(po.loss_fn_outputs, do.loss_fn_outputs):
            torch.testing.assert_close(a["logprobs"].to_torch(), b["logprobs"].to_torch(), rtol=1e-5, atol=1e-5)
        assert pg.keys() == dg.keys()
        for name in pg:
            torch.testing.assert_close(pg[name], dg[name], rtol=1e-5, atol=1e-5, msg=name)


def test_compact_pool_restores_the_pool_on_error(tiny_llama):
    service = mint.ServiceClient()
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=0)
    engine = trainer._engine

    def check():
        before = {n: (layer.lora_a, layer.lora_b, layer.ranks, layer.scales) for n, layer in engine.layers.items()}
        copies = {n: tuple(t.clone() for t in ts) for n, ts in before.items()}
        slot = engine.adapter(trainer.model_id).slot
        with pytest.raises(ValueError):
            with packed_pass.compact_pool(engine.layers, [slot], {"attn", "mlp"}) as leaves:
                assert leaves and all(t.requires_grad and t.shape[0] == 1 for t in leaves)
                raise ValueError("boom")
        for n, layer in engine.layers.items():
            now = (layer.lora_a, layer.lora_b, layer.ranks, layer.scales)
            assert all(x is y for x, y in zip(now, before[n]))
            assert all(torch.equal(x, y) for x, y in zip(now, copies[n]))
            assert not layer.lora_a.requires_grad

    engine.submit(check).result()


def test_target_logprobs_gradient_matches_log_softmax():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(7, 50, generator=gen) * 4).requires_grad_(True)
    targets = torch.randint(0, 50, (7,), generator=gen)
    weights = torch.randn(7, generator=gen)
    ours = packed_pass.target_logprobs(logits, targets)
    (ours * weights).sum().backward()
    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = torch.log_softmax(ref_logits, -1).gather(-1, targets[:, None])[:, 0]
    (ref * weights).sum().backward()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-6, atol=1e-6)


def test_supports_only_plain_causal_lms(tiny_llama):
    engine = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=4)._engine
    assert packed_pass.supports(engine.model)
    config = engine.model.config
    old = config.model_type
    try:
        config.model_type = "gemma2"
        assert not packed_pass.supports(engine.model)
    finally:
        config.model_type = old
