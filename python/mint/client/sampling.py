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
        weakref.finalize(self, engine.submit, engine.release_sampler, model_path)

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
        """
        try:
            if isinstance(prompt, list):
                prompt = types.ModelInput.from_ints(prompt)
            prompt = coerce(types.ModelInput, prompt, "prompt")
            if sampling_params is None:
                raise BadRequestError("is required (max_tokens has no default)", field="sampling_params")
            params = coerce(types.SamplingParams, sampling_params, "sampling_params")
            if include_prompt_logprobs or topk_prompt_logprobs:
                raise BadRequestError("prompt logprobs are not supported yet", field="include_prompt_logprobs")
            return APIFuture(self._engine.submit_sample(self._slot, prompt, num_samples, params))
        except MintError as exc:
            return failed(exc)

    async def sample_async(self, prompt, num_samples=1, sampling_params=None, include_prompt_logprobs=False,
                           topk_prompt_logprobs=0) -> types.SampleResponse:
        """Async twin of :meth:`sample`: returns the SampleResponse."""
        return await self.sample(prompt, num_samples, sampling_params, include_prompt_logprobs, topk_prompt_logprobs)

    def get_tokenizer(self):
        """The base model's Hugging Face tokenizer."""
        return self._engine.tokenizer
