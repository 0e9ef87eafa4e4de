"""Training runs and checkpoints of the data directory, seen as the caller (mint's RestClient logic run
on behalf of the key's owner): list, inspect, delete, publish / unpublish, TTL, weights info."""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from mint import storage
from mint.client.rest import RestClient, _address
from mint.errors import PermissionDeniedError
from mint.server import deps
from mint.server.routes._body import Body
from mint.server.state import check_readable, tinker_path

router = APIRouter(prefix="/api/v1")


def _tinker_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tinker_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tinker_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("mint://"):
        return tinker_path(value)
    return value


def _as(user: str, fn: Callable[..., Any], *args) -> Any:
    with storage.acting_user(user):
        try:
            out = fn(*args)
        except PermissionDeniedError:
            raise PermissionDeniedError("not found") from None
    if out is None:
        return JSONResponse(None)
    return _tinker_paths(out.model_dump(mode="json"))


class WeightsInfo(Body):
    tinker_path: str


class Ttl(Body):
    ttl_seconds: Optional[int] = None


@router.get("/training_runs")
def list_training_runs(limit: int = Query(20, ge=1, le=1000), offset: int = Query(0, ge=0),
                       access_scope: Literal["owned", "accessible"] = "owned", user: str = Depends(deps.user)):
    return _as(user, RestClient()._list_runs, limit, offset, access_scope)


@router.get("/training_runs/{run_id}")
def get_training_run(run_id: str, access_scope: Literal["owned", "accessible"] = "owned", user: str = Depends(deps.user)):
    return _as(user, RestClient()._get_run, run_id, access_scope)


@router.get("/training_runs/{run_id}/checkpoints")
def list_checkpoints(run_id: str, user: str = Depends(deps.user)):
    return _as(user, RestClient()._list_checkpoints, run_id)


@router.get("/checkpoints")
def list_user_checkpoints(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                          user: str = Depends(deps.user)):
    return _as(user, RestClient()._list_user_checkpoints, limit, offset)


@router.delete("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}")
def delete_checkpoint(run_id: str, checkpoint_id: str, user: str = Depends(deps.user)):
    return _as(user, lambda: storage.delete_checkpoint(_address(run_id, checkpoint_id)))


@router.post("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/publish")
def publish(run_id: str, checkpoint_id: str, user: str = Depends(deps.user)):
    return _as(user, RestClient()._set_public, _address(run_id, checkpoint_id), True)


@router.delete("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/publish")
def unpublish(run_id: str, checkpoint_id: str, user: str = Depends(deps.user)):
    return _as(user, RestClient()._set_public, _address(run_id, checkpoint_id), False)


@router.put("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/ttl")
def set_ttl(run_id: str, checkpoint_id: str, body: Ttl, user: str = Depends(deps.user)):
    path = str(_address(run_id, checkpoint_id))
    return _as(user, RestClient()._set_ttl, path, body.ttl_seconds)


@router.post("/weights_info")
def weights_info(body: WeightsInfo, user: str = Depends(deps.user)):
    check_readable(user, body.tinker_path, "tinker_path")
    return _as(user, RestClient()._weights_info, body.tinker_path)
