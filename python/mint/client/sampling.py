"""SamplingClient: text generation from a base model or a saved sampler checkpoint."""

from __future__ import annotations

import weakref
from typing import Any

from mint import types
from mint.client._validate import coerce
from mint.client.futures import APIFuture, failed
from mint.engine.engine import Engine
from mint.errors import BadRequestError, MintError


class SamplingClient:
    """Samples from one adapter (or the bare base model) resident in the engine's adapter pool."""

    def __init__(self, engine: Engine, model_path: str | None = None):
        self._engine = engine
        self.model_path = model_path
        self._slot = engine.submit(engine.acquire_sampler, model_path).result()
        weakref.finalize(self, engine.submit, engine.release_sampler, model_path, self._slot)

    @property
    def base_model(self) -> str:
        return self._engine.base_model

    def sample(
        self,
        prompt: types.ModelInput | list[int],
        num_samples: int = 1,
        sampling_params: types.SamplingParams | dict[str, Any] | None = None,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
    ) -> APIFuture[types.SampleResponse]:
        """Generate ``num_samples`` continuations of ``prompt``.

        Each SampledSequence has ``tokens``, ``logprobs`` (the log-probability of each token under the
        distribution it was drawn from: softmax(logits / temperature) restricted to the top_k / top_p set and
        renormalised; for temperature 0, log_softmax(logits)) and ``stop_reason`` ("stop" or "length").

        ``include_prompt_logprobs=True`` fills ``prompt_logprobs`` like :meth:`compute_logprobs`;
        ``topk_prompt_logprobs=k`` fills ``topk_prompt_logprobs`` with, per prompt position, the k most likely
        ``(token_id, logprob)`` pairs (None at position 0). Both use log_softmax(logits), unaffected by the
        sampling parameters.
        """
        try:
            if isinstance(prompt, list):
                prompt = types.ModelInput.from_ints(prompt)
            prompt = coerce(types.ModelInput, prompt, "prompt")
            if sampling_params is None:
                raise BadRequestError("is required (max_tokens has no default)", field="sampling_params")
            params = coerce(types.SamplingParams, sampling_params, "sampling_params")
            return APIFuture(
                self._engine.submit_sample(
                    self._slot, prompt, num_samples, params, include_prompt_logprobs, topk_prompt_logprobs
                )
            )
        except MintError as exc:
            return failed(exc)

    async def sample_async(self, prompt, num_samples=1, sampling_params=None, include_prompt_logprobs=False,
                           topk_prompt_logprobs=0) -> types.SampleResponse:
        """Async twin of :meth:`sample`: returns the SampleResponse."""
        return await self.sample(prompt, num_samples, sampling_params, include_prompt_logprobs, topk_prompt_logprobs)

    def compute_logprobs(self, prompt: types.ModelInput | list[int]) -> APIFuture[list[float | None]]:
        """Log-prob of each token of ``prompt`` given the tokens before it: ``[None, lp_1, ..., lp_{N-1}]``.

        Computed with this client's weights from log_softmax(logits) (temperature 1, no top-k / top-p). For a
        token that ``sample`` drew at temperature 1 without filters, its ``logprobs`` entry agrees with this.
        """
        try:
            if isinstance(prompt, list):
                prompt = types.ModelInput.from_ints(prompt)
            prompt = coerce(types.ModelInput, prompt, "prompt")
        except MintError as exc:
            return failed(exc)
        return APIFuture(self._engine.submit(self._engine.compute_logprobs, self._slot, prompt))

    async def compute_logprobs_async(self, prompt) -> list[float | None]:
        """Async twin of :meth:`compute_logprobs`: returns the list."""
        return await self.compute_logprobs(prompt)

    def get_tokenizer(self):
        """The base model's Hugging Face tokenizer."""
        return self._engine.tokenizer
