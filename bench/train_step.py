"""One SFT step (forward_backward + optim_step) on SmolLM2-135M: mint vs Hugging Face transformers + PEFT.

    python -m bench.train_step [--batch 4] [--seq 64] [--rank 16] [--repeats 5]

Both train LoRA of the same rank on the attention and MLP projections (PEFT "all-linear" leaves out the
unembedding, so mint is configured the same way) with AdamW, fp32, on the same tokens.
"""

from __future__ import annotations

import argparse

import torch

from bench.common import machine, median_time

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def batch_tokens(batch: int, seq: int, vocab: int = 49152) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(100, vocab, (batch, seq + 1), generator=gen)


def mint_step(tokens: torch.Tensor, rank: int):
    import mint
    from mint import types

    trainer = mint.ServiceClient().create_lora_training_client(base_model=BASE, rank=rank, seed=0, train_unembed=False)
    data = [
        types.Datum(model_input=types.ModelInput.from_ints(row[:-1].tolist()),
                    loss_fn_inputs={"target_tokens": row[1:].tolist(), "weights": [1.0] * (len(row) - 1)})
        for row in tokens
    ]
    adam = types.AdamParams(learning_rate=1e-4)

    def step():
        fb = trainer.forward_backward(data)
        opt = trainer.optim_step(adam)
        fb.result()
        opt.result()

    return step


def peft_step(tokens: torch.Tensor, rank: int):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mint.engine.models import resolve_model_source

    model = AutoModelForCausalLM.from_pretrained(resolve_model_source(BASE), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), eps=1e-12)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]

    def step():
        logits = model(input_ids=inputs).logits.float()
        loss = -torch.log_softmax(logits, -1).gather(-1, labels[..., None]).sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tokens = batch_tokens(args.batch, args.seq)
    t_peft = median_time(peft_step(tokens, args.rank), args.repeats)
    t_mint = median_time(mint_step(tokens, args.rank), args.repeats)
    print(f"machine: {machine()}")
    print(f"SFT step, {args.batch} x {args.seq} tokens, LoRA rank {args.rank}, SmolLM2-135M fp32 (median of {args.repeats})")
    print(f"{'':22}{'seconds':>10}{'vs PEFT':>10}")
    print(f"{'transformers + PEFT':22}{t_peft:>10.3f}{1.0:>10.2f}x")
    print(f"{'mint':22}{t_mint:>10.3f}{t_peft / t_mint:>10.2f}x")


if __name__ == "__main__":
    main()
