"""Many adapters on one base model (SmolLM2-135M, fp32, CPU): batched vs one at a time vs HF + PEFT.

    python -m bench.multi_tenant [--clients 4] [--batch 4] [--seq 64] [--steps 3] [--skip-sampling | --skip-training]

Training: each client does SFT steps (forward_backward + optim_step) on its own data. mint batched submits all
clients' requests before waiting (the engine fuses them into one pass and one Adam call); mint sequential waits
for each client in turn; PEFT runs one PeftModel per client, one after another, with the same shapes.
Sampling: K adapters x P prompts x N new tokens, mint batched vs transformers `generate` with PEFT per adapter.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import machine, print_table

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def client_data(client: int, batch: int, seq: int):
    from mint import types

    gen = torch.Generator().manual_seed(client)
    rows = torch.randint(100, 49152, (batch, seq + 1), generator=gen)
    data = [types.Datum(model_input=types.ModelInput.from_ints(r[:-1].tolist()),
                        loss_fn_inputs={"target_tokens": r[1:].tolist(), "weights": [1.0] * seq}) for r in rows]
    return rows, data


def bench_mint_training(clients: int, batch: int, seq: int, steps: int, rank: int) -> tuple[float, float]:
    import mint
    from mint import types

    service = mint.ServiceClient()
    trainers = [service.create_lora_training_client(base_model=BASE, rank=rank, seed=i, train_unembed=False)
                for i in range(clients)]
    data = [client_data(i, batch, seq)[1] for i in range(clients)]
    adam = types.AdamParams(learning_rate=1e-4)

    def sequential():
        for t, d in zip(trainers, data):
            t.forward_backward(d).result()
            t.optim_step(adam).result()

    def batched():
        futures = [(t.forward_backward(d), t.optim_step(adam)) for t, d in zip(trainers, data)]
        for fb, opt in futures:
            fb.result()
            opt.result()

    sequential()  # warm up
    start = time.perf_counter()
    for _ in range(steps):
        sequential()
    t_seq = (time.perf_counter() - start) / steps
    batched()
    start = time.perf_counter()
    for _ in range(steps):
        batched()
    t_bat = (time.perf_counter() - start) / steps
    return t_seq, t_bat


def bench_peft_training(clients: int, batch: int, seq: int, steps: int, rank: int) -> float:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mint.engine.models import resolve_model_source

    models, optims, rows = [], [], []
    for i in range(clients):
        model = AutoModelForCausalLM.from_pretrained(resolve_model_source(BASE), dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
        models.append(model)
        optims.append(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                        betas=(0.9, 0.95), eps=1e-12))
        rows.append(client_data(i, batch, seq)[0])

    def one_round():
        for model, opt, r in zip(models, optims, rows):
            logits = model(input_ids=r[:, :-1]).logits.float()
            loss = -torch.log_softmax(logits, -1).gather(-1, r[:, 1:, None]).sum()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    one_round()
    start = time.perf_counter()
    for _ in range(steps):
        one_round()
    return (time.perf_counter() - start) / steps


def prompts(tokenizer, count: int) -> list[list[int]]:
    topics = ["the sea", "a cat", "winter", "robots", "a city", "music", "the moon", "coffee"]
    out = []
    for i in range(count):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": f"Write a sentence about {topics[i % 8]}."}],
                                            add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return out


def bench_sampling(adapters: int, n_prompts: int, new_tokens: int, rank: int, rounds: int = 2) -> tuple[float, float]:
    """Seconds for mint (every request queued at once, one decode batch) and for HF ``generate`` with one
    PeftModel per adapter, each over the P prompts left-padded into one batch; same LoRA targets (attention +
    MLP), same sampling (temperature 0.8, no top-k / top-p), same number of new tokens, KV cache on.

    The two alternate for ``rounds`` rounds and each keeps its fastest round, so that load from other
    processes on a shared machine hits both alike."""
    import mint
    from mint import types
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mint.engine.models import resolve_model_source

    service = mint.ServiceClient()
    samplers = []
    for i in range(adapters):
        t = service.create_lora_training_client(base_model=BASE, rank=rank, seed=i, train_unembed=False)
        samplers.append(t.save_weights_and_get_sampling_client(f"bench-{i}"))
    tok = samplers[0].get_tokenizer()
    ps = prompts(tok, n_prompts)
    params = types.SamplingParams(max_tokens=new_tokens, temperature=0.8, seed=0)
    samplers[0].sample(ps[0], 1, types.SamplingParams(max_tokens=2, temperature=0.8, seed=0)).result()  # warm up

    models = []
    for i in range(adapters):  # one PeftModel per adapter, as a user serving them with PEFT would hold them
        model = AutoModelForCausalLM.from_pretrained(resolve_model_source(BASE), dtype=torch.float32)
        torch.manual_seed(i)
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0,
                                                 init_lora_weights=False))
        models.append(model.eval())
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    width = max(len(p) for p in ps)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in ps])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ps])
    gen = dict(attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
               temperature=0.8, top_k=0, top_p=1.0, use_cache=True, pad_token_id=pad)
    with torch.no_grad():
        models[0].generate(input_ids=ids[:1], **{**gen, "attention_mask": mask[:1], "max_new_tokens": 2,
                                                 "min_new_tokens": 2})  # warm up

    def run_mint() -> int:
        futures = [s.sample(p, 1, params) for s in samplers for p in ps]
        return sum(len(f.result().sequences[0].tokens) for f in futures)

    def run_peft() -> int:
        with torch.no_grad():
            for model in models:  # one generate per adapter, each over the P prompts
                out = model.generate(input_ids=ids, **gen)
                assert out.shape[1] == width + new_tokens
        return adapters * n_prompts * new_tokens

    t_mint, t_peft = [], []
    for r in range(rounds):
        cpu = {}
        for name, fn, times in (("mint", run_mint, t_mint), ("peft", run_peft, t_peft)):
            start, start_cpu = time.perf_counter(), time.process_time()
            produced = fn()
            times.append(time.perf_counter() - start)
            cpu[name] = time.process_time() - start_cpu  # all threads of this process
        print(f"round {r}: mint {t_mint[-1]:.2f} s ({cpu['mint']:.1f} CPU s), HF generate + PEFT {t_peft[-1]:.2f} s "
              f"({cpu['peft']:.1f} CPU s), {produced} tokens each", flush=True)
    return min(t_mint), min(t_peft)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--skip-sampling", action="store_true")
    parser.add_argument("--skip-training", action="store_true", help="run only the sampling benchmark")
    parser.add_argument("--sampling-rounds", type=int, default=2, help="alternating mint / HF rounds (fastest kept)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    if not args.skip_training:
        t_peft = bench_peft_training(args.clients, args.batch, args.seq, args.steps, args.rank)
        t_seq, t_bat = bench_mint_training(args.clients, args.batch, args.seq, args.steps, args.rank)
        print_table(
            f"training: {args.clients} clients x SFT step ({args.batch} x {args.seq} tokens, rank {args.rank}), seconds per round",
            ["", "seconds", "vs PEFT sequential"],
            [["transformers + PEFT, one after another", f"{t_peft:.2f}", "1.00x"],
             ["mint, one client at a time", f"{t_seq:.2f}", f"{t_peft / t_seq:.2f}x"],
             ["mint, batched", f"{t_bat:.2f}", f"{t_peft / t_bat:.2f}x"],
             ["mint single client step vs one PEFT step", f"{t_seq / args.clients:.2f}",
              f"{t_peft / t_seq:.2f}x"]])
    if not args.skip_sampling:
        t_mint, t_hf = bench_sampling(args.clients, args.prompts, args.new_tokens, args.rank, args.sampling_rounds)
        print_table(f"sampling: {args.clients} adapters x {args.prompts} prompts x {args.new_tokens} new tokens, "
                    f"seconds (fastest of {args.sampling_rounds} alternating rounds)",
                    ["", "seconds", "vs HF generate + PEFT"],
                    [["HF generate + PEFT, per adapter", f"{t_hf:.2f}", "1.00x"],
                     ["mint batched", f"{t_mint:.2f}", f"{t_hf / t_mint:.2f}x"]])


if __name__ == "__main__":
    main()
