"""TrainingClient: forward / forward_backward / optim_step and weight export for one LoRA adapter."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from mint import types
from mint.client._validate import coerce
from mint.client.futures import APIFuture, failed
from mint.engine.engine import Engine
from mint.errors import MintError

if TYPE_CHECKING:
    from mint.client.sampling import SamplingClient


class TrainingClient:
    """Trains one LoRA adapter on a shared base model. Every call returns an APIFuture; calls run in order."""

    def __init__(self, engine: Engine, run_id: str, config: types.LoraConfig):
        self._engine = engine
        self.model_id = run_id
        self.config = config

    @property
    def base_model(self) -> str:
        return self._engine.base_model

    def _submit(self, fn, *args) -> APIFuture:
        return APIFuture(self._engine.submit(fn, *args))

    def forward(
        self, data: list[types.Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict[str, float] | None = None
    ) -> APIFuture[types.ForwardBackwardOutput]:
        """Compute the loss and per-token target logprobs of ``data`` without gradients.

        data: Datum list; each has model_input (N tokens) and loss_fn_inputs with target_tokens (int64 [N]) and,
        for cross_entropy, optional weights (float32 [N]). Position i predicts target_tokens[i].
        """
        return APIFuture(self._engine.submit_forward_backward(self.model_id, data, loss_fn, loss_fn_config, False))

    def forward_backward(
        self, data: list[types.Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict[str, float] | None = None
    ) -> APIFuture[types.ForwardBackwardOutput]:
        """Like :meth:`forward`, and add the gradients of the summed loss to the adapter (they accumulate until
        :meth:`optim_step`). A failed call leaves the accumulated gradients unchanged."""
        return APIFuture(self._engine.submit_forward_backward(self.model_id, data, loss_fn, loss_fn_config, True))

    def forward_backward_custom(self, data: list[types.Datum], loss_fn) -> APIFuture[types.ForwardBackwardOutput]:
        """forward_backward with your own differentiable loss over the learner's per-token logprobs.

        ``loss_fn(data, logprobs) -> (loss, metrics)`` receives the Datum list and, per datum, a float32 [N_i]
        tensor of the learner's log-probs of its ``target_tokens`` (part of the autograd graph; other
        ``loss_fn_inputs`` keys are passed through untouched for it to read). It returns a scalar tensor and a
        dict of float metrics. mint backpropagates the exact gradient of that loss through the model into the
        adapter's accumulators. The result holds the per-datum ``logprobs`` and the metrics (with
        ``loss:sum`` added if absent). If ``loss_fn`` raises, its exception is re-raised by ``result()`` and
        the accumulated gradients are unchanged. ``loss_fn`` runs on mint's worker thread, so it must not wait
        on other mint calls.
        """
        data = list(data) if isinstance(data, (list, tuple)) else data
        return self._submit(self._engine.forward_backward_custom, self.model_id, data, loss_fn)

    def optim_step(self, adam_params: types.AdamParams | dict[str, Any] | None = None) -> APIFuture[types.OptimStepResponse]:
        """One AdamW step (decoupled weight decay) with the accumulated gradients, which are then zeroed."""
        try:
            params = coerce(types.AdamParams, adam_params if adam_params is not None else {}, "adam_params")
        except MintError as exc:
            return failed(exc)
        return APIFuture(self._engine.submit_optim_step(self.model_id, params))

    def save_weights_for_sampler(
        self, name: str | None = None, ttl_seconds: int | None = None
    ) -> APIFuture[types.SaveWeightsForSamplerResponse]:
        """Save the adapter weights; the result's ``path`` is ``mint://<run_id>/sampler_weights/<name>``.
        The checkpoint is listed by the RestClient (type "sampler") and expires after ``ttl_seconds`` if given."""
        name = name if name is not None else f"sampler-{uuid.uuid4().hex[:8]}"
        return self._submit(self._engine.save_weights_for_sampler, self.model_id, name, ttl_seconds)

    def save_state(self, name: str, ttl_seconds: int | None = None) -> APIFuture[types.SaveWeightsResponse]:
        """Save weights and optimizer state (Adam moments, per-tensor step counts) for an exact resume; the
        result's ``path`` is ``mint://<run_id>/weights/<name>``. Gradients accumulated since the last
        optim_step are not saved. The write is atomic and checksummed; saving an existing name replaces it."""
        return self._submit(self._engine.save_state, self.model_id, name, ttl_seconds)

    def load_state(self, path: str) -> APIFuture[types.LoadWeightsResponse]:
        """Load weights from a checkpoint (``weights/`` or ``sampler_weights/``) and reset the optimizer:
        Adam moments and step counts start from zero. The checkpoint must have this client's rank and layers."""
        return self._submit(self._engine.load_state, self.model_id, path, False)

    def load_state_with_optimizer(self, path: str) -> APIFuture[types.LoadWeightsResponse]:
        """Load weights and optimizer state from a ``save_state`` checkpoint: training continues exactly as if
        it had never stopped."""
        return self._submit(self._engine.load_state, self.model_id, path, True)

    def save_weights_and_get_sampling_client(self, name: str | None = None) -> "SamplingClient":
        """Save the current weights for sampling and return a SamplingClient over them."""
        from mint.client.sampling import SamplingClient

        path = self.save_weights_for_sampler(name).result().path
        return SamplingClient(self._engine, model_path=path)

    def create_sampling_client(self, model_path: str) -> "SamplingClient":
        """A SamplingClient over a sampler checkpoint of this base model."""
        from mint.client.sampling import SamplingClient

        return SamplingClient(self._engine, model_path=model_path)

    def get_info(self) -> types.GetInfoResponse:
        """The run id, base model and LoRA settings of this client."""
        return types.GetInfoResponse(
            model_id=self.model_id,
            model_data=types.ModelData(
                model_name=self.base_model, arch=type(self._engine.model).__name__, tokenizer_id=self.base_model
            ),
            is_lora=True,
            lora_rank=self.config.rank,
            model_name=self.base_model,
        )

    def get_tokenizer(self):
        """The base model's Hugging Face tokenizer."""
        return self._engine.tokenizer

    # ---- async twins (Tinker style: await the call to get the APIFuture, await that for the result) ----
    async def forward_async(self, data, loss_fn="cross_entropy", loss_fn_config=None) -> APIFuture:
        return self.forward(data, loss_fn, loss_fn_config)

    async def forward_backward_async(self, data, loss_fn="cross_entropy", loss_fn_config=None) -> APIFuture:
        return self.forward_backward(data, loss_fn, loss_fn_config)

    async def forward_backward_custom_async(self, data, loss_fn) -> APIFuture:
        return self.forward_backward_custom(data, loss_fn)

    async def optim_step_async(self, adam_params=None) -> APIFuture:
        return self.optim_step(adam_params)

    async def save_weights_for_sampler_async(self, name=None, ttl_seconds=None) -> APIFuture:
        return self.save_weights_for_sampler(name, ttl_seconds)

    async def save_state_async(self, name: str, ttl_seconds: int | None = None) -> APIFuture:
        return self.save_state(name, ttl_seconds)

    async def load_state_async(self, path: str) -> APIFuture:
        return self.load_state(path)

    async def load_state_with_optimizer_async(self, path: str) -> APIFuture:
        return self.load_state_with_optimizer(path)

    async def save_weights_and_get_sampling_client_async(self, name=None) -> "SamplingClient":
        from mint.client.sampling import SamplingClient

        path = (await self.save_weights_for_sampler(name)).path
        return SamplingClient(self._engine, model_path=path)

    async def get_info_async(self) -> types.GetInfoResponse:
        return self.get_info()
