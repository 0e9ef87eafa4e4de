"""RemoteSamplingClient: the SamplingClient API over HTTP (Tinker protocol: create_sampling_session, asample)."""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

from mint import types
from mint.client._validate import coerce
from mint.client.futures import APIFuture, failed
from mint.client.remote.session import Session
from mint.client.sampling import SamplingClient
from mint.errors import APIStatusError, BadRequestError, MintError


def _prompt(prompt: Any) -> types.ModelInput:
    if isinstance(prompt, list):
        prompt = types.ModelInput.from_ints(prompt)
    return coerce(types.ModelInput, prompt, "prompt")


class RemoteSamplingClient(SamplingClient):
    """Samples from a sampler checkpoint (or a bare base model) on a remote server. Same methods and
    results as the in-process :class:`mint.SamplingClient`."""

    def __init__(self, session: Session, sampling_session_id: str, model_path: str | None, base_model: str | None):
        self._session = session
        self._transport = session.transport
        self.sampling_session_id = sampling_session_id
        self.model_path = model_path
        self._base_model = base_model
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        # Like the in-process client (which frees its adapter-pool slot when collected): when this client
        # is collected, its sampler session is closed on the server, by the session's background thread.
        self._release = weakref.finalize(self, session.sampler_releases.put, sampling_session_id)
        self._release.atexit = False

    def close(self) -> None:
        """Close the sampler session on the server now (its adapter-pool slot is freed there); later
        samples fail with NotFoundError. Also done automatically when the client is garbage collected."""
        if self._release.detach() is not None:
            self._session.release_sampler_now(self.sampling_session_id)

    def __enter__(self) -> "RemoteSamplingClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def create(cls, session: Session, model_path: str | None = None, base_model: str | None = None) -> "RemoteSamplingClient":
        """Open a sampling session on the server for ``model_path`` (a sampler checkpoint) or ``base_model``."""
        if model_path is None and base_model is None:
            raise BadRequestError("give model_path or base_model", field="model_path")
        body = {
            "session_id": session.session_id,
            "sampling_session_seq_id": session.next_sampling_seq_id(),
            "base_model": base_model,
            "model_path": model_path,
            "type": "create_sampling_session",
        }
        reply = session.transport.request("POST", "/create_sampling_session", json_body=body)
        if not isinstance(reply, dict) or not isinstance(reply.get("sampling_session_id"), str):
            raise APIStatusError(f"create_sampling_session: unexpected reply {reply!r}", status_code=200)
        return cls(session, reply["sampling_session_id"], model_path, base_model)

    @property
    def base_model(self) -> str:
        """The base model (asked from the server for a checkpoint, once)."""
        if self._base_model is None and self.model_path is not None:
            info = self._transport.request("POST", "/weights_info", json_body={"tinker_path": self.model_path})
            self._base_model = types.WeightsInfoResponse.model_validate(info).base_model
        return self._base_model or ""

    def _submit_sample(self, prompt: types.ModelInput, num_samples: int, params: types.SamplingParams,
                       include_prompt_logprobs: bool, topk_prompt_logprobs: int) -> APIFuture[types.SampleResponse]:
        with self._lock:
            body = {
                "sampling_session_id": self.sampling_session_id,
                "seq_id": next(self._seq),
                "num_samples": num_samples,
                "prompt": prompt,
                "sampling_params": params,
                "prompt_logprobs": include_prompt_logprobs,
                "topk_prompt_logprobs": topk_prompt_logprobs,
                "type": "sample",
            }
            return self._session.submit("/asample", body, types.SampleResponse.model_validate)

    def sample(
        self,
        prompt: types.ModelInput | list[int],
        num_samples: int = 1,
        sampling_params: types.SamplingParams | dict[str, Any] | None = None,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
    ) -> APIFuture[types.SampleResponse]:
        """Generate ``num_samples`` continuations of ``prompt`` (see :meth:`mint.SamplingClient.sample`)."""
        try:
            prompt = _prompt(prompt)
            if sampling_params is None:
                raise BadRequestError("is required (max_tokens has no default)", field="sampling_params")
            params = coerce(types.SamplingParams, sampling_params, "sampling_params")
            # Checked here: JSON would turn "yes" into true and 2.0 into 2 on the server.
            if isinstance(num_samples, bool) or not isinstance(num_samples, int):
                raise BadRequestError("must be a positive integer", field="num_samples")
            if not isinstance(include_prompt_logprobs, bool):
                raise BadRequestError("must be a bool", field="include_prompt_logprobs")
            if isinstance(topk_prompt_logprobs, bool) or not isinstance(topk_prompt_logprobs, int):
                raise BadRequestError("must be an integer", field="topk_prompt_logprobs")
            return self._submit_sample(prompt, num_samples, params, include_prompt_logprobs, topk_prompt_logprobs)
        except MintError as exc:
            return failed(exc)

    def compute_logprobs(self, prompt: types.ModelInput | list[int]) -> APIFuture[list[float | None]]:
        """``[None, lp_1, ..., lp_{N-1}]``: each prompt token's log-prob given the tokens before it.

        Sent as the Tinker SDK sends it: a one-token sample that asks for the prompt's log-probs.
        """
        try:
            prompt = _prompt(prompt)
            inner = self._submit_sample(prompt, 1, types.SamplingParams(max_tokens=1, seed=0), True, 0)
        except MintError as exc:
            return failed(exc)
        from mint.client.remote.training import _Mapped

        return _Mapped(inner, lambda response: list(response.prompt_logprobs))

    def get_tokenizer(self):
        """The base model's Hugging Face tokenizer, loaded on this machine."""
        from mint.client.remote.tokenizers import load_tokenizer

        return load_tokenizer(self.base_model)
