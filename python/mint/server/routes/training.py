"""Training models: create_model, get_info, forward_backward (protobuf or JSON), optim_step."""

from __future__ import annotations

from typing import Any, Optional

import pydantic
from fastapi import APIRouter, Depends, Request

from mint import types
from mint.client._validate import coerce
from mint.errors import BadRequestError
from mint.server import deps
from mint.server.codec import PROTO_CONTENT_TYPE, decode_forward_backward
from mint.server.routes._body import Body
from mint.server.state import ServerState

router = APIRouter(prefix="/api/v1")


class CreateModel(Body):
    session_id: Optional[str] = None
    model_seq_id: Optional[int] = None
    base_model: str
    user_metadata: Optional[dict[str, Any]] = None
    lora_config: Optional[dict[str, Any]] = None
    optimizer_config: Optional[dict[str, Any]] = None


class GetInfo(Body):
    model_id: str


class FwdBwdInput(Body):
    data: list[Any]
    loss_fn: str = "cross_entropy"
    loss_fn_config: Optional[dict[str, float]] = None


class FwdBwd(Body):
    model_id: str
    seq_id: Optional[int] = None
    forward_backward_input: FwdBwdInput
    forward_only: bool = False


class OptimStep(Body):
    model_id: str
    seq_id: Optional[int] = None
    adam_params: Optional[dict[str, Any]] = pydantic.Field(
        default=None, validation_alias=pydantic.AliasChoices("adam_params", "optim_params")
    )
    optimizer_params: Optional[dict[str, Any]] = None


def _adam_only(config: Optional[dict[str, Any]], field: str) -> None:
    kind = (config or {}).get("type", "adamw")
    if kind not in ("adamw", "adam"):
        raise BadRequestError(f"only the AdamW optimizer is available, not {kind!r}", field=field)


@router.post("/create_model")
def create_model(body: CreateModel, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    _adam_only(body.optimizer_config, "optimizer_config.type")
    st.registry.reserve()
    future = st.create_model(user, body.session_id, body.base_model, body.lora_config, body.user_metadata)
    return {"request_id": st.registry.add(user, future)}


@router.post("/get_info")
def get_info(body: GetInfo, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    return st.get_info(user, body.model_id)


@router.post("/forward_backward")
async def forward_backward(request: Request, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    """A forward_backward (or forward, with ``forward_only``) request: protobuf as the SDK sends it, or a
    JSON ``ForwardBackwardRequest`` (``{model_id, forward_backward_input: {data, loss_fn, loss_fn_config},
    forward_only}``). Queued on the engine before this returns, so a client's requests keep their order."""
    raw = await request.body()
    if PROTO_CONTENT_TYPE in request.headers.get("content-type", ""):
        req = decode_forward_backward(raw)
    else:
        body = FwdBwd.model_validate_json(raw or b"null")
        data = [coerce(types.Datum, d, f"forward_backward_input.data[{i}]") for i, d in enumerate(body.forward_backward_input.data)]
        req = {"model_id": body.model_id, "forward_only": body.forward_only, "loss_fn": body.forward_backward_input.loss_fn,
               "loss_fn_config": body.forward_backward_input.loss_fn_config, "data": data}
    st.registry.reserve()
    future = st.forward_backward(user, req["model_id"], req["data"], req["loss_fn"], req["loss_fn_config"],
                                 not req["forward_only"])
    return {"request_id": st.registry.add(user, future), "model_id": req["model_id"]}


@router.post("/optim_step")
def optim_step(body: OptimStep, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    if body.optimizer_params is not None:
        _adam_only(body.optimizer_params, "optimizer_params.type")
    st.registry.reserve()
    future = st.optim_step(user, body.model_id, body.adam_params)
    return {"request_id": st.registry.add(user, future), "model_id": body.model_id}
