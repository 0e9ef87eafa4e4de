"""The embedded SmolLM2-135M-Instruct end to end (slow: loads the real model)."""

from __future__ import annotations

import pytest
import torch

import mint
from mint import types

pytestmark = pytest.mark.slow

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def service():
    return mint.ServiceClient()


def test_capabilities_list_the_embedded_model(service):
    names = [m.model_name for m in service.get_server_capabilities().supported_models]
    assert BASE in names


def test_greedy_sampling_matches_transformers_generate(service):
    sampler = service.create_sampling_client(base_model=BASE)
    tok = sampler.get_tokenizer()
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                  tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    out = sampler.sample(ids, 1, types.SamplingParams(max_tokens=12, temperature=0.0)).result()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(_source(), dtype=torch.float32)
    ref = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    assert out.sequences[0].tokens == ref[: len(out.sequences[0].tokens)]


def _source():
    from mint.engine.models import resolve_model_source

    return resolve_model_source(BASE)


def test_a_few_steps_reduce_the_loss(service):
    trainer = service.create_lora_training_client(base_model=BASE, rank=8, seed=0)
    tok = trainer.get_tokenizer()
    tokens = tok.encode("The quick brown fox jumps over the lazy dog. " * 3)
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )
    losses = []
    for _ in range(4):
        losses.append(trainer.forward_backward([datum]).result().metrics["loss:sum"])
        trainer.optim_step(types.AdamParams(learning_rate=2e-3)).result()
    assert losses[-1] < losses[0]
