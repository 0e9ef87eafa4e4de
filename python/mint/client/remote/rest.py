"""RemoteRestClient: the RestClient API over the Tinker REST routes (training_runs, checkpoints, weights_info).

Arguments are checked here with the in-process client's own checks, so a bad one raises the same
BadRequestError before anything is sent; the server decides ownership (the API key is the user).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar
from urllib.parse import quote

from mint import types
from mint.client.futures import APIFuture
from mint.client.remote.transport import Transport
from mint.client.rest import AccessScope, RestClient, _address, _executor, _page, _scope
from mint.engine.adapter_files import CheckpointPath, parse_path
from mint.errors import ConflictError

T = TypeVar("T")


def _checkpoint_route(addr: CheckpointPath) -> str:
    return f"/training_runs/{quote(addr.run_id, safe='')}/checkpoints/{addr.kind}/{quote(addr.name, safe='')}"


class RemoteRestClient(RestClient):
    """Runs and checkpoints of the API key's user on a remote server. Same methods as
    :class:`mint.RestClient`; each returns an APIFuture (the ``_async`` twins return the result)."""

    def __init__(self, transport: Transport):
        self._transport = transport

    def _submit(self, fn: Callable[..., T], *args) -> APIFuture[T]:
        return APIFuture(_executor().submit(fn, *args))

    def _call(self, method: str, path: str, parse: Callable[[Any], T] | None = None, **kwargs) -> T | None:
        body = self._transport.request(method, path, **kwargs)
        return parse(body) if parse is not None else None

    # ---- runs ----
    def _get_run(self, training_run_id: str, access_scope: str = "owned") -> types.TrainingRun:
        _scope(access_scope)
        return self._call("GET", f"/training_runs/{quote(training_run_id, safe='')}", types.TrainingRun.model_validate,
                          params={"access_scope": access_scope})

    def _list_runs(self, limit: int, offset: int, access_scope: str) -> types.TrainingRunsResponse:
        _page(limit, offset)
        _scope(access_scope)
        return self._call("GET", "/training_runs", types.TrainingRunsResponse.model_validate,
                          params={"limit": limit, "offset": offset, "access_scope": access_scope})

    # ---- checkpoints ----
    def _list_checkpoints(self, training_run_id: str) -> types.CheckpointsListResponse:
        return self._call("GET", f"/training_runs/{quote(training_run_id, safe='')}/checkpoints",
                          types.CheckpointsListResponse.model_validate)

    def _list_user_checkpoints(self, limit: int, offset: int) -> types.CheckpointsListResponse:
        _page(limit, offset)
        return self._call("GET", "/checkpoints", types.CheckpointsListResponse.model_validate,
                          params={"limit": limit, "offset": offset})

    def delete_checkpoint(self, training_run_id: str, checkpoint_id: str | None = None) -> APIFuture[None]:
        """Delete a checkpoint: ``(training_run_id, "weights/<name>")`` or a path."""
        return self._submit(lambda: self._call("DELETE", _checkpoint_route(_address(training_run_id, checkpoint_id))))

    def _set_public(self, addr: CheckpointPath, public: bool) -> None:
        # The server treats a repeated publish / unpublish as a no-op (as Tinker does); the in-process
        # client raises ConflictError, so the state is checked first to give the same answer.
        listed = self._list_checkpoints(addr.run_id).checkpoints
        current = next((c for c in listed if c.path == str(addr)), None)
        if current is not None and bool(current.public) == public:
            raise ConflictError(f"checkpoint {addr} is already {'public' if public else 'private'}")
        self._call("POST" if public else "DELETE", _checkpoint_route(addr) + "/publish")

    def _set_ttl(self, tinker_path: str, ttl_seconds: int | None) -> None:
        from mint.storage.checkpoints import check_ttl

        addr = parse_path(tinker_path, field="tinker_path")
        check_ttl(ttl_seconds)
        self._call("PUT", _checkpoint_route(addr) + "/ttl", json_body={"ttl_seconds": ttl_seconds})

    def _weights_info(self, path: str) -> types.WeightsInfoResponse:
        parse_path(path, field="tinker_path")
        return self._call("POST", "/weights_info", types.WeightsInfoResponse.model_validate,
                          json_body={"tinker_path": path})


__all__ = ["AccessScope", "RemoteRestClient"]
