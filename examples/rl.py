"""Reinforcement learning: GRPO-style policy gradient on short arithmetic questions, through mint's public API.

    python examples/rl.py                    # about 6-8 minutes on 2 (shared) CPU cores

Each step samples a group of answers per question from the current weights, scores them exactly (reward 1
when the reply is exactly the right number, else 0), uses advantage = reward - group mean, and takes one
``importance_sampling`` (or ``--loss ppo``) step; the next step samples from the new weights. It prints per
step the mean reward, the fraction of replies whose first number is right (whatever else they say), and
the KL between the sampler's and the learner's log-probs of the sampled tokens (about 0: on-policy).
"""

from __future__ import annotations

import argparse
import random
import re
import time

import mint
from mint import types

SYSTEM = "Answer with the number only."
# Two worked examples as earlier chat turns: without them the 135M model almost never answers with a bare
# number at temperature 1, so every group would score 0 and there would be nothing to learn from.
SHOTS = [("What is 2+3?", "5"), ("What is 4+4?", "8")]


def prompt_tokens(tokenizer, question: str) -> list[int]:
    """The chat-formatted few-shot prompt, ending where the assistant's answer begins."""
    messages = [{"role": "system", "content": SYSTEM}]
    for q, a in SHOTS:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": question})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def make_question(rng: random.Random, max_operand: int) -> tuple[str, int]:
    a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
    return f"What is {a}+{b}?", a + b


def score(text: str, answer: int) -> tuple[float, bool]:
    """(reward, correct): reward 1.0 iff the reply is exactly the number; correct iff its first number is."""
    numbers = re.findall(r"-?\d+", text)
    correct = bool(numbers) and int(numbers[0]) == answer
    return float(text.strip() == str(answer)), correct


def evaluate(sampler, tokenizer, questions: list[tuple[str, int]]) -> float:
    """Fraction of ``questions`` whose greedy reply is exactly the right number."""
    params = types.SamplingParams(max_tokens=8, temperature=0.0, stop_token_ids=[tokenizer.eos_token_id])
    futures = [sampler.sample(types.ModelInput.from_ints(prompt_tokens(tokenizer, q)), 1, params) for q, _ in questions]
    rewards = [
        score(tokenizer.decode(f.result().sequences[0].tokens, skip_special_tokens=True), answer)[0]
        for f, (_, answer) in zip(futures, questions)
    ]
    return sum(rewards) / len(rewards)


def make_datum(prompt: list[int], seq: types.SampledSequence, advantage: float) -> types.Datum:
    """Prompt + sampled reply; the reply's tokens carry the sampler's logprobs and the advantage."""
    tokens = prompt + seq.tokens
    n_prompt = len(prompt) - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "logprobs": [0.0] * n_prompt + list(seq.logprobs),
            "advantages": [0.0] * n_prompt + [advantage] * len(seq.tokens),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--questions", type=int, default=4, help="questions per step")
    parser.add_argument("--group", type=int, default=8, help="samples per question")
    parser.add_argument("--max-operand", type=int, default=9)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--loss", choices=["importance_sampling", "ppo"], default="importance_sampling")
    parser.add_argument("--eval-questions", type=int, default=40, help="held-out questions scored greedily")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.time()
    service = mint.ServiceClient()
    trainer = service.create_lora_training_client(base_model=args.base_model, rank=args.rank, seed=args.seed)
    tokenizer = trainer.get_tokenizer()
    rng = random.Random(args.seed)
    params = types.SamplingParams(
        max_tokens=args.max_tokens, temperature=1.0, stop_token_ids=[tokenizer.eos_token_id], seed=args.seed
    )
    adam = types.AdamParams(learning_rate=args.lr)
    print(f"model ready in {time.time() - start:.0f} s; {args.questions} questions x {args.group} samples per step")
    print(f"{'step':>4} {'reward':>7} {'correct':>8} {'kl':>9} {'time':>6}  example")

    history: list[float] = []
    sampler = trainer.save_weights_and_get_sampling_client("rl-000")
    held_out_rng = random.Random(args.seed + 10_000)
    held_out = [make_question(held_out_rng, args.max_operand) for _ in range(args.eval_questions)]
    before = evaluate(sampler, tokenizer, held_out) if held_out else float("nan")
    for step in range(args.steps):
        t0 = time.time()
        questions = [make_question(rng, args.max_operand) for _ in range(args.questions)]
        prompts = [prompt_tokens(tokenizer, q) for q, _ in questions]
        futures = [
            sampler.sample(types.ModelInput.from_ints(p), args.group, params.model_copy(update={"seed": rng.getrandbits(62)}))
            for p in prompts
        ]
        data, rewards, correct, example = [], [], [], ""
        for (question, answer), prompt, future in zip(questions, prompts, futures):
            seqs = future.result().sequences
            texts = [tokenizer.decode(s.tokens, skip_special_tokens=True) for s in seqs]
            scores = [score(t, answer) for t in texts]
            group_rewards = [r for r, _ in scores]
            rewards += group_rewards
            correct += [c for _, c in scores]
            example = example or f"{question} -> {texts[0].strip()[:30]!r}"
            mean = sum(group_rewards) / len(group_rewards)
            if all(r == mean for r in group_rewards):
                continue  # every answer scored the same: no learning signal in this group
            data += [make_datum(prompt, s, r - mean) for s, r in zip(seqs, group_rewards)]

        kl = None
        if data:
            out = trainer.forward_backward(data, args.loss).result()
            trainer.optim_step(adam).result()
            # KL(sampler || learner) over the sampled tokens, estimated as mean(sampler lp - learner lp).
            diffs = []
            for datum, result in zip(data, out.loss_fn_outputs):
                sampled = datum.loss_fn_inputs["logprobs"].to_torch()
                learner = result["logprobs"].to_torch()
                reply = datum.loss_fn_inputs["advantages"].to_torch() != 0
                diffs += (sampled - learner)[reply].tolist()
            kl = sum(diffs) / max(len(diffs), 1)
        sampler = trainer.save_weights_and_get_sampling_client(f"rl-{step + 1:03d}")
        n = len(rewards)
        kl_text = "-" if kl is None else f"{kl:.2e}"  # "-": every group scored alike, no update this step
        history.append(sum(rewards) / n)
        print(
            f"{step:>4} {sum(rewards) / n:>7.3f} {sum(correct) / n:>8.3f} {kl_text:>9} {time.time() - t0:>5.1f}s  {example}",
            flush=True,
        )
    third = max(len(history) // 3, 1)
    first = sum(history[:third]) / third
    last = sum(history[-third:]) / third
    print(f"mean reward: first {third} steps {first:.3f}, last {third} steps {last:.3f}")
    if held_out:
        after = evaluate(sampler, tokenizer, held_out)
        print(f"greedy exact answers on {len(held_out)} held-out questions: before {before:.3f}, after {after:.3f}")
    print(f"total time {time.time() - start:.0f} s; final weights at {sampler.model_path}")


if __name__ == "__main__":
    main()
