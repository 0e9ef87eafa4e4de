"""Training speed, two workloads: mint (one client at a time, and K clients batched) vs HF transformers + PEFT.

    python -m bench.training [--clients 4] [--rounds 3] [--rank 16] [--case fixed|sft|both]

Cases (each client has its own data; mint and PEFT get the same tokens):

- ``fixed``: pure compute. 4 x 64 random tokens per client, every target weighted (no padding, no prompt).
  PEFT: ``logits = model(input_ids).logits``, loss = -sum(log_softmax(logits)[targets]).
- ``sft``: the quickstart's Pig Latin SFT (examples/piglatin_data.py): 8 chat-formatted datums per client,
  prompt tokens weight 0, answer tokens weight 1, lengths vary. PEFT is run as a user would: the batch
  right-padded to its longest sequence, ``labels`` = tokens with -100 on prompt and padding,
  ``model(input_ids, attention_mask, labels=labels).loss.backward()``. mint gets the same datums
  (model_input = tokens[:-1], target_tokens = tokens[1:], weights 0 on the prompt), as the quickstart
  builds them.

Each step is forward_backward + AdamW step, LoRA rank ``--rank`` on attention + MLP (PEFT "all-linear"; mint
with train_unembed=False), fp32, on SmolLM2-135M. PEFT runs one PeftModel per client, one after another.
The three variants run interleaved, one round each in turn, ``--rounds`` times after a warm-up round;
the medians are reported (the machine may be shared, so same-run ratios are what to compare).

PEFT runs in a child process of its own and mint in this one, whose main thread runs no parallel torch op
(mint computes on its engine's worker thread): each process then holds one OpenMP pool. Two pools in one
process make libgomp stop spin-waiting (see mint.engine.threads), which slowed whichever contender
ran second by up to 30%.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.common import machine, machine_limits, print_table
from mint.engine.threads import on_fresh_thread

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


# ---- data ------------------------------------------------------------------------------------------


def fixed_case(client: int, batch: int = 4, seq: int = 64) -> list[tuple[list[int], int]]:
    """(tokens, n_prompt) per datum: ``seq + 1`` random tokens, no prompt (every target weighted)."""
    gen = torch.Generator().manual_seed(client)
    rows = torch.randint(100, 49152, (batch, seq + 1), generator=gen)
    return [(r.tolist(), 1) for r in rows]


def sft_case(client: int, tokenizer, batch: int = 8) -> list[tuple[list[int], int]]:
    """(tokens, n_prompt) per datum: the quickstart's chat-formatted Pig Latin prompt + answer + <|im_end|>."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    from piglatin_data import load_sentences, to_pig_latin
    from quickstart import prompt_tokens

    sentences = random.Random(client).sample(load_sentences(), batch)
    out = []
    for s in sentences:
        prompt = prompt_tokens(tokenizer, s)
        answer = tokenizer.encode(to_pig_latin(s), add_special_tokens=False) + [tokenizer.eos_token_id]
        out.append((prompt + answer, len(prompt)))
    return out


def datums(rows: list[tuple[list[int], int]]):
    """mint Datums: model_input tokens[:-1], targets tokens[1:], weight 0 on the n_prompt - 1 prompt targets."""
    from mint import types

    return [types.Datum(model_input=types.ModelInput.from_ints(t[:-1]),
                        loss_fn_inputs={"target_tokens": t[1:], "weights": [0.0] * (p - 1) + [1.0] * (len(t) - p)})
            for t, p in rows]


def counts(rows: list[tuple[list[int], int]]) -> tuple[int, int, int]:
    """(real input tokens, weighted targets, padded tokens PEFT runs) of one client's batch."""
    real = sum(len(t) - 1 for t, _ in rows)
    weighted = sum(len(t) - p for t, p in rows)
    return real, weighted, len(rows) * max(len(t) for t, _ in rows)


def linear_gflop(config, tokens: int, unembed_grad_tokens: int, lora_rank: int) -> float:
    """GFLOP of one SFT step's linear layers for a Llama-style ``config``: base forward over ``tokens``, base
    input-gradients (none into the frozen embedding, so layer 0's q/k/v/gate/up skip theirs), the unembedding's
    input-gradient over ``unembed_grad_tokens``, and LoRA (rank ``lora_rank`` on every attention / MLP
    projection: forward 2 GEMMs, backward 4). Attention score GEMMs, norms and the loss are left out."""
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # q k v o gate up down: (in, out)
    per_layer = sum(a * b for a, b in shapes)
    first_inputs = sum(a * b for a, b in shapes[:3] + shapes[4:6])  # inputs come from the frozen embedding
    layers, vocab = config.num_hidden_layers, config.vocab_size
    forward = 2 * tokens * (layers * per_layer + h * vocab)
    backward = 2 * tokens * (layers * per_layer - first_inputs) + 2 * unembed_grad_tokens * h * vocab
    lora = 6 * 2 * tokens * lora_rank * layers * sum(a + b for a, b in shapes)
    return (forward + backward + lora) / 1e9


# ---- runners ---------------------------------------------------------------------------------------


def mint_runners(case_rows: list, rank: int):
    """(sequential round, batched round, padded batched round) over one mint training client per entry of
    ``case_rows``; the last one runs the engine's padded [B, L] pass instead of the packed one."""
    import mint
    from mint import types

    service = mint.ServiceClient()
    trainers = [service.create_lora_training_client(base_model=BASE, rank=rank, seed=i, train_unembed=False)
                for i in range(len(case_rows))]
    data = [datums(rows) for rows in case_rows]
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

    def batched_padded():
        engine = trainers[0]._engine
        engine.packed_passes = False
        try:
            batched()
        finally:
            engine.packed_passes = True

    return sequential, batched, batched_padded


