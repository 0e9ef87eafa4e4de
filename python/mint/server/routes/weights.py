"""Weights: save_weights (training state), save_weights_for_sampler, load_weights (also "create via load")."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends

from mint.errors import BadRequestError
from mint.server import deps
from mint.server.routes._body import Body
from mint.server.state import ServerState

router = APIRouter(prefix="/api/v1")


class SaveWeights(Body):
    model_id: str
    path: Optional[str] = None
    seq_id: Optional[int] = None
    ttl_seconds: Optional[int] = None


class SaveForSampler(Body):
    model_id: str
    path: Optional[str] = None
    sampling_session_seq_id: Optional[int] = None
    seq_id: Optional[int] = None
    ttl_seconds: Optional[int] = None


class LoadWeights(Body):
    model_id: Optional[str] = None
    seq_id: Optional[int] = None
    session_id: Optional[str] = None
    model_seq_id: Optional[int] = None
    base_model: Optional[str] = None
    user_metadata: Optional[dict[str, Any]] = None
    path: str
    optimizer: bool = False


@router.post("/save_weights")
def save_weights(body: SaveWeights, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    st.registry.reserve()
    future = st.save_state(user, body.model_id, body.path, body.ttl_seconds)
    return {"request_id": st.registry.add(user, future), "model_id": body.model_id}


@router.post("/save_weights_for_sampler")
def save_weights_for_sampler(body: SaveForSampler, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    st.registry.reserve()
    future = st.save_for_sampler(user, body.model_id, body.path, body.ttl_seconds, make_session=body.path is None)
    return {"request_id": st.registry.add(user, future), "model_id": body.model_id}


@router.post("/load_weights")
def load_weights(body: LoadWeights, st: ServerState = Depends(deps.state), user: str = Depends(deps.user)):
    st.registry.reserve()
    if body.model_id is not None:
        future = st.load_state(user, body.model_id, body.path, body.optimizer)
        model_id = body.model_id
    elif body.session_id is not None and body.model_seq_id is not None:
        future = st.create_model_from_checkpoint(user, body.session_id, body.model_seq_id, body.path, body.optimizer,
                                                 body.user_metadata)
        model_id = f"{body.session_id}:train:{body.model_seq_id}"
    else:
        raise BadRequestError("give model_id, or session_id and model_seq_id", field="model_id")
    return {"request_id": st.registry.add(user, future), "model_id": model_id}
