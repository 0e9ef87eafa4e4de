"""Quickstart: teach SmolLM2-135M-Instruct Pig Latin with a LoRA adapter, through mint's public API.

    python examples/quickstart.py            # about 7 minutes on 2 CPU cores

It scores the base model and the fine-tuned adapter on held-out sentences (exact match and character
similarity), so you can see that the adapter learned the task.
"""

from __future__ import annotations

import argparse
import difflib
import random
import time

from tqdm import tqdm

import mint
from mint import types

from piglatin_data import load_sentences, to_pig_latin, train_test_split

SYSTEM = "Rewrite the user's sentence in Pig Latin."


def prompt_tokens(tokenizer, sentence: str) -> list[int]:
    """The chat-formatted prompt, ending where the assistant's answer begins."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": sentence}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def make_datum(tokenizer, sentence: str) -> types.Datum:
    """Prompt + answer; only the answer tokens (and the closing <|im_end|>) carry weight."""
    prompt = prompt_tokens(tokenizer, sentence)
    answer = tokenizer.encode(to_pig_latin(sentence), add_special_tokens=False) + [tokenizer.eos_token_id]
    tokens = prompt + answer
    weights = [0.0] * (len(prompt) - 1) + [1.0] * len(answer)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
    )


def evaluate(sampler: mint.SamplingClient, tokenizer, sentences: list[str], label: str) -> dict:
    """Greedy answers for ``sentences``: exact-match rate and mean character similarity to the reference."""
    params = types.SamplingParams(max_tokens=64, temperature=0.0, stop_token_ids=[tokenizer.eos_token_id])
    futures = [sampler.sample(types.ModelInput.from_ints(prompt_tokens(tokenizer, s)), 1, params) for s in sentences]
    exact, similarity, examples = 0, 0.0, []
    for sentence, future in tqdm(list(zip(sentences, futures)), desc=f"eval {label}", leave=False):
        seq = future.result().sequences[0]
        text = tokenizer.decode(seq.tokens, skip_special_tokens=True).strip()
        reference = to_pig_latin(sentence)
        exact += text == reference
        similarity += difflib.SequenceMatcher(None, text, reference).ratio()
        examples.append((sentence, reference, text))
    n = len(sentences)
    return {"exact": exact / n, "similarity": similarity / n, "examples": examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.time()
    service = mint.ServiceClient()
    trainer = service.create_lora_training_client(base_model=args.base_model, rank=args.rank, seed=args.seed)
    tokenizer = trainer.get_tokenizer()
    train, test = train_test_split(load_sentences(), n_test=args.n_test, seed=args.seed)
    print(f"{len(train)} training and {len(test)} held-out sentences; model ready in {time.time() - start:.0f} s")

    before = evaluate(service.create_sampling_client(base_model=args.base_model), tokenizer, test, "base")

    rng = random.Random(args.seed)
    adam = types.AdamParams(learning_rate=args.lr)
    bar = tqdm(range(args.steps), desc="train")
    for _ in bar:
        batch = [make_datum(tokenizer, s) for s in rng.sample(train, args.batch_size)]
        fb = trainer.forward_backward(batch, "cross_entropy")
        step = trainer.optim_step(adam)
        out = fb.result()
        step.result()
        n_tokens = sum(sum(d.loss_fn_inputs["weights"].to_torch().tolist()) for d in batch)
        bar.set_postfix(loss=f"{out.metrics['loss:sum'] / n_tokens:.3f}")

    sampler = trainer.save_weights_and_get_sampling_client("piglatin")
    after = evaluate(sampler, tokenizer, test, "tuned")

    print(f"\nadapter saved at {sampler.model_path}")
    for sentence, reference, _ in before["examples"][:3]:
        tuned = next(t for s, _, t in after["examples"] if s == sentence)
        base = next(t for s, _, t in before["examples"] if s == sentence)
        print(f"\n  input : {sentence}\n  target: {reference}\n  base  : {base[:80]}\n  tuned : {tuned[:80]}")
    print(f"\nheld-out sentences: {len(test)}")
    print(f"{'':10}{'exact match':>14}{'char similarity':>18}")
    print(f"{'base':10}{before['exact']:>14.1%}{before['similarity']:>18.3f}")
    print(f"{'tuned':10}{after['exact']:>14.1%}{after['similarity']:>18.3f}")
    print(f"total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
