"""RestClient: training runs and checkpoints of the data directory (list, inspect, delete, publish, TTL).

Method names and signatures follow the Tinker SDK's RestClient. Each call returns an APIFuture (run on a
small background pool); the ``_async`` twins return the result itself, as in the Tinker SDK. Checkpoints
are addressed by a path (``mint://<run_id>/<weights|sampler_weights>/<name>``, ``tinker://`` accepted) or
by ``(training_run_id, checkpoint_id)`` with ``checkpoint_id`` like ``"weights/<name>"``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Literal, TypeVar

from mint import storage, types
from mint.client.futures import APIFuture
from mint.engine.adapter_files import CheckpointPath, check_name, parse_path
from mint.engine.adapter_pool import AdapterSpec
from mint.engine.lora_layers import ATTN, MLP, UNEMBED
from mint.errors import BadRequestError, ConflictError, NotFoundError, PermissionDeniedError

T = TypeVar("T")
AccessScope = Literal["owned", "accessible"]

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mint-rest")
        return _pool


def _address(run_or_path: str, checkpoint_id: str | None) -> CheckpointPath:
    """A checkpoint address from a path, or from a run id and ``"<weights|sampler_weights>/<name>"``."""
    if checkpoint_id is None:
        return parse_path(run_or_path, field="tinker_path")
    if not isinstance(checkpoint_id, str) or "/" not in checkpoint_id:
        raise BadRequestError(
            f"{checkpoint_id!r} is not a checkpoint id like 'weights/<name>' or 'sampler_weights/<name>'",
            field="checkpoint_id",
        )
    kind, name = checkpoint_id.split("/", 1)
    if kind not in ("weights", "sampler_weights"):
        raise BadRequestError(f"kind {kind!r} must be 'weights' or 'sampler_weights'", field="checkpoint_id")
    return parse_path(f"mint://{run_or_path}/{kind}/{check_name(name, 'checkpoint_id')}", field="training_run_id")


def _page(limit: int, offset: int) -> None:
    for field, value, low in (("limit", limit, 1), ("offset", offset, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BadRequestError(f"must be an integer >= {low}", field=field)


def _scope(access_scope: str) -> None:
    if access_scope not in ("owned", "accessible"):
        raise BadRequestError("must be 'owned' or 'accessible'", field="access_scope")


class RestClient:
    """Lists and manages the training runs and checkpoints stored under ``$MINT_HOME`` for the current user
    (``$MINT_USER`` or the OS user). Obtain one with ``ServiceClient().create_rest_client()``."""

    def _submit(self, fn: Callable[..., T], *args) -> APIFuture[T]:
        return APIFuture(_executor().submit(fn, *args))

    # ---- runs ----
    def _get_run(self, training_run_id: str, access_scope: str = "owned") -> types.TrainingRun:
        _scope(access_scope)
        st = storage.store()
        run = st.get_run(training_run_id)
        rows = st.list_checkpoints(training_run_id)
        if run.owner != storage.current_user():
            rows = [r for r in rows if r.public]
            if access_scope == "owned" or not rows:
                raise NotFoundError(f"no training run {training_run_id!r} owned by {storage.current_user()!r}")
        return storage.to_training_run(run, rows)

    def get_training_run(self, training_run_id: str, access_scope: AccessScope = "owned") -> APIFuture[types.TrainingRun]:
        """The run with its checkpoints; ``corrupted`` is True once a checkpoint of it failed verification.
        With ``access_scope="accessible"``, another user's run is returned if it has public checkpoints
        (only those are listed)."""
        return self._submit(self._get_run, training_run_id, access_scope)

    def get_training_run_by_tinker_path(
        self, tinker_path: str, access_scope: AccessScope = "owned"
    ) -> APIFuture[types.TrainingRun]:
        """The run a checkpoint path belongs to."""
        return self._submit(lambda: self._get_run(parse_path(tinker_path, field="tinker_path").run_id, access_scope))

    def _list_runs(self, limit: int, offset: int, access_scope: str) -> types.TrainingRunsResponse:
        _page(limit, offset)
        _scope(access_scope)
        st = storage.store()
        user = storage.current_user()
        runs, total = st.list_runs(user, limit, offset, include_public=access_scope == "accessible")
        out = []
        for run in runs:
            rows = st.list_checkpoints(run.id)
            out.append(storage.to_training_run(run, rows if run.owner == user else [r for r in rows if r.public]))
        return types.TrainingRunsResponse(
            training_runs=out, cursor=types.Cursor(offset=offset, limit=limit, total_count=total)
        )

    def list_training_runs(
        self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"
    ) -> APIFuture[types.TrainingRunsResponse]:
        """One page of the user's runs, newest first; ``cursor.total_count`` counts them all."""
        return self._submit(self._list_runs, limit, offset, access_scope)

    # ---- checkpoints ----
    def _list_checkpoints(self, training_run_id: str) -> types.CheckpointsListResponse:
        run = self._get_run(training_run_id, "accessible")
        return types.CheckpointsListResponse(checkpoints=run.checkpoints)

    def list_checkpoints(self, training_run_id: str) -> APIFuture[types.CheckpointsListResponse]:
        """The run's (unexpired) checkpoints, training and sampler, oldest first."""
        return self._submit(self._list_checkpoints, training_run_id)

    def _list_user_checkpoints(self, limit: int, offset: int) -> types.CheckpointsListResponse:
        _page(limit, offset)
        st = storage.store()
        runs, total = st.list_runs(storage.current_user(), 1 << 62, 0)
        rows = sorted((r for run in runs for r in st.list_checkpoints(run.id)), key=lambda r: -r.created_at)
        page = [storage.to_checkpoint(r) for r in rows[offset : offset + limit]]
        return types.CheckpointsListResponse(
            checkpoints=page, cursor=types.Cursor(offset=offset, limit=limit, total_count=len(rows))
        )

    def list_user_checkpoints(self, limit: int = 100, offset: int = 0) -> APIFuture[types.CheckpointsListResponse]:
        """All the user's checkpoints across runs, newest first, one page."""
        return self._submit(self._list_user_checkpoints, limit, offset)

    def delete_checkpoint(self, training_run_id: str, checkpoint_id: str | None = None) -> APIFuture[None]:
        """Delete a checkpoint (its row, then its file): ``(training_run_id, "weights/<name>")`` or a path."""
        return self._submit(lambda: storage.delete_checkpoint(_address(training_run_id, checkpoint_id)))

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        return self.delete_checkpoint(tinker_path)

    def _set_public(self, addr: CheckpointPath, public: bool) -> None:
        st = storage.store()
        run = st.get_run(addr.run_id)
        if run.owner != storage.current_user():
            raise PermissionDeniedError(f"run {addr.run_id} belongs to {run.owner!r}")
        st.get_checkpoint(addr.run_id, addr.kind, addr.name)  # NotFoundError when absent or expired
        was = st.set_public(addr.run_id, addr.kind, addr.name, public)
        if was == public:
            raise ConflictError(f"checkpoint {addr} is already {'public' if public else 'private'}")

    def publish_checkpoint(self, training_run_id: str, checkpoint_id: str | None = None) -> APIFuture[None]:
        """Make a checkpoint readable by other users (ConflictError if already public; owner only)."""
        return self._submit(lambda: self._set_public(_address(training_run_id, checkpoint_id), True))

    def unpublish_checkpoint(self, training_run_id: str, checkpoint_id: str | None = None) -> APIFuture[None]:
        """Make a checkpoint private again (ConflictError if already private; owner only)."""
        return self._submit(lambda: self._set_public(_address(training_run_id, checkpoint_id), False))

    def publish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        return self.publish_checkpoint(tinker_path)

    def unpublish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        return self.unpublish_checkpoint(tinker_path)

    def _set_ttl(self, tinker_path: str, ttl_seconds: int | None) -> None:
        addr = parse_path(tinker_path, field="tinker_path")
        expires_at = storage.checkpoints.check_ttl(ttl_seconds)
        st = storage.store()
        if st.get_run(addr.run_id).owner != storage.current_user():
            raise PermissionDeniedError(f"run {addr.run_id} belongs to another user")
        st.get_checkpoint(addr.run_id, addr.kind, addr.name)
        st.set_expiry(addr.run_id, addr.kind, addr.name, expires_at)

    def set_checkpoint_ttl_from_tinker_path(self, tinker_path: str, ttl_seconds: int | None) -> APIFuture[None]:
        """Expire the checkpoint ``ttl_seconds`` from now (None removes the expiry). Expired checkpoints are
        neither listed nor loadable; ``mint.storage.purge_expired()`` deletes their files."""
        return self._submit(self._set_ttl, tinker_path, ttl_seconds)

    def _weights_info(self, path: str) -> types.WeightsInfoResponse:
        addr = parse_path(path, field="tinker_path")
        meta = storage.checkpoint_metadata(addr)
        row = storage.store().get_checkpoint(addr.run_id, addr.kind, addr.name)
        spec = AdapterSpec.from_metadata(meta)
        return types.WeightsInfoResponse(
            base_model=meta.get("base_model", ""), is_lora=True, lora_rank=spec.rank, path=str(addr),
            checkpoint_type=storage.checkpoints.KIND_TO_TYPE[addr.kind], lora_alpha=spec.alpha,
            train_attn=ATTN in spec.kinds, train_mlp=MLP in spec.kinds, train_unembed=UNEMBED in spec.kinds,
            size=row.size,
        )

    def get_weights_info(self, path: str) -> APIFuture[types.WeightsInfoResponse]:
        """Base model, LoRA rank / alpha / layers, type and size of the checkpoint at ``path``."""
        return self._submit(self._weights_info, path)

    def get_weights_info_by_tinker_path(self, tinker_path: str) -> APIFuture[types.WeightsInfoResponse]:
        return self.get_weights_info(tinker_path)

    # ---- async twins (Tinker style: they return the result) ----
    async def get_training_run_async(self, training_run_id: str, access_scope: AccessScope = "owned"):
        return await self.get_training_run(training_run_id, access_scope)

    async def get_training_run_by_tinker_path_async(self, tinker_path: str, access_scope: AccessScope = "owned"):
        return await self.get_training_run_by_tinker_path(tinker_path, access_scope)

    async def list_training_runs_async(self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"):
        return await self.list_training_runs(limit, offset, access_scope)

    async def list_checkpoints_async(self, training_run_id: str):
        return await self.list_checkpoints(training_run_id)

    async def list_user_checkpoints_async(self, limit: int = 100, offset: int = 0):
        return await self.list_user_checkpoints(limit, offset)

    async def delete_checkpoint_async(self, training_run_id: str, checkpoint_id: str | None = None) -> None:
        return await self.delete_checkpoint(training_run_id, checkpoint_id)

    async def delete_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return await self.delete_checkpoint(tinker_path)

    async def publish_checkpoint_async(self, training_run_id: str, checkpoint_id: str | None = None) -> None:
        return await self.publish_checkpoint(training_run_id, checkpoint_id)

    async def unpublish_checkpoint_async(self, training_run_id: str, checkpoint_id: str | None = None) -> None:
        return await self.unpublish_checkpoint(training_run_id, checkpoint_id)

    async def publish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return await self.publish_checkpoint(tinker_path)

    async def unpublish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return await self.unpublish_checkpoint(tinker_path)

    async def set_checkpoint_ttl_from_tinker_path_async(self, tinker_path: str, ttl_seconds: int | None) -> None:
        return await self.set_checkpoint_ttl_from_tinker_path(tinker_path, ttl_seconds)

    async def get_weights_info_async(self, path: str):
        return await self.get_weights_info(path)

    async def get_weights_info_by_tinker_path_async(self, tinker_path: str):
        return await self.get_weights_info(tinker_path)