def peft_runner(case_rows: list, rank: int, labels_api: bool):
    """One round: each client's PeftModel does forward, backward and AdamW on its batch, one after another."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mint.engine.models import resolve_model_source

    steps = []
    for rows in case_rows:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_source(BASE), dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95),
                                eps=1e-12)
        width = max(len(t) for t, _ in rows)
        ids = torch.tensor([t + [0] * (width - len(t)) for t, _ in rows])
        mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t, _ in rows])
        labels = ids.clone()
        for i, (t, p) in enumerate(rows):
            labels[i, :p] = -100
            labels[i, len(t):] = -100

        def step(model=model, opt=opt, ids=ids, mask=mask, labels=labels):
            if labels_api:  # the usual HF SFT step: padded batch, -100 labels
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            else:  # fixed case: no padding, every target
                logits = model(input_ids=ids[:, :-1]).logits.float()
                loss = -torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).sum()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        steps.append(step)

    def one_round():
        for step in steps:
            step()

    return one_round


class PeftProcess:
    """:func:`peft_runner`'s rounds in a spawned child process; calling it runs one round there and returns the
    seconds the child measured around it."""

    def __init__(self, case_rows: list, rank: int, labels_api: bool):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_peft_child, args=(child, case_rows, rank, labels_api), daemon=True)
        self._process.start()
        self._receive()

    def _receive(self):
        kind, value = self._conn.recv()
        if kind == "error":
            raise RuntimeError(f"the PEFT process failed: {value}")
        return value

    def __call__(self) -> float:
        self._conn.send("round")
        return self._receive()

    def close(self) -> None:
        self._conn.send("stop")
        self._process.join(30)


def _peft_child(conn, case_rows: list, rank: int, labels_api: bool) -> None:
    try:
        one_round = peft_runner(case_rows, rank, labels_api)
        conn.send(("ready", None))
        while conn.recv() == "round":
            start = time.perf_counter()
            one_round()
            conn.send(("done", time.perf_counter() - start))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", repr(exc)))


def timed_rounds(runners: dict[str, object], rounds: int) -> dict[str, float]:
    """Median seconds per round of each runner, run interleaved after one warm-up round each. A runner that
    returns a float (a round run elsewhere) reports its own time."""

    def timed(fn) -> float:
        start = time.perf_counter()
        result = fn()
        return result if isinstance(result, float) else time.perf_counter() - start

    for fn in runners.values():
        timed(fn)
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            times[name].append(timed(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def run_case(name: str, case_rows: list, rank: int, rounds: int, padded: bool) -> dict[str, float]:
    seq, bat, bat_padded = mint_runners(case_rows, rank)
    runners = {
        "peft": PeftProcess(case_rows, rank, labels_api=(name == "sft")),
        "mint_seq": seq,
        "mint_batched": bat,
    }
    if padded:
        runners["mint_padded"] = bat_padded
    try:
        t = timed_rounds(runners, rounds)
    finally:
        runners["peft"].close()
    from transformers import AutoConfig

    from mint.engine.models import resolve_model_source

    config = AutoConfig.from_pretrained(resolve_model_source(BASE))
    k = len(case_rows)
    real = sum(counts(r)[0] for r in case_rows)
    weighted = sum(counts(r)[1] for r in case_rows)
    positions = real if name == "fixed" else sum(counts(r)[2] for r in case_rows)
    print_table(
        f"{name}: {k} clients, {real} real input tokens ({weighted} weighted targets; PEFT runs {positions} padded "
        f"positions), rank {rank}, seconds per round (median of {rounds})",
        ["", "seconds", "vs PEFT sequential"],
        [["transformers + PEFT, one after another", f"{t['peft']:.2f}", "1.00x"],
         ["mint, one client at a time (= single client)", f"{t['mint_seq']:.2f}", f"{t['peft'] / t['mint_seq']:.2f}x"],
         ["mint, batched", f"{t['mint_batched']:.2f}", f"{t['peft'] / t['mint_batched']:.2f}x"]]
        + ([["mint, batched, padded pass (before packing)", f"{t['mint_padded']:.2f}",
             f"{t['peft'] / t['mint_padded']:.2f}x"]] if padded else []),
    )
    peft_gflop = linear_gflop(config, positions, positions, rank)
    mint_gflop = linear_gflop(config, real, weighted, rank)
    print(f"linear-layer work per round: PEFT {peft_gflop:.0f} GFLOP ({peft_gflop / t['peft']:.1f} GFLOP/s), "
          f"mint {mint_gflop:.0f} GFLOP ({mint_gflop / t['mint_batched']:.1f} GFLOP/s batched); "
          f"work ratio {peft_gflop / mint_gflop:.2f}x")
    return t


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--case", choices=["fixed", "sft", "both"], default="both")
    parser.add_argument("--with-padded", action="store_true",
                        help="also time mint batched with the padded pass (the engine's pass before packing)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    limits = on_fresh_thread(machine_limits)
    print(f"measured: fp32 matmul {limits['matmul_gflops']:.0f} GFLOP/s, memory copy {limits['copy_gbps']:.1f} GB/s")
    if args.case in ("fixed", "both"):
        run_case("fixed", [fixed_case(i) for i in range(args.clients)], args.rank, args.rounds, args.with_padded)
    if args.case in ("sft", "both"):
        from mint.engine.models import resolve_model_source
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(BASE))
        run_case("sft", [sft_case(i, tokenizer) for i in range(args.clients)], args.rank, args.rounds, args.with_padded)


if __name__ == "__main__":
    main()
