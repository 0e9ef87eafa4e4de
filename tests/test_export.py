"""mint.export and `mint export`: PEFT adapter folders and merged models give mint's logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import mint
from tests.adapter_access import randomise_adapter
from mint import export
from mint.cli import main as cli_main
from mint.engine.lora_layers import LoraBatch

IDS = torch.tensor([[5, 17, 99, 42, 7, 250, 3, 64]])


@pytest.fixture(scope="module")
def checkpoint(tiny_llama):
    """A sampler checkpoint with non-trivial weights on every layer kind, and mint's logits for IDS."""
    trainer = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=4, seed=0)
    engine = trainer._engine
    randomise_adapter(trainer, seed=1)
    path = trainer.save_weights_for_sampler("export-me").result().path
    sampler_slot = engine.submit(engine.acquire_sampler, path).result()

    def logits(slot_: int):
        engine.context.batch = LoraBatch([slot_])
        try:
            with torch.no_grad():
                return engine.model(input_ids=IDS).logits.float()
        finally:
            engine.context.batch = None

    mint_logits, base_logits = engine.submit(logits, sampler_slot).result(), engine.submit(logits, -1).result()
    engine.submit(engine.release_sampler, path).result()
    engine.submit(engine.release_training_adapter, trainer.model_id).result()
    assert (mint_logits - base_logits).abs().max() > 1e-2  # the adapter really changes the output
    return path, mint_logits


def test_peft_adapter_gives_mint_logits(checkpoint, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path, mint_logits = checkpoint
    out = export.to_peft(path, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (
        "LORA", 4, 32.0, tiny_llama)
    assert "lm_head" in config["target_modules"] and "model.layers.0.self_attn.q_proj" in config["target_modules"]
    weights = load_file(str(out / "adapter_model.safetensors"))
    a = weights["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]
    b = weights["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    assert a.shape == (4, 131) and b.shape == (64, 4)  # [r, in], [out, r]
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        peft_logits = model(input_ids=IDS).logits
    torch.testing.assert_close(peft_logits, mint_logits, rtol=1e-5, atol=1e-5)


def test_merged_model_gives_mint_logits(checkpoint, tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    path, mint_logits = checkpoint
    out = export.to_merged(path, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=IDS).logits, mint_logits, rtol=1e-5, atol=1e-5)
    # The tied unembedding was untied: the input embedding is still the base model's.
    assert torch.equal(merged.get_input_embeddings().weight, base.get_input_embeddings().weight)
    assert not torch.equal(merged.get_output_embeddings().weight, base.get_output_embeddings().weight)
    assert (out / "tokenizer.json").exists() or (out / "tokenizer_config.json").exists()


def test_cli(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    assert cli_main(["export", path, str(tmp_path / "cli")]) == 0
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert str(tmp_path / "cli") in capsys.readouterr().out
    assert cli_main(["export", "mint://nope/sampler_weights/x", str(tmp_path / "bad")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mint-export-")]
