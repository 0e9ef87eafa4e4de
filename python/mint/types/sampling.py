"""Sampling types: the generation parameters, one sampled sequence, and a sample response."""

from __future__ import annotations

from typing import List, Literal, Optional, Tuple, Union

from pydantic import Field, field_validator
from typing_extensions import TypeAlias

from mint.types._base import RequestModel, ResponseModel
from mint.types.model_input import TokenId

__all__ = ["SampleResponse", "SampledSequence", "SamplingParams", "StopReason"]

StopReason: TypeAlias = Literal["length", "stop"]
"""Why a sequence ended: "stop" (a stop string/token was produced) or "length" (max_tokens reached)."""


class SamplingParams(RequestModel):
    """Controls text generation.

    ``stop`` may be one string, a list of strings, or a list of token ids; ``stop_token_ids`` adds
    more token ids. ``stop_strings()`` and ``stop_tokens()`` give the merged sets.

    Example::

        types.SamplingParams(max_tokens=100, temperature=0.8, top_p=0.95,
                             stop_token_ids=[tokenizer.eos_token_id])
    """

    max_tokens: int = Field(ge=1)
    """Maximum number of tokens to generate (required, >= 1)."""

    temperature: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    """Randomness: 0 is greedy (deterministic), higher is more random."""

    top_k: int = -1
    """Sample only among the k most likely tokens; -1 (or any value <= 0) disables the filter."""

    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling: the smallest set of tokens whose probability reaches top_p; 1 disables it."""

    seed: Optional[int] = None
    """Random seed for reproducible sampling; None picks one."""

    stop: Union[str, List[str], List[TokenId], None] = None
    """Stop sequences: a string, a list of strings, or a list of token ids."""

    stop_token_ids: Optional[List[TokenId]] = None
    """Token ids that end generation (in addition to any ids in ``stop``)."""

    @field_validator("stop")
    @classmethod
    def _no_empty_stop_string(cls, stop: Union[str, List[str], List[int], None]):
        strings = [stop] if isinstance(stop, str) else stop or []
        if any(isinstance(s, str) and not s for s in strings):
            raise ValueError("stop strings must be non-empty")
        return stop

    def stop_strings(self) -> List[str]:
        """The stop strings (from ``stop``), without duplicates, in order."""
        if isinstance(self.stop, str):
            return [self.stop]
        return _unique([s for s in self.stop or [] if isinstance(s, str)])

    def stop_tokens(self) -> List[int]:
        """The stop token ids: the ids in ``stop`` followed by ``stop_token_ids``, without duplicates."""
        from_stop = [] if isinstance(self.stop, str) else [t for t in self.stop or [] if isinstance(t, int)]
        return _unique(from_stop + list(self.stop_token_ids or []))


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))


class SampledSequence(ResponseModel):
    """One generated sequence."""

    stop_reason: StopReason
    """Why generation ended: "stop" or "length"."""

    tokens: List[int]
    """Generated token ids (a stop token that ended the sequence is included)."""

    logprobs: Optional[List[float]] = None
    """Log-probability of each generated token under the sampling distribution, if requested."""


TopkPromptLogprobs: TypeAlias = List[Optional[List[Tuple[int, float]]]]


class SampleResponse(ResponseModel):
    """Result of ``sample``: ``num_samples`` sequences and, if asked, prompt log-probs."""

    sequences: List[SampledSequence]
    """The generated sequences."""

    type: Literal["sample"] = "sample"
    """Response kind discriminator."""

    prompt_logprobs: Optional[List[Optional[float]]] = None
    """Log-prob of each prompt token given the tokens before it (None for the first), if requested."""

    topk_prompt_logprobs: Optional[TopkPromptLogprobs] = None
    """For each prompt position, up to k ``(token_id, logprob)`` pairs (or None), if requested."""
