"""An independent plain-PyTorch LoRA reference: forward hooks on a freshly loaded HF model.

Used to check the engine's losses, gradients and samples without going through any mint op.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM


class ReferenceLora:
    """The base model from ``folder`` with LoRA deltas ``scale * (x @ A^T) @ B`` added by forward hooks.

    ``weights``: {"<module>.lora_a": [r, in], "<module>.lora_b": [r, out]} (mint's rank-major layout).
    """

    def __init__(self, folder: str, weights: dict[str, torch.Tensor], scale: float):
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        self.model.eval().requires_grad_(False)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in weights.items()}
        self.scale = scale
        names = {k.rsplit(".", 1)[0] for k in weights}
        for name in names:
            module = self.model.get_submodule(name)
            a, b = self.params[f"{name}.lora_a"], self.params[f"{name}.lora_b"]
            module.register_forward_hook(lambda m, inp, out, a=a, b=b: out + self.scale * (inp[0] @ a.T) @ b)

    def target_logprobs(self, tokens: list[int], targets: list[int]) -> torch.Tensor:
        """log p(target_i | tokens[:i+1]) for one unpadded sequence: float32 [N]."""
        logits = self.model(input_ids=torch.tensor([tokens])).logits[0].float()
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(targets)[:, None])[:, 0]

    def cross_entropy(self, data) -> torch.Tensor:
        """sum over data and tokens of -logprob * weight."""
        total = torch.zeros(())
        for d in data:
            tokens = d.model_input.to_ints()
            targets = d.loss_fn_inputs["target_tokens"].to_torch().tolist()
            weights = d.loss_fn_inputs["weights"].to_torch().float()
            total = total - (self.target_logprobs(tokens, targets) * weights).sum()
        return total

    def grads(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = list(self.params)
        values = torch.autograd.grad(loss, [self.params[k] for k in keys])
        return dict(zip(keys, values))

    @torch.no_grad()
    def greedy(self, prompt: list[int], max_tokens: int) -> list[int]:
        """Greedy decoding recomputing the whole sequence each step (no KV cache)."""
        seq = list(prompt)
        for _ in range(max_tokens):
            logits = self.model(input_ids=torch.tensor([seq])).logits[0, -1]
            seq.append(int(torch.argmax(logits)))
        return seq[len(prompt) :]
