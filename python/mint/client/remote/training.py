"""RemoteTrainingClient: the TrainingClient API over HTTP (Tinker protocol: forward, forward_backward,
optim_step, save_weights, load_weights, save_weights_for_sampler, get_info); ``forward`` is a
forward_backward request with ``forward_only``, as the Tinker SDK sends it.

Every call POSTs its request before returning, under this client's lock and with the next ``seq_id``,
so the server receives one adapter's requests in call order, as the in-process engine queues them.
"""

from __future__ import annotations

import math
import threading
import uuid
from typing import TYPE_CHECKING, Any

from mint import types
from mint.client._validate import coerce
from mint.client.futures import APIFuture, failed
from mint.client.remote.futures import RemoteFuture
from mint.client.remote.session import Session
from mint.client.training import TrainingClient
from mint.errors import BadRequestError, MintError

if TYPE_CHECKING:
    from mint.client.remote.sampling import RemoteSamplingClient


def _datums(data: Any) -> list[types.Datum]:
    """``data`` as a list of Datum (dicts validated), errors naming ``data[i]``."""
    if not isinstance(data, (list, tuple)):
        raise BadRequestError(f"must be a list of Datum, got {type(data).__name__}", field="data")
    return [coerce(types.Datum, d, f"data[{i}]") for i, d in enumerate(data)]


def _forward_output(body: Any) -> types.ForwardBackwardOutput:
    return types.ForwardBackwardOutput.model_validate(body)


