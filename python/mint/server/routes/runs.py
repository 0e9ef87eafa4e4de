"""Training runs and checkpoints of the data directory, seen as the caller (mint's RestClient logic run
on behalf of the key's owner): list, inspect, delete, publish / unpublish, TTL, weights info."""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from mint import storage, types
from mint.client.rest import RestClient, _address
from mint.errors import ConflictError, NotFoundError, PermissionDeniedError
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


def checkpoint_wire(c: types.Checkpoint) -> dict:
    """A checkpoint in the Tinker wire shape (``checkpoint_id``, ``checkpoint_type``, ``time``, ``tinker_path``)."""
    d = c.model_dump(mode="json")
    return {
        "checkpoint_id": d["id"], "checkpoint_type": d["type"], "time": d["timestamp"],
        "tinker_path": tinker_path(d["path"] or ""), "size_bytes": d["size"], "public": d["public"],
        "expires_at": d["expires_at"], "training_run_id": d["training_run_id"],
    }


def run_wire(r: types.TrainingRun) -> dict:
    """A training run in the Tinker wire shape (``training_run_id``, ``model_owner``, ...; mint's
    ``checkpoints`` list is kept as an extra field)."""
    d = r.model_dump(mode="json")
    return {
        "training_run_id": d["id"], "base_model": d["base_model"], "model_owner": d["owner"], "is_lora": d["is_lora"],
        "corrupted": d["corrupted"], "lora_rank": d["lora_rank"],
        "last_request_time": d["last_request_time"] or d["created_at"], "created_at": d["created_at"],
        "last_checkpoint": checkpoint_wire(r.last_checkpoint) if r.last_checkpoint else None,
        "last_sampler_checkpoint": checkpoint_wire(r.last_sampler_checkpoint) if r.last_sampler_checkpoint else None,
        "user_metadata": d["user_metadata"], "checkpoints": [checkpoint_wire(c) for c in r.checkpoints],
    }


def wire(value: Any) -> Any:
    """mint's response types as the Tinker SDK reads them."""
    if isinstance(value, types.TrainingRun):
        return run_wire(value)
    if isinstance(value, types.Checkpoint):
        return checkpoint_wire(value)
    if isinstance(value, types.TrainingRunsResponse):
        return {"training_runs": [run_wire(r) for r in value.training_runs], "cursor": value.cursor.model_dump()}
    if isinstance(value, types.CheckpointsListResponse):
        return {"checkpoints": [checkpoint_wire(c) for c in value.checkpoints],
                "cursor": value.cursor.model_dump() if value.cursor else None}
    return _tinker_paths(value.model_dump(mode="json"))


def _as(user: str, missing: str, fn: Callable[..., Any], *args) -> Any:
    """``fn(*args)`` run as ``user``, its result in the wire shape. A missing resource and another user's
    (NotFoundError / PermissionDeniedError, whichever storage raised) both become ``NotFoundError(missing)``:
    the same status, type and message, so the answer does not tell whether the id exists."""
    with storage.acting_user(user):
        try:
            out = fn(*args)
        except (NotFoundError, PermissionDeniedError):
            raise NotFoundError(missing) from None
        except ConflictError:  # publishing a public checkpoint (or unpublishing a private one) is a no-op
            out = None
    if out is None:
        return JSONResponse(None)
    return wire(out)


def _no_run(run_id: str) -> str:
    return f"no training run {run_id!r}"


def _no_checkpoint(addr: Any) -> str:
    return f"no checkpoint {addr}"


class WeightsInfo(Body):
    tinker_path: str


class Ttl(Body):
    ttl_seconds: Optional[int] = None


@router.get("/training_runs")
def list_training_runs(limit: int = Query(20, ge=1, le=1000), offset: int = Query(0, ge=0),
                       access_scope: Literal["owned", "accessible"] = "owned", user: str = Depends(deps.user)):
    return _as(user, "no training runs", RestClient()._list_runs, limit, offset, access_scope)


@router.get("/training_runs/{run_id}")
def get_training_run(run_id: str, access_scope: Literal["owned", "accessible"] = "owned", user: str = Depends(deps.user)):
    return _as(user, _no_run(run_id), RestClient()._get_run, run_id, access_scope)


@router.get("/training_runs/{run_id}/checkpoints")
def list_checkpoints(run_id: str, user: str = Depends(deps.user)):
    return _as(user, _no_run(run_id), RestClient()._list_checkpoints, run_id)


@router.get("/checkpoints")
def list_user_checkpoints(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                          user: str = Depends(deps.user)):
    return _as(user, "no checkpoints", RestClient()._list_user_checkpoints, limit, offset)


@router.post("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/publish")
def publish(run_id: str, checkpoint_id: str, user: str = Depends(deps.user)):
    addr = _address(run_id, checkpoint_id)
    return _as(user, _no_checkpoint(addr), RestClient()._set_public, addr, True)


@router.delete("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/publish")
def unpublish(run_id: str, checkpoint_id: str, user: str = Depends(deps.user)):
    addr = _address(run_id, checkpoint_id)
    return _as(user, _no_checkpoint(addr), RestClient()._set_public, addr, False)


# Declared after the routes with a suffix: a {checkpoint_id:path} would also match ".../publish".
@router.delete("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}")
def delete_checkpoint(run_id: str, checkpoint_id: str, user: str = Depends(deps.user)):
    addr = _address(run_id, checkpoint_id)
    return _as(user, _no_checkpoint(addr), storage.delete_checkpoint, addr)


@router.put("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/ttl")
def set_ttl(run_id: str, checkpoint_id: str, body: Ttl, user: str = Depends(deps.user)):
    path = str(_address(run_id, checkpoint_id))
    return _as(user, _no_checkpoint(path), RestClient()._set_ttl, path, body.ttl_seconds)


@router.post("/weights_info")
def weights_info(body: WeightsInfo, user: str = Depends(deps.user)):
    addr, _ = check_readable(user, body.tinker_path, "tinker_path")
    return _as(user, _no_checkpoint(addr), RestClient()._weights_info, body.tinker_path)
