"""Sessions, heartbeats, capabilities, client configuration, telemetry and ``retrieve_future``."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from mint import types
from mint.server import deps
from mint.server.codec import PROTO_CONTENT_TYPE, encode_forward_backward_output, encode_sample_response
from mint.server.errors import failed_result
from mint.server.routes._body import Body
from mint.server.state import ServerState, tinker_path

router = APIRouter(prefix="/api/v1")


class CreateSession(Body):
    tags: list[str] = []
    user_metadata: Optional[dict[str, Any]] = None
    sdk_version: Optional[str] = None


class Heartbeat(Body):
    session_id: str


class RetrieveFuture(Body):
    request_id: str
    allow_metadata_only: bool = False


@router.get("/healthz")
def healthz():
    return {"status": "ok"}


@router.get("/get_server_capabilities")
def capabilities(st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    return {"supported_models": [{"model_name": n, "trainable": True, "sampleable": True} for n in st.model_names()]}


@router.post("/client/config")
def client_config(user: str = Depends(deps.user)):
    # Plain httpx transport, JSON everywhere except what the SDK only reads as protobuf, no JWT exchange,
    # no server-side features mint does not implement.
    return {
        "pjwt_auth_enabled": False,
        "use_pyqwest_transport": False,
        "proto_compress_fwdbwd": False,
        "parallel_fwdbwd_chunks": False,
        "sample_use_retrieve_futures": False,
        "custom_loss_server_side": False,
        "sample_join_sampling_session": False,
    }


@router.post("/client/dynamic_config")
def client_dynamic_config(user: str = Depends(deps.user)):
    return {"refresh_interval_sec": 300, "sample_cancel_enabled": False}


@router.post("/telemetry")
def telemetry(user: str = Depends(deps.user)):
    return {"status": "accepted"}  # mint keeps no client telemetry


@router.post("/create_session")
def create_session(body: CreateSession, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    return {"type": "create_session", "session_id": st.create_session(user)}


@router.post("/session_heartbeat")
def heartbeat(body: Heartbeat, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    st.session(user, body.session_id)
    return {"type": "session_heartbeat"}


@router.post("/sessions/{session_id}/finish")
def finish(session_id: str, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    st.finish_session(user, session_id)
    return None


def _encode(result: Any, want_proto: bool) -> Response:
    if isinstance(result, types.ForwardBackwardOutput):
        if want_proto:
            return Response(encode_forward_backward_output(result), media_type=PROTO_CONTENT_TYPE)
    elif isinstance(result, types.SampleResponse):
        if want_proto:
            return Response(encode_sample_response(result), media_type=PROTO_CONTENT_TYPE)
    if hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    if isinstance(result, dict) and isinstance(result.get("path"), str):
        result = {**result, "path": tinker_path(result["path"])}
    return JSONResponse(result)


@router.post("/retrieve_future")
async def retrieve_future(body: RetrieveFuture, request: Request, st: ServerState = Depends(deps.state),
                          user: str = Depends(deps.user)):
    """The result of a request: its JSON (or protobuf, when asked for and available), a
    ``RequestFailedResponse`` if it failed, or ``try_again`` if it is still running after a long poll."""
    entry = st.registry.get(body.request_id, user)
    if entry is None:
        return JSONResponse({"detail": f"no request {body.request_id!r}", "field": "request_id", "type": "NotFoundError"},
                            status_code=404, headers={"x-should-retry": "false"})
    if not await st.registry.wait(entry, st.config.poll_wait_s):
        return {"type": "try_again", "request_id": body.request_id, "queue_state": "active"}
    st.registry.mark_retrieved(entry)
    exc = entry.future.exception()
    if exc is not None:
        return JSONResponse(failed_result(exc))
    try:
        return _encode(entry.future.result(), PROTO_CONTENT_TYPE in request.headers.get("accept", ""))
    except Exception as exc:  # noqa: BLE001 - an unencodable result is a failed request, not a 500
        return JSONResponse(failed_result(exc))