class RemoteTrainingClient(TrainingClient):
    """Trains one LoRA adapter held by a remote server. Same methods, arguments and results as the
    in-process :class:`mint.TrainingClient`; futures are server request ids, polled on ``result()``."""

    def __init__(self, session: Session, model_id: str, config: types.LoraConfig, info: types.GetInfoResponse):
        self._session = session
        self._transport = session.transport
        self.model_id = model_id
        self.config = config
        self._info = info
        self._lock = threading.Lock()
        self._seq = 0

    @property
    def base_model(self) -> str:
        return self._info.model_data.model_name or self._info.model_name or ""

    # ---- ordered submission ----
    def _submit(self, path: str, body: dict, parse) -> APIFuture:
        """POST ``body`` (plus model_id and the next seq_id) in call order; a failed POST is a failed future."""
        try:
            with self._lock:
                self._seq += 1
                return self._session.submit(path, {**body, "model_id": self.model_id, "seq_id": self._seq}, parse)
        except MintError as exc:
            return failed(exc)

    def _fwd(self, data, loss_fn: str, loss_fn_config, backward: bool) -> APIFuture[types.ForwardBackwardOutput]:
        try:
            datums = _datums(data)
        except MintError as exc:
            return failed(exc)
        payload = {"data": datums, "loss_fn": loss_fn, "loss_fn_config": loss_fn_config}
        return self._submit("/forward_backward", {"forward_backward_input": payload, "forward_only": not backward},
                            _forward_output)

    def forward(self, data, loss_fn: str = "cross_entropy", loss_fn_config: dict[str, float] | None = None):
        """Loss and per-token target logprobs of ``data`` without gradients (see TrainingClient.forward)."""
        return self._fwd(data, loss_fn, loss_fn_config, backward=False)

    def forward_backward(self, data, loss_fn: str = "cross_entropy", loss_fn_config: dict[str, float] | None = None):
        """Like :meth:`forward`, and accumulate the gradients of the summed loss on the server."""
        return self._fwd(data, loss_fn, loss_fn_config, backward=True)

    def forward_backward_custom(self, data, loss_fn) -> APIFuture[types.ForwardBackwardOutput]:
        """forward_backward with your own differentiable loss over the per-token logprobs (as in-process).

        Runs as the Tinker SDK does it: a ``forward`` gets the learner's logprobs, ``loss_fn(data, logprobs)``
        runs here in torch on leaf tensors, and a ``cross_entropy`` forward_backward with
        ``weights = -d loss / d logprobs`` puts exactly that gradient into the adapter (cross_entropy is
        ``sum(-logprob * weight)``, linear in the logprobs). This call waits for the forward before it
        returns, so later calls are still sent after the backward. If ``loss_fn`` raises or returns
        something invalid, nothing is sent and the gradients are unchanged.
        """
        import torch

        from mint.engine.logprobs import _check_result

        try:
            if not callable(loss_fn):
                raise BadRequestError("must be a callable (data, logprobs) -> (loss, metrics)", field="loss_fn")
            datums = _datums(data)
            for i, d in enumerate(datums):
                if "target_tokens" not in d.loss_fn_inputs:
                    raise BadRequestError("is required", field=f"data[{i}].loss_fn_inputs.target_tokens")
            probe = [
                types.Datum(model_input=d.model_input, loss_fn_inputs={"target_tokens": d.loss_fn_inputs["target_tokens"]})
                for d in datums
            ]
            with self._lock:  # nothing of this client may be sent between the forward and the backward
                self._seq += 1
                fwd = self._session.submit(
                    "/forward_backward",
                    {"forward_backward_input": {"data": probe, "loss_fn": "cross_entropy"}, "forward_only": True,
                     "model_id": self.model_id, "seq_id": self._seq},
                    _forward_output,
                ).result()
                logprobs = [out["logprobs"].to_torch().float().clone().requires_grad_(True) for out in fwd.loss_fn_outputs]
                with torch.enable_grad():
                    loss, metrics = _check_result(loss_fn(datums, logprobs))
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise BadRequestError(f"returned a non-finite loss ({value})", field="loss_fn")
                    grads = torch.autograd.grad(loss, logprobs, allow_unused=True)
                linear = [
                    types.Datum(
                        model_input=d.model_input,
                        loss_fn_inputs={
                            "target_tokens": d.loss_fn_inputs["target_tokens"],
                            "weights": types.TensorData.from_torch(
                                torch.zeros_like(lp) if g is None else -g.detach().float()
                            ),
                        },
                    )
                    for d, lp, g in zip(datums, logprobs, grads)
                ]
                self._seq += 1
                back = self._session.submit(
                    "/forward_backward",
                    {"forward_backward_input": {"data": linear, "loss_fn": "cross_entropy"},
                     "model_id": self.model_id, "seq_id": self._seq},
                    _forward_output,
                )
        except Exception as exc:  # the user's loss_fn may raise anything; result() re-raises it
            return failed(exc)
        metrics.setdefault("loss:sum", value)
        outputs = [{"logprobs": out["logprobs"]} for out in fwd.loss_fn_outputs]

        def finish(_: types.ForwardBackwardOutput) -> types.ForwardBackwardOutput:
            return types.ForwardBackwardOutput(loss_fn_output_type="custom", loss_fn_outputs=outputs, metrics=metrics)

        return _Mapped(back, finish)

    def optim_step(self, adam_params: types.AdamParams | dict[str, Any] | None = None):
        """One AdamW step with the accumulated gradients, which are then zeroed."""
        try:
            params = coerce(types.AdamParams, adam_params if adam_params is not None else {}, "adam_params")
        except MintError as exc:
            return failed(exc)
        return self._submit("/optim_step", {"adam_params": params}, types.OptimStepResponse.model_validate)

    def save_weights_for_sampler(self, name: str | None = None, ttl_seconds: int | None = None):
        """Save the adapter weights; the result's ``path`` is ``mint://<run_id>/sampler_weights/<name>``."""
        name = name if name is not None else f"sampler-{uuid.uuid4().hex[:8]}"
        return self._submit("/save_weights_for_sampler", {"path": name, "ttl_seconds": ttl_seconds},
                            types.SaveWeightsForSamplerResponse.model_validate)

    def save_state(self, name: str, ttl_seconds: int | None = None):
        """Save weights and optimizer state; the result's ``path`` is ``mint://<run_id>/weights/<name>``."""
        return self._submit("/save_weights", {"path": name, "ttl_seconds": ttl_seconds},
                            types.SaveWeightsResponse.model_validate)

    def _load(self, path: str, optimizer: bool):
        return self._submit("/load_weights", {"path": path, "optimizer": optimizer},
                            types.LoadWeightsResponse.model_validate)

    def load_state(self, path: str):
        """Load weights from a checkpoint and reset the optimizer state."""
        return self._load(path, False)

    def load_state_with_optimizer(self, path: str):
        """Load weights and optimizer state from a ``save_state`` checkpoint."""
        return self._load(path, True)

    def save_weights_and_get_sampling_client(self, name: str | None = None) -> "RemoteSamplingClient":
        """Save the current weights for sampling and return a SamplingClient over them."""
        return self.create_sampling_client(self.save_weights_for_sampler(name).result().path)

    def create_sampling_client(self, model_path: str) -> "RemoteSamplingClient":
        """A SamplingClient over a sampler checkpoint of this base model."""
        from mint.client.remote.sampling import RemoteSamplingClient

        return RemoteSamplingClient.create(self._session, model_path=model_path)

    def get_info(self) -> types.GetInfoResponse:
        """The run id, base model and LoRA settings of this client (asked from the server)."""
        body = self._transport.request("POST", "/get_info", json_body={"model_id": self.model_id, "type": "get_info"})
        self._info = types.GetInfoResponse.model_validate(body)
        return self._info

    def get_tokenizer(self):
        """The base model's Hugging Face tokenizer, loaded on this machine (see :func:`load_tokenizer`)."""
        from mint.client.remote.tokenizers import load_tokenizer

        return load_tokenizer(self._info.model_data.tokenizer_id or self.base_model)

    # ---- async twins: each sends its request in call order, then the future is awaited without blocking ----
    async def save_weights_and_get_sampling_client_async(self, name=None) -> "RemoteSamplingClient":
        path = (await self.save_weights_for_sampler(name)).path
        return self.create_sampling_client(path)

    async def get_info_async(self) -> types.GetInfoResponse:
        return self.get_info()


class _Mapped(APIFuture):
    """An APIFuture whose value is ``fn(inner result)``."""

    def __init__(self, inner: APIFuture, fn):
        self._inner = inner
        self._fn = fn

    def result(self, timeout: float | None = None):
        return self._fn(self._inner.result(timeout))

    async def result_async(self, timeout: float | None = None):
        return self._fn(await self._inner.result_async(timeout))

    def done(self) -> bool:
        return self._inner.done()

    def exception(self, timeout: float | None = None):
        return self._inner.exception(timeout)


__all__ = ["RemoteFuture", "RemoteTrainingClient"]
