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


@pytest.mark.parametrize("model_fixture,configs", [
    ("tiny_llama", "mixed"), ("tiny_qwen3", "mixed"),
    # no adapter of the pass has LoRA on the unembedding: it runs chunked on the frozen weight
    ("tiny_llama", "no_unembed"),
])
def test_packed_clients_match_reference(model_fixture, configs, request, monkeypatch):
    folder = request.getfixturevalue(model_fixture)
    service = mint.ServiceClient()
    configs = [dict(rank=4) if configs == "mixed" else dict(rank=4, train_unembed=False),
               dict(rank=8, train_unembed=False), dict(rank=2, train_mlp=False, train_unembed=False)]
    monkeypatch.setattr(packed_pass, "_CHUNK_ELEMENTS", 7 * 256)  # several chunks of 7 rows and a tail
    chunked_calls = []
    real_chunked = packed_pass._chunked_logprobs
    monkeypatch.setattr(packed_pass, "_chunked_logprobs", lambda *a: chunked_calls.append(1) or real_chunked(*a))
    trainers = [service.create_lora_training_client(base_model=folder, seed=i, **c) for i, c in enumerate(configs)]
    engine = trainers[0]._engine
    assert engine.packed_passes
    for i, t in enumerate(trainers):
        randomise_adapter(t, seed=10 + i)
    data = [sft_data(1), sft_data(2, all_zero=True), sft_data(3, n=4)]
    outs = submit_together(engine, [lambda t=t, d=d: t.forward_backward(d) for t, d in zip(trainers, data)])
    assert engine.model.config._attn_implementation != packed_pass.VARLEN_ATTENTION  # restored after the pass
    assert bool(chunked_calls) == (configs[0].get("train_unembed") is False)
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


def _reference_span_attention(q, k, v, spans, scale):
    """Per-span causal SDPA with repeated key/value heads, from plain PyTorch: [1, T, H, D]."""
    rep = q.shape[1] // k.shape[1]
    outs = [torch.nn.functional.scaled_dot_product_attention(
        q[:, :, s:e], k[:, :, s:e].repeat_interleave(rep, 1), v[:, :, s:e].repeat_interleave(rep, 1),
        is_causal=True, scale=scale).transpose(1, 2) for s, e in spans]
    return torch.cat(outs, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("spans", [
    [(0, 16), (16, 32), (32, 48), (48, 64)],            # equal lengths: one batched call
    [(0, 5), (5, 37), (37, 38), (38, 45), (45, 52)],    # mixed, with runs of equal length and a 1-token span
    [(0, 33)],
], ids=["equal", "mixed", "single"])
def test_span_attention_matches_per_span_sdpa(spans, dtype):
    """Values and gradients of the packed-row attention equal per-span SDPA (GQA 6 query / 2 key-value heads),
    for strided inputs laid out as the model produces them."""
    g = torch.Generator().manual_seed(0)
    T = spans[-1][1]
    q = torch.randn(1, T, 6, 16, generator=g).transpose(1, 2).to(dtype).requires_grad_()
    k = torch.randn(1, 2, T, 16, generator=g).to(dtype).requires_grad_()
    v = torch.randn(1, T, 2, 16, generator=g).transpose(1, 2).to(dtype).requires_grad_()
    grad = torch.randn(1, T, 6, 16, generator=g).to(dtype)
    out = packed_pass._SpanAttention.apply(q, k, v, spans, 0.25)
    got = [out, *torch.autograd.grad(out, (q, k, v), grad)]
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = _reference_span_attention(q32, k32, v32, spans, 0.25)
    want = [ref, *torch.autograd.grad(ref, (q32, k32, v32), grad.float())]
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    for name, a, b in zip(["out", "grad_q", "grad_k", "grad_v"], got, want):
        assert a.shape == b.shape and a.dtype == dtype, name
        torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol, msg=name)


def test_span_groups_cover_the_spans_in_order():
    assert packed_pass._span_groups([(0, 4), (4, 8), (8, 11), (11, 14), (14, 15)]) == [(0, 2, 4), (8, 2, 3), (14, 1, 1)]
    assert packed_pass._span_groups([(0, 3)]) == [(0, 1, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("rows", [1, 7, 40])
def test_chunked_unembed_logprobs_match_log_softmax(rows, dtype, monkeypatch):
    """Values and hidden-gradients of the chunked unembedding equal log_softmax over full logits, for row
    counts below, at and across several chunks (chunks of 3 rows here, so 40 rows leave a tail of 1)."""
    monkeypatch.setattr(packed_pass, "_CHUNK_ELEMENTS", 3 * 50)
    g = torch.Generator().manual_seed(rows)
    hidden = torch.randn(rows, 16, generator=g).to(dtype).requires_grad_()
    weight = torch.randn(50, 16, generator=g).to(dtype)
    targets = torch.randint(0, 50, (rows,), generator=g)
    upstream = torch.randn(rows, generator=g)
    got = packed_pass._ChunkedUnembedLogprob.apply(hidden, weight, targets)
    (grad,) = torch.autograd.grad(got, hidden, upstream)
    h32 = hidden.detach().float().requires_grad_()
    want = torch.log_softmax((h32.to(dtype) @ weight.T).float(), -1).gather(-1, targets[:, None])[:, 0]
    (want_grad,) = torch.autograd.grad(want, h32, upstream)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert got.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(grad.float(), want_grad, rtol=tol, atol=tol * 10)
    no_grad, _ = packed_pass._chunked_logprobs(hidden.detach(), weight, targets)
    torch.testing.assert_close(no_grad, got.detach(), rtol=0, atol=0)
