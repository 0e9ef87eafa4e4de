"""RemoteServiceClient: what ``mint.ServiceClient(base_url=...)`` returns; the ServiceClient API against a
``mint serve`` over the Tinker REST protocol."""

from __future__ import annotations

from typing import Any

from mint import types
from mint.client._validate import build
from mint.client.remote.rest import RemoteRestClient
from mint.client.remote.sampling import RemoteSamplingClient
from mint.client.remote.session import Session
from mint.client.remote.training import RemoteTrainingClient
from mint.client.remote.transport import Transport
from mint.client.service import ServiceClient
from mint.engine.adapter_files import parse_path
from mint.engine.models import DEFAULT_BASE_MODEL
from mint.errors import MintError


class RemoteServiceClient(ServiceClient):
    """Creates training, sampling and REST clients on a remote server (``base_url``), authenticated by
    ``api_key`` (sent as ``X-API-Key``). One session per ServiceClient, kept alive by a heartbeat while
    any client made from it is alive."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 user_metadata: dict[str, Any] | None = None, **kwargs: Any):
        import os

        base_url = base_url or os.environ.get("MINT_BASE_URL")
        api_key = api_key if api_key is not None else os.environ.get("MINT_API_KEY")
        self.base_url = base_url
        self.api_key = api_key
        self._transport = Transport(base_url, api_key)
        self._session = Session(self._transport, user_metadata)

    @property
    def session_id(self) -> str:
        return self._session.session_id

    def close(self) -> None:
        """End this client's session on the server now: the training and sampling clients made from it
        stop working and their adapters and sampler slots are freed (checkpoints stay). Without a call,
        this happens when the last of those clients is garbage collected."""
        self._session.close()

    def __enter__(self) -> "RemoteServiceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_server_capabilities(self) -> types.GetServerCapabilitiesResponse:
        """The base models the server offers."""
        body = self._transport.request("GET", "/get_server_capabilities")
        return types.GetServerCapabilitiesResponse.model_validate(body)

    def _new_model(self, base_model: str, config: types.LoraConfig, user_metadata) -> RemoteTrainingClient:
        body = {
            "session_id": self._session.session_id,
            "model_seq_id": self._session.next_model_seq_id(),
            "base_model": base_model,
            "user_metadata": user_metadata,
            "lora_config": config,
            "type": "create_model",
        }
        created = self._session.submit("/create_model", body, lambda b: b).result()
        model_id = created.get("model_id") if isinstance(created, dict) else None
        if not isinstance(model_id, str):
            raise MintError(f"create_model: unexpected result {created!r}")
        info_body = self._transport.request("POST", "/get_info", json_body={"model_id": model_id, "type": "get_info"})
        return RemoteTrainingClient(self._session, model_id, config, types.GetInfoResponse.model_validate(info_body))

    def create_lora_training_client(
        self,
        base_model: str = DEFAULT_BASE_MODEL,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
    ) -> RemoteTrainingClient:
        """A TrainingClient for a new LoRA adapter (rank 1..64) on the server's ``base_model``."""
        config = build(
            types.LoraConfig, "rank", rank=rank, seed=seed, train_mlp=train_mlp, train_attn=train_attn,
            train_unembed=train_unembed,
        )
        return self._new_model(base_model, config, user_metadata)

    def _client_from_state(self, path: str, user_metadata, with_optimizer: bool) -> RemoteTrainingClient:
        parse_path(path, field="path")
        body = self._transport.request("POST", "/weights_info", json_body={"tinker_path": path})
        info = types.WeightsInfoResponse.model_validate(body)
        config = build(
            types.LoraConfig, "path", rank=info.lora_rank, train_mlp=bool(info.train_mlp),
            train_attn=bool(info.train_attn), train_unembed=bool(info.train_unembed),
        )
        client = self._new_model(info.base_model, config, user_metadata)
        (client.load_state_with_optimizer if with_optimizer else client.load_state)(path).result()
        return client

    def create_rest_client(self) -> RemoteRestClient:
        """A RestClient over the server's runs and checkpoints visible to this API key."""
        return RemoteRestClient(self._transport)

    def create_sampling_client(self, model_path: str | None = None, base_model: str | None = None) -> RemoteSamplingClient:
        """A SamplingClient over a sampler checkpoint (``model_path``) or the bare ``base_model``."""
        if model_path is not None:
            parse_path(model_path)
        return RemoteSamplingClient.create(self._session, model_path=model_path, base_model=base_model)
