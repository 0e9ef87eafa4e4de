"""ServiceClient: the entry point. In-process by default: base models load into this process, once each."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mint import types
from mint.client._validate import build
from mint.client.sampling import SamplingClient
from mint.client.training import TrainingClient
from mint.engine.adapter_files import parse_path, read_metadata
from mint.engine.engine import _engines, get_engine
from mint.engine.models import DEFAULT_BASE_MODEL, embedded_model_names
from mint.errors import BadRequestError

if TYPE_CHECKING:
    from mint.client.rest import RestClient


class ServiceClient:
    """Creates training and sampling clients.

    With ``base_url`` (or ``MINT_BASE_URL``) it talks to a remote ``mint serve`` with ``api_key`` (or
    ``MINT_API_KEY``) and returns a :class:`mint.client.remote.RemoteServiceClient`, which has this same
    API; without it everything runs in this process.
    """

    def __new__(cls, base_url: str | None = None, api_key: str | None = None, **kwargs: Any):
        if cls is ServiceClient and (base_url or os.environ.get("MINT_BASE_URL")):
            from mint.client.remote.service import RemoteServiceClient

            return super().__new__(RemoteServiceClient)  # Python then runs RemoteServiceClient.__init__
        return super().__new__(cls)

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **kwargs: Any):
        self.api_key = api_key

    def get_server_capabilities(self) -> types.GetServerCapabilitiesResponse:
        """The base models available: the embedded ones and any already loaded in this process."""
        names = list(dict.fromkeys([*embedded_model_names(), *_engines]))
        return types.GetServerCapabilitiesResponse(
            supported_models=[types.SupportedModel(model_name=n) for n in names]
        )

    def create_lora_training_client(
        self,
        base_model: str = DEFAULT_BASE_MODEL,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
    ) -> TrainingClient:
        """A TrainingClient for a new LoRA adapter (rank 1..64) on ``base_model`` (loaded once per process)."""
        config = build(
            types.LoraConfig, "rank", rank=rank, seed=seed, train_mlp=train_mlp, train_attn=train_attn,
            train_unembed=train_unembed,
        )
        engine = get_engine(base_model)
        run_id = engine.submit(engine.create_training_adapter, config, user_metadata).result()
        return TrainingClient(engine, run_id, config)

    def create_training_client_from_state(
        self, path: str, user_metadata: dict[str, str] | None = None
    ) -> TrainingClient:
        """A TrainingClient for a new run on the checkpoint's base model, with its rank and layers, starting
        from the weights at ``path`` and a fresh (zero) optimizer state."""
        return self._client_from_state(path, user_metadata, with_optimizer=False)

    def create_training_client_from_state_with_optimizer(
        self, path: str, user_metadata: dict[str, str] | None = None
    ) -> TrainingClient:
        """Like :meth:`create_training_client_from_state`, also restoring the optimizer state saved by
        ``save_state``: training continues exactly where it stopped."""
        return self._client_from_state(path, user_metadata, with_optimizer=True)

    def _client_from_state(self, path: str, user_metadata, with_optimizer: bool) -> TrainingClient:
        from mint.engine.adapter_pool import AdapterSpec
        from mint.engine.lora_layers import ATTN, MLP, UNEMBED

        meta = read_metadata(parse_path(path, field="path"))
        spec = AdapterSpec.from_metadata(meta)
        config = build(
            types.LoraConfig, "path", rank=spec.rank, train_mlp=MLP in spec.kinds, train_attn=ATTN in spec.kinds,
            train_unembed=UNEMBED in spec.kinds,
        )
        engine = get_engine(meta.get("base_model") or DEFAULT_BASE_MODEL)
        run_id = engine.submit(engine.create_training_adapter, config, user_metadata).result()
        try:
            engine.submit(engine.load_state, run_id, path, with_optimizer).result()
        except BaseException:
            engine.submit(engine.release_training_adapter, run_id).result()
            raise
        return TrainingClient(engine, run_id, config)

    def create_rest_client(self) -> "RestClient":
        """A RestClient over this data directory's training runs and checkpoints."""
        from mint.client.rest import RestClient

        return RestClient()

    def create_sampling_client(self, model_path: str | None = None, base_model: str | None = None) -> SamplingClient:
        """A SamplingClient over a sampler checkpoint (``model_path``) or the bare ``base_model``."""
        if model_path is None and base_model is None:
            raise BadRequestError("give model_path or base_model", field="model_path")
        if model_path is not None:
            meta = read_metadata(parse_path(model_path))
            stored = meta.get("base_model")
            if base_model is not None and stored and get_engine(base_model).base_model != stored:
                raise BadRequestError(f"checkpoint belongs to {stored!r}", field="base_model")
            base_model = stored or base_model
        return SamplingClient(get_engine(base_model), model_path=model_path)

    async def get_server_capabilities_async(self) -> types.GetServerCapabilitiesResponse:
        return self.get_server_capabilities()

    async def create_lora_training_client_async(self, *args, **kwargs) -> TrainingClient:
        return self.create_lora_training_client(*args, **kwargs)

    async def create_sampling_client_async(self, model_path=None, base_model=None) -> SamplingClient:
        return self.create_sampling_client(model_path, base_model)

    async def create_training_client_from_state_async(self, path: str, user_metadata=None) -> TrainingClient:
        return self.create_training_client_from_state(path, user_metadata)

    async def create_training_client_from_state_with_optimizer_async(
        self, path: str, user_metadata=None
    ) -> TrainingClient:
        return self.create_training_client_from_state_with_optimizer(path, user_metadata)

    async def create_rest_client_async(self) -> "RestClient":
        return self.create_rest_client()
